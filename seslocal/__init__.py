"""seslocal: the project's own local Amazon SES v2 endpoint.

Speaks the SES v2 REST-JSON API the way botocore's ``sesv2`` client sends it (point boto3
at it with ``AWS_ENDPOINT_URL_SESV2=http://127.0.0.1:8025``), stores what it accepts in
SQLite and shows it at ``/``. Standalone: no Django. See ``seslocal/README.md``.
"""

from .server import make_server, serve_in_thread
from .ses import Settings

__all__ = ["Settings", "make_server", "serve_in_thread"]

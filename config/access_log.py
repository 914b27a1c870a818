"""Request paths in logs without what identifies a person: query strings (an admin search or
filter can carry an address) and the tokens of the tracking and unsubscribe URLs (/t/…).

Installed on the `django.server` logger (runserver's access log, the demo's web process) and
`django.request` (Django's 4xx/5xx warnings name the path). granian, the production server,
keeps no access log at all.
"""

import logging
import re

# A query string, to the end of the request target (a space, a quote ending a quoted request
# line, or the end of the text).
_QUERY = re.compile(r"\?[^\s\"']*")
# /t/<kind>/<token>[/<link>]: everything after the kind goes.
_TOKEN_PATH = re.compile(r"(/t/[^/\s\"'?]*/)[^\s\"'?]+")


def redact_paths(text: str) -> str:
    """``GET /t/c/TOKEN/3?utm=x HTTP/1.1`` → ``GET /t/c/… HTTP/1.1``."""
    return _TOKEN_PATH.sub(r"\1…", _QUERY.sub("", text))


class RedactPaths(logging.Filter):
    """Rewrites a record's text arguments (runserver's request line, Django's request path;
    also the raw line quoted in "Bad request syntax" errors) or, without arguments, its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.args:
            if isinstance(record.msg, str):
                record.msg = redact_paths(record.msg)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact_paths(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        else:
            record.args = tuple(redact_paths(a) if isinstance(a, str) else a for a in record.args)
        return True

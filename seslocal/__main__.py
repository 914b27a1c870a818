"""``python -m seslocal``: run the local SES v2 endpoint (see seslocal/README.md)."""

import sys

from .server import main

sys.exit(main())

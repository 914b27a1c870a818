"""The address a request came from, where clients must be told apart (login throttling)."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR; behind the TLS proxy (TRUSTED_PROXY_COUNT > 0), the X-Forwarded-For entry
    the outermost trusted proxy appended: the TRUSTED_PROXY_COUNT-th from the right. Entries
    left of it are whatever the client sent, and never used. A missing, short or malformed
    header gives REMOTE_ADDR (the proxy's address, which such requests then share)."""
    remote = request.META.get("REMOTE_ADDR") or None
    count = settings.TRUSTED_PROXY_COUNT
    if not count:
        return remote
    entries = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    if len(entries) < count:
        return remote
    try:
        return str(ipaddress.ip_address(entries[-count].strip()))
    except ValueError:
        return remote

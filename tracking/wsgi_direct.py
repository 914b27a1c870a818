"""What the WSGI fast routes (tracking.views.tracking_wsgi, tracking.webhooks.ses_webhook_wsgi)
share: which requests they may answer without Django's URL resolver and middleware, and how
they hand the response back to the server."""

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.db import close_old_connections
from django.http import HttpResponse


def direct_request(environ: dict) -> WSGIRequest | None:
    """The request, if a fast route may answer it itself; None where the full stack must: a
    Host not in ALLOWED_HOSTS (CommonMiddleware answers 400 and logs it), plain http under
    SECURE_SSL_REDIRECT (SecurityMiddleware redirects)."""
    request = WSGIRequest(environ)
    try:
        request.get_host()
    except DisallowedHost:
        return None
    if settings.SECURE_SSL_REDIRECT and not request.is_secure():
        return None
    return request


def direct_response(
    request: WSGIRequest, response: HttpResponse, start_response: Callable
) -> HttpResponse:
    """Start the response as Django's WSGI handler would. When the server has sent it, it
    closes it: the request is closed and the database connection kept, or closed if it broke
    or passed CONN_MAX_AGE, as Django's request signals do (not the signals themselves: their
    receivers cost ~100 µs a request, measured, and the others, cache and query-log resets,
    are for what these views never use)."""
    response._resource_closers.append(request.close)
    response._resource_closers.append(close_old_connections)
    if not response.streaming:
        # CommonMiddleware's Content-Length, so the server need not close the connection.
        response.headers.setdefault("Content-Length", str(len(response.content)))
    start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
    return response

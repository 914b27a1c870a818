"""Recipient-facing tracking endpoints: small, fast, and safe to hit with anything.

A token's signature is checked in memory (no database read for an open), the hit handed to
tracking.hits.buffer, and the answer is the same whether the hit was kept or not. The views
use no session, user or CSRF state and set their own headers, so `tracking_wsgi` can serve
them past Django's middleware. HEAD (never a person's browser) is recorded as a machine hit.
"""

import base64
import logging
import re
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, HttpResponseRedirect
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from campaigns.tokens import notification_id_from
from infra.wsgi_direct import direct_request, direct_response
from tracking.hits.buffer import tracking_hit_record
from tracking.hits.classify import CLICK, OPEN
from tracking.hits.lookups import link_target
from tracking.hits.record import hit_new

logger = logging.getLogger(__name__)

# The smallest transparent GIF (42 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
# Every open and click must reach us: no cache (browser, proxy or CDN) may answer for us.
NO_CACHE = "no-cache, no-store, must-revalidate, private, max-age=0"
EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


def _no_cache(response: HttpResponse) -> HttpResponse:
    response.headers["Cache-Control"] = NO_CACHE
    response.headers["Expires"] = EXPIRED
    return _secured(response)


def _secured(response: HttpResponse) -> HttpResponse:
    # What SecurityMiddleware and XFrameOptionsMiddleware add, set here so the response is
    # the same whether or not they ran (tracking_wsgi). The referrer policy also keeps the
    # tracking URL, token included, from reaching the destination site.
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = settings.SECURE_REFERRER_POLICY or "same-origin"
    response.headers["X-Frame-Options"] = getattr(settings, "X_FRAME_OPTIONS", "DENY")
    return response


def _record(request: HttpRequest, *, kind: str, notification_id: int, **fields) -> None:
    # REMOTE_ADDR is the direct peer; behind a proxy, configure it to set REMOTE_ADDR.
    hit = hit_new(
        kind=kind,
        notification_id=notification_id,
        method=request.method,
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        ip=request.META.get("REMOTE_ADDR") or None,
        **fields,
    )
    try:
        tracking_hit_record(hit=hit)
    except DatabaseError:
        # Neither Redis nor the database took it: the recipient still gets their pixel or
        # page; the loss is logged (by id) so it is seen.
        logger.exception("tracking %s not recorded notification=%s", kind, notification_id)


@csrf_exempt
@require_safe
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    """Always the pixel (a mail client shows nothing either way); records only a valid token."""
    notification_id = notification_id_from(token)
    if notification_id is not None:
        _record(request, kind=OPEN, notification_id=notification_id)
    return _no_cache(HttpResponse(PIXEL, content_type="image/gif"))


@csrf_exempt
@require_safe
def click(request: HttpRequest, token: str, index: int) -> HttpResponse:
    notification_id = notification_id_from(token)
    target = (
        link_target(notification_id=notification_id, index=index)
        if notification_id is not None
        else None
    )
    if target is None:
        response = HttpResponseNotFound(
            "This link is not valid: it may have been mistyped or cut short.",
            content_type="text/plain; charset=utf-8",
        )
        # Django logs every 4xx with its path, and this path carries a token: not logged.
        response._has_been_logged = True
        return _secured(response)
    _record(
        request, kind=CLICK, notification_id=notification_id, index=index, honeypot=target.honeypot
    )
    if target.honeypot:
        # The invisible link: only software follows it. An empty page, nothing to index.
        response = HttpResponse(b"", content_type="text/plain; charset=utf-8")
        response.headers["X-Robots-Tag"] = "noindex, nofollow"
        return _no_cache(response)
    return _no_cache(HttpResponseRedirect(target.url))


# --- WSGI: the tracking URLs without the middleware -------------------------------------------

# Exactly what tracking.urls routes: <str:token> is [^/]+, <int:index> is [0-9]+.
_TRACKING_PATH = re.compile(r"/t/(?:o/(?P<open>[^/]+)\.gif|c/(?P<click>[^/]+)/(?P<index>[0-9]+))\Z")


def tracking_wsgi(application: Callable) -> Callable:
    """Wrap Django's WSGI application so GET/HEAD of the pixel and click URLs go straight to
    their views (above), skipping URL resolution and the MIDDLEWARE chain, more than half of
    what serving them costs (docs/PERFORMANCE.md). Everything else, and any
    request these views must not answer themselves (a Host not in ALLOWED_HOSTS, plain http
    when SECURE_SSL_REDIRECT is on, another method), goes to `application` unchanged.

    What the views lose is nothing they use: no session, user, CSRF token or messages; the
    security headers those middlewares add, the views set themselves; database connections
    are kept or closed at the end of each request as Django's request signals would.

        application = tracking_wsgi(get_wsgi_application())   # config/wsgi.py
    """

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = _TRACKING_PATH.match(environ.get("PATH_INFO", ""))
        if match is None or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return application(environ, start_response)
        request = direct_request(environ)
        if request is None:
            return application(environ, start_response)
        try:
            if match["open"] is not None:
                response = open_pixel(request, match["open"])
            else:
                response = click(request, match["click"], int(match["index"]))
        except Exception:
            # As Django's handler would: logged, answered 500 (the pixel still a pixel).
            logger.exception("tracking %s failed", "open" if match["open"] is not None else "click")
            response = HttpResponse(
                PIXEL if match["open"] is not None else b"Server error",
                content_type="image/gif" if match["open"] is not None else "text/plain",
                status=200 if match["open"] is not None else 500,
            )
        return direct_response(request, response, start_response)

    wsgi.tracking_wsgi = True  # so a second wrap, or a check, can tell
    return wsgi

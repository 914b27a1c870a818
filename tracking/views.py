"""Recipient-facing tracking endpoints: small, fast, and safe to hit with anything."""

import base64

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, HttpResponseRedirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from tracking.services import tracking_record_click, tracking_record_open
from tracking.tokens import notification_id_from

# The smallest transparent GIF (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _client(request: HttpRequest) -> tuple[str, str | None]:
    # REMOTE_ADDR is the direct peer; behind a proxy, configure it to set REMOTE_ADDR.
    return request.META.get("HTTP_USER_AGENT", ""), request.META.get("REMOTE_ADDR") or None


@never_cache
@require_GET
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    """Always the pixel (a mail client shows nothing either way); records only a valid token."""
    notification_id = notification_id_from(token)
    if notification_id is not None:
        user_agent, ip = _client(request)
        tracking_record_open(notification_id=notification_id, user_agent=user_agent, ip=ip)
    return HttpResponse(PIXEL, content_type="image/gif")


@never_cache
@require_GET
def click(request: HttpRequest, token: str, index: int) -> HttpResponse:
    notification_id = notification_id_from(token)
    destination = None
    if notification_id is not None:
        user_agent, ip = _client(request)
        destination = tracking_record_click(
            notification_id=notification_id, index=index, user_agent=user_agent, ip=ip
        )
    if destination is None:
        return HttpResponseNotFound(
            "This link is not valid: it may have been mistyped or cut short.",
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponseRedirect(destination)

"""Recording opens and clicks from our pixel and redirect (SES events: tracking.esp_events)."""

import logging

from django.utils import timezone

from campaigns.models import CampaignLink, Notification
from tracking.models import Event

logger = logging.getLogger(__name__)

N = Notification.Status

SAFE_SCHEMES = ("http://", "https://")


def tracking_record_open(*, notification_id: int, user_agent: str, ip: str | None) -> bool:
    """Record an open of our pixel; False (nothing written) for an unknown notification."""
    if not Notification.objects.filter(pk=notification_id).exists():
        return False
    Event.objects.create(
        type=Event.Type.OPENED,
        source=Event.Source.TRACKING,
        occurred_at=timezone.now(),
        notification_id=notification_id,
        user_agent=user_agent[:500],
        ip=ip,
    )
    return True


def tracking_record_click(
    *, notification_id: int, index: int, user_agent: str, ip: str | None
) -> str | None:
    """Record a click and return its destination; None (nothing written) if there is none.

    The destination comes from the campaign's links, never from the request, and only
    http(s) destinations are followed: no open redirect, no javascript: links.
    """
    link = (
        CampaignLink.objects.filter(campaign__notifications__id=notification_id, index=index)
        .only("id", "url")
        .first()
    )
    if link is None or not link.url.lower().startswith(SAFE_SCHEMES):
        return None
    Event.objects.create(
        type=Event.Type.CLICKED,
        source=Event.Source.TRACKING,
        occurred_at=timezone.now(),
        notification_id=notification_id,
        link=link,
        user_agent=user_agent[:500],
        ip=ip,
    )
    return link.url

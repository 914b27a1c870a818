"""Reading reports. (Counts come from aggregates for now; counters kept incrementally will
replace them for million-recipient campaigns.)"""

from dataclasses import dataclass

from django.db.models import Count

from campaigns.models import CampaignLink, Notification
from tracking.models import Event

N = Notification.Status
# Statuses that mean SES accepted the message (what happened after is a later status).
ACCEPTED = {N.SENT, N.DELIVERED, N.BOUNCED, N.COMPLAINED, N.REJECTED}


@dataclass(frozen=True)
class LinkClicks:
    index: int
    url: str
    clicks: int
    unique_clicks: int


@dataclass(frozen=True)
class CampaignReport:
    recipients: int
    by_status: dict[str, int]
    sent: int
    delivered: int
    bounced: int
    complained: int
    failed: int
    unknown: int
    skipped: int
    pending: int  # created or sending: not handed to SES yet
    unique_opens: int
    unique_clicks: int
    links: list[LinkClicks]

    @property
    def progress_percent(self) -> int:
        done = self.recipients - self.pending
        return round(100 * done / self.recipients) if self.recipients else 0


def campaign_report(*, campaign_id: int) -> CampaignReport:
    by_status = dict(
        Notification.objects.filter(campaign_id=campaign_id)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    events = Event.objects.filter(notification__campaign_id=campaign_id)
    unique = dict(
        events.filter(type__in=[Event.Type.OPENED, Event.Type.CLICKED])
        .values_list("type")
        .annotate(n=Count("notification_id", distinct=True))
        .order_by()
    )
    clicks = {
        row["link_id"]: row
        for row in events.filter(type=Event.Type.CLICKED, link__isnull=False)
        .values("link_id")
        .annotate(total=Count("id"), unique=Count("notification_id", distinct=True))
        .order_by()
    }
    links = [
        LinkClicks(
            index=link.index,
            url=link.url,
            clicks=clicks.get(link.id, {}).get("total", 0),
            unique_clicks=clicks.get(link.id, {}).get("unique", 0),
        )
        for link in CampaignLink.objects.filter(campaign_id=campaign_id)
    ]
    count = by_status.get
    return CampaignReport(
        recipients=sum(by_status.values()),
        by_status=by_status,
        sent=sum(by_status.get(s, 0) for s in ACCEPTED),
        # A complaint comes after a delivery: those messages were delivered too.
        delivered=count(N.DELIVERED, 0) + count(N.COMPLAINED, 0),
        bounced=count(N.BOUNCED, 0),
        complained=count(N.COMPLAINED, 0),
        failed=count(N.FAILED, 0) + count(N.REJECTED, 0),
        unknown=count(N.UNKNOWN, 0),
        skipped=count(N.SKIPPED, 0),
        pending=count(N.CREATED, 0) + count(N.SENDING, 0),
        unique_opens=unique.get(Event.Type.OPENED, 0),
        unique_clicks=unique.get(Event.Type.CLICKED, 0),
        links=links,
    )

"""Journeys: one notification's story (its ledger row and every event), in time order; and
the events of many notifications, newest first (the API's GET /api/v1/events)."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import F, QuerySet

from campaigns.models import Notification
from tracking.models import Event

N = Notification.Status
E = Event.Type

# -- journeys: one notification's story, in time order -----------------------------------------

# A notification opened by a proxy every few minutes for months can have thousands of events:
# the page shows the first 200 (in time order) and says how many more there are.
JOURNEY_EVENTS_SHOWN = 200


@dataclass(frozen=True)
class JourneyStep:
    at: datetime
    what: str  # "queued", an Event type ("opened", "bounced"…), or "status: <status>"
    source: str  # "ledger", or an Event source ("tracking", "ses", "ses_file", "recipient")
    detail: str = ""
    verdict: str = ""
    verdict_reason: str = ""
    user_agent: str = ""
    ip: str | None = None
    event_id: int | None = None
    # Whose step it is: the API answers an event with them (the journey of one message and
    # the list of many give events one shape).
    notification_id: int | None = None
    campaign_id: int | None = None
    contact_id: int | None = None


@dataclass(frozen=True)
class Journey:
    notification_id: int
    campaign_id: int
    campaign_name: str
    contact_id: int
    contact_email: str
    status: str
    reason: str
    message_id: str | None
    created_at: datetime
    updated_at: datetime
    steps: list[JourneyStep]
    events_not_shown: int = 0

    @property
    def status_label(self) -> str:
        """The status as a marketer reads it ("Marked as spam"); `status` is the stored value."""
        return N(self.status).label


_NOTIFICATION_FIELDS = (
    "id", "campaign_id", "campaign__name", "contact_id", "contact__email", "status", "reason",
    "message_id", "created_at", "updated_at",
)  # fmt: skip


def notification_journey(*, notification_id: int) -> Journey:
    """Every event of one notification in time order, with the ledger row's own times and
    status. Raises Notification.DoesNotExist for an unknown id."""
    row = Notification.objects.values(*_NOTIFICATION_FIELDS).get(pk=notification_id)
    return _journey(row)


def contact_journeys(*, contact_id: int, limit: int = 20) -> list[Journey]:
    """The contact's notifications, newest first (at most `limit`), each with its journey:
    "where did my email to X go?"."""
    rows = (
        Notification.objects.filter(contact_id=contact_id)
        .order_by("-created_at", "-id")
        .values(*_NOTIFICATION_FIELDS)[:limit]
    )
    return [_journey(row) for row in rows]


def _journey(row: dict) -> Journey:
    events = list(
        Event.objects.filter(notification_id=row["id"])
        .select_related("link")
        .order_by("occurred_at", "id")[: JOURNEY_EVENTS_SHOWN + 1]
    )
    not_shown = 0
    if len(events) > JOURNEY_EVENTS_SHOWN:
        events = events[:JOURNEY_EVENTS_SHOWN]
        not_shown = Event.objects.filter(notification_id=row["id"]).count() - len(events)
    steps = [
        JourneyStep(at=row["created_at"], what="queued", source="ledger",
                    detail="added to the campaign's recipients")
    ]  # fmt: skip
    if row["status"] != N.CREATED:
        # updated_at is the time of the row's last status change (campaigns.ledger sets it).
        detail = row["reason"]
        if row["message_id"]:
            detail = f"SES MessageId {row['message_id']}" + (f"; {detail}" if detail else "")
        steps.append(
            JourneyStep(
                at=row["updated_at"], what=f"status: {N(row['status']).label}", source="ledger",
                detail=detail,
            )
        )  # fmt: skip
    steps.extend(
        event_step(event, campaign_id=row["campaign_id"], contact_id=row["contact_id"])
        for event in events
    )
    steps.sort(key=lambda step: (step.at, step.source != "ledger"))
    return Journey(
        notification_id=row["id"],
        campaign_id=row["campaign_id"],
        campaign_name=row["campaign__name"],
        contact_id=row["contact_id"],
        contact_email=row["contact__email"],
        status=row["status"],
        reason=row["reason"],
        message_id=row["message_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        steps=steps,
        events_not_shown=not_shown,
    )


def event_step(event: Event, *, campaign_id: int, contact_id: int) -> JourneyStep:
    """An event as a journey's step (a link's event with its link in hand: select_related)."""
    details = []
    if event.link is not None:
        details.append(f"link {event.link.index}: {event.link.url}")
    if event.bounce_type:
        details.append(f"{event.get_bounce_type_display().lower()} bounce")
    if event.description:
        details.append(event.description)
    return JourneyStep(
        at=event.occurred_at,
        what=event.type,
        source=event.source,
        detail="; ".join(details),
        verdict=event.verdict,
        verdict_reason=event.verdict_reason,
        user_agent=event.user_agent,
        ip=event.ip,
        event_id=event.pk,
        notification_id=event.notification_id,
        campaign_id=campaign_id,
        contact_id=contact_id,
    )


# -- events: many notifications' events, newest first ------------------------------------------


def events_of(
    *,
    test_mode: bool | None = None,
    campaign_id: int | None = None,
    contact_id: int | None = None,
    notification_id: int | None = None,
    types: list[str] | None = None,
    since: datetime | None = None,
) -> QuerySet[Event]:
    """The events of every kind of send (campaigns, transactional streams, jobs), filtered
    (and-ed), for reading newest first by id (the caller pages them): each with its link and
    its notification's campaign and contact ids in hand (`notification__…` values, no query
    per event). `test_mode` keeps one mode's (a test key's campaigns' or the live ones').

    What each filter walks (plans: docs/API.md#events): a message's events by the events'
    (notification, type) index; a contact's and a campaign's through the ledger's contact and
    (campaign, contact) indexes; `since` by the BRIN index on occurred_at (events arrive
    nearly in time order); a type alone walks the newest events until a page is full."""
    events = Event.objects.all()
    if notification_id is not None:
        events = events.filter(notification_id=notification_id)
    if campaign_id is not None:
        events = events.filter(notification__campaign_id=campaign_id)
    if contact_id is not None:
        events = events.filter(notification__contact_id=contact_id)
    if test_mode is not None:
        events = events.filter(notification__campaign__test_mode=test_mode)
    if types:
        events = events.filter(type__in=types)
    if since is not None:
        events = events.filter(occurred_at__gte=since)
    return events.select_related("link").annotate(
        campaign_id_=F("notification__campaign_id"), contact_id_=F("notification__contact_id")
    )


def event_steps(events: list[Event]) -> list[JourneyStep]:
    """Events read from events_of, as steps."""
    return [
        event_step(event, campaign_id=event.campaign_id_, contact_id=event.contact_id_)
        for event in events
    ]

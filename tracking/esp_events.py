"""Recording SES's events (anymail's SNS webhook) and moving notifications forward."""

import logging

from anymail.signals import AnymailTrackingEvent, EventType
from django.db import IntegrityError, transaction
from django.utils import timezone

from campaigns.ledger import ledger_transition, statuses_before
from campaigns.models import Contact, Notification
from tracking.models import Event

logger = logging.getLogger(__name__)

N = Notification.Status

# anymail's normalized event types → ours (a table, not an if-chain).
EVENT_TYPES = {
    EventType.SENT: Event.Type.SENT,
    EventType.DELIVERED: Event.Type.DELIVERED,
    EventType.DEFERRED: Event.Type.DEFERRED,
    EventType.BOUNCED: Event.Type.BOUNCED,
    EventType.COMPLAINED: Event.Type.COMPLAINED,
    EventType.REJECTED: Event.Type.REJECTED,
    EventType.FAILED: Event.Type.FAILED,
    EventType.OPENED: Event.Type.OPENED,
    EventType.CLICKED: Event.Type.CLICKED,
}
# Events that move the notification forward, and the contact status they imply.
NOTIFICATION_STATUS = {
    Event.Type.DELIVERED: N.DELIVERED,
    Event.Type.BOUNCED: N.BOUNCED,
    Event.Type.COMPLAINED: N.COMPLAINED,
    Event.Type.REJECTED: N.REJECTED,
    Event.Type.FAILED: N.FAILED,
}
CONTACT_STATUS = {
    Event.Type.BOUNCED: Contact.Status.BOUNCED,
    Event.Type.COMPLAINED: Contact.Status.COMPLAINED,
}


def esp_event_record(*, event: AnymailTrackingEvent) -> Event | None:
    """Record an SES event (from anymail's webhook) and move the notification forward.

    Idempotent: SNS may deliver a notification more than once; its MessageId is recorded
    once. Returns the new Event, or None if it was a duplicate or names no known message.
    """
    notification = (
        Notification.objects.filter(message_id=event.message_id).values("id", "contact_id").first()
        if event.message_id
        else None
    )
    if notification is None:
        logger.warning(
            "ses event for unknown message type=%s sns_id=%s", event.event_type, event.event_id
        )
        return None

    raw = event.esp_event or {}
    event_type = EVENT_TYPES.get(event.event_type, Event.Type.UNKNOWN)
    # SES sends soft (Transient) bounces too: recorded, but the address still works.
    hard = (
        event_type != Event.Type.BOUNCED or raw.get("bounce", {}).get("bounceType") == "Permanent"
    )
    try:
        with transaction.atomic():
            recorded = Event.objects.create(
                type=event_type,
                source=Event.Source.SES,
                occurred_at=event.timestamp or timezone.now(),
                notification_id=notification["id"],
                esp_event_id=event.event_id,
                description=(event.description or "")[:300],
                user_agent=(event.user_agent or "")[:500],
                payload=raw,
            )
            status = NOTIFICATION_STATUS.get(event_type)
            if status and hard:
                ledger_transition(
                    ids=[notification["id"]], from_statuses=statuses_before(status), to=status
                )
            if event_type in CONTACT_STATUS and hard:
                Contact.objects.filter(
                    pk=notification["contact_id"], status=Contact.Status.ACTIVE
                ).update(status=CONTACT_STATUS[event_type])
    except IntegrityError:
        logger.info("ses event duplicate sns_id=%s", event.event_id)
        return None
    logger.info(
        "ses event type=%s notification=%s sns_id=%s",
        event_type,
        notification["id"],
        event.event_id,
    )
    return recorded

"""SES events whose message is not recorded yet (PendingEspEvent): added, rescheduled with
backoff, given up after ESP_EVENT_PENDING_RETENTION_HOURS and deleted after
ESP_EVENT_PENDING_EXPIRY_HOURS."""

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from infra.db import delete_in_chunks
from tracking.models import PendingEspEvent
from tracking.ses_events.parse import SesEvent, SesEventError, ses_events_parse

logger = logging.getLogger(__name__)

# Pending events: first retry after 30 s, doubling to at most an hour between tries (an event
# usually outruns the send's bookkeeping by well under a second; a file may come first by days).
RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600
# A pending row whose retries have stopped (older than ESP_EVENT_PENDING_RETENTION_HOURS) keeps
# this next_attempt_at: never due again, still listed in the admin.
GAVE_UP = datetime(9999, 1, 1, tzinfo=UTC)


def pending_add_all(events: list[SesEvent], source: str) -> None:
    next_attempt_at = timezone.now() + _retry_delay(0)
    PendingEspEvent.objects.bulk_create(
        [
            PendingEspEvent(
                esp_event_id=e.esp_event_id,
                message_id=e.message_id,
                source=source,
                payload=e.payload,
                next_attempt_at=next_attempt_at,
            )
            for e in events
        ],
        # Already pending: SNS delivered it twice, a file had it, or a batch was flushed twice.
        ignore_conflicts=True,
    )
    for event in events:
        logger.info(
            "ses event pending: unknown message type=%s message_id=%s id=%s",
            event.type,
            event.message_id,
            event.esp_event_id,
        )


def _retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2**attempts, RETRY_MAX_SECONDS))


def pending_reschedule(pending_id: int) -> None:
    """One more failed attempt: the next one later, or none once the retention has passed."""
    row = (
        PendingEspEvent.objects.filter(pk=pending_id)
        .values("attempts", "created_at", "message_id")
        .first()
    )
    if row is None:
        return
    now = timezone.now()
    attempts = row["attempts"] + 1
    retention = timedelta(hours=settings.ESP_EVENT_PENDING_RETENTION_HOURS)
    gave_up = now - row["created_at"] >= retention
    PendingEspEvent.objects.filter(pk=pending_id).update(
        attempts=attempts, next_attempt_at=GAVE_UP if gave_up else now + _retry_delay(attempts)
    )
    if gave_up:
        logger.warning(
            "ses event pending: retries stopped, message still unknown after %s attempts "
            "pending=%s message_id=%s (listed in the admin until it expires)",
            attempts,
            pending_id,
            row["message_id"],
        )


def pending_event_parse(*, pending: PendingEspEvent) -> SesEvent | None:
    """The SesEvent a pending row holds (its payload's recipient whose id it has)."""
    try:
        for event in ses_events_parse(payload=pending.payload):
            if event.esp_event_id == pending.esp_event_id:
                return event
    except SesEventError:
        return None
    return None


def pending_expires_at(*, pending: PendingEspEvent) -> datetime:
    """When `pending` is deleted unless its message id appears first."""
    return pending.created_at + _pending_expiry()


def _pending_expiry() -> timedelta:
    # Never before its retries have stopped (ESP_EVENT_PENDING_RETENTION_HOURS).
    hours = max(settings.ESP_EVENT_PENDING_EXPIRY_HOURS, settings.ESP_EVENT_PENDING_RETENTION_HOURS)
    return timedelta(hours=hours)


# Rows deleted per statement: a short lock, whatever piled up.
EXPIRE_CHUNK = 5000


def esp_events_expire_pending() -> int:
    """Delete the pending events older than ESP_EVENT_PENDING_EXPIRY_HOURS (beat, hourly);
    returns how many, and logs the number. Their message ids never appeared: mostly mail
    another system sends through the same configuration set, which would pile up forever."""
    cutoff = timezone.now() - _pending_expiry()
    expired = delete_in_chunks(
        PendingEspEvent.objects.filter(created_at__lt=cutoff), chunk=EXPIRE_CHUNK
    )
    if expired:
        logger.warning(
            "ses events pending expired count=%d older_than_hours=%d (their message ids never "
            "appeared; deleted)",
            expired,
            _pending_expiry().total_seconds() // 3600,
        )
    return expired

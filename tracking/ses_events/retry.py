"""Retrying pending SES events (beat, and the admin's "retry now")."""

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from tracking.models import PendingEspEvent
from tracking.ses_events.pending import GAVE_UP, pending_event_parse, pending_reschedule
from tracking.ses_events.record import PENDING, ses_event_record

logger = logging.getLogger(__name__)


@dataclass
class RetrySummary:
    recorded: int = 0
    duplicate: int = 0
    pending: int = 0
    unreadable: int = 0

    @property
    def total(self) -> int:
        return self.recorded + self.duplicate + self.pending + self.unreadable


def esp_events_retry_pending(*, ids=None, limit: int = 10_000) -> RetrySummary:
    """Retry up to `limit` pending events that are due, or those of `ids`, due or not (the
    admin's "retry now").

    Each row is claimed and recorded in its own short transaction (SELECT … FOR UPDATE SKIP
    LOCKED): two beat ticks never retry one row twice, and a retry holds no lock on counters
    or notifications longer than one event does (a batch-long transaction could deadlock with
    the webhook's own writes)."""
    summary = RetrySummary()
    due = PendingEspEvent.objects.order_by("next_attempt_at")
    if ids is not None:
        due = due.filter(pk__in=list(ids))
    else:
        due = due.filter(next_attempt_at__lte=timezone.now())
    for pending_id in list(due.values_list("pk", flat=True)[:limit]):
        _retry_one(pending_id, summary, due_only=ids is None)
    if summary.total:
        logger.info(
            "ses events retried recorded=%s duplicate=%s still_pending=%s unreadable=%s",
            summary.recorded,
            summary.duplicate,
            summary.pending,
            summary.unreadable,
        )
    return summary


def _retry_one(pending_id: int, summary: RetrySummary, *, due_only: bool) -> None:
    with transaction.atomic():
        rows = PendingEspEvent.objects.select_for_update(skip_locked=True).filter(pk=pending_id)
        if due_only:  # another tick may have retried it since the list was read
            rows = rows.filter(next_attempt_at__lte=timezone.now())
        pending = rows.first()
        if pending is None:
            return
        event = pending_event_parse(pending=pending)
        if event is None:
            # Cannot happen for rows this module wrote; kept for a person to look at.
            PendingEspEvent.objects.filter(pk=pending.pk).update(next_attempt_at=GAVE_UP)
            logger.warning("ses event pending unreadable pending=%s", pending.pk)
            summary.unreadable += 1
            return
        # The row is the event's pending record already: the recorder must not add another.
        outcome = ses_event_record(event=event, source=pending.source, keep_unknown=False)
        if outcome == PENDING:
            pending_reschedule(pending.pk)
        else:  # recorded now, or before (from a file, or SNS again): nothing left to retry
            PendingEspEvent.objects.filter(pk=pending.pk).delete()
        setattr(summary, outcome, getattr(summary, outcome) + 1)

"""The sweeper: beat's search for stuck work (campaigns_sweep, every 10 s).

Rows of a dead batch become `unknown` (never re-sent); lost batches are enqueued again,
stalled freezes finished, and campaigns with nothing left finished. Every case it handles is
in docs/DATAFLOW.md; the life cycle it drives is campaigns.services.
"""

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns import jobs, leases
from campaigns.counters import CounterName, counters_add
from campaigns.imports import import_jobs_fail_stale
from campaigns.ledger import ledger_transition
from campaigns.models import BatchLease, Campaign, Notification
from campaigns.selectors import campaigns_with_unanswered_rows
from campaigns.services import campaign_fan_out, campaign_finish_if_done
from infra.tasks import task_enqueue_on_commit

logger = logging.getLogger(__name__)

C = Campaign.Status
N = Notification.Status

# Where the broker cannot say what is queued, `created` rows untouched this long, with no
# batch alive, have lost theirs (a crash between commit and enqueue, a purged queue): they
# are enqueued again. Claims are guarded, so a duplicate batch is harmless.
CREATED_GRACE = timedelta(minutes=5)


def campaigns_sweep() -> None:
    """Find stuck work (beat, every 10 s): rows of batches that died mid-hand-off, batches
    lost before they ran, freezes that stopped half-way, finished campaigns, and rows given
    back just as their campaign was cancelled.

    What runs is known from the batches' leases (campaigns.leases), so the sweep reads the
    ledger row by row only where nothing runs: without a status index, that read walks all of
    a campaign's rows (cost: docs/PERFORMANCE.md). Campaigns are picked by their counters
    (campaigns_with_unanswered_rows), so finished and cancelled ones cost nothing.
    """
    now = timezone.now()
    unanswered = campaigns_with_unanswered_rows(statuses=[C.SENDING, C.PAUSED, C.CANCELLED])
    for campaign_id in unanswered:
        batches_settle_dead(campaign_id=campaign_id, now=now)
    _skip_left_in_cancelled(unanswered=unanswered)
    _refreeze_stalled(now=now)
    queued = queue_length("bulk")
    # Transactional streams are always `sending`, never frozen and never finished: their
    # messages are campaigns.message_sweeper's.
    sending = Campaign.objects.filter(status=C.SENDING).exclude(kind=Campaign.Kind.TRANSACTIONAL)
    for campaign_id in sending.values_list("id", flat=True):
        if campaign_id in unanswered and not leases.leases_live(campaign_id=campaign_id, now=now):
            # Nothing runs for it, yet rows wait: settle what no batch holds, find lost ones.
            _settle_orphans(campaign_id=campaign_id, now=now)
            _fan_out_if_lost(campaign_id=campaign_id, now=now, queued=queued)
        if campaign_id not in unanswered or not leases.leases_live(
            campaign_id=campaign_id, now=now
        ):
            campaign_finish_if_done(campaign_id=campaign_id)
    import_jobs_fail_stale()  # contact imports whose worker died (campaigns.imports)


def _skip_left_in_cancelled(*, unanswered: Collection[int]) -> None:
    """`created` rows of a cancelled campaign (given back by a call in flight as the cancel
    came) → skipped, as the cancel did the rest; at most 10,000 a campaign per sweep."""
    cancelled = set(
        Campaign.objects.filter(pk__in=unanswered, status=C.CANCELLED).values_list("pk", flat=True)
    )
    for campaign_id in sorted(cancelled):
        ids = list(
            Notification.objects.filter(campaign_id=campaign_id, status=N.CREATED)
            .order_by("pk")
            .values_list("id", flat=True)[:10_000]
        )
        with transaction.atomic():
            skipped = ledger_transition(
                ids=ids, from_statuses={N.CREATED}, to=N.SKIPPED, reason="campaign cancelled"
            )
            counters_add(campaign_id=campaign_id, deltas={CounterName.SKIPPED: skipped})


def _refreeze_stalled(*, now: datetime) -> None:
    """A freeze that stopped half-way (its worker died) shows no progress: finish it. (A
    local-time campaign whose next wave is set is not stalled: it waits for that wave; a
    transactional stream is never frozen: freezing one would finish it.)"""
    unfrozen = Campaign.objects.filter(
        status__in=[C.SENDING, C.PAUSED],
        frozen_at=None,
        next_wave_at=None,
        updated_at__lt=now - CREATED_GRACE,
    ).exclude(kind=Campaign.Kind.TRANSACTIONAL)  # a stream has no audience to freeze
    for campaign_id in unfrozen.values_list("id", flat=True):
        logger.warning("campaign %s freeze stalled: freezing the rest", campaign_id)
        _enqueue_freeze(campaign_id)
    # A job's creator holds a lease it renews before each chunk: one run out is a creator
    # that died (SIGKILL mid-creation), resumed now rather than after CREATED_GRACE. The
    # lease is dropped with the enqueue, so a resumed freeze still queued is not enqueued
    # again every sweep (if that one is lost too, CREATED_GRACE above finds it).
    for job_id in jobs.jobs_creation_dead(now=now):
        if jobs.job_creation_lease_drop(job_id=job_id, expired_at=now):
            logger.warning("job %s creator's lease ran out: resuming its creation", job_id)
            _enqueue_freeze(job_id)


def batches_settle_dead(*, campaign_id: int, now: datetime) -> None:
    """The `sending` rows of the campaign's dead leases that no live lease covers (a batch
    killed mid-hand-off: whatever was in flight may have been sent) → unknown; then the dead
    leases go. Reads only the dead leases' id ranges (primary key)."""
    dead = list(
        BatchLease.objects.filter(
            campaign_id=campaign_id, heartbeat_at__lt=now - leases.LEASE_TIMEOUT
        ).values_list("first_id", "last_id")
    )
    if not dead:
        return
    live = leases.leases_live(campaign_id=campaign_id, now=now)
    in_range = Q()
    for first_id, last_id in dead:
        in_range |= Q(id__range=(first_id, last_id))
    stranded = [
        nid
        for nid in Notification.objects.filter(
            in_range, campaign_id=campaign_id, status=N.SENDING
        ).values_list("id", flat=True)
        if not any(first <= nid <= last for first, last in live)
    ]
    flag_unknown(campaign_id, stranded)
    leases.leases_drop_dead(campaign_id=campaign_id, now=now)


def _settle_orphans(*, campaign_id: int, now: datetime) -> None:
    """`sending` rows while no batch of the campaign is alive (a batch that died without a
    lease, or whose lease was lost) → unknown, once they have sat for LEASE_TIMEOUT."""
    stranded = Notification.objects.filter(
        campaign_id=campaign_id, status=N.SENDING, updated_at__lt=now - leases.LEASE_TIMEOUT
    ).values_list("id", flat=True)
    flag_unknown(campaign_id, list(stranded))


def flag_unknown(campaign_id: int, ids: list[int]) -> int:
    """The campaign's rows among `ids` still `sending` → unknown (their hand-off died: SES may
    have sent them, so never again); how many."""
    if not ids:
        return 0
    with transaction.atomic():
        flagged = ledger_transition(
            ids=ids,
            from_statuses={N.SENDING},
            to=N.UNKNOWN,
            reason="batch died during the hand-off to SES",
        )
        counters_add(campaign_id=campaign_id, deltas={CounterName.UNKNOWN: flagged})
    if flagged:
        logger.warning("campaign %s flagged unknown=%s", campaign_id, flagged)
    return flagged


def _fan_out_if_lost(*, campaign_id: int, now: datetime, queued: int | None) -> None:
    """Enqueue batches again for a sending campaign's `created` rows when nothing will send
    them: no live lease (nothing runs, no retry is due) and nothing waits in the bulk queue —
    its batches were lost (a worker killed with a task in hand, a purged queue, a retry that
    never got published). Where the queue cannot be read, only once its rows have sat still
    for CREATED_GRACE. Claims are guarded, so a batch enqueued twice sends nothing twice."""
    if queued:
        return  # its batches may be waiting there
    rows = Notification.objects.filter(campaign_id=campaign_id)
    with transaction.atomic():
        if queued is None and rows.filter(updated_at__gte=now - CREATED_GRACE).exists():
            return
        if rows.filter(status=N.CREATED).exists():
            logger.warning("campaign %s stalled: enqueueing its batches again", campaign_id)
            campaign_fan_out(campaign_id=campaign_id)


def queue_length(queue: str) -> int | None:
    """Messages waiting in a Celery queue (tasks not yet taken by a worker), or None if the
    broker cannot tell."""
    from celery import current_app as app
    from kombu.exceptions import ChannelError

    try:
        with app.connection_for_read() as conn:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError:
        return 0  # Redis keeps no empty queue: it is "not found"
    except Exception as err:  # noqa: BLE001 (any broker trouble: not known)
        logger.info("%s queue length unknown: %s", queue, type(err).__name__)
        return None


def _enqueue_freeze(campaign_id: int) -> None:
    task_enqueue_on_commit("campaigns.tasks.campaign_freeze", (campaign_id,))

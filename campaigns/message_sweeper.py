"""The message sweeper: beat's search for transactional messages that nothing will send
(messages_sweep, every 10 s). GOV.UK Notify's replay-created-notifications, at most once.

A message (campaigns.transactional) is committed, then its delivery task is enqueued. Three
things can leave it behind, and this is what finds each:

- its task was lost (the broker down at the POST, a purged queue, a worker killed between
  taking the task and claiming the row): a `created`, due message with no live lease, enqueued
  over MESSAGE_SWEEP_GRACE ago (its POST, or the sweeper's last try), is enqueued again (a
  task of its own). Only if the transactional queue and the ready list (campaigns.ready: where
  the POST put it) are empty, since it may be waiting there, or if it was enqueued
  over REQUEUE_BUSY_AFTER ago: a message is never enqueued again every 10 s while workers are
  behind, and a duplicate is harmless anyway (the claim is `WHERE status = 'created'`);
- its worker died mid-hand-off: the row is `sending` under a lease that stopped beating. SES
  may have sent it, so it becomes `unknown` with the reason, never sent again (the campaign
  sweeper's rule, campaigns.sweeper.batches_settle_dead, applied to the streams' leases:
  a stream keeps no recipient count, so the campaign sweeper's counters never pick it);
- it is scheduled (MessageRequest.send_at): enqueued once when its time comes.

A drain task lost while the ready list holds messages would leave them there until the next
POST: each sweep starts a drain if the list is not empty and none was enqueued just now.

Why marks, and which. The ledger has no status index (its claims are HOT updates:
docs/decisions/0002-ledger-without-status-index.md), so "the created rows of the streams" would
read every message ever sent. Instead two low-water marks, kept in one SweepMark row in
PostgreSQL (durable with the rows it describes; Redis, the broker, can lose it with the very
tasks it would help find):

- `low_id`: every message below it is answered or not yet due. Each sweep reads
  MessageRequest by primary key (= the ledger's id) from it, each row's ledger status by
  primary key, and moves it up to the first row still waiting. MessageRequest, not the ledger:
  campaign rows have none, so a million-row campaign costs the sweep nothing. Rows younger
  than the grace hold the mark too: ids are taken before their transaction commits, so a row
  not visible yet may lie below a visible one; a transaction that writes a message and stays
  open longer than the grace is not covered (the API's are milliseconds);
- `low_send_at` (with `low_send_at_id`: many messages may share a send_at): scheduled
  messages are passed by `low_id` while they wait (a message due next week must not hold it:
  every sweep would read the week). They are read through MessageRequest's partial index on
  send_at, from the first that may still be waiting up to now, so each is read when its time
  comes and again only while it waits.

So a sweep reads the messages of the last grace period plus those still waiting, by key, in
pages of SWEEP_PAGE, at most SWEEP_MAX_ROWS from each mark (more: those past the cap wait
for the first to be answered, as the mark moves; only when workers are far behind).
Cost: docs/DATAFLOW.md#transactional-messages.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from campaigns import leases, ready
from campaigns.models import BatchLease, Campaign, MessageRequest, Notification, SweepMark
from campaigns.sweeper import batches_settle_dead, flag_unknown, queue_length
from infra.db import pg_lookup
from infra.tasks import task_enqueue_on_commit

logger = logging.getLogger(__name__)

N = Notification.Status
DELIVER_MESSAGE = "campaigns.tasks.deliver_message"
MARK = "messages"
# Rows read per query, and at most per mark per sweep.
SWEEP_PAGE = 5_000
SWEEP_MAX_ROWS = 100_000
# A message enqueued this long ago and still waiting, with no live lease, is enqueued again
# even while the transactional queue holds tasks (it could be one of them: workers that far
# behind get one duplicate a message every REQUEUE_BUSY_AFTER, which claims nothing).
REQUEUE_BUSY_AFTER = timedelta(minutes=5)
WAITING = {N.CREATED, N.SENDING}


@dataclass(frozen=True)
class _Row:
    id: int
    campaign_id: int
    kind: str
    status: str
    created_at: datetime
    updated_at: datetime
    send_at: datetime | None
    queued_at: datetime | None

    @property
    def enqueued_at(self) -> datetime | None:
        """When its delivery task was last enqueued: by the sweeper, or at its POST if it was
        due then; None for a scheduled message whose time has not been taken yet."""
        if self.queued_at:
            return self.queued_at
        if self.send_at is None or self.send_at <= self.created_at:
            return self.created_at
        return None


@dataclass
class SweepResult:
    enqueued: int = 0  # scheduled messages whose time came
    requeued: int = 0  # messages whose task was lost
    unknown: int = 0  # messages left `sending` by a dead worker
    waiting: int = 0  # messages read that are still waiting


def messages_sweep(*, now: datetime | None = None) -> SweepResult:
    """Settle dead hand-offs, enqueue due and lost messages, move the marks (beat, every
    10 s). See the module docstring. A sweep holds the mark's row: a second one meanwhile
    (beat firing again while the first runs) returns at once."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.MESSAGE_SWEEP_GRACE_SECONDS)
    result = SweepResult()
    _settle_dead_leases(now=now)
    ready.drain_kick()
    SweepMark.objects.get_or_create(name=MARK)
    with transaction.atomic():
        mark = SweepMark.objects.select_for_update(skip_locked=True).filter(name=MARK).first()
        if mark is None:
            return result  # another sweep is running
        scan = _Scan(now=now, grace=grace, result=result)
        low_send_at = _sweep_scheduled(scan, mark)
        low_id = _sweep_by_id(scan, mark)
        if scan.out:
            ids = [row.id for row in scan.out]
            MessageRequest.objects.filter(pk__in=ids).update(queued_at=now)
            task_enqueue_on_commit(DELIVER_MESSAGE, *((r.campaign_id, r.id) for r in scan.out))
        mark.low_id = max(low_id, mark.low_id)
        if mark.low_send_at is None or low_send_at > (mark.low_send_at, mark.low_send_at_id):
            mark.low_send_at, mark.low_send_at_id = low_send_at
        mark.save()
    if result.enqueued or result.requeued or result.unknown:
        # A lost task is worth a warning (the broker or a worker failed); one line a sweep,
        # however many, with ids only.
        logger.log(
            logging.WARNING if result.requeued else logging.INFO,
            "messages sweep enqueued=%s requeued=%s unknown=%s waiting=%s low_id=%s first=%s",
            result.enqueued, result.requeued, result.unknown, result.waiting, mark.low_id,
            scan.out[0].id if scan.out else None,
        )  # fmt: skip
    return result


_T = Campaign.Kind.TRANSACTIONAL


class _Scan:
    """What one sweep knows (the live leases, the queue's length) and what it found."""

    def __init__(self, *, now: datetime, grace: timedelta, result: SweepResult) -> None:
        self.now, self.grace, self.result = now, grace, result
        self.live = _live_leases(now=now)
        self.queued = _waiting_in_hand_off()
        self.seen: set[int] = set()  # read by the send_at mark this sweep
        self.out: list[_Row] = []  # to enqueue

    def check(self, row: _Row) -> bool:
        return _check(
            row, now=self.now, grace=self.grace, live=self.live, queued=self.queued,
            out=self.out, r=self.result,
        )  # fmt: skip


def _sweep_scheduled(scan: _Scan, mark: SweepMark) -> tuple[datetime, int]:
    """Scheduled messages due by now, from the send_at mark (send_at, id), through the partial
    index on send_at; returns the new mark: the first still waiting, or what the grace keeps
    (a row committed late may have a send_at just behind now)."""
    bound = (scan.now - scan.grace, 0)
    after = None if mark.low_send_at is None else (mark.low_send_at, mark.low_send_at_id - 1)
    waiting: list[tuple[datetime, int]] = []
    read = 0
    while True:
        rows = _rows(scheduled_page(now=scan.now, after=after))
        for row in rows:
            if row.kind != _T:
                continue  # a job's row: the job's sweeper's
            scan.seen.add(row.id)
            if scan.check(row):
                waiting.append((row.send_at, row.id))
        read += len(rows)
        if rows:
            after = (rows[-1].send_at, rows[-1].id)
        if len(rows) < SWEEP_PAGE:
            break
        if read >= SWEEP_MAX_ROWS:  # the rest once the first are answered
            bound = min(bound, (after[0], after[1] + 1))
            break
    return min([*waiting, bound])


def _sweep_by_id(scan: _Scan, mark: SweepMark) -> int:
    """Every message from the id mark (transactional or not: the mark passes a job's rows);
    returns the new mark: the first still waiting or young."""
    now = scan.now
    held: list[int] = []
    after = mark.low_id - 1
    read = 0
    while True:
        rows = _rows(by_id_page(after=after))
        for row in rows:
            if row.kind != _T:
                continue
            young = row.created_at > now - scan.grace  # may hide an uncommitted row below it
            if row.send_at is not None and row.send_at > now:
                waiting = False  # waits for its time: the send_at mark's
            elif row.id in scan.seen:
                waiting = row.status in WAITING
            else:
                waiting = scan.check(row)
            if waiting or young:
                held.append(row.id)
        read += len(rows)
        if rows:
            after = rows[-1].id
        if len(rows) < SWEEP_PAGE or read >= SWEEP_MAX_ROWS:
            break
    return min([*held, after + 1])


def scheduled_page(*, now: datetime, after: tuple[datetime, int] | None) -> QuerySet:
    """The next page of scheduled requests due by `now`, after (send_at, id): through the
    partial index on send_at."""
    due = MessageRequest.objects.filter(send_at__isnull=False, send_at__lte=now)
    if after is not None:
        at, pk = after
        due = due.filter(Q(send_at__gt=at) | Q(send_at=at, pk__gt=pk))
    return due.order_by("send_at", "pk").values_list("pk", "send_at", "queued_at")[:SWEEP_PAGE]


def by_id_page(*, after: int) -> QuerySet:
    """The next page of requests (any kind) after this id, by MessageRequest's primary key."""
    return (
        MessageRequest.objects.filter(pk__gt=after)
        .order_by("pk")
        .values_list("pk", "send_at", "queued_at")[:SWEEP_PAGE]
    )


def _rows(page: QuerySet) -> list[_Row]:
    """The page's messages with their ledger rows, read one primary-key lookup per id on
    PostgreSQL (infra.db.pg_lookup): as a join, a planner that thought the ledger or the
    requests small could scan the whole ledger every 10 s."""
    requests = list(page)
    if not requests:
        return []
    ids = [request[0] for request in requests]
    columns = ("id", "campaign_id", "status", "created_at", "updated_at")
    if connection.vendor == "postgresql":
        found = pg_lookup(table=Notification._meta.db_table, key="id", ids=ids, columns=columns)
    else:  # SQLite (the demo)
        found = Notification.objects.filter(pk__in=ids).values_list(*columns)
    ledger = {row[0]: row[1:] for row in found}
    streams = {row[0] for row in ledger.values()}
    kinds = dict(Campaign.objects.filter(pk__in=streams).values_list("pk", "kind"))
    return [
        _Row(pk, campaign_id, kinds[campaign_id], status, created_at, updated_at, send_at, queued)
        for pk, send_at, queued in requests
        if pk in ledger
        for campaign_id, status, created_at, updated_at in [ledger[pk]]
    ]


def _check(row: _Row, *, now, grace, live, queued, out: list[_Row], r: SweepResult) -> bool:
    """What a due message needs: nothing (answered, or in hands that will answer), its first
    enqueue (its time came), another (its task was lost) or `unknown` (its hand-off died).
    True while it is still waiting."""
    if row.status not in WAITING:
        return False
    r.waiting += 1
    if any(first <= row.id <= last for first, last in live.get(row.campaign_id, ())):
        return True  # a batch runs for it, or a retry is due
    if row.status == N.SENDING:
        # No lease: its batch died, and its lease was settled or lost.
        if row.updated_at < now - leases.LEASE_TIMEOUT:
            r.unknown += flag_unknown(row.campaign_id, [row.id])
        return True
    enqueued_at = row.enqueued_at
    if enqueued_at is None:
        r.enqueued += 1  # its time has come
        out.append(row)
    elif enqueued_at < now - grace and (queued == 0 or enqueued_at < now - REQUEUE_BUSY_AFTER):
        r.requeued += 1
        out.append(row)
    return True


def _waiting_in_hand_off() -> int | None:
    """Messages (or tasks) waiting to be taken: the transactional queue's and the ready
    list's; None if either cannot be told (then only REQUEUE_BUSY_AFTER requeues)."""
    queued, listed = queue_length("transactional"), ready.ready_length()
    return None if queued is None or listed is None else queued + listed


def _live_leases(*, now: datetime) -> dict[int, list[tuple[int, int]]]:
    """The id ranges live leases of the streams cover, by stream (running batches, retries
    due). A drain's batch covers the span of its popped ids, which may hold other rows of its
    stream, e.g. a scheduled one: that waits for the lease to go (the batch's seconds, or its
    retry's backoff). Ranges, not ids: a span may cross a campaign's freeze (its ids are
    taken from the same sequence), tens of thousands of ids."""
    covered: dict[int, list[tuple[int, int]]] = {}
    for campaign_id, first_id, last_id in BatchLease.objects.filter(
        campaign__kind=_T, heartbeat_at__gte=now - leases.LEASE_TIMEOUT
    ).values_list("campaign_id", "first_id", "last_id"):
        covered.setdefault(campaign_id, []).append((first_id, last_id))
    return covered


def _settle_dead_leases(*, now: datetime) -> None:
    """The streams' dead leases: their `sending` rows → unknown, then the leases go."""
    dead = (
        BatchLease.objects.filter(campaign__kind=_T, heartbeat_at__lt=now - leases.LEASE_TIMEOUT)
        .values_list("campaign_id", flat=True)
        .distinct()
    )
    for campaign_id in sorted(set(dead)):
        batches_settle_dead(campaign_id=campaign_id, now=now)

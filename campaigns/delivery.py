"""Handing a campaign's recipients to SES: the one place that sends campaign mail.

A batch owns an id range of a campaign's ledger under a lease it keeps alive
(campaigns.leases) and claims each SES call's rows right before the call, so a crash strands
only the rows of calls in flight, which the sweeper makes `unknown`: the at-most-once promise.
The steps are _Batch.run's; what each answer and each failure comes to is in docs/DATAFLOW.md.
"""

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db import connection as db_connection
from django.utils import timezone

from campaigns import leases
from campaigns.addresses import address_sendable
from campaigns.counters import CounterName, counters_add
from campaigns.ledger import (
    ClaimedRow,
    ledger_claim,
    ledger_pending_ids,
    ledger_release_claim,
    ledger_transition,
)
from campaigns.messages import campaign_compiled_template
from campaigns.models import Campaign, Notification
from campaigns.ratelimit import (
    BULK,
    TRANSACTIONAL,
    BaseRateLimiter,
    RateLimitUnavailable,
    SendPlan,
    ses_rate_limiter,
)
from campaigns.senders import GroupOutcome, Sender, sender_for
from campaigns.services import campaign_fail_sending, campaign_transition
from campaigns.simulator import simulated_events_enqueue, simulated_rate_limiter
from templates_app.language import TemplateSyntaxError
from templates_app.services import CompiledTemplate

logger = logging.getLogger(__name__)

N = Notification.Status
# How often a running batch re-reads its campaign's status (pause/cancel), in seconds.
STATUS_CHECK_SECONDS = 1.0
# After a throttled call the batch pauses this long, doubling while SES keeps throttling
# (a call accepted resets it); past THROTTLE_BUDGET_SECONDS of pauses it leaves its rows to a
# retry of the task, which backs off further (campaigns.tasks).
THROTTLE_PAUSE_SECONDS = 0.5
THROTTLE_PAUSE_MAX_SECONDS = 8.0
THROTTLE_BUDGET_SECONDS = 60.0
# How long a batch waits for PostgreSQL or Redis to come back before it gives up (its rows
# in flight then go to the sweeper).
OUTAGE_WAIT_SECONDS = 600.0
OUTAGE_PAUSE_MAX_SECONDS = 5.0
# A batch stops claiming after this long and leaves the rest of its range to a retry, so no
# task runs near its time limit (at a sandbox's 1 recipient/s a batch of 500 needs 9 minutes).
BATCH_MAX_SECONDS = 300.0

RETRY_THROTTLED, RETRY_TIME_UP, RETRY_UNAVAILABLE = "throttled", "time up", "unavailable"

_DATABASE_OUTAGES = (OperationalError, InterfaceError)


@dataclass
class BatchResult:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    released: int = 0
    # Why rows of the range are left for a retry of the task ("" for none): RETRY_THROTTLED
    # (SES kept throttling, or no send slot came in time), RETRY_TIME_UP (the batch ran
    # BATCH_MAX_SECONDS), RETRY_UNAVAILABLE (Redis stayed away).
    retry: str = ""


def deliver_batch(
    *, campaign_id: int, first_id: int, last_id: int, ids: Sequence[int] | None = None
) -> BatchResult:
    """Send the `created` rows of a campaign's id range (see the module docstring); with `ids`
    (sorted, within the range), only those rows: a batch of a stream's messages
    (campaigns.ready), whose range may hold other rows of the stream that are not its own."""
    campaign = _wait_for_database(
        lambda: Campaign.objects.defer("template_snapshot").get(pk=campaign_id)
    )
    if campaign.status != Campaign.Status.SENDING:
        return BatchResult()  # paused or cancelled: leave the rows; resume enqueues them again
    # Before the lease: a bad setting fails with nothing taken.
    limiter, plan = _rate_limiter_for(campaign)
    compiled = _compiled_or_fail(campaign)
    if compiled is None:
        return BatchResult()
    sender = _sender_or_pause(campaign, compiled)
    if sender is None:
        return BatchResult()
    batch = _Batch(campaign, sender, limiter, plan, first_id, last_id, ids)
    batch.take_lease()
    batch.run()
    # Only once every claimed row has its answer: on an exception the lease stays, stops
    # beating, and the sweeper settles the rows the batch left `sending`.
    batch.drop_lease()
    batch.log_result()
    return batch.result


def _rate_limiter_for(campaign: Campaign) -> tuple[BaseRateLimiter, SendPlan]:
    """The shared SES rate's lane for the campaign's kind (transactional streams take their
    priority share: campaigns.ratelimit); none for a test key's, which never reach SES."""
    if campaign.test_mode:
        return simulated_rate_limiter()
    return ses_rate_limiter(TRANSACTIONAL if campaign.kind == Campaign.Kind.TRANSACTIONAL else BULK)


def _compiled_or_fail(campaign: Campaign) -> CompiledTemplate | None:
    """The campaign's compiled template; None once one that does not compile has failed the
    campaign (it fails the same way for every batch)."""
    try:
        return campaign_compiled_template(campaign)
    except Exception as err:  # noqa: BLE001 (it fails the same way for every batch)
        logger.exception("campaign %s template does not compile", campaign.pk)
        reason = (
            f"The template does not parse: {err}"
            if isinstance(err, TemplateSyntaxError)
            else f"The template could not be compiled ({type(err).__name__})."
        )
        campaign_fail_sending(campaign_id=campaign.pk, reason=reason)
        return None


def _sender_or_pause(campaign: Campaign, compiled: CompiledTemplate) -> Sender | None:
    """The campaign's way of sending; None once a From that cannot be sent has paused the
    campaign (the start checks it; this is the backstop)."""
    try:
        return sender_for(campaign, compiled)
    except ValueError:
        campaign_transition(
            campaign_id=campaign.pk,
            from_statuses={Campaign.Status.SENDING},
            to=Campaign.Status.PAUSED,
            reason="The sender address cannot be used.",
        )
        return None


class _Batch:
    """One run of deliver_batch: its range, its calls in flight and what they came to."""

    def __init__(
        self,
        campaign: Campaign,
        sender: Sender,
        limiter: BaseRateLimiter,
        plan: SendPlan,
        first_id: int,
        last_id: int,
        ids: Sequence[int] | None = None,
    ) -> None:
        self.campaign = campaign
        self.sender = sender
        self.limiter = limiter
        self.plan = plan
        self.first_id, self.last_id = first_id, last_id
        self.ids = None if ids is None else list(ids)  # only these rows of the range
        self.pending: deque[int] = deque()  # ids still `created`, in order (read as it starts)
        self.result = BatchResult()
        self.heartbeat: leases.Heartbeat | None = None
        self.watch = _StatusWatch(campaign.pk)
        self.in_flight: deque[Future[GroupOutcome]] = deque()
        self.throttle_pause = 0.0
        self.throttle_spent = 0.0
        self.started = time.monotonic()

    # -- the lease -------------------------------------------------------------------------

    def take_lease(self) -> None:
        """Hold the range under a lease the batch beats while it runs (campaigns.leases)."""
        lease_id = _wait_for_database(
            lambda: leases.lease_take(
                campaign_id=self.campaign.pk, first_id=self.first_id, last_id=self.last_id
            )
        )
        self.heartbeat = leases.Heartbeat(lease_id)

    def drop_lease(self) -> None:
        lease_id = self.heartbeat.lease_id
        _wait_for_database(lambda: leases.lease_drop(lease_id=lease_id))

    def log_result(self) -> None:
        result = self.result
        logger.info(
            "batch campaign=%s path=%s ids=%s-%s claimed=%s sent=%s failed=%s unknown=%s "
            "skipped=%s released=%s retry=%s",
            self.campaign.pk, self.campaign.send_path, self.first_id, self.last_id,
            result.claimed, result.sent, result.failed, result.unknown, result.skipped,
            result.released, result.retry,
        )  # fmt: skip

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Send call by call while the batch may go on, then answer every call made.

        Each call: may the batch go on, make room, take a send slot, claim the call's rows
        (committed), set aside the rows that must not go (skipped, or an address SES cannot
        take), submit (campaigns.senders); then collect and record every answer."""
        self._read_pending()
        try:
            going = True
            while True:
                while going and self.pending:
                    going = self._send_next()
                if not self.in_flight:
                    break
                # Every call made is answered and recorded; rows it gives back (throttled)
                # are pending again, and sent while the batch is still going.
                self._record_oldest()
        finally:
            self._cancel_unsent()
        self._settle_if_cancelled()

    def _send_next(self) -> bool:
        """Claim and hand off the next call's rows; False once the batch must stop claiming
        (paused, cancelled, out of time or of patience with SES, no send slot)."""
        if not self._may_go_on():
            return False
        self._make_room()
        if not self._take_slot(min(self.plan.group_size, len(self.pending))):
            return False
        rows = self._claim(self.plan.group_size)
        sendable = self._set_aside(rows) if rows else []  # none: a batch enqueued twice
        if sendable:
            self._submit(sendable)
        return True

    def _read_pending(self) -> None:
        """The range's rows still `created`, in order: what this batch has to send."""
        self.pending.extend(
            self._wait_for_database(
                lambda: ledger_pending_ids(
                    campaign_id=self.campaign.pk,
                    first_id=self.first_id,
                    last_id=self.last_id,
                    ids=self.ids,
                )
            )
        )

    def _may_go_on(self) -> bool:
        self.beat()
        if not self.watch.check():
            return False
        if self.throttle_spent > THROTTLE_BUDGET_SECONDS:
            self.result.retry = RETRY_THROTTLED  # SES keeps throttling: back off harder
            return False
        if time.monotonic() - self.started > BATCH_MAX_SECONDS:
            self.result.retry = RETRY_TIME_UP
            return False
        if self.throttle_pause:
            self._sleep(self.throttle_pause)
            self.throttle_spent += self.throttle_pause
        return True

    def _make_room(self) -> None:
        """Record the calls that have answered; wait while the pipeline is full."""
        while self.in_flight and (
            len(self.in_flight) >= self.sender.in_flight or self.in_flight[0].done()
        ):
            self._record_oldest()

    def _take_slot(self, n: int) -> bool:
        """A send slot for n recipients (Redis: waits while it is away). False: none in time,
        as good as SES throttling us."""
        deadline = time.monotonic() + OUTAGE_WAIT_SECONDS
        pause = 0.5
        while True:
            try:
                if self.limiter.acquire(
                    n, timeout=settings.SES_SEND_RATE_MAX_WAIT_SECONDS, on_wait=self._waiting
                ):
                    return self.watch.check()  # paused while it waited: the slot goes unused
                self.result.retry = RETRY_THROTTLED
                return False
            except RateLimitUnavailable:
                if time.monotonic() > deadline:
                    self.result.retry = RETRY_UNAVAILABLE
                    return False
                self._sleep(pause)
                pause = min(pause * 2, OUTAGE_PAUSE_MAX_SECONDS)

    def _claim(self, n: int) -> list[ClaimedRow]:
        """Claim the next n pending rows (committed before any hand-off)."""
        ids = [self.pending.popleft() for _ in range(min(n, len(self.pending)))]
        claimed_at = timezone.now()
        claim = functools.partial(
            ledger_claim,
            campaign_id=self.campaign.pk,
            contact_list_id=self.campaign.contact_list_id,
            first_id=ids[0],
            last_id=ids[-1],
            claimed_at=claimed_at,
            attributes=self.sender.attributes,
            personalised=self.campaign.kind != Campaign.Kind.CAMPAIGN,
            # A batch of messages claims exactly its own (the range may hold others'); a
            # campaign's batch, its whole pending range (fewer parameters, same rows).
            ids=None if self.ids is None else ids,
        )
        try:
            rows = claim()
        except _DATABASE_OUTAGES:
            # The claim may or may not have happened: give back exactly what it could have
            # taken (its stamp), then claim again once the database answers.
            self._wait_for_database(
                lambda: ledger_release_claim(
                    campaign_id=self.campaign.pk,
                    first_id=ids[0],
                    last_id=ids[-1],
                    claimed_at=claimed_at,
                    ids=None if self.ids is None else ids,
                )
            )
            rows = self._wait_for_database(claim)
        self.result.claimed += len(rows)
        return rows

    def _set_aside(self, rows: list[ClaimedRow]) -> list[ClaimedRow]:
        """Record the rows that must not be sent (skipped; failed: an address SES cannot
        take); the rest to send."""
        outcome = GroupOutcome()
        skipped: dict[str, list[int]] = {}
        sendable = []
        for row in rows:
            if row.skip_reason:
                skipped.setdefault(row.skip_reason, []).append(row.id)
            elif not address_sendable(row.email):
                outcome.errors[row.id] = ("failed", "address not sendable")
            else:
                sendable.append(row)
        for reason, ids in skipped.items():
            self._write(lambda ids=ids, reason=reason: self._move(ids, N.SKIPPED, reason))
        if outcome.errors:
            self._record(outcome)
        return sendable

    def _submit(self, rows: list[ClaimedRow]) -> None:
        """Hand the claimed rows to the sender; their call goes from a pool thread."""
        self.in_flight.append(self.sender.submit(rows))

    def _record_oldest(self) -> None:
        """Wait for the oldest call in flight and record its answers."""
        self._record(self._collect(self.in_flight.popleft()))

    def _cancel_unsent(self) -> None:
        for future in self.in_flight:  # (only after an exception) never sent: cancel
            future.cancel()

    def _collect(self, future: Future[GroupOutcome]) -> GroupOutcome:
        """One call's outcome, keeping the lease and the status watch alive meanwhile."""
        while True:
            try:
                return future.result(timeout=max(STATUS_CHECK_SECONDS, 0.05))
            except FutureTimeout:
                self.beat()
                self.watch.check()

    # -- recording -------------------------------------------------------------------------

    def _record(self, outcome: GroupOutcome) -> None:
        """Write one call's answers to the ledger, each move with the report counter it adds
        to (the accepted rows in one statement); waits for the database if it is away.

        Accepted → sent with its MessageId; refused → failed; throttled or never connected →
        created again, sent after a pause; SES refusing the campaign → created again and the
        campaign paused; anything else (5xx, timeout, reset) → unknown: SES may have sent it,
        so it is never re-sent automatically."""
        campaign_id = self.campaign.pk
        if outcome.accepted:
            self.result.sent += self._write(
                lambda: ledger_transition(
                    ids=list(outcome.accepted),
                    from_statuses={N.SENDING},
                    to=N.SENT,
                    message_ids=outcome.accepted,
                    counter=(campaign_id, CounterName.SENT),
                )
            )
            self.throttle_pause = 0.0
            if self.campaign.test_mode:  # what SES would have told us next (simulated)
                simulated_events_enqueue(notification_ids=list(outcome.accepted))
        if outcome.errors:
            by_outcome: dict[tuple[str, str], list[int]] = {}
            for nid, verdict_reason in outcome.errors.items():
                by_outcome.setdefault(verdict_reason, []).append(nid)
            for (verdict, reason), ids in by_outcome.items():
                to = N.FAILED if verdict == "failed" else N.UNKNOWN
                moved = self._write(
                    lambda ids=ids, to=to, reason=reason: self._move(ids, to, reason)
                )
                logger.warning(
                    "send %s campaign=%s rows=%s reason=%s", to, campaign_id, moved, reason
                )
        if outcome.retry:
            self.result.released += self._write(
                lambda: ledger_transition(
                    ids=outcome.retry, from_statuses={N.SENDING}, to=N.CREATED
                )
            )
            self.pending = deque(sorted({*self.pending, *outcome.retry}))  # sent again later
            if not outcome.accepted:  # SES is throttling us: pause, doubling while it lasts
                self.throttle_pause = min(
                    max(self.throttle_pause * 2, THROTTLE_PAUSE_SECONDS), THROTTLE_PAUSE_MAX_SECONDS
                )
        if outcome.campaign_refused:
            self._pause_campaign(outcome.campaign_refused)

    def _move(self, ids: Sequence[int], to: str, reason: str) -> int:
        """Move sending rows to `to` with the reason and count them, in one transaction."""
        with transaction.atomic():
            moved = ledger_transition(ids=ids, from_statuses={N.SENDING}, to=to, reason=reason)
            counters_add(campaign_id=self.campaign.pk, deltas={str(to): moved})
        if to == N.FAILED:
            self.result.failed += moved
        elif to == N.UNKNOWN:
            self.result.unknown += moved
        elif to == N.SKIPPED:
            self.result.skipped += moved
        return moved

    def _pause_campaign(self, reason: str) -> None:
        paused = self._write(
            lambda: campaign_transition(
                campaign_id=self.campaign.pk,
                from_statuses={Campaign.Status.SENDING},
                to=Campaign.Status.PAUSED,
                reason=f"SES refused the campaign's messages: {reason}",
            )
        )
        if paused:
            logger.warning("campaign %s paused: SES refused its messages", self.campaign.pk)
        self.watch.stop.set()

    def _settle_if_cancelled(self) -> None:
        """Rows given back after a cancel (throttled meanwhile) would wait for a batch that
        never comes: skip them as the cancel did the rest."""
        if not self.result.released:
            return
        status = self._write(
            lambda: Campaign.objects.values_list("status", flat=True).get(pk=self.campaign.pk)
        )
        if status == Campaign.Status.CANCELLED:
            ids = self._write(
                lambda: list(
                    Notification.objects.filter(
                        campaign_id=self.campaign.pk,
                        id__range=(self.first_id, self.last_id),
                        status=N.CREATED,
                        **({} if self.ids is None else {"id__in": self.ids}),
                    ).values_list("id", flat=True)
                )
            )
            if ids:
                self._write(lambda: self._move_created(ids))

    def _move_created(self, ids: list[int]) -> int:
        with transaction.atomic():
            moved = ledger_transition(
                ids=ids, from_statuses={N.CREATED}, to=N.SKIPPED, reason="campaign cancelled"
            )
            counters_add(campaign_id=self.campaign.pk, deltas={CounterName.SKIPPED: moved})
        self.result.skipped += moved
        return moved

    # -- waiting ---------------------------------------------------------------------------

    def beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.beat()

    def _waiting(self) -> None:
        self.beat()
        self.watch.check()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
            self.beat()

    def _write(self, write: Callable[[], "T"]) -> "T":
        return self._wait_for_database(write)

    def _wait_for_database(self, call: Callable[[], "T"]) -> "T":
        return _wait_for_database(call, on_wait=self._sleep)


T = TypeVar("T")


def _wait_for_database(
    call: Callable[[], T], *, on_wait: Callable[[float], None] = time.sleep
) -> T:
    """call(), and again while PostgreSQL is away (a restart, a failover), for up to
    OUTAGE_WAIT_SECONDS: the connection is dropped and made again each time."""
    deadline = time.monotonic() + OUTAGE_WAIT_SECONDS
    pause = 0.2
    while True:
        try:
            return call()
        except _DATABASE_OUTAGES as err:
            if db_connection.in_atomic_block or time.monotonic() > deadline:
                raise
            logger.warning("database unavailable (%s): waiting", type(err).__name__)
            db_connection.close()
            on_wait(pause)
            pause = min(pause * 2, OUTAGE_PAUSE_MAX_SECONDS)


class _StatusWatch:
    """A running batch's view of its campaign's status: re-read at most once per
    STATUS_CHECK_SECONDS (one indexed read); once it is no longer `sending`, `stop` is set."""

    def __init__(self, campaign_id: int) -> None:
        self.campaign_id = campaign_id
        self.status = Campaign.Status.SENDING
        self.stop = threading.Event()
        self._checked = time.monotonic()

    def check(self) -> bool:
        """True while the campaign is still sending."""
        if not self.stop.is_set() and time.monotonic() - self._checked >= STATUS_CHECK_SECONDS:
            self._checked = time.monotonic()
            try:
                self.status = Campaign.objects.values_list("status", flat=True).get(
                    pk=self.campaign_id
                )
            except DatabaseError:
                return True  # the next write waits for the database; read again after
            if self.status != Campaign.Status.SENDING:
                self.stop.set()
        return not self.stop.is_set()

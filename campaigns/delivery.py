"""Handing a campaign's recipients to SES: the one place that sends campaign mail.

A batch owns an id range of a campaign's ledger. Under a lease it keeps alive (campaigns.leases),
it repeats, one SES call at a time: take a send slot, claim the call's rows (created → sending,
committed), set aside the rows that must not go (skipped, or an address SES cannot take), send
the rest (SendBulkEmail with the campaign's stored template, or one SendEmail each on the
rendered path) and record every answer:

- accepted → sent, with the SES MessageId;
- refused (the whole call with a definite 4xx, or one entry alone) → failed, with the reason;
  a call refused for its request's content is split in halves until the culprit is alone;
- throttled, or the connection never opened → given back (created) and sent again after a
  pause; SES refusing the whole campaign (template gone, sending paused) → given back and
  the campaign paused with the reason;
- anything else (a 5xx, a timeout, a reset connection) → unknown: SES may have sent it, so it
  is flagged and never re-sent automatically.

Rows are claimed right before their call, so a crash can strand only the rows of calls in
flight: they stay `sending` under a lease that stops beating, and the sweeper makes them
unknown within seconds. That is the at-most-once promise. A batch that loses PostgreSQL or
Redis waits for them, holding its answers, instead of failing.
"""

import functools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db import connection as db_connection
from django.utils import timezone

from campaigns import leases
from campaigns.addresses import InvalidAddress, address_sendable, sender_header
from campaigns.counters import counters_add
from campaigns.ledger import (
    ClaimedRow,
    ledger_claim,
    ledger_pending_ids,
    ledger_release_claim,
    ledger_transition,
)
from campaigns.models import Campaign, Notification
from campaigns.ratelimit import BaseRateLimiter, RateLimitUnavailable, SendPlan, ses_rate_limiter
from campaigns.services import campaign_fail_sending, campaign_transition
from campaigns.ses import (
    BulkEntry,
    SesError,
    SesOutcomeUnknown,
    SesRejected,
    SesThrottled,
    SesUnreachable,
    ses_client,
)
from campaigns.tokens import ONE_CLICK_HEADER, tokens_for, unsubscribe_urls_for
from templates_app.language import TemplateSyntaxError
from templates_app.render import merge_value
from templates_app.services import CompiledTemplate, template_compile, template_snapshot

logger = logging.getLogger(__name__)

N = Notification.Status
TOKEN_FIELD = "_t"  # noqa: S105 (a template field name, not a secret)
# A footer's {{ unsubscribe_url }}: filled in per recipient, never read from the contact.
UNSUBSCRIBE_FIELD = "unsubscribe_url"
BUILTIN_FIELDS = frozenset({TOKEN_FIELD, UNSUBSCRIBE_FIELD})
# Template fields that are contact columns; any other field is read from `attributes`.
CONTACT_FIELDS = frozenset({"email", "first_name", "last_name"})
# SES calls in flight at once per worker process: SendBulkEmail groups on the bulk path,
# SendEmail messages on the rendered path.
BULK_IN_FLIGHT = 4
RENDERED_CONCURRENCY = 8
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
# SES refusals of a whole call that name its request's content (an address or header it
# cannot parse): the call is split to find the entry at fault. SES validates an address in
# one entry by refusing the whole call ("Illegal address"), as it does for a SendEmail.
CONTENT_REFUSALS = frozenset(
    {"BadRequestException", "InvalidParameterValue", "ValidationException", "400"}
)
# Refusals that are about the campaign or the account, never one recipient: failing every
# recipient for them would spend the audience; the campaign is paused with the reason.
CAMPAIGN_REFUSALS = frozenset(
    {
        "NotFoundException",  # the stored template is gone
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "MessageRejected",  # bulk only: the same template for all (an unverified sender)
    }
)

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


@dataclass
class GroupOutcome:
    """What became of one SES call's rows: {id: MessageId} accepted, {id: (verdict, reason)}
    refused or unknown, ids to give back (throttled), and a campaign-level refusal."""

    accepted: dict[int, str] = field(default_factory=dict)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    retry: list[int] = field(default_factory=list)
    # SES refused the campaign itself (CAMPAIGN_REFUSALS): the reason to pause it with.
    campaign_refused: str = ""

    def merge(self, other: "GroupOutcome") -> "GroupOutcome":
        self.accepted.update(other.accepted)
        self.errors.update(other.errors)
        self.retry.extend(other.retry)
        self.campaign_refused = self.campaign_refused or other.campaign_refused
        return self


def deliver_batch(*, campaign_id: int, first_id: int, last_id: int) -> BatchResult:
    """Send the `created` rows of a campaign's id range (see the module docstring)."""
    campaign = _wait_for_database(
        lambda: Campaign.objects.defer("template_snapshot").get(pk=campaign_id)
    )
    if campaign.status != Campaign.Status.SENDING:
        return BatchResult()  # paused or cancelled: leave the rows; resume enqueues them again
    # Before the lease: a bad setting fails with nothing taken.
    limiter, plan = ses_rate_limiter()
    try:
        compiled = campaign_compiled_template(campaign)
    except Exception as err:  # noqa: BLE001 (it fails the same way for every batch)
        logger.exception("campaign %s template does not compile", campaign_id)
        reason = (
            f"The template does not parse: {err}"
            if isinstance(err, TemplateSyntaxError)
            else f"The template could not be compiled ({type(err).__name__})."
        )
        campaign_fail_sending(campaign_id=campaign_id, reason=reason)
        return BatchResult()
    try:
        batch = _Batch(campaign, compiled, limiter, plan, first_id, last_id)
    except ValueError:  # its From cannot be sent (the start checks it; this is the backstop)
        campaign_transition(
            campaign_id=campaign_id,
            from_statuses={Campaign.Status.SENDING},
            to=Campaign.Status.PAUSED,
            reason="The sender address cannot be used.",
        )
        return BatchResult()
    lease_id = _wait_for_database(
        lambda: leases.lease_take(campaign_id=campaign_id, first_id=first_id, last_id=last_id)
    )
    batch.heartbeat = leases.Heartbeat(lease_id)
    batch.run()
    # Only once every claimed row has its answer: on an exception the lease stays, stops
    # beating, and the sweeper settles the rows the batch left `sending`.
    _wait_for_database(lambda: leases.lease_drop(lease_id=lease_id))
    result = batch.result
    logger.info(
        "batch campaign=%s path=%s ids=%s-%s claimed=%s sent=%s failed=%s unknown=%s "
        "skipped=%s released=%s retry=%s",
        campaign_id, campaign.send_path, first_id, last_id, result.claimed, result.sent,
        result.failed, result.unknown, result.skipped, result.released, result.retry,
    )  # fmt: skip
    return result


class _Batch:
    """One run of deliver_batch: its range, its calls in flight and what they came to."""

    def __init__(
        self,
        campaign: Campaign,
        compiled: CompiledTemplate,
        limiter: BaseRateLimiter,
        plan: SendPlan,
        first_id: int,
        last_id: int,
    ) -> None:
        self.campaign = campaign
        self.compiled = compiled
        self.limiter = limiter
        self.plan = plan
        self.first_id, self.last_id = first_id, last_id
        self.pending: deque[int] = deque()  # ids still `created`, in order (read as it starts)
        self.result = BatchResult()
        self.heartbeat: leases.Heartbeat | None = None
        self.watch = _StatusWatch(campaign.pk)
        self.sender = _RenderedSender(self) if _rendered(campaign) else _BulkSender(self)
        self.in_flight: deque[Future] = deque()
        self.throttle_pause = 0.0
        self.throttle_spent = 0.0
        self.started = time.monotonic()

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.pending.extend(
            self._wait_for_database(
                lambda: ledger_pending_ids(
                    campaign_id=self.campaign.pk, first_id=self.first_id, last_id=self.last_id
                )
            )
        )
        try:
            going = True
            while True:
                while going and self.pending:
                    going = self._send_next()
                if not self.in_flight:
                    break
                # Every call made is answered and recorded; rows it gives back (throttled)
                # are pending again, and sent while the batch is still going.
                self._record(self._collect(self.in_flight.popleft()))
        finally:
            for future in self.in_flight:  # (only after an exception) never sent: cancel
                future.cancel()
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
            self.in_flight.append(self.sender.submit(sendable))
        return True

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
            self._record(self._collect(self.in_flight.popleft()))

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

    def _collect(self, future: Future) -> GroupOutcome:
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
        to (the accepted rows in one statement); waits for the database if it is away."""
        campaign_id = self.campaign.pk
        if outcome.accepted:
            self.result.sent += self._write(
                lambda: ledger_transition(
                    ids=list(outcome.accepted),
                    from_statuses={N.SENDING},
                    to=N.SENT,
                    message_ids=outcome.accepted,
                    counter=(campaign_id, "sent"),
                )
            )
            self.throttle_pause = 0.0
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
            counters_add(campaign_id=self.campaign.pk, deltas={"skipped": moved})
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


# -- the two ways of sending -------------------------------------------------------------------


class _BulkSender:
    """SendBulkEmail calls with the stored template, a few in flight (pool threads)."""

    def __init__(self, batch: _Batch) -> None:
        self.batch = batch
        self.in_flight = BULK_IN_FLIGHT
        campaign, compiled = batch.campaign, batch.compiled
        self.plan = _merge_plan(compiled.fields)
        self.attributes = self.plan[1]
        self.from_address = _from_address(campaign.from_email or settings.DEFAULT_FROM_EMAIL)
        self.template_name = campaign.ses_template_name
        self.headers = tuple(_shared_headers(campaign).items())

    def submit(self, rows: list[ClaimedRow]) -> Future:
        return _group_pool().submit(self.send, rows)

    def send(self, rows: list[ClaimedRow]) -> GroupOutcome:
        """Runs in a pool thread: no database."""
        outcome = GroupOutcome()
        entries, sent_rows = [], []
        plan = self.plan
        ids = [row.id for row in rows]
        for row, token, url in zip(rows, tokens_for(ids), unsubscribe_urls_for(ids), strict=True):
            try:
                data = orjson.dumps(_merge_data(row, plan, token, url)).decode()
            except Exception as err:  # noqa: BLE001 (one recipient's data: that recipient fails)
                outcome.errors[row.id] = (
                    "failed",
                    f"could not build the message: {type(err).__name__}",
                )
                continue
            entries.append(BulkEntry(row.email, data, (("List-Unsubscribe", f"<{url}>"),)))
            sent_rows.append(row)
        if entries:
            outcome.merge(self._call(sent_rows, entries))
        return outcome

    def _call(self, rows: list[ClaimedRow], entries: list[BulkEntry]) -> GroupOutcome:
        try:
            results = ses_client().send_bulk(
                from_address=self.from_address,
                template_name=self.template_name,
                entries=entries,
                headers=self.headers,
                configuration_set=settings.SES_CONFIGURATION_SET,
            )
        except (SesThrottled, SesUnreachable):
            return GroupOutcome(retry=[row.id for row in rows])
        except SesRejected as err:
            if err.code in CONTENT_REFUSALS and len(rows) > 1:
                # Nothing was sent: find the entry at fault by halves (≤ 2n - 1 calls).
                half = len(rows) // 2
                return self._call(rows[:half], entries[:half]).merge(
                    self._call(rows[half:], entries[half:])
                )
            if err.code in CAMPAIGN_REFUSALS:
                return GroupOutcome(retry=[row.id for row in rows], campaign_refused=_reason(err))
            return GroupOutcome(errors={row.id: ("failed", _reason(err)) for row in rows})
        except SesOutcomeUnknown as err:
            return GroupOutcome(errors={row.id: ("unknown", _reason(err)) for row in rows})
        except Exception as err:  # noqa: BLE001 (a bug: the call may have gone, so unknown)
            logger.exception("bulk send failed campaign=%s", self.batch.campaign.pk)
            reason = f"internal error: {type(err).__name__}"
            return GroupOutcome(errors={row.id: ("unknown", reason) for row in rows})
        if len(results) != len(rows):  # (the clients check it; this path must never guess)
            reason = "SES answered for a different number of recipients"
            return GroupOutcome(errors={row.id: ("unknown", reason) for row in rows})
        outcome = GroupOutcome()
        for row, result in zip(rows, results, strict=True):
            if result.accepted:
                outcome.accepted[row.id] = result.message_id
            elif result.retryable:
                outcome.retry.append(row.id)
            else:
                reason = f"{result.status}: {result.error}" if result.error else result.status
                outcome.errors[row.id] = ("failed", reason[:300])
        return outcome


class _RenderedSender:
    """One SendEmail per recipient, rendered here, several in flight (pool threads)."""

    def __init__(self, batch: _Batch) -> None:
        self.batch = batch
        self.in_flight = 1  # a group's messages already go in parallel
        campaign, compiled = batch.campaign, batch.compiled
        self.plan = _merge_plan(compiled.fields)
        self.attributes = self.plan[1]
        self.from_address = _from_address(campaign.from_email or settings.DEFAULT_FROM_EMAIL)
        self.headers = _shared_headers(campaign)

    def submit(self, rows: list[ClaimedRow]) -> Future:
        # From a thread of its own: the batch keeps its lease alive while the group goes.
        return _group_pool().submit(self.send, rows)

    def send(self, rows: list[ClaimedRow]) -> GroupOutcome:
        outcome = GroupOutcome()
        for part in _rendered_pool().map(self._send_one, rows):
            outcome.merge(part)
        return outcome

    def _send_one(self, row: ClaimedRow) -> GroupOutcome:
        """Runs in a pool thread: no database."""
        [token], [url] = tokens_for([row.id]), unsubscribe_urls_for([row.id])
        try:
            rendered = self.batch.compiled.render(_merge_data(row, self.plan, token, url))
            if "\r" in rendered.subject or "\n" in rendered.subject:
                raise ValueError("a line break in the subject")
        except Exception as err:  # noqa: BLE001 (one recipient's message: that recipient fails)
            return GroupOutcome(
                errors={row.id: ("failed", f"could not render the message: {type(err).__name__}")}
            )
        headers = (*self.headers.items(), ("List-Unsubscribe", f"<{url}>"))
        try:
            message_id = ses_client().send_simple(
                from_address=self.from_address,
                to=row.email,
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                headers=headers,
                configuration_set=settings.SES_CONFIGURATION_SET,
            )
        except (SesThrottled, SesUnreachable):
            return GroupOutcome(retry=[row.id])  # this one again later; the rest go on
        except SesRejected as err:
            if err.code in CAMPAIGN_REFUSALS - {"MessageRejected"}:
                return GroupOutcome(retry=[row.id], campaign_refused=_reason(err))
            return GroupOutcome(errors={row.id: ("failed", _reason(err))})
        except SesOutcomeUnknown as err:
            return GroupOutcome(errors={row.id: ("unknown", _reason(err))})
        except Exception as err:  # noqa: BLE001 (a bug: the call may have gone, so unknown)
            logger.exception("send failed campaign=%s", self.batch.campaign.pk)
            return GroupOutcome(
                errors={row.id: ("unknown", f"internal error: {type(err).__name__}")}
            )
        return GroupOutcome(accepted={row.id: message_id})


def _rendered(campaign: Campaign) -> bool:
    return campaign.send_path == Campaign.SendPath.RENDERED


def _reason(err: SesError) -> str:
    """The ledger's reason for an SES refusal: its code and SES's words (no address)."""
    text = f"{err.code}: {err.reason}" if err.code and err.code not in err.reason else err.reason
    return text[:300]


@functools.lru_cache(maxsize=64)
def _from_address(value: str) -> str:
    """A campaign's From as SES takes it (campaigns.addresses.sender_header, once per value);
    ValueError if it cannot be sent."""
    try:
        return sender_header(value)
    except InvalidAddress as err:
        raise ValueError("the sender cannot be used") from err


@functools.cache
def _group_pool() -> ThreadPoolExecutor:
    # Bulk path: a few SendBulkEmail calls in flight per process, so the wait for one answer
    # (~10 ms for 50 entries) overlaps with preparing the next group.
    return ThreadPoolExecutor(max_workers=BULK_IN_FLIGHT, thread_name_prefix="ses-bulk")


@functools.cache
def _rendered_pool() -> ThreadPoolExecutor:
    # SendEmail carries one recipient: a few calls in flight at once hide the round-trip
    # (~5 ms) behind the rendering of the next ones.
    return ThreadPoolExecutor(max_workers=RENDERED_CONCURRENCY, thread_name_prefix="ses-send")


def campaign_compiled_template(campaign: Campaign) -> CompiledTemplate:
    """The campaign's frozen template, compiled with tracking (once per process and content).

    A started campaign's SES template name names its content (campaign id and a hash of the
    compiled template), so the snapshot is read and compiled once per name and process."""
    name, base_url = campaign.ses_template_name, settings.TRACKING_BASE_URL
    compiled = _compiled_by_name.get((campaign.pk, name, base_url)) if name else None
    if compiled is None:
        snapshot = campaign.template_snapshot or template_snapshot(template=campaign.template)
        compiled = _compile_snapshot(json.dumps(snapshot, sort_keys=True), base_url)
        if name and campaign.template_snapshot:
            if len(_compiled_by_name) >= 32:  # a long-lived worker sends many campaigns
                _compiled_by_name.clear()
            _compiled_by_name[(campaign.pk, name, base_url)] = compiled
    return compiled


_compiled_by_name: dict[tuple[int, str, str], CompiledTemplate] = {}


@functools.lru_cache(maxsize=32)
def _compile_snapshot(snapshot_json: str, tracking_base_url: str) -> CompiledTemplate:
    return template_compile(template=json.loads(snapshot_json), tracking_base_url=tracking_base_url)


MergePlan = tuple[tuple[str, ...], tuple[str, ...], bool]


def _merge_data(
    row: ClaimedRow, plan: MergePlan, token: str, unsubscribe_url: str
) -> dict[str, str]:
    """One recipient's template data: the contact's fields (as services.contact_merge_data
    gives them), their tracking token, and their unsubscribe URL where the template shows it
    (built-ins last: a contact attribute of the same name cannot replace them). Built
    directly from the claimed row, the template's fields split once (_merge_plan)."""
    columns, attributes, shows_unsubscribe = plan
    data = {name: merge_value(getattr(row, name)) for name in columns}
    for name in attributes:
        data[name] = merge_value(row.attributes.get(name))
    data[TOKEN_FIELD] = token
    if shows_unsubscribe:
        data[UNSUBSCRIBE_FIELD] = unsubscribe_url
    return data


@functools.lru_cache(maxsize=64)
def _merge_plan(fields: frozenset[str]) -> MergePlan:
    """A template's fields as (contact columns, attributes, shows the unsubscribe URL)."""
    own = fields - BUILTIN_FIELDS
    return (
        tuple(sorted(own & CONTACT_FIELDS)),
        tuple(sorted(own - CONTACT_FIELDS)),
        UNSUBSCRIBE_FIELD in fields,
    )


def _shared_headers(campaign) -> dict[str, str]:
    """The headers every message of the campaign carries alike: the campaign id (for SES
    event routing and the local endpoint's counts) and RFC 8058's List-Unsubscribe-Post."""
    return {"X-Campaign": str(campaign.pk), **ONE_CLICK_HEADER}


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


def ses_client_open() -> None:
    """Open the process's SES client as a worker process starts (campaigns.tasks)."""
    ses_client()

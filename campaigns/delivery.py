"""Handing a campaign's recipients to SES: the one place that sends campaign mail.

A batch claims its rows (created → sending, committed), then sends them in groups of up to 50
through anymail's Amazon SES backend (SendBulkEmail with the campaign's stored template), and
records each answer:

- accepted → sent, with the SES MessageId;
- a definite refusal (SES answered 4xx, or refused that entry) → failed, with the reason;
- throttled, or the connection never opened → released back to created and retried later;
- anything else (a 5xx, a timeout, a reset connection) → unknown: SES may have sent it, so it
  is flagged and never re-sent automatically. A crash mid-group leaves rows `sending`, which the
  sweeper turns into unknown after the lease. That is the at-most-once promise.
"""

import functools
import json
import logging
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from anymail.exceptions import AnymailAPIError
from anymail.message import AnymailMessage
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError
from django.conf import settings
from django.core.mail import get_connection
from django.db import transaction

from campaigns.ledger import ClaimedRow, ledger_claim, ledger_transition
from campaigns.models import Campaign, Notification
from campaigns.ratelimit import ses_rate_limiter, ses_send_rate
from campaigns.ses_backend import PlainMergeData
from templates_app.language import merge_value
from templates_app.services import CompiledTemplate, template_compile, template_snapshot
from tracking.counters import counters_add
from tracking.tokens import token_for, tokens_for
from tracking.unsubscribe import (
    ONE_CLICK_HEADER,
    list_unsubscribe_header_for_url,
    unsubscribe_url,
    unsubscribe_urls_for,
)

logger = logging.getLogger(__name__)

N = Notification.Status
# SES SendBulkEmail takes at most 50 entries per call.
GROUP_SIZE = 50
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
THROTTLE_CODES = {"TooManyRequestsException", "Throttling", "ThrottlingException"}


@dataclass
class BatchResult:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    released: int = 0
    # Set when SES throttled us (or could not be reached): the caller retries after a pause.
    retry: bool = False


def classify_send_error(err: AnymailAPIError) -> str:
    """ "retry", "failed" or "unknown" for an error from one SES send call."""
    cause = err.__cause__
    if isinstance(cause, ClientError):
        code = cause.response.get("Error", {}).get("Code", "")
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in THROTTLE_CODES or status == 429:
            return "retry"
        # SES answered 4xx: it looked at the request and refused it; nothing was sent.
        return "failed" if 400 <= status < 500 else "unknown"
    if isinstance(cause, ConnectTimeoutError | EndpointConnectionError):
        return "retry"  # no connection was made: SES never saw the request
    if cause is None and err.response is not None:
        return "failed"  # SES answered, refusing every entry for the same reason
    return "unknown"


def deliver_batch(*, campaign_id: int, first_id: int, last_id: int) -> BatchResult:
    result = BatchResult()
    # Without its template snapshot (~50 kB of JSON, read from TOAST: ~0.8 ms of PostgreSQL
    # per batch at 1M, pg_stat_statements): campaign_compiled_template reads it once.
    campaign = Campaign.objects.defer("template_snapshot").get(pk=campaign_id)
    if campaign.status != Campaign.Status.SENDING:
        return result  # paused or cancelled: leave the rows; resume enqueues them again
    limiter = ses_rate_limiter()  # before the claim: a bad setting fails with nothing claimed

    compiled = campaign_compiled_template(campaign)
    fields = compiled.fields - BUILTIN_FIELDS
    with transaction.atomic():
        claimed = ledger_claim(
            campaign_id=campaign_id,
            contact_list_id=campaign.contact_list_id,
            first_id=first_id,
            last_id=last_id,
            attributes=sorted(fields - CONTACT_FIELDS),
        )
    result.claimed = len(claimed)
    if not claimed:
        return result

    by_reason: dict[str, list[int]] = {}
    for row in claimed:
        if row.skip_reason:
            by_reason.setdefault(row.skip_reason, []).append(row.id)
    for reason, ids in by_reason.items():
        with transaction.atomic():
            moved = ledger_transition(
                ids=ids, from_statuses={N.SENDING}, to=N.SKIPPED, reason=reason
            )
            counters_add(campaign_id=campaign_id, deltas={"skipped": moved})
        result.skipped += moved
    sendable = [row for row in claimed if not row.skip_reason]

    rendered = campaign.send_path == Campaign.SendPath.RENDERED
    # Below 50 recipients/s (new SES accounts: 1 to 14), a group of 50 would be several
    # seconds' worth in one call: send at most one second's worth per call.
    group_size = min(GROUP_SIZE, max(1, int(ses_send_rate())))
    in_flight: deque[Future] = deque()
    throttled = False
    # Pause and cancel take effect between groups, not only between batches: at a low SES
    # rate (14/s) a batch of 500 takes ~35 s.
    watch = _StatusWatch(campaign_id)

    def collect(future: Future) -> bool:  # one group's answer, watching the status meanwhile
        while True:
            try:
                answer = future.result(timeout=max(STATUS_CHECK_SECONDS, 0.05))
            except FutureTimeout:
                watch.check()
            else:
                return _record(campaign, answer, result)

    for start in range(0, len(sendable), group_size):
        if not watch.check():
            break
        group = sendable[start : start + group_size]
        if rendered:  # its messages are already sent in parallel, group by group
            outcome = _paced(limiter, _send_rendered, campaign, compiled, group, watch.stop)
            throttled = _record(campaign, outcome, result)
        else:
            in_flight.append(
                _group_pool().submit(
                    _paced, limiter, _send_bulk, campaign, compiled, group, watch.stop
                )
            )
            while len(in_flight) >= BULK_IN_FLIGHT or (in_flight and in_flight[0].done()):
                throttled |= collect(in_flight.popleft())
        if throttled:
            break
    while in_flight:  # every call made is answered and recorded, throttled or not
        throttled |= collect(in_flight.popleft())
    status = watch.status
    if throttled or status != Campaign.Status.SENDING:
        # Give back every row of the batch not yet answered. Throttled: the task retries
        # later. Paused: the task retries too, and finds the campaign paused (nothing to do)
        # or resumed (claims are guarded, so it never races the resume's own batches).
        # Cancelled: nothing will retry, so the rows are recorded as skipped.
        rest = [row.id for row in sendable]
        if Campaign.objects.filter(pk=campaign_id, status=Campaign.Status.CANCELLED).exists():
            with transaction.atomic():
                moved = ledger_transition(
                    ids=rest, from_statuses={N.SENDING}, to=N.SKIPPED, reason="campaign cancelled"
                )
                counters_add(campaign_id=campaign_id, deltas={"skipped": moved})
            result.skipped += moved
        else:
            result.released = ledger_transition(ids=rest, from_statuses={N.SENDING}, to=N.CREATED)
            result.retry = True
    logger.info(
        "batch campaign=%s path=%s ids=%s-%s claimed=%s sent=%s failed=%s unknown=%s "
        "skipped=%s released=%s",
        campaign_id, campaign.send_path, first_id, last_id, result.claimed, result.sent,
        result.failed, result.unknown, result.skipped, result.released,
    )  # fmt: skip
    return result


_ses_connection = None
_ses_connection_lock = threading.Lock()


def ses_connection():
    """One open anymail SES backend per process, kept for its life: opening one builds a boto3
    client, which loads botocore's service models (~0.2-0.7 s of CPU, measured). boto3
    clients are thread-safe, and each send builds its own payload. Opened under a lock: the
    bulk pool's threads all ask at once, and each opened one of its own (sampled: a quarter
    of a worker's CPU in the first 10 s of a send). Worker processes open it as they start
    (campaigns.tasks)."""
    global _ses_connection
    if _ses_connection is None:
        with _ses_connection_lock:
            if _ses_connection is None:
                connection = get_connection(settings.SES_EMAIL_BACKEND)
                connection.open()
                _ses_connection = connection
    return _ses_connection


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


def _merge_data(
    row: ClaimedRow, compiled: CompiledTemplate, token: str, unsubscribe_url: str
) -> dict[str, str]:
    """One recipient's template data: the contact's fields (as services.contact_merge_data
    gives them), their tracking token, and their unsubscribe URL where the template shows it
    (built-ins last: a contact attribute of the same name cannot replace them). Built
    directly from the claimed row, the template's fields split once (_merge_plan): the bulk
    path's loop (token, data, header) costs ~3.6 µs a recipient this way, ~5.9 through
    contact_merge_data (timeit, 50 recipients)."""
    columns, attributes, shows_unsubscribe = _merge_plan(compiled.fields)
    data = {name: merge_value(getattr(row, name)) for name in columns}
    for name in attributes:
        data[name] = merge_value(row.attributes.get(name))
    data[TOKEN_FIELD] = token
    if shows_unsubscribe:
        data[UNSUBSCRIBE_FIELD] = unsubscribe_url
    return data


@functools.lru_cache(maxsize=64)
def _merge_plan(fields: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
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


def _headers(campaign, url: str) -> dict[str, str]:
    """Every campaign message's own headers: _shared_headers and the recipient's
    List-Unsubscribe for its unsubscribe `url` (the bulk path sends the shared ones once per
    call)."""
    return {**_shared_headers(campaign), **list_unsubscribe_header_for_url(url)}


class _StatusWatch:
    """A running batch's view of its campaign's status: re-read at most once per
    STATUS_CHECK_SECONDS (one indexed read); once it is no longer `sending`, `stop` is set, so
    groups already handed to the pool but still waiting for their send slot stay unsent."""

    def __init__(self, campaign_id: int) -> None:
        self.campaign_id = campaign_id
        self.status = Campaign.Status.SENDING
        self.stop = threading.Event()
        self._checked = time.monotonic()

    def check(self) -> bool:
        """True while the campaign is still sending."""
        if not self.stop.is_set() and time.monotonic() - self._checked >= STATUS_CHECK_SECONDS:
            self._checked = time.monotonic()
            self.status = Campaign.objects.values_list("status", flat=True).get(pk=self.campaign_id)
            if self.status != Campaign.Status.SENDING:
                self.stop.set()
        return not self.stop.is_set()


def _paced(limiter, send, campaign, compiled, group, stop: threading.Event) -> "GroupOutcome":
    """Wait for the group's send slot, then send it. The slot is taken right before the call,
    on the thread that makes it, so calls reach SES in slot order and at slot time (taken
    earlier, a call queued behind others would arrive late and bunch up with later ones).
    One Redis round-trip; no slot within the max wait, or no Redis: like SES throttling.
    `stop` set meanwhile (the campaign was paused or cancelled): the group is not sent, and
    its rows are given back like throttled ones."""
    if not limiter.acquire(len(group), timeout=settings.SES_SEND_RATE_MAX_WAIT_SECONDS):
        return GroupOutcome(throttled=True)
    if stop.is_set():
        return GroupOutcome(throttled=True)
    return send(campaign, compiled, group)


@dataclass
class GroupOutcome:
    """What SES answered for one group: {id: MessageId}, {id: (verdict, reason)}, throttled."""

    accepted: dict[int, str] = field(default_factory=dict)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    throttled: bool = False


def _send_bulk(campaign, compiled: CompiledTemplate, group) -> GroupOutcome:
    """One SendBulkEmail with the stored template. Runs in a pool thread: no database."""
    by_email = {row.email: row.id for row in group}
    message = AnymailMessage(
        from_email=campaign.from_email or settings.DEFAULT_FROM_EMAIL,
        to=list(by_email),
        connection=ses_connection(),
    )
    message.template_id = campaign.ses_template_name
    message.merge_global_data = {}
    # The headers every recipient's message carries alike go once per call (SES: the
    # template's Headers), each recipient's own in their entry (SES: ReplacementHeaders).
    message.extra_headers = _shared_headers(campaign)
    merge_data = message.merge_data = PlainMergeData()  # every value through merge_value
    merge_headers = message.merge_headers = {}
    ids = [row.id for row in group]
    for row, token, url in zip(group, tokens_for(ids), unsubscribe_urls_for(ids), strict=True):
        merge_data[row.email] = _merge_data(row, compiled, token, url)
        merge_headers[row.email] = list_unsubscribe_header_for_url(url)
    try:
        message.send()
    except AnymailAPIError as err:
        verdict = classify_send_error(err)
        if verdict == "retry":
            return GroupOutcome(throttled=True)
        return GroupOutcome(errors={nid: (verdict, _reason(err)) for nid in by_email.values()})

    outcome = GroupOutcome()
    for email, status in message.anymail_status.recipients.items():
        nid = by_email[email]
        if status.status == "queued" and status.message_id:
            outcome.accepted[nid] = status.message_id
        else:
            outcome.errors[nid] = ("failed", "refused by SES")
    return outcome


def _send_rendered(campaign, compiled: CompiledTemplate, group) -> GroupOutcome:
    """One SendEmail per recipient, rendered here, several in flight. No database."""
    from_email = campaign.from_email or settings.DEFAULT_FROM_EMAIL

    def send_one(row: ClaimedRow) -> tuple[int, str, str]:
        nid = row.id
        url = unsubscribe_url(notification_id=nid)
        rendered = compiled.render(_merge_data(row, compiled, token_for(nid), url))
        message = AnymailMessage(
            subject=rendered.subject,
            body=rendered.text,
            from_email=from_email,
            to=[row.email],
            headers=_headers(campaign, url),
            connection=ses_connection(),
        )
        if rendered.html:
            message.attach_alternative(rendered.html, "text/html")
        try:
            message.send()
        except AnymailAPIError as err:
            return nid, classify_send_error(err), _reason(err)
        return nid, "sent", message.anymail_status.message_id

    outcome = GroupOutcome()
    for nid, verdict, value in _rendered_pool().map(send_one, group):
        if verdict == "sent":
            outcome.accepted[nid] = value
        elif verdict == "retry":
            outcome.throttled = True  # this row stays `sending` until the batch releases it
        else:
            outcome.errors[nid] = (verdict, value)
    return outcome


def _record(campaign, outcome: GroupOutcome, result: BatchResult) -> bool:
    """Write one group's answers to the ledger, each move with the report counter it adds to
    (the accepted rows in one statement, the refused ones in one transaction); True if SES
    throttled (part of) it."""
    result.sent += ledger_transition(
        ids=list(outcome.accepted),
        from_statuses={N.SENDING},
        to=N.SENT,
        message_ids=outcome.accepted,
        counter=(campaign.pk, "sent"),
    )
    if outcome.errors:
        by_outcome: dict[tuple[str, str], list[int]] = {}
        for nid, verdict_reason in outcome.errors.items():
            by_outcome.setdefault(verdict_reason, []).append(nid)
        counts = {"failed": 0, "unknown": 0}
        with transaction.atomic():
            for (verdict, reason), ids in by_outcome.items():
                to = N.FAILED if verdict == "failed" else N.UNKNOWN
                moved = ledger_transition(ids=ids, from_statuses={N.SENDING}, to=to, reason=reason)
                counts[to] += moved
                logger.warning(
                    "send %s campaign=%s rows=%s reason=%s", to, campaign.pk, moved, reason
                )
            counters_add(campaign_id=campaign.pk, deltas=counts)
        result.failed += counts["failed"]
        result.unknown += counts["unknown"]
    return outcome.throttled


_ADDRESS = re.compile(r"[^\s<>(),;:\"']+@[^\s<>(),;:\"']+")


def _reason(err: AnymailAPIError) -> str:
    """A short reason from an SES error, with any address blanked out: SES puts addresses in
    some messages ("…identities failed the check: a@b.example") and reasons reach the logs."""
    cause = err.__cause__
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        text = f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
    elif cause is not None:
        text = type(cause).__name__
    else:
        text = str(err).split("\n", 1)[0]
    return _ADDRESS.sub("<address>", text)[:300]

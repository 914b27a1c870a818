"""The two ways a batch sends a call's claimed rows, and what SES's answers come to.

Bulk (the default: SendBulkEmail with the stored template) and rendered (one SendEmail per
recipient, rendered here); a transactional stream goes on the bulk path once its stored
template is made (StreamSender: the worker makes it, and falls back to rendering where the
stored template cannot serve); and, for a test key's messages (Campaign.test_mode), simulated:
rendered the same way, then answered as SES would accept it, without any call
(campaigns.simulator). Each runs in pool threads and touches no database: it answers with a
GroupOutcome, which the batch (campaigns.delivery) records.
"""

import functools
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from django.conf import settings

from campaigns.addresses import InvalidAddress, sender_header
from campaigns.ledger import ClaimedRow
from campaigns.messages import carries_list_unsubscribe, merge_data, merge_plan, shared_headers
from campaigns.models import Campaign
from campaigns.ses import (
    BulkEntry,
    SesError,
    SesOutcomeUnknown,
    SesRejected,
    SesThrottled,
    SesUnreachable,
    ses_client,
    ses_template_ensure,
)
from campaigns.simulator import simulated_message_id
from campaigns.tokens import tokens_for, unsubscribe_urls_for
from templates_app.services import CompiledTemplate

logger = logging.getLogger(__name__)

# SES calls in flight at once per worker process: SendBulkEmail groups on the bulk path,
# SendEmail messages on the rendered path.
BULK_IN_FLIGHT = 4
RENDERED_CONCURRENCY = 8
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


class Sender(Protocol):
    """What a batch needs of a way of sending."""

    # How many of its calls a batch keeps in flight at once.
    in_flight: int
    # The contact attributes its messages read (the claim loads only these).
    attributes: tuple[str, ...]

    def submit(self, rows: list[ClaimedRow]) -> "Future[GroupOutcome]":
        """Send the rows from a pool thread; the future's result is their outcome."""
        ...


def sender_for(campaign: Campaign, compiled: CompiledTemplate) -> Sender:
    """The campaign's way of sending; ValueError if its From cannot be sent. A test key's
    messages are simulated whatever the path: they never reach SES."""
    if campaign.test_mode:
        return SimulatedSender(campaign, compiled)
    if campaign.kind == Campaign.Kind.TRANSACTIONAL and stream_template_stored(campaign, compiled):
        return StreamSender(campaign, compiled)
    if campaign.send_path == Campaign.SendPath.RENDERED:
        return RenderedSender(campaign, compiled)
    return BulkSender(campaign, compiled)


def ses_client_open() -> None:
    """Open the process's SES client as a worker process starts (campaigns.tasks)."""
    ses_client()


class BulkSender:
    """SendBulkEmail calls with the stored template, a few in flight (pool threads)."""

    def __init__(self, campaign: Campaign, compiled: CompiledTemplate) -> None:
        self.campaign_id = campaign.pk
        self.in_flight = BULK_IN_FLIGHT
        self.plan = merge_plan(compiled.fields)
        self.attributes = self.plan[1]
        self.from_address = _from_address(campaign.from_email or settings.DEFAULT_FROM_EMAIL)
        self.template_name = campaign.ses_template_name
        self.headers = tuple(shared_headers(campaign).items())
        self.list_unsubscribe = carries_list_unsubscribe(campaign)
        self.configuration_set = settings.SES_CONFIGURATION_SET

    def submit(self, rows: list[ClaimedRow]) -> "Future[GroupOutcome]":
        return _group_pool().submit(self.send, rows)

    def _addressing(self, rows: list[ClaimedRow]) -> tuple[list[str], list[str], list[str]]:
        return recipient_addressing(rows)

    def send(self, rows: list[ClaimedRow]) -> GroupOutcome:
        """Runs in a pool thread: no database."""
        outcome = GroupOutcome()
        entries, sent_rows = [], []
        plan = self.plan
        addresses, tokens, urls = self._addressing(rows)
        for row, to, token, url in zip(rows, addresses, tokens, urls, strict=True):
            try:
                data = orjson.dumps(merge_data(row, plan, token, url)).decode()
            except Exception as err:  # noqa: BLE001 (one recipient's data: that recipient fails)
                outcome.errors[row.id] = (
                    "failed",
                    f"could not build the message: {type(err).__name__}",
                )
                continue
            own = (("List-Unsubscribe", f"<{url}>"),) if self.list_unsubscribe else ()
            entries.append(BulkEntry(to, data, own))
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
                configuration_set=self.configuration_set,
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
                return self._refused_whole(rows, err)
            return GroupOutcome(errors={row.id: ("failed", _reason(err)) for row in rows})
        except SesOutcomeUnknown as err:
            return GroupOutcome(errors={row.id: ("unknown", _reason(err)) for row in rows})
        except Exception as err:  # noqa: BLE001 (a bug: the call may have gone, so unknown)
            logger.exception("bulk send failed campaign=%s", self.campaign_id)
            reason = f"internal error: {type(err).__name__}"
            return GroupOutcome(errors={row.id: ("unknown", reason) for row in rows})
        return self._results(rows, results)

    def _refused_whole(self, rows: list[ClaimedRow], err: SesRejected) -> GroupOutcome:
        """SES refused the call for the campaign's sake: the rows go back, the campaign pauses."""
        return GroupOutcome(retry=[row.id for row in rows], campaign_refused=_reason(err))

    def _results(self, rows: list[ClaimedRow], results: list) -> GroupOutcome:
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


# Refusals of a stream's SendBulkEmail that say nothing of its messages rendered one by one:
# the stored template is gone, or SES refuses the one template for all (an unverified sender,
# which pauses a campaign; nothing resumes a stream). Nothing was sent: the rows go by
# SendEmail, as before the stream's template was stored, each with its own answer.
STREAM_RENDER_INSTEAD = frozenset({"NotFoundException", "MessageRejected"})
# A stream whose template SES would not store is sent rendered; asked again after this long.
STREAM_TEMPLATE_RETRY_SECONDS = 60.0
_stored: set[str] = set()  # stream templates stored at SES, by name (this process)
_store_failed: dict[str, float] = {}  # name → when to ask SES again


def stream_template_stored(campaign: Campaign, compiled: CompiledTemplate) -> bool:
    """Whether the transactional stream's stored template is at SES, storing it (once per
    process and name: names carry the content's hash, and storing one twice is harmless);
    False, and the stream is sent rendered, if SES will not store it now."""
    name = campaign.ses_template_name
    if name in _stored:
        return True
    if not name or time.monotonic() < _store_failed.get(name, 0.0):
        return False
    content = compiled.handlebars()
    try:
        ses_template_ensure(
            name=name, subject=content["Subject"], html=content["Html"], text=content["Text"]
        )
    except SesError as err:
        logger.warning(
            "stream %s template not stored (%s): sent rendered", campaign.pk, type(err).__name__
        )
        _store_failed[name] = time.monotonic() + STREAM_TEMPLATE_RETRY_SECONDS
        return False
    _stored.add(name)
    return True


class StreamSender(BulkSender):
    """A transactional stream's messages on the bulk path: up to 50 a SendBulkEmail with the
    stream's stored template, each entry's template data carrying its personalisation (the
    claim reads it first). A whole-call refusal in STREAM_RENDER_INSTEAD sends the rows
    rendered instead, so each message ends as it would have on the rendered path."""

    def __init__(self, campaign: Campaign, compiled: CompiledTemplate) -> None:
        super().__init__(campaign, compiled)
        self.rendered = RenderedSender(campaign, compiled)

    def _refused_whole(self, rows: list[ClaimedRow], err: SesRejected) -> GroupOutcome:
        if err.code not in STREAM_RENDER_INSTEAD:
            return super()._refused_whole(rows, err)
        if err.code == "NotFoundException":
            _stored.discard(self.template_name)  # the next batch stores it again
        return self.rendered.send(rows)


class RenderedSender:
    """One SendEmail per recipient, rendered here, several in flight (pool threads)."""

    def __init__(self, campaign: Campaign, compiled: CompiledTemplate) -> None:
        self.campaign_id = campaign.pk
        self.compiled = compiled
        self.in_flight = 1  # a group's messages already go in parallel
        self.plan = merge_plan(compiled.fields)
        self.attributes = self.plan[1]
        self.from_address = _from_address(campaign.from_email or settings.DEFAULT_FROM_EMAIL)
        self.headers = shared_headers(campaign)
        self.list_unsubscribe = carries_list_unsubscribe(campaign)
        self.configuration_set = settings.SES_CONFIGURATION_SET

    def submit(self, rows: list[ClaimedRow]) -> "Future[GroupOutcome]":
        # From a thread of its own: the batch keeps its lease alive while the group goes.
        return _group_pool().submit(self.send, rows)

    def _addressing(self, rows: list[ClaimedRow]) -> tuple[list[str], list[str], list[str]]:
        return recipient_addressing(rows)

    def send(self, rows: list[ClaimedRow]) -> GroupOutcome:
        outcome = GroupOutcome()
        for part in _rendered_pool().map(self._send_one, rows):
            outcome.merge(part)
        return outcome

    def _send_one(self, row: ClaimedRow) -> GroupOutcome:
        """Runs in a pool thread: no database."""
        [to], [token], [url] = self._addressing([row])
        try:
            rendered = self.compiled.render(merge_data(row, self.plan, token, url))
            if "\r" in rendered.subject or "\n" in rendered.subject:
                raise ValueError("a line break in the subject")
        except Exception as err:  # noqa: BLE001 (one recipient's message: that recipient fails)
            return GroupOutcome(
                errors={row.id: ("failed", f"could not render the message: {type(err).__name__}")}
            )
        headers = tuple(self.headers.items())
        if self.list_unsubscribe:
            headers += (("List-Unsubscribe", f"<{url}>"),)
        try:
            message_id = self._hand_off(to=to, rendered=rendered, headers=headers)
        except (SesThrottled, SesUnreachable):
            return GroupOutcome(retry=[row.id])  # this one again later; the rest go on
        except SesRejected as err:
            if err.code in CAMPAIGN_REFUSALS - {"MessageRejected"}:
                return GroupOutcome(retry=[row.id], campaign_refused=_reason(err))
            return GroupOutcome(errors={row.id: ("failed", _reason(err))})
        except SesOutcomeUnknown as err:
            return GroupOutcome(errors={row.id: ("unknown", _reason(err))})
        except Exception as err:  # noqa: BLE001 (a bug: the call may have gone, so unknown)
            logger.exception("send failed campaign=%s", self.campaign_id)
            return GroupOutcome(
                errors={row.id: ("unknown", f"internal error: {type(err).__name__}")}
            )
        return GroupOutcome(accepted={row.id: message_id})

    def _hand_off(self, *, to: str, rendered, headers: tuple) -> str:
        """Send one rendered message (SendEmail); its SES MessageId."""
        return ses_client().send_simple(
            from_address=self.from_address,
            to=to,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            headers=headers,
            configuration_set=self.configuration_set,
        )


class SimulatedSender(RenderedSender):
    """A test key's messages: built and rendered as the rendered path does (a message that
    cannot be built fails as it would live), then accepted with a `simulated-…` id instead
    of a call to SES. Nothing leaves the process; their SES events are simulated after the
    batch records them (campaigns.simulator)."""

    def _hand_off(self, *, to: str, rendered, headers: tuple) -> str:
        return simulated_message_id()


def recipient_addressing(rows: list[ClaimedRow]) -> tuple[list[str], list[str], list[str]]:
    """Each row's To, tracking token and unsubscribe URL. A sender asks through its
    `_addressing`, which a test send (campaigns.proofs) replaces: proof addresses, and links
    that name no notification."""
    ids = [row.id for row in rows]
    return [row.email for row in rows], tokens_for(ids), unsubscribe_urls_for(ids)


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
    # overlaps with preparing the next group.
    return ThreadPoolExecutor(max_workers=BULK_IN_FLIGHT, thread_name_prefix="ses-bulk")


@functools.cache
def _rendered_pool() -> ThreadPoolExecutor:
    # SendEmail carries one recipient: a few calls in flight at once hide the round-trip
    # behind the rendering of the next ones.
    return ThreadPoolExecutor(max_workers=RENDERED_CONCURRENCY, thread_name_prefix="ses-send")

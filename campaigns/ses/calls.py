"""The SES v2 calls both clients make: their parameters, built from the interface's arguments,
and their answers and errors read back. One rule for both clients, so they send the same
requests and raise the same exceptions for the same answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from campaigns.addresses import InvalidAddress, sender_header
from campaigns.ses.base import (
    BulkEntry,
    EntryResult,
    SesError,
    SesOutcomeUnknown,
    SesRejected,
    SesThrottled,
    SesUnreachable,
    blank_addresses,
)

# Error codes that mean "refused for its rate; nothing was done": SES v2 answers 429
# TooManyRequestsException, and its guide names ThrottlingException ("Maximum sending rate
# exceeded", "Daily message quota exceeded"). The rest are the codes botocore's standard
# retry mode reads as throttling (botocore.retries.standard), LimitExceededException included.
THROTTLE_CODES = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "BandwidthLimitExceeded",
        "SlowDown",
    }
)

_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,100}\Z")


# -- requests --------------------------------------------------------------------------------


def bulk_params(
    *,
    from_address: str,
    template_name: str,
    entries: Sequence[BulkEntry],
    headers: Sequence[tuple[str, str]],
    configuration_set: str | None,
) -> dict:
    """SendBulkEmail's parameters: one BulkEmailEntries item per entry, in order, each address
    exactly as given (SES answers entry i in BulkEmailEntryResults[i])."""
    template = {"TemplateName": template_name, "TemplateData": "{}"}
    if headers:
        template["Headers"] = [{"Name": name, "Value": value} for name, value in headers]
    params = {
        "FromEmailAddress": from_address_format(from_address),
        "DefaultContent": {"Template": template},
        "BulkEmailEntries": [
            {
                "Destination": {"ToAddresses": [to]},
                "ReplacementEmailContent": {
                    "ReplacementTemplate": {"ReplacementTemplateData": data}
                },
                "ReplacementHeaders": [{"Name": name, "Value": value} for name, value in own],
            }
            if own
            else {
                "Destination": {"ToAddresses": [to]},
                "ReplacementEmailContent": {
                    "ReplacementTemplate": {"ReplacementTemplateData": data}
                },
            }
            for to, data, own in entries
        ],
    }
    if configuration_set:
        params["ConfigurationSetName"] = configuration_set
    return params


def simple_params(
    *,
    from_address: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    headers: Sequence[tuple[str, str]],
    configuration_set: str | None,
) -> dict:
    """SendEmail's parameters with Content.Simple: SES builds the MIME message itself."""
    body = {}
    if text or not html:  # (an empty text part next to HTML says nothing)
        body["Text"] = {"Data": text, "Charset": "UTF-8"}
    if html:
        body["Html"] = {"Data": html, "Charset": "UTF-8"}
    simple = {"Subject": {"Data": subject, "Charset": "UTF-8"}, "Body": body}
    if headers:
        simple["Headers"] = [{"Name": name, "Value": value} for name, value in headers]
    params = {
        "FromEmailAddress": from_address_format(from_address),
        "Destination": {"ToAddresses": [to]},
        "Content": {"Simple": simple},
    }
    if configuration_set:
        params["ConfigurationSetName"] = configuration_set
    return params


def template_params(*, name: str, subject: str, html: str, text: str) -> dict:
    content = {"Subject": subject, "Html": html}
    if text:
        content["Text"] = text
    return {"TemplateName": name, "TemplateContent": content}


@functools.lru_cache(maxsize=256)
def from_address_format(value: str) -> str:
    """The From as SES takes it (7-bit), by the product's one sender rule
    (campaigns.addresses.sender_header: a non-ASCII name RFC 2047-encoded, an IDN domain in its
    IDNA form); SesRejected if it cannot be sent. Cached: a campaign sends every message from
    one From."""
    try:
        return sender_header(value)
    except InvalidAddress:
        raise SesRejected("the From address cannot be sent", code="InvalidFromAddress") from None


class SesClient:
    """What the pipeline calls. The two send calls are built and read here, by one rule for
    every implementation; an implementation supplies its transport (`_send`) and the rare
    calls. Implementations are thread-safe (a worker process shares one between its send
    threads) and raise only the four SesErrors."""

    def send_bulk(
        self,
        *,
        from_address: str,
        template_name: str,
        entries: Sequence[BulkEntry],
        headers: Sequence[tuple[str, str]] = (),
        configuration_set: str | None = None,
    ) -> list[EntryResult]:
        """One SendBulkEmail with a stored template: `headers` go to every entry's message
        (DefaultContent.Template.Headers). One result per entry, in the entries' order."""
        params = bulk_params(
            from_address=from_address,
            template_name=template_name,
            entries=entries,
            headers=headers,
            configuration_set=configuration_set,
        )
        return bulk_results(self._send("SendBulkEmail", params), len(entries))

    def send_simple(
        self,
        *,
        from_address: str,
        to: str,
        subject: str,
        text: str,
        html: str,
        headers: Sequence[tuple[str, str]] = (),
        configuration_set: str | None = None,
    ) -> str:
        """One SendEmail of Content.Simple (SES builds the MIME); returns its message id."""
        params = simple_params(
            from_address=from_address,
            to=to,
            subject=subject,
            text=text,
            html=html,
            headers=headers,
            configuration_set=configuration_set,
        )
        return message_id(self._send("SendEmail", params))

    def template_create(self, *, name: str, subject: str, html: str, text: str) -> None:
        """Create the stored template `name`; one that already exists is left as it is."""
        raise NotImplementedError

    def send_quota(self) -> SendQuota:
        """GetAccount's SendQuota (raises a SesError when SES cannot answer)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the calling thread's connection (the next call opens a new one)."""

    def _send(self, operation: str, params: dict) -> object:
        """Make the call (SendBulkEmail or SendEmail): its parsed answer, or a SesError."""
        raise NotImplementedError


# -- answers ---------------------------------------------------------------------------------


def bulk_results(answer: object, count: int) -> list[EntryResult]:
    """SendBulkEmail's BulkEmailEntryResults as EntryResults, by position. An answer that
    does not say, entry for entry, what happened to each is SesOutcomeUnknown."""
    results = []
    try:
        for result in answer["BulkEmailEntryResults"]:  # type: ignore[index]
            status, message_id, error = (
                result["Status"],
                result.get("MessageId"),
                result.get("Error"),
            )
            if not (
                type(status) is str
                and (message_id is None or type(message_id) is str)
                and (error is None or type(error) is str)
            ):
                raise TypeError("an entry result of the wrong shape")
            results.append(
                EntryResult(status, message_id, blank_addresses(error)[:300] if error else "")
            )
    except (KeyError, TypeError, AttributeError):
        raise SesOutcomeUnknown(
            "SendBulkEmail: the answer has no readable entry results", code="UnreadableAnswer"
        ) from None
    if len(results) != count:
        raise SesOutcomeUnknown(
            f"SendBulkEmail: {len(results)} results for {count} entries",
            code="ResultCountMismatch",
        )
    return results


def message_id(answer: object) -> str:
    """SendEmail's MessageId; an answer without one is SesOutcomeUnknown."""
    value = answer.get("MessageId") if isinstance(answer, Mapping) else None
    if not value or type(value) is not str:
        raise SesOutcomeUnknown("SendEmail: the answer has no MessageId", code="UnreadableAnswer")
    return value


class SendQuota(NamedTuple):
    """GetAccount's SendQuota: messages per 24 hours (-1: no limit), per second, and sent in
    the last 24 hours."""

    max_24_hour_send: float
    max_send_rate: float
    sent_last_24_hours: float


def send_quota(answer: object) -> SendQuota:
    """GetAccount's SendQuota; a SesOutcomeUnknown when the answer has none."""
    quota = answer.get("SendQuota") if isinstance(answer, Mapping) else None
    if not isinstance(quota, Mapping):
        raise SesOutcomeUnknown("GetAccount: the answer has no SendQuota", code="UnreadableAnswer")
    values = []
    for key in ("Max24HourSend", "MaxSendRate", "SentLast24Hours"):
        value = quota.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SesOutcomeUnknown(f"GetAccount: SendQuota has no {key}", code="UnreadableAnswer")
        values.append(float(value))
    return SendQuota(*values)


def answer_error(*, operation: str, code: str, status: int | None, message: str) -> SesError:
    """The exception for an error answer from SES: throttled (a rate code, or 429), rejected
    (any other 4xx: SES looked at the call and refused it) or outcome unknown (5xx, or
    anything else: SES may have acted on it). A 407 is not SES's but a forwarding proxy's,
    refusing the call before passing it on: unreachable. A code that is not an identifier
    (an odd endpoint's) is replaced by the status: codes go to logs as they are."""
    if not _ERROR_CODE.match(code):
        code = str(status or "UnknownError")
    reason = f"{operation}: {code}: {message}" if message else f"{operation}: {code}"
    if status == 407:
        return SesUnreachable(f"{operation}: the proxy refused the call", code=code, status=status)
    if status == 429 or code in THROTTLE_CODES:
        return SesThrottled(reason, code=code, status=status)
    if status is not None and 400 <= status < 500:
        return SesRejected(reason, code=code, status=status)
    return SesOutcomeUnknown(reason, code=code, status=status)

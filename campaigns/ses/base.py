"""The SES hand-off's vocabulary: what the send pipeline hands SES, and the answers it reads.

Every error is one of four SesErrors, each saying what the pipeline may do next (below). A
bulk call's answers are matched to its entries by position, never by address (SES may
rewrite one). Reasons and messages carry no address: they are blanked before an exception is
raised, so an exception's text may reach a log.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# SendBulkEmail takes at most 50 entries a call.
MAX_BULK_ENTRIES = 50

# BulkEmailEntryResult statuses after which nothing was sent to the entry and sending it
# again later is safe and worthwhile (SES's own rate or a passing fault).
RETRYABLE_ENTRY_STATUSES = frozenset({"ACCOUNT_THROTTLED", "TRANSIENT_FAILURE"})


class BulkEntry(NamedTuple):
    """One recipient of a SendBulkEmail call (a named tuple: one is built per recipient)."""

    to: str  # one addr-spec, as campaigns.addresses stores it
    template_data: str  # the entry's ReplacementTemplateData: a JSON object, as text
    headers: tuple[tuple[str, str], ...] = ()  # its ReplacementHeaders


class EntryResult(NamedTuple):
    """SES's answer for one entry: accepted (a message id) or refused alone (status, error)."""

    status: str  # SES's BulkEmailStatus: SUCCESS, MESSAGE_REJECTED, INVALID_PARAMETER, …
    message_id: str | None = None
    error: str = ""  # SES's text, addresses blanked

    @property
    def accepted(self) -> bool:
        return self.status == "SUCCESS" and bool(self.message_id)

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_ENTRY_STATUSES


class SesError(Exception):
    """A failed SES call. `code` is SES's error code (or the local cause), `status` the HTTP
    status when SES answered, `reason` a short text for the ledger and logs (no address)."""

    def __init__(self, reason: str, *, code: str = "", status: int | None = None) -> None:
        self.reason = blank_addresses(reason)[:300]
        self.code = code
        self.status = status
        super().__init__(self.reason)


class SesThrottled(SesError):
    """SES refused the call for its sending rate: nothing was sent."""


class SesUnreachable(SesError):
    """No connection to SES was made (or a proxy refused to pass the call on): nothing was
    sent."""


class SesRejected(SesError):
    """SES answered 4xx, refusing the whole call: nothing was sent."""


class SesOutcomeUnknown(SesError):
    """The call may have reached SES and been acted on: never re-send its recipients."""


# An apostrophe may be part of a local part (o'neil@example.ie): were it a boundary, "o'"
# would stay behind. Taking a quote that opens a quoted address along is harmless.
_ADDRESS = re.compile(r"[^\s<>(),;:\"\[\]]+@[^\s<>(),;:\"'\[\]]+")


def blank_addresses(text: str) -> str:
    """`text` with anything shaped like an address replaced by <address>."""
    return _ADDRESS.sub("<address>", text)

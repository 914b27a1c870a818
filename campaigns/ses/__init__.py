"""The SES hand-off: the one place that talks to SES (see campaigns.ses.base)."""

from campaigns.ses.base import (
    MAX_BULK_ENTRIES,
    BulkEntry,
    EntryResult,
    SesError,
    SesOutcomeUnknown,
    SesRejected,
    SesThrottled,
    SesUnreachable,
    blank_addresses,
)
from campaigns.ses.calls import SesClient
from campaigns.ses.clients import ses_client, ses_client_reset
from campaigns.ses.templates import ses_template_ensure

__all__ = [
    "MAX_BULK_ENTRIES",
    "BulkEntry",
    "EntryResult",
    "SesClient",
    "SesError",
    "SesOutcomeUnknown",
    "SesRejected",
    "SesThrottled",
    "SesUnreachable",
    "blank_addresses",
    "ses_client",
    "ses_client_reset",
    "ses_template_ensure",
]

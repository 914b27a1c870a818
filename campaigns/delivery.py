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
import logging
import re
from dataclasses import dataclass

from anymail.exceptions import AnymailAPIError
from anymail.message import AnymailMessage
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError
from django.conf import settings
from django.core.mail import get_connection
from django.db import transaction

from campaigns.ledger import ledger_claim, ledger_transition
from campaigns.models import Campaign, Contact, Notification
from campaigns.services import contact_merge_data
from templates_app.services import template_compile
from tracking.tokens import token_for

logger = logging.getLogger(__name__)

N = Notification.Status
# SES SendBulkEmail takes at most 50 entries per call.
GROUP_SIZE = 50
TOKEN_FIELD = "_t"  # noqa: S105 (a template field name, not a secret)
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
    campaign = Campaign.objects.select_related("template").get(pk=campaign_id)
    if campaign.status != Campaign.Status.SENDING:
        return result  # paused or cancelled: leave the rows; resume enqueues them again

    with transaction.atomic():
        claimed = ledger_claim(campaign_id=campaign_id, first_id=first_id, last_id=last_id)
    result.claimed = len(claimed)
    if not claimed:
        return result

    contacts = {
        row["id"]: row
        for row in Contact.objects.filter(id__in=[cid for _, cid in claimed]).values(
            "id", "email", "first_name", "last_name", "attributes", "status"
        )
    }
    skipped = [nid for nid, cid in claimed if contacts[cid]["status"] != Contact.Status.ACTIVE]
    result.skipped = ledger_transition(
        ids=skipped, from_statuses={N.SENDING}, to=N.SKIPPED, reason="contact not active"
    )
    skipped_ids = set(skipped)
    sendable = [(nid, contacts[cid]) for nid, cid in claimed if nid not in skipped_ids]

    fields = _template_fields(campaign)
    connection = ses_connection()
    for start in range(0, len(sendable), GROUP_SIZE):
        group = sendable[start : start + GROUP_SIZE]
        if not _send_group(campaign, group, fields, connection, result):
            # Throttled: give back this group and everything after it, and stop.
            rest = [nid for nid, _ in sendable[start:]]
            result.released = ledger_transition(ids=rest, from_statuses={N.SENDING}, to=N.CREATED)
            result.retry = True
            break
    logger.info(
        "batch campaign=%s ids=%s-%s claimed=%s sent=%s failed=%s unknown=%s skipped=%s "
        "released=%s",
        campaign_id, first_id, last_id, result.claimed, result.sent, result.failed,
        result.unknown, result.skipped, result.released,
    )  # fmt: skip
    return result


@functools.cache
def ses_connection():
    """One open anymail SES backend per process, kept for its life: opening one builds a boto3
    client, which loads botocore's service models (~200 ms a time, measured). boto3 clients
    are thread-safe, and each send builds its own payload."""
    connection = get_connection(settings.SES_EMAIL_BACKEND)
    connection.open()
    return connection


def _template_fields(campaign: Campaign) -> frozenset[str]:
    compiled = template_compile(template=campaign.template, tracking_base_url=None)
    return compiled.fields - {TOKEN_FIELD}


def _send_group(campaign, group, fields, connection, result: BatchResult) -> bool:
    """Send one SendBulkEmail; record each answer. False if throttled (nothing recorded)."""
    by_email = {contact["email"]: nid for nid, contact in group}
    message = AnymailMessage(
        from_email=campaign.from_email or settings.DEFAULT_FROM_EMAIL,
        to=list(by_email),
        connection=connection,
    )
    message.template_id = campaign.ses_template_name
    message.merge_global_data = {}
    message.merge_data = {
        contact["email"]: {
            **contact_merge_data(
                email=contact["email"],
                first_name=contact["first_name"],
                last_name=contact["last_name"],
                attributes=contact["attributes"],
                fields=fields,
            ),
            TOKEN_FIELD: token_for(nid),
        }
        for nid, contact in group
    }
    message.extra_headers = {"X-Campaign": str(campaign.pk)}
    ids = list(by_email.values())
    try:
        message.send()
    except AnymailAPIError as err:
        verdict = classify_send_error(err)
        if verdict == "retry":
            return False
        reason = _reason(err)
        to = N.FAILED if verdict == "failed" else N.UNKNOWN
        moved = ledger_transition(ids=ids, from_statuses={N.SENDING}, to=to, reason=reason)
        if to == N.FAILED:
            result.failed += moved
        else:
            result.unknown += moved
        logger.warning("send %s campaign=%s rows=%s reason=%s", to, campaign.pk, moved, reason)
        return True

    accepted, refused = {}, []
    for email, status in message.anymail_status.recipients.items():
        nid = by_email[email]
        if status.status == "queued" and status.message_id:
            accepted[nid] = status.message_id
        else:
            refused.append(nid)
    result.sent += ledger_transition(
        ids=list(accepted), from_statuses={N.SENDING}, to=N.SENT, message_ids=accepted
    )
    result.failed += ledger_transition(
        ids=refused, from_statuses={N.SENDING}, to=N.FAILED, reason="refused by SES"
    )
    return True


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

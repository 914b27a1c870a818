"""SES event objects (as SES publishes them) read into one `SesEvent` per recipient on their
message, with a content-derived id that makes every source deduplicate alike."""

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tracking.models import Event

logger = logging.getLogger(__name__)

E = Event.Type

# SES's eventType (event publishing) / notificationType (identity notifications) → ours, and the
# key of the object holding that event's details.
SES_TYPES = {
    "Send": (E.SENT, "send"),
    "Delivery": (E.DELIVERED, "delivery"),
    "Bounce": (E.BOUNCED, "bounce"),
    "Complaint": (E.COMPLAINED, "complaint"),
    "Reject": (E.REJECTED, "reject"),
    "Open": (E.OPENED, "open"),
    "Click": (E.CLICKED, "click"),
    "Rendering Failure": (E.RENDERING_FAILED, "failure"),
    "DeliveryDelay": (E.DEFERRED, "deliveryDelay"),
    "Subscription": (E.SUBSCRIPTION, "subscription"),
}

# SES message ids are letters, digits and hyphens ("0100018c5d2a7b1e-3f2f1c7e-…-000000"): an id
# of another shape is not SES's, and these are safe to log.
SES_MESSAGE_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
# SES sends one message to 50 recipients at most: a longer `destination` is not SES's.
MAX_DESTINATIONS = 50


class SesEventError(ValueError):
    # Its texts are fixed phrases (no part of the event): logged as they are, str(err), where
    # the logging filter would otherwise reduce an exception argument to its type.
    """Not an SES sending event we can record (the reason says why)."""


@dataclass(frozen=True)
class SesEvent:
    """One SES event for one recipient, as recorded."""

    ses_type: str
    type: str
    message_id: str
    esp_event_id: str
    occurred_at: datetime
    bounce_type: str
    description: str
    user_agent: str
    ip: str | None
    payload: dict


# -- reading SES events --------------------------------------------------------------------------


def ses_event_type(payload: dict) -> str:
    """SES's own name for the event ("Delivery", "Rendering Failure", "DeliveryDelay"…)."""
    return str(payload.get("eventType") or payload.get("notificationType") or "")


def ses_event_recipients(payload: dict) -> list[str]:
    """The recipients an SES event is about that are on its message, each once: those its
    details list (a bounce's bouncedRecipients, a complaint's complainedRecipients, a
    delivery's recipients; the message's destination for the other kinds, as anymail reads
    them) that are also in `mail.destination` (compared in lower case). Anyone else was not
    sent that message: the event says nothing about them and is ignored for them. Every
    source uses this, so all derive the same ids. SesEventError for a `destination` SES
    cannot have written."""
    return _recipients(payload)[0]


def _recipients(payload: dict) -> tuple[list[str], int]:
    """(the recipients on the message, how many the event listed)."""
    mail = payload.get("mail") if isinstance(payload, dict) else None
    destination = mail.get("destination") if isinstance(mail, dict) else None
    if not isinstance(destination, list):
        return [], 0
    if len(destination) > MAX_DESTINATIONS:
        raise SesEventError(f"more than {MAX_DESTINATIONS} destinations")
    ses_type = ses_event_type(payload)
    details = payload.get(SES_TYPES.get(ses_type, (None, ""))[1])
    details = details if isinstance(details, dict) else {}
    if ses_type in ("Bounce", "Complaint"):
        entries = details.get(
            "bouncedRecipients" if ses_type == "Bounce" else "complainedRecipients"
        )
        listed = [r.get("emailAddress") for r in _list(entries) if isinstance(r, dict)]
    elif ses_type == "Delivery":
        listed = _list(details.get("recipients"))
    else:
        listed = destination
    on_message = {d.strip().lower() for d in destination if isinstance(d, str)}
    recipients, seen = [], set()
    for recipient in listed:
        key = recipient.strip().lower() if isinstance(recipient, str) else ""
        if key and key in on_message and key not in seen:
            seen.add(key)
            recipients.append(recipient)
    return recipients, len(listed)


def _list(value) -> list:
    return value if isinstance(value, list) else []


def ses_event_id(*, payload: dict, recipient: str) -> str:
    """The dedupe id of an SES event for one recipient, from its content (not from SNS's
    MessageId, which a file does not carry): SHA-256 of the SES message id, the event type, the
    event's own timestamp (its details' `timestamp`, else the mail's), the recipient (lower
    case) and, for clicks, the link. 'ses:' + 64 hex digits; no address is readable from it."""
    ses_type = ses_event_type(payload)
    details = payload.get(SES_TYPES.get(ses_type, (None, ""))[1]) or {}
    mail = payload.get("mail") or {}
    parts = [
        str(mail.get("messageId") or ""),
        ses_type,
        str(details.get("timestamp") or mail.get("timestamp") or ""),
        recipient.strip().lower(),
    ]
    if ses_type == "Click":
        parts.append(str(details.get("link") or ""))
    return "ses:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def ses_event_parse(*, payload: dict, recipient: str) -> SesEvent:
    """The SesEvent of `payload` (an SES event object) for `recipient`; SesEventError if it is
    not an SES sending event."""
    if not isinstance(payload, dict):
        raise SesEventError("not a JSON object")
    ses_type = ses_event_type(payload)
    if not ses_type:
        raise SesEventError("no eventType or notificationType")
    if ses_type == "Received":
        raise SesEventError("an inbound (Received) notification, not a sending event")
    mail = payload.get("mail")
    message_id = mail.get("messageId") if isinstance(mail, dict) else None
    if not isinstance(message_id, str) or not SES_MESSAGE_ID.fullmatch(message_id):
        raise SesEventError("no SES mail.messageId")
    event_type, details_key = SES_TYPES.get(ses_type, (E.UNKNOWN, ""))
    details = payload.get(details_key) or {}
    if not isinstance(details, dict):
        raise SesEventError(f"{details_key} is not an object")
    when = details.get("timestamp") or mail.get("timestamp")
    occurred_at = _parse_time(when) or timezone.now()
    bounce_type = ""
    if event_type == E.BOUNCED:
        # Permanent: the address does not work. Transient and Undetermined: it may later.
        hard = details.get("bounceType") == "Permanent"
        bounce_type = Event.BounceType.HARD if hard else Event.BounceType.SOFT
    description = {
        E.BOUNCED: f"{details.get('bounceType')}: {details.get('bounceSubType')}",
        E.COMPLAINED: details.get("complaintFeedbackType") or "",
        E.DELIVERED: details.get("smtpResponse") or "",
        E.REJECTED: details.get("reason") or "",
        E.RENDERING_FAILED: details.get("errorMessage") or "",
        E.DEFERRED: details.get("delayType") or "",
        E.UNKNOWN: f"Unknown SES eventType '{ses_type}'",
    }.get(event_type, "")
    return SesEvent(
        ses_type=ses_type,
        type=event_type,
        message_id=message_id,
        esp_event_id=ses_event_id(payload=payload, recipient=recipient),
        occurred_at=occurred_at,
        bounce_type=bounce_type,
        description=str(description)[:300],
        user_agent=str(details.get("userAgent") or "")[:500],
        ip=_ip(details.get("ipAddress")),
        payload=payload,
    )


def ses_events_parse(*, payload: dict) -> list[SesEvent]:
    """One SesEvent per recipient on the message of an SES event object (ses_event_recipients);
    SesEventError if it is not one we can record."""
    if not isinstance(payload, dict):
        raise SesEventError("not a JSON object")
    recipients, listed = _recipients(payload)
    if not recipients:
        ses_event_parse(payload=payload, recipient="")  # the more precise error, if any
        raise SesEventError("no recipient of the event is on its message")
    events = [ses_event_parse(payload=payload, recipient=r) for r in recipients]
    if listed > len(recipients):
        logger.warning(
            "ses event recipients not on the message ignored message_id=%s ignored=%d",
            events[0].message_id,
            listed - len(recipients),
        )
    return events


def _parse_time(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, UTC)
    return parsed


def _ip(value) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if isinstance(value, str) else None
    except ValueError:
        return None

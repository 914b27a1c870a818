"""Recording SES's events (SNS webhook, event files) and what follows from them.

One path for every source: an SES event object (as SES publishes it) and each of its recipients
that is on its message (`mail.destination`) become an `SesEvent`, which `ses_event_record`
writes:
  - the Event row, deduplicated by an id derived from the SES event's content (`ses_event_id`),
    so the same event arriving by SNS, again by SNS, and from a file is recorded once;
  - the notification moved forward only (campaigns.ledger; a late Delivery never undoes a Bounce);
  - the campaign's counters (campaigns.counters), in the same transaction: a message counts at
    most once per counter, when its row moves (or, for soft bounces and delays, which move
    nothing, with its first event of the kind);
  - suppression: a hard bounce or a complaint at once, soft bounces after SOFT_BOUNCE_LIMIT
    within SOFT_BOUNCE_WINDOW_DAYS;
  - after commit, for a hard bounce or complaint that counted, the campaign's circuit breaker.
An event naming a message id we do not know yet becomes a PendingEspEvent, retried with backoff
by `esp_events_retry_pending` (beat), flagged after ESP_EVENT_PENDING_RETENTION_HOURS and
deleted after ESP_EVENT_PENDING_EXPIRY_HOURS (`esp_events_expire_pending`, logged by count).
"""

import contextlib
import gzip
import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns.counters import counters_add
from campaigns.ledger import ledger_transition, statuses_before
from campaigns.models import Campaign, Contact, Notification
from campaigns.services import campaign_transition
from infra.db import pg_rows
from tracking import buffer
from tracking.models import CampaignCounter, Event, PendingEspEvent

logger = logging.getLogger(__name__)

N = Notification.Status
T = Event.Type

# SES's eventType (event publishing) / notificationType (identity notifications) → ours, and the
# key of the object holding that event's details.
SES_TYPES = {
    "Send": (T.SENT, "send"),
    "Delivery": (T.DELIVERED, "delivery"),
    "Bounce": (T.BOUNCED, "bounce"),
    "Complaint": (T.COMPLAINED, "complaint"),
    "Reject": (T.REJECTED, "reject"),
    "Open": (T.OPENED, "open"),
    "Click": (T.CLICKED, "click"),
    "Rendering Failure": (T.RENDERING_FAILED, "failure"),
    "DeliveryDelay": (T.DEFERRED, "deliveryDelay"),
    "Subscription": (T.SUBSCRIPTION, "subscription"),
}
# Events that move the notification forward (bounces: hard ones only).
NOTIFICATION_STATUS = {
    T.DELIVERED: N.DELIVERED,
    T.BOUNCED: N.BOUNCED,
    T.COMPLAINED: N.COMPLAINED,
    T.REJECTED: N.REJECTED,
    T.RENDERING_FAILED: N.FAILED,  # SES could not render the stored template: nothing was sent
}
FROM_STATUSES = {status: statuses_before(status) for status in NOTIFICATION_STATUS.values()}
# The counter each event may add one to. SES Open / Click events are recorded but counted
# nowhere: our own pixel and redirect count opens and clicks, and counting SES's too would double
# them. SES Send events are not counted either: `sent` is the delivery code's (SES's API answer).
# An event whose type moves the notification (NOTIFICATION_STATUS) counts if it moved it; the
# others (soft bounces, delays) count with the message's first event of their kind.
COUNTERS = {
    T.DELIVERED: "delivered",
    T.COMPLAINED: "complained",
    T.REJECTED: "rejected",
    T.DEFERRED: "delayed",
    T.RENDERING_FAILED: "rendering_failed",
}
BOUNCE_COUNTERS = {Event.BounceType.HARD: "bounced_hard", Event.BounceType.SOFT: "bounced_soft"}
# Counters whose growth the circuit breaker looks at.
BREAKER_COUNTERS = {"bounced_hard", "complained"}
# Statuses that mean SES accepted the message: the circuit breaker's fallback count of `sent`.
ACCEPTED = (N.SENT, N.DELIVERED, N.BOUNCED, N.COMPLAINED, N.REJECTED)

# Pending events: first retry after 30 s, doubling to at most an hour between tries (an event
# usually outruns the send's bookkeeping by well under a second; a file may come first by days).
RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600
# A pending row whose retries have stopped (older than ESP_EVENT_PENDING_RETENTION_HOURS) keeps
# this next_attempt_at: never due again, still listed in the admin.
GAVE_UP = datetime(9999, 1, 1, tzinfo=UTC)

RECORDED, DUPLICATE, PENDING = "recorded", "duplicate", "pending"

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
    event_type, details_key = SES_TYPES.get(ses_type, (T.UNKNOWN, ""))
    details = payload.get(details_key) or {}
    if not isinstance(details, dict):
        raise SesEventError(f"{details_key} is not an object")
    when = details.get("timestamp") or mail.get("timestamp")
    occurred_at = _parse_time(when) or timezone.now()
    bounce_type = ""
    if event_type == T.BOUNCED:
        # Permanent: the address does not work. Transient and Undetermined: it may later.
        hard = details.get("bounceType") == "Permanent"
        bounce_type = Event.BounceType.HARD if hard else Event.BounceType.SOFT
    description = {
        T.BOUNCED: f"{details.get('bounceType')}: {details.get('bounceSubType')}",
        T.COMPLAINED: details.get("complaintFeedbackType") or "",
        T.DELIVERED: details.get("smtpResponse") or "",
        T.REJECTED: details.get("reason") or "",
        T.RENDERING_FAILED: details.get("errorMessage") or "",
        T.DEFERRED: details.get("delayType") or "",
        T.UNKNOWN: f"Unknown SES eventType '{ses_type}'",
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


# -- recording -----------------------------------------------------------------------------------


def ses_payload_record(*, payload: dict, source: str, sns_id: str = "") -> list[str]:
    """Record an SES event object (the webhook's, without the buffer): one SesEvent per
    recipient on its message, each in its own transaction. The outcome of each (RECORDED,
    DUPLICATE or PENDING); [] if it is not an SES sending event we can record (logged with
    `sns_id`, an SNS MessageId already checked to be safe to log)."""
    try:
        events = ses_events_parse(payload=payload)
    except SesEventError as err:
        logger.warning("ses event not recorded sns_id=%s reason=%s", sns_id or "-", str(err))
        return []
    return [ses_event_record(event=event, source=source) for event in events]


def ses_event_record(*, event: SesEvent, source: str, pending_id: int | None = None) -> str:
    """Record `event` (see the module's docstring); RECORDED, DUPLICATE or PENDING.

    `pending_id`: the PendingEspEvent being retried (deleted once recorded, else rescheduled).
    """
    with transaction.atomic():
        found = _event_insert(event, source)
        if found is None:
            if pending_id is None:
                _pending_add_all([event], source)
            else:
                _pending_reschedule(pending_id)
            return PENDING
        notification_id, contact_id, campaign_id, inserted = found
        if pending_id is not None:
            PendingEspEvent.objects.filter(pk=pending_id).delete()
        if not inserted:
            return DUPLICATE
        breakers = _outcomes_apply([(event, notification_id, campaign_id)])
        if event.type == T.COMPLAINED:
            _contact_suppress(contact_id, Contact.Status.COMPLAINED, event)
        elif event.type == T.BOUNCED and (
            event.bounce_type == Event.BounceType.HARD
            or _soft_bounce_limit_reached(contact_id, event)
        ):
            _contact_suppress(contact_id, Contact.Status.BOUNCED, event)
        if breakers:
            transaction.on_commit(lambda: _circuit_check_after_commit(campaign_id))
    logger.debug(
        "ses event type=%s notification=%s id=%s", event.type, notification_id, event.esp_event_id
    )
    return RECORDED


def event_counter(event: SesEvent) -> str | None:
    """The counter `event` may add one to (COUNTERS, BOUNCE_COUNTERS), if any."""
    return BOUNCE_COUNTERS.get(event.bounce_type) or COUNTERS.get(event.type)


def event_status(event: SesEvent) -> str | None:
    """The status `event` moves its notification to, if any (soft bounces move nothing)."""
    if event.bounce_type == Event.BounceType.SOFT:
        return None
    return NOTIFICATION_STATUS.get(event.type)


def _outcomes_apply(items: Sequence[tuple[SesEvent, int, int]]) -> set[int]:
    """Move the ledger and add to the counters for newly recorded events, given with their
    (notification id, campaign id), in the order they are recorded. A counter counts a
    message at most once: a moving event counts when its guarded UPDATE moved the row (a
    replay, or an event for a row already further along, moves nothing and counts nothing);
    soft bounces and delays count with their message's first event of the kind.
    Returns the campaigns whose hard bounces or complaints counted (circuit breaker).

    Each notification's moving events are applied in order, the k-th of every notification
    together (one guarded UPDATE per status, reason and campaign, its counter added in the
    same statement): the ledger and counters end exactly as applying them one at a time."""
    breakers: set[int] = set()
    queues: dict[int, list[tuple[SesEvent, str, int]]] = {}
    firsts: list[tuple[SesEvent, int, int]] = []
    for event, notification_id, campaign_id in items:
        status = event_status(event)
        if status:
            queues.setdefault(notification_id, []).append((event, status, campaign_id))
        elif event_counter(event):
            firsts.append((event, notification_id, campaign_id))
    depth = max(map(len, queues.values()), default=0)
    for k in range(depth):
        groups: dict[tuple[str, str, int, str], dict[int, str]] = {}
        for notification_id, queue in queues.items():
            if k < len(queue):
                event, status, campaign_id = queue[k]
                reason = "" if status == N.DELIVERED else event.description
                key = (status, reason, campaign_id, event_counter(event))
                groups.setdefault(key, {})[notification_id] = event.message_id
        for (status, reason, campaign_id, counter), rows in sorted(groups.items()):
            moved = ledger_transition(
                ids=sorted(rows),
                from_statuses=FROM_STATUSES[status],
                to=status,
                reason=reason,
                # Deliveries (~95% of events) pass each row's own SES message id (the one it
                # was found by: unchanged), which takes the ledger's one-statement SQL path, a
                # third of the ORM UPDATE's Python (measured: ~0.5 ms less CPU per event).
                message_ids=dict(sorted(rows.items())) if status == N.DELIVERED else None,
                counter=(campaign_id, counter),
            )
            if moved and counter in BREAKER_COUNTERS:
                breakers.add(campaign_id)
    if firsts:
        _firsts_count(firsts)
    return breakers


def _firsts_count(items: list[tuple[SesEvent, int, int]]) -> None:
    """Add one to the counter of each (notification, kind) among the newly recorded `items`
    (event, notification id, campaign id) that had no event of that kind before. The
    notifications are locked first, in id order: a concurrent transaction recording the same
    kind for the same message waits for this one, then counts its rows too, and does not
    count again."""
    new = Counter((nid, event.type, event.bounce_type) for event, nid, _ in items)
    where = {
        (nid, event.type, event.bounce_type): (cid, event_counter(event))
        for event, nid, cid in items
    }
    ids = sorted({nid for nid, _, _ in new})
    list(
        Notification.objects.select_for_update()
        .filter(id__in=ids)
        .order_by("id")
        .values_list("id", flat=True)
    )
    totals = {
        (row["notification_id"], row["type"], row["bounce_type"]): row["n"]
        for row in Event.objects.filter(notification_id__in=ids, type__in={t for _, t, _ in new})
        .values("notification_id", "type", "bounce_type")
        .annotate(n=Count("id"))
        .order_by()
    }
    deltas: dict[int, dict[str, int]] = {}
    for key, recorded_now in new.items():
        if totals.get(key, 0) == recorded_now:  # all of its kind are this transaction's
            campaign_id, counter = where[key]
            campaign = deltas.setdefault(campaign_id, {})
            campaign[counter] = campaign.get(counter, 0) + 1
    for campaign_id in sorted(deltas):  # one order for every writer: no deadlock
        counters_add(campaign_id=campaign_id, deltas=deltas[campaign_id])


_NOTIFICATION_TABLE = Notification._meta.db_table
_EVENT_TABLE = Event._meta.db_table
_EVENT_COLUMNS = (
    "type, source, occurred_at, user_agent, ip, esp_event_id, description, verdict, "
    "verdict_reason, bounce_type, payload, created_at, notification_id"
)
_EVENT_VALUES = "%s, %s, %s, %s, %s, %s, %s, '', '', %s, %s, %s"


def _event_insert(event: SesEvent, source: str) -> tuple[int, int, int, bool] | None:
    """Insert the Event row for the notification SES gave `event.message_id`, unless its
    esp_event_id is recorded already. Returns (notification id, contact id, campaign id,
    inserted), or None if no notification has that message id.

    The intake's hot path: on PostgreSQL, the lookup and the insert are one statement (a
    data-modifying CTE), with ON CONFLICT DO NOTHING rather than a savepoint per event, and
    raw SQL because building the ORM's queries cost more than running them (measured: ~0.3 ms
    of a ~1 ms event)."""
    params = [event.type, source, event.occurred_at, event.user_agent, event.ip,
              event.esp_event_id, event.description, event.bounce_type,
              json.dumps(event.payload), timezone.now()]  # fmt: skip
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH n AS (SELECT id, contact_id, campaign_id FROM {_NOTIFICATION_TABLE} "  # noqa: S608
                "WHERE message_id = %s LIMIT 1), "
                f"e AS (INSERT INTO {_EVENT_TABLE} ({_EVENT_COLUMNS}) "
                f"SELECT {_EVENT_VALUES}, n.id FROM n "
                "ON CONFLICT (esp_event_id) DO NOTHING RETURNING id) "
                "SELECT n.id, n.contact_id, n.campaign_id, EXISTS (SELECT 1 FROM e) FROM n",
                [event.message_id, *params],
            )
            row = cursor.fetchone()
            return (row[0], row[1], row[2], bool(row[3])) if row else None
        cursor.execute(
            f"SELECT id, contact_id, campaign_id FROM {_NOTIFICATION_TABLE} "  # noqa: S608
            "WHERE message_id = %s LIMIT 1",
            [event.message_id],
        )
        found = cursor.fetchone()
        if found is None:
            return None
        cursor.execute(
            f"INSERT INTO {_EVENT_TABLE} ({_EVENT_COLUMNS}) "  # noqa: S608
            f"VALUES ({_EVENT_VALUES}, %s) ON CONFLICT (esp_event_id) DO NOTHING RETURNING id",
            [*params, found[0]],
        )
        return (*found, cursor.fetchone() is not None)


def _contact_suppress(contact_id: int, status: str, event: SesEvent) -> None:
    if Contact.objects.filter(pk=contact_id, status=Contact.Status.ACTIVE).update(status=status):
        logger.info("contact %s suppressed status=%s by=%s", contact_id, status, event.type)


def _soft_bounce_limit_reached(contact_id: int, event: SesEvent) -> bool:
    """SOFT_BOUNCE_LIMIT soft bounces of the contact (this one included) within the window
    before this one, counted from its Event rows (any campaign, any source)."""
    since = event.occurred_at - timedelta(days=settings.SOFT_BOUNCE_WINDOW_DAYS)
    count = Event.objects.filter(
        notification__contact_id=contact_id,
        type=T.BOUNCED,
        bounce_type=Event.BounceType.SOFT,
        occurred_at__gt=since,
    ).count()
    return count >= settings.SOFT_BOUNCE_LIMIT


def _circuit_check_after_commit(campaign_id: int) -> None:
    # The event is committed by now: a failing check must not turn its answer into a 500 (SNS
    # would redeliver an event already recorded); the next bounce or complaint checks again.
    try:
        campaign_circuit_check(campaign_id=campaign_id)
    except Exception:
        logger.exception("circuit breaker check failed campaign=%s", campaign_id)


def campaign_circuit_check(*, campaign_id: int) -> bool:
    """Pause the campaign if it is sending and, with at least CIRCUIT_BREAKER_MIN_SENT sent,
    its hard-bounce or complaint rate is above the limit; True if this call paused it."""
    if not Campaign.objects.filter(pk=campaign_id, status=Campaign.Status.SENDING).exists():
        return False
    counts = dict(
        CampaignCounter.objects.filter(
            campaign_id=campaign_id, name__in=["sent", "bounced_hard", "complained"]
        ).values_list("name", "value")
    )
    sent = counts.get("sent") or 0
    if sent <= 0:  # counters not kept for this campaign (yet): count the ledger
        sent = Notification.objects.filter(campaign_id=campaign_id, status__in=ACCEPTED).count()
    if sent < settings.CIRCUIT_BREAKER_MIN_SENT:
        return False
    bounced, complained = counts.get("bounced_hard", 0), counts.get("complained", 0)
    reason = ""
    if bounced / sent > settings.CIRCUIT_BREAKER_BOUNCE_RATE:
        reason = (
            f"Paused automatically: {bounced} of {sent} sent messages bounced "
            f"({bounced / sent:.1%}), above the {settings.CIRCUIT_BREAKER_BOUNCE_RATE:.1%} limit. "
            "Clean the list before resuming."
        )
    elif complained / sent > settings.CIRCUIT_BREAKER_COMPLAINT_RATE:
        reason = (
            f"Paused automatically: {complained} of {sent} recipients marked it as spam "
            f"({complained / sent:.2%}), above the "
            f"{settings.CIRCUIT_BREAKER_COMPLAINT_RATE:.2%} limit. Check the list's consent "
            "and the content before resuming."
        )
    if not reason:
        return False
    paused = campaign_transition(
        campaign_id=campaign_id,
        from_statuses={Campaign.Status.SENDING},
        to=Campaign.Status.PAUSED,
        reason=reason,
    )
    if paused:
        logger.warning(
            "campaign %s paused by circuit breaker sent=%s bounced_hard=%s complained=%s",
            campaign_id,
            sent,
            bounced,
            complained,
        )
    return paused


# -- recording many at once (the buffered intake) ------------------------------------------------


def ses_events_record(*, events: Sequence[SesEvent], source: str) -> dict[str, int]:
    """Record `events` as `ses_event_record` would one by one, in one transaction and a few
    statements: one notification lookup, one INSERT … ON CONFLICT DO NOTHING, one ledger update
    (with its counter) per target status, reason and campaign (_outcomes_apply).
    Suppression is decided per contact in event order (its first complaint or bounce wins, as
    one by one); soft-bounce limits and the circuit breaker are checked as one by one (after
    commit, once per campaign). Returns {RECORDED: n, DUPLICATE: n, PENDING: n}.

    Re-recording the same events writes and counts nothing (the content-based esp_event_id),
    which is what makes a batch flushed twice harmless."""
    summary = {RECORDED: 0, DUPLICATE: 0, PENDING: 0}
    if connection.vendor != "postgresql":
        for event in events:
            summary[ses_event_record(event=event, source=source)] += 1
        return summary
    unique: dict[str, SesEvent] = {}
    for event in events:
        unique.setdefault(event.esp_event_id, event)
    summary[DUPLICATE] += len(events) - len(unique)
    with transaction.atomic():
        found = _notifications_by_message_id({e.message_id for e in unique.values()})
        known = [e for e in unique.values() if e.message_id in found]
        unknown = [e for e in unique.values() if e.message_id not in found]
        if unknown:
            _pending_add_all(unknown, source)
            summary[PENDING] += len(unknown)
        inserted = _events_insert_all(known, found, source)
        summary[DUPLICATE] += len(known) - len(inserted)
        summary[RECORDED] += len(inserted)
        new = [e for e in known if e.esp_event_id in inserted]  # in the order they came
        breakers = _outcomes_apply(
            [(e, found[e.message_id][0], found[e.message_id][2]) for e in new]
        )
        _suppress_all(new, found)
        for campaign_id in sorted(breakers):
            transaction.on_commit(
                lambda campaign_id=campaign_id: _circuit_check_after_commit(campaign_id)
            )
    return summary


def _notifications_by_message_id(message_ids: set[str]) -> dict[str, tuple[int, int, int]]:
    """{SES message id: (notification id, contact id, campaign id)} of those we know."""
    if not message_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT ON (message_id) message_id, id, contact_id, campaign_id "  # noqa: S608
            f"FROM {_NOTIFICATION_TABLE} WHERE message_id = ANY(%s) ORDER BY message_id, id",
            [sorted(message_ids)],
        )
        return {row[0]: (row[1], row[2], row[3]) for row in cursor.fetchall()}


def _events_insert_all(
    events: list[SesEvent], found: dict[str, tuple[int, int, int]], source: str
) -> set[str]:
    """Insert the Event rows not recorded yet; the esp_event_ids inserted. One statement of
    array parameters whatever the batch size: a VALUES list of 500 rows × 12 placeholders cost
    psycopg more to split and quote than PostgreSQL took to insert (~45% of a flush, measured).
    Inserted in the order they came, so Event ids follow it (the recount replays ledger moves
    in that order: tracking.selectors); a batch taken over while its first flusher still runs
    holds the same records in the same order, so the two lock its ids in the same order."""
    rows = events
    rows_inserted = pg_rows(
        f"INSERT INTO {_EVENT_TABLE} ({_EVENT_COLUMNS}) "  # noqa: S608 (our names)
        "SELECT t, %b, o, u, i, e, d, '', '', b, p::jsonb, now(), n FROM unnest("
        "%b::text[], %b::timestamptz[], %b::text[], %b::inet[], %b::text[], %b::text[], "
        "%b::text[], %b::text[], %b::bigint[]) AS x(t, o, u, i, e, d, b, p, n) "
        "ON CONFLICT (esp_event_id) DO NOTHING RETURNING esp_event_id",
        [
            str(source),
            [str(e.type) for e in rows],
            [e.occurred_at for e in rows],
            [e.user_agent for e in rows],
            [e.ip for e in rows],
            [e.esp_event_id for e in rows],
            [e.description for e in rows],
            [str(e.bounce_type) for e in rows],
            [json.dumps(e.payload) for e in rows],
            [found[e.message_id][0] for e in rows],
        ],
    )
    return {row[0] for row in rows_inserted}


def _suppress_all(events: list[SesEvent], found: dict[str, tuple[int, int, int]]) -> None:
    decided: set[int] = set()
    for event in events:
        contact_id = found[event.message_id][1]
        if contact_id in decided or event.type not in (T.COMPLAINED, T.BOUNCED):
            continue
        if event.type == T.COMPLAINED:
            status = Contact.Status.COMPLAINED
        elif event.bounce_type == Event.BounceType.HARD or _soft_bounce_limit_reached(
            contact_id, event
        ):
            status = Contact.Status.BOUNCED
        else:
            continue
        decided.add(contact_id)
        _contact_suppress(contact_id, status, event)


def _pending_add_all(events: list[SesEvent], source: str) -> None:
    next_attempt_at = timezone.now() + _retry_delay(0)
    PendingEspEvent.objects.bulk_create(
        [
            PendingEspEvent(
                esp_event_id=e.esp_event_id,
                message_id=e.message_id,
                source=source,
                payload=e.payload,
                next_attempt_at=next_attempt_at,
            )
            for e in events
        ],
        # Already pending: SNS delivered it twice, a file had it, or a batch was flushed twice.
        ignore_conflicts=True,
    )
    for event in events:
        logger.info(
            "ses event pending: unknown message type=%s message_id=%s id=%s",
            event.type,
            event.message_id,
            event.esp_event_id,
        )


# -- the buffer (ESP_EVENTS_BUFFER) -------------------------------------------------------------
# The webhook (tracking.ses_events.webhook), once an SNS message is verified, pushes its SES
# event to this Redis list and answers 200 (~0.1 ms instead of ~2.7 ms of recording, measured); a
# thread of `python -m tracking.buffer` claims batches of up to buffer.BATCH_SIZE and records them
# with ses_events_record. Claims, leases and take-overs are tracking.buffer's (see its docstring).
# A record: "2<TAB>SNS MessageId<TAB>SES event object as SNS carried it (JSON)". The flusher
# splits it per recipient (ses_event_recipients: anymail's rules), so the request does not build
# anymail's per-recipient events only to serialise them again, nor quote the event inside
# another JSON document (together ~15% of its CPU, measured). Format 1, the JSON array [1, SNS
# MessageId, recipient, SES event object] (one record per recipient), is what earlier versions
# queued; it is still read.

ESP_EVENTS_QUEUE = "esp:events"
ESP_EVENTS_DEAD_LETTERS = "esp:events:dead"  # records that cannot be recorded: for a person
_RECORD_FORMAT = 2


def esp_events_buffer_enabled() -> bool:
    """Buffered intake is on (ESP_EVENTS_BUFFER) and there is a Redis to buffer in."""
    return bool(getattr(settings, "ESP_EVENTS_BUFFER", False)) and buffer._client() is not None


def esp_events_buffer_push(*, sns_id: str, message: str) -> bool:
    """Queue the SES event an SNS Notification carries (one RPUSH): `message` as SNS carried
    it, which the caller found to be a JSON object; `sns_id` its SNS MessageId, checked by
    tracking.ses_events.sns (no tab or line break). False if Redis did not take it (down, or the
    buffer full: ESP_EVENTS_BUFFER_MAX): the caller records it directly, so a flusher that cannot
    keep up slows the webhook down instead of filling Redis, which is the broker too."""
    record = f"{_RECORD_FORMAT}\t{sns_id}\t{message}"
    return buffer.buffer_push(
        record=record, queue=ESP_EVENTS_QUEUE, max_records=settings.ESP_EVENTS_BUFFER_MAX
    )


def _record_loads(raw: bytes | str) -> tuple[str, list[tuple[str, dict]]]:
    """(SNS MessageId, [(recipient, SES event object)…]) of a record, its recipients those on
    the message (ses_event_recipients); SesEventError if none is, ValueError if unreadable."""
    raw = raw.encode() if isinstance(raw, str) else raw
    if raw.startswith(b"["):  # format 1
        try:
            fmt, sns_id, recipient, payload = json.loads(raw)
        except (TypeError, ValueError) as err:
            raise ValueError(f"unreadable record: {type(err).__name__}") from None
        if fmt != 1:
            raise ValueError(f"unknown record format {fmt!r}")
        on_message = {r.lower() for r in ses_event_recipients(payload)}
        if str(recipient).strip().lower() not in on_message:
            raise SesEventError("no recipient of the event is on its message")
        return str(sns_id), [(str(recipient), payload)]
    fmt, _, rest = raw.partition(b"\t")
    if fmt != str(_RECORD_FORMAT).encode():
        raise ValueError("unknown record format")
    sns_id, _, message = rest.partition(b"\t")
    try:
        payload = json.loads(message)
    except (TypeError, ValueError) as err:
        raise ValueError(f"unreadable record: {type(err).__name__}") from None
    if not isinstance(payload, dict):
        raise ValueError("unreadable record: not an object")
    recipients = ses_event_recipients(payload)
    if not recipients:
        ses_event_parse(payload=payload, recipient="")  # the more precise error, if any
        raise SesEventError("no recipient of the event is on its message")
    return sns_id.decode(errors="replace"), [(r, payload) for r in recipients]


def esp_events_buffer_flush(*, max_batches: int = 50, lease_seconds: float | None = None) -> int:
    """Record what the events buffer holds, batch by batch; returns how many were recorded
    (duplicates and pending ones not included). Safe to run in several processes at once.

    As tracking.services.tracking_buffer_flush: dead flushers' batches are taken over first; a
    batch whose database is unreachable stays claimed (retried after its lease); one that fails
    otherwise is retried event by event, and an event that fails alone is kept in
    ESP_EVENTS_DEAD_LETTERS (logged by id)."""
    lease = buffer.LEASE_SECONDS if lease_seconds is None else lease_seconds
    recorded = 0
    for key in buffer.buffer_take_over(lease_seconds=lease, queue=ESP_EVENTS_QUEUE):
        items = buffer.buffer_batch(key=key)
        logger.warning("ses events batch taken over batch=%s events=%d", key, len(items))
        recorded += _flush_batch(key, items)
    for _ in range(max_batches):
        claimed = buffer.buffer_claim(queue=ESP_EVENTS_QUEUE)
        if claimed is None:
            break
        recorded += _flush_batch(*claimed)
    return recorded


def _flush_batch(key: str, items: list[bytes]) -> int:
    parsed: list[tuple[bytes, SesEvent]] = []
    for raw in items:
        try:
            sns_id, recipients = _record_loads(raw)
        except SesEventError as err:  # as ses_payload_record: not an event we can record
            logger.warning("ses event not recorded batch=%s reason=%s", key, str(err))
            continue
        except ValueError as err:
            logger.error("ses event record unreadable, kept aside batch=%s: %s", key, str(err))
            _dead_letter(raw)
            continue
        for recipient, payload in recipients:
            try:
                parsed.append((raw, ses_event_parse(payload=payload, recipient=recipient)))
            except SesEventError as err:  # as ses_payload_record: not an SES sending event
                logger.warning("ses event not recorded sns_id=%s reason=%s", sns_id[:100], str(err))
    try:
        recorded = ses_events_record(events=[e for _, e in parsed], source=Event.Source.SES)[
            RECORDED
        ]
    except OperationalError:
        raise  # the database is unreachable: the batch stays claimed and is retried
    except DatabaseError:
        logger.exception("ses events batch failed batch=%s events=%d: one by one", key, len(items))
        recorded = 0
        kept_aside: set[bytes] = set()  # a record of several recipients is kept aside once
        for raw, event in parsed:
            try:
                recorded += ses_event_record(event=event, source=Event.Source.SES) == RECORDED
            except OperationalError:
                raise
            except DatabaseError:
                logger.exception("ses event kept aside id=%s", event.esp_event_id)
                if raw not in kept_aside:
                    kept_aside.add(raw)
                    _dead_letter(raw)
    buffer.buffer_ack(key=key, queue=ESP_EVENTS_QUEUE)
    return recorded


def _dead_letter(raw: bytes | str) -> None:
    client = buffer._client()
    if client is not None:
        client.rpush(ESP_EVENTS_DEAD_LETTERS, raw)


# The head of the events buffer as this process last saw it, and since when: (record, monotonic).
_head_seen: tuple[bytes, float] | None = None


def esp_events_flush_if_late(*, after_seconds: float) -> int | None:
    """Flush the events buffer from this process if the same record has waited at its head
    for more than `after_seconds` (no flusher is taking records), else None; how many events
    were recorded. Records carry no arrival time (an event's own timestamp can be days old on
    an SNS redelivery), so waiting is judged by the head not moving: a running flusher moves
    it every TRACKING_FLUSH_INTERVAL_MS (0.5 s)."""
    global _head_seen
    head = buffer.buffer_oldest(queue=ESP_EVENTS_QUEUE)
    now = time.monotonic()
    if head is None or _head_seen is None or _head_seen[0] != head:
        _head_seen = None if head is None else (head, now)
        return None
    if now - _head_seen[1] <= after_seconds:
        return None
    logger.warning(
        "ses events waited %.0f s at the head of the buffer: flushing from this process "
        "(is `python -m tracking.buffer` running?)",
        now - _head_seen[1],
    )
    _head_seen = None
    return esp_events_buffer_flush()


def esp_events_flusher_start() -> threading.Thread | None:
    """Start the events buffer's flush loop in a thread of this process (`python -m
    tracking.buffer`) if there is a Redis: also with ESP_EVENTS_BUFFER off, so events queued
    while it was on are still recorded."""
    if buffer._client() is None:
        return None
    thread = threading.Thread(
        target=buffer.buffer_flush_forever,
        args=(esp_events_buffer_flush,),
        kwargs={"name": "ses events"},
        name="esp-events-flusher",
        daemon=True,
    )
    thread.start()
    logger.info("ses events flusher started")
    return thread


# -- pending events --------------------------------------------------------------------------------


def _retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2**attempts, RETRY_MAX_SECONDS))


def _pending_reschedule(pending_id: int) -> None:
    """One more failed attempt: the next one later, or none once the retention has passed."""
    row = (
        PendingEspEvent.objects.filter(pk=pending_id)
        .values("attempts", "created_at", "message_id")
        .first()
    )
    if row is None:
        return
    now = timezone.now()
    attempts = row["attempts"] + 1
    retention = timedelta(hours=settings.ESP_EVENT_PENDING_RETENTION_HOURS)
    gave_up = now - row["created_at"] >= retention
    PendingEspEvent.objects.filter(pk=pending_id).update(
        attempts=attempts, next_attempt_at=GAVE_UP if gave_up else now + _retry_delay(attempts)
    )
    if gave_up:
        logger.warning(
            "ses event pending: retries stopped, message still unknown after %s attempts "
            "pending=%s message_id=%s (listed in the admin until it expires)",
            attempts,
            pending_id,
            row["message_id"],
        )


def pending_event_parse(*, pending: PendingEspEvent) -> SesEvent | None:
    """The SesEvent a pending row holds (its payload's recipient whose id it has)."""
    try:
        for event in ses_events_parse(payload=pending.payload):
            if event.esp_event_id == pending.esp_event_id:
                return event
    except SesEventError:
        return None
    return None


@dataclass
class RetrySummary:
    recorded: int = 0
    duplicate: int = 0
    pending: int = 0
    unreadable: int = 0

    @property
    def total(self) -> int:
        return self.recorded + self.duplicate + self.pending + self.unreadable


def esp_events_retry_pending(*, ids=None, limit: int = 10_000) -> RetrySummary:
    """Retry up to `limit` pending events that are due, or those of `ids`, due or not (the
    admin's "retry now").

    Each row is claimed and recorded in its own short transaction (SELECT … FOR UPDATE SKIP
    LOCKED): two beat ticks never retry one row twice, and a retry holds no lock on counters
    or notifications longer than one event does (a batch-long transaction could deadlock with
    the webhook's own writes)."""
    summary = RetrySummary()
    due = PendingEspEvent.objects.order_by("next_attempt_at")
    if ids is not None:
        due = due.filter(pk__in=list(ids))
    else:
        due = due.filter(next_attempt_at__lte=timezone.now())
    for pending_id in list(due.values_list("pk", flat=True)[:limit]):
        _retry_one(pending_id, summary, due_only=ids is None)
    if summary.total:
        logger.info(
            "ses events retried recorded=%s duplicate=%s still_pending=%s unreadable=%s",
            summary.recorded,
            summary.duplicate,
            summary.pending,
            summary.unreadable,
        )
    return summary


def pending_expires_at(*, pending: PendingEspEvent) -> datetime:
    """When `pending` is deleted unless its message id appears first."""
    return pending.created_at + _pending_expiry()


def _pending_expiry() -> timedelta:
    # Never before its retries have stopped (ESP_EVENT_PENDING_RETENTION_HOURS).
    hours = max(settings.ESP_EVENT_PENDING_EXPIRY_HOURS, settings.ESP_EVENT_PENDING_RETENTION_HOURS)
    return timedelta(hours=hours)


# Rows deleted per statement: a short lock, whatever piled up.
EXPIRE_CHUNK = 5000


def esp_events_expire_pending() -> int:
    """Delete the pending events older than ESP_EVENT_PENDING_EXPIRY_HOURS (beat, hourly);
    returns how many, and logs the number. Their message ids never appeared: mostly mail
    another system sends through the same configuration set, which would pile up forever."""
    cutoff = timezone.now() - _pending_expiry()
    expired = 0
    while True:
        ids = list(
            PendingEspEvent.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[
                :EXPIRE_CHUNK
            ]
        )
        if not ids:
            break
        expired += PendingEspEvent.objects.filter(pk__in=ids, created_at__lt=cutoff).delete()[0]
    if expired:
        logger.warning(
            "ses events pending expired count=%d older_than_hours=%d (their message ids never "
            "appeared; deleted)",
            expired,
            _pending_expiry().total_seconds() // 3600,
        )
    return expired


def _retry_one(pending_id: int, summary: RetrySummary, *, due_only: bool) -> None:
    with transaction.atomic():
        rows = PendingEspEvent.objects.select_for_update(skip_locked=True).filter(pk=pending_id)
        if due_only:  # another tick may have retried it since the list was read
            rows = rows.filter(next_attempt_at__lte=timezone.now())
        pending = rows.first()
        if pending is None:
            return
        event = pending_event_parse(pending=pending)
        if event is None:
            # Cannot happen for rows this module wrote; kept for a person to look at.
            PendingEspEvent.objects.filter(pk=pending.pk).update(next_attempt_at=GAVE_UP)
            logger.warning("ses event pending unreadable pending=%s", pending.pk)
            summary.unreadable += 1
            return
        outcome = ses_event_record(event=event, source=pending.source, pending_id=pending.pk)
        setattr(summary, outcome, getattr(summary, outcome) + 1)


# -- event files ---------------------------------------------------------------------------------


@dataclass
class FileSummary:
    path: str
    events: int = 0
    recorded: int = 0
    duplicate: int = 0
    pending: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    error: str = ""  # the file could not be read at all


def ses_event_files(*, path: Path) -> list[Path]:
    """`path` if it is a file, else every file under it (recursively, hidden ones excepted),
    sorted; FileNotFoundError if there is nothing there."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def ses_events_import(*, path: Path) -> list[FileSummary]:
    """Import SES event files (see `ses_event_file_import`) from a file or a folder."""
    return [ses_event_file_import(path=file) for file in ses_event_files(path=path)]


def ses_event_file_import(*, path: Path) -> FileSummary:
    """Record the SES events of one file: JSON lines of SES event objects (as Kinesis Firehose
    writes them to S3), gzip-compressed or not, or one JSON object (or array) for the whole
    file. Idempotent: events are deduplicated by content. A malformed line is reported with its
    number and skipped; the rest is imported."""
    summary = FileSummary(path=str(path))
    try:
        for lineno, payload, error in _file_objects(path):
            if error:
                summary.malformed.append((lineno, error))
                continue
            try:
                events = ses_events_parse(payload=payload)
            except SesEventError as err:
                summary.malformed.append((lineno, str(err)))
                continue
            for event in events:
                summary.events += 1
                outcome = ses_event_record(event=event, source=Event.Source.SES_FILE)
                setattr(summary, outcome, getattr(summary, outcome) + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        summary.error = f"{type(err).__name__}: {err}"
    logger.info(
        "ses event file imported recorded=%s duplicate=%s pending=%s malformed=%s error=%s",
        summary.recorded,
        summary.duplicate,
        summary.pending,
        len(summary.malformed),
        bool(summary.error),
    )
    return summary


def _open(path: Path):
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def _file_objects(path: Path) -> Iterator[tuple[int, object, str]]:
    """(line number, JSON value, error) for each JSON value of the file."""
    with _open(path) as lines:
        first = True
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            values, error = _line_values(raw)
            if first and error:
                # Not JSON lines from its first line: one JSON document for the whole file?
                whole = _whole_file(path)
                if whole is not None:
                    yield from ((1, value, "") for value in whole)
                    return
            first = False
            if error:
                yield lineno, None, error
            else:
                yield from ((lineno, value, "") for value in values)


def _line_values(raw: bytes) -> tuple[list, str]:
    """The JSON values of one line (Firehose may leave several on a line, back to back)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return [], f"not UTF-8 (byte {err.start})"
    decoder = json.JSONDecoder()
    values, index, text = [], 0, text.strip()
    while index < len(text):
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as err:
            return [], f"invalid JSON: {err.msg} (column {err.colno})"
        values.append(value)
        while index < len(text) and text[index].isspace():
            index += 1
    return values, ""


def _whole_file(path: Path) -> list | None:
    with _open(path) as stream, contextlib.suppress(ValueError):
        value = json.loads(stream.read())
        return value if isinstance(value, list) else [value]
    return None

"""Recording SES's events (SNS webhook, event files) and what follows from them.

One recorder for every source (`ses_events_record`; a single event is a batch of one): the
Event row, deduplicated by a content id; the notification moved forward only; the counters in
the same transaction, a message counted once; suppression; and after commit the circuit
breaker. An unknown message id becomes a PendingEspEvent. What each event does:
docs/EVENTS.md.
"""

import json
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from campaigns.breaker import campaign_circuit_check_after_commit
from campaigns.counters import CounterName, counters_add
from campaigns.ledger import ledger_transition, statuses_before
from campaigns.models import Contact, Notification
from infra.db import pg_rows
from tracking.models import EVENT_INSERT_COLUMNS, EVENT_INSERT_ROW, Event
from tracking.ses_events.parse import SesEvent, SesEventError, ses_events_parse
from tracking.ses_events.pending import pending_add_all

logger = logging.getLogger(__name__)

N = Notification.Status
E = Event.Type

# Events that move the notification forward (bounces: hard ones only).
NOTIFICATION_STATUS = {
    E.DELIVERED: N.DELIVERED,
    E.BOUNCED: N.BOUNCED,
    E.COMPLAINED: N.COMPLAINED,
    E.REJECTED: N.REJECTED,
    E.RENDERING_FAILED: N.FAILED,  # SES could not render the stored template: nothing was sent
}
FROM_STATUSES = {status: statuses_before(status) for status in NOTIFICATION_STATUS.values()}
# The counter each event may add one to. SES Open / Click events are recorded but counted
# nowhere: our own pixel and redirect count opens and clicks, and counting SES's too would double
# them. SES Send events are not counted either: `sent` is the delivery code's (SES's API answer).
# An event whose type moves the notification (NOTIFICATION_STATUS) counts if it moved it; the
# others (soft bounces, delays) count with the message's first event of their kind.
COUNTERS = {
    E.DELIVERED: CounterName.DELIVERED,
    E.COMPLAINED: CounterName.COMPLAINED,
    E.REJECTED: CounterName.REJECTED,
    E.DEFERRED: CounterName.DELAYED,
    E.RENDERING_FAILED: CounterName.RENDERING_FAILED,
}
BOUNCE_COUNTERS = {
    Event.BounceType.HARD: CounterName.BOUNCED_HARD,
    Event.BounceType.SOFT: CounterName.BOUNCED_SOFT,
}
# Counters whose growth the circuit breaker looks at.
BREAKER_COUNTERS = {CounterName.BOUNCED_HARD, CounterName.COMPLAINED}
# Statuses that mean SES accepted the message: the circuit breaker's fallback count of `sent`.

RECORDED, DUPLICATE, PENDING = "recorded", "duplicate", "pending"

# -- recording -----------------------------------------------------------------------------------


def ses_payload_record(*, payload: dict, source: str, sns_id: str = "") -> dict[str, int]:
    """Record an SES event object (the webhook's, without the buffer): one SesEvent per
    recipient on its message, together (ses_events_record, whose summary it returns; all zero
    if it is not an SES sending event we can record, logged with `sns_id`, an SNS MessageId
    already checked to be safe to log)."""
    try:
        events = ses_events_parse(payload=payload)
    except SesEventError as err:
        logger.warning("ses event not recorded sns_id=%s reason=%s", sns_id or "-", str(err))
        return {RECORDED: 0, DUPLICATE: 0, PENDING: 0}
    return ses_events_record(events=events, source=source)


def ses_event_record(*, event: SesEvent, source: str, keep_unknown: bool = True) -> str:
    """Record one event: a batch of one (ses_events_record). RECORDED, DUPLICATE or PENDING."""
    summary = ses_events_record(events=[event], source=source, keep_unknown=keep_unknown)
    return next(outcome for outcome, n in summary.items() if n)


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
                # Deliveries (most events) pass each row's own SES message id (the one it was
                # found by: unchanged), which takes the ledger's one-statement SQL path instead
                # of the ORM UPDATE (cost: docs/PERFORMANCE.md).
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


def ses_events_record(
    *, events: Sequence[SesEvent], source: str, keep_unknown: bool = True, simulated: bool = False
) -> dict[str, int]:
    """Record `events` (see the module's docstring), in one transaction and a few statements
    whatever their number: one to find their notifications and insert their Event rows
    (_events_insert_all), one ledger update (with its counter) per target status, reason and
    campaign (_outcomes_apply). Suppression is decided per contact in event order (its first
    complaint or bounce wins); soft-bounce limits are checked in event order too; the circuit
    breaker after commit, once per campaign. Returns {RECORDED: n, DUPLICATE: n, PENDING: n}.

    Events whose message id we do not know become PendingEspEvents, unless `keep_unknown` is
    False (the pending retry, whose rows they are already: it decides by the outcome).
    Re-recording the same events writes and counts nothing (the content-based esp_event_id),
    which is what makes a batch flushed twice harmless.

    `simulated` (a test key's messages, tracking.ses_events.simulated): the events, the ledger
    and the counters as above, but no contact is suppressed and no campaign paused: a test
    key changes nothing beyond its own messages."""
    summary = {RECORDED: 0, DUPLICATE: 0, PENDING: 0}
    unique: dict[str, SesEvent] = {}
    for event in events:
        unique.setdefault(event.esp_event_id, event)
    summary[DUPLICATE] += len(events) - len(unique)
    if not unique:
        return summary
    with transaction.atomic():
        found, inserted = _events_insert_all(list(unique.values()), source)
        unknown = [e for e in unique.values() if e.message_id not in found]
        if unknown:
            if keep_unknown:
                pending_add_all(unknown, source)
            summary[PENDING] += len(unknown)
        summary[DUPLICATE] += len(unique) - len(unknown) - len(inserted)
        summary[RECORDED] += len(inserted)
        new = [e for e in unique.values() if e.esp_event_id in inserted]  # in the order they came
        breakers = _outcomes_apply(
            [(e, found[e.message_id][0], found[e.message_id][2]) for e in new]
        )
        if simulated:
            breakers = set()
        else:
            _suppress_all(new, found)
        for campaign_id in sorted(breakers):
            transaction.on_commit(
                lambda campaign_id=campaign_id: campaign_circuit_check_after_commit(campaign_id)
            )
    for event in new:
        logger.debug("ses event recorded type=%s id=%s", event.type, event.esp_event_id)
    return summary


_NOTIFICATION_TABLE = Notification._meta.db_table
_EVENT_TABLE = Event._meta.db_table
Found = dict[str, tuple[int, int, int]]  # SES message id → (notification, contact, campaign)


def _events_insert_all(events: list[SesEvent], source: str) -> tuple[Found, set[str]]:
    """Find the notifications of `events`' message ids (the lowest id, should one have two)
    and insert the Event rows of those found that are not recorded yet (ON CONFLICT DO
    NOTHING on esp_event_id, rather than a savepoint per event), in the order they came:
    Event ids follow it (the recount replays ledger moves in that order: tracking.reports),
    and a batch taken over while its first flusher still runs holds the same records in the
    same order, so the two lock its ids in the same order. Returns (the notifications found,
    the esp_event_ids inserted).

    The one place the dialect matters: PostgreSQL (the intake's hot path) does it all in one
    statement of array parameters, SQLite (the demo) in portable statements."""
    if connection.vendor == "postgresql":
        return _events_insert_all_pg(events, source)
    return _events_insert_all_portable(events, source)


def _events_insert_all_pg(events: list[SesEvent], source: str) -> tuple[Found, set[str]]:
    """One data-modifying CTE whatever the batch size, with array parameters: a VALUES list of
    500 rows × 12 placeholders cost psycopg more to split and quote than PostgreSQL took to
    insert, and building the ORM's queries more than running them (see docs/PERFORMANCE.md).
    Its rows: the notifications found, then (with NULL ids) the esp_event_ids inserted."""
    rows = pg_rows(
        "WITH n AS (SELECT DISTINCT ON (message_id) message_id, id, contact_id, campaign_id "  # noqa: S608 (our names)
        f"FROM {_NOTIFICATION_TABLE} WHERE message_id = ANY(%b::text[]) ORDER BY message_id, id), "
        f"ins AS (INSERT INTO {_EVENT_TABLE} ({EVENT_INSERT_COLUMNS}) "
        "SELECT x.t, %b, x.o, n.id, NULL, x.u, x.i, x.e, x.d, '', '', x.b, x.p::jsonb, now() "
        "FROM unnest(%b::text[], %b::timestamptz[], %b::text[], %b::inet[], %b::text[], "
        "%b::text[], %b::text[], %b::text[], %b::text[]) WITH ORDINALITY "
        "AS x(t, o, u, i, e, d, b, p, m, k) JOIN n ON n.message_id = x.m ORDER BY x.k "
        "ON CONFLICT (esp_event_id) DO NOTHING RETURNING esp_event_id) "
        "SELECT message_id, id, contact_id, campaign_id FROM n "
        "UNION ALL SELECT esp_event_id, NULL, NULL, NULL FROM ins",
        [
            sorted({e.message_id for e in events}),
            str(source),
            [str(e.type) for e in events],
            [e.occurred_at for e in events],
            [e.user_agent for e in events],
            [e.ip for e in events],
            [e.esp_event_id for e in events],
            [e.description for e in events],
            [str(e.bounce_type) for e in events],
            [json.dumps(e.payload) for e in events],
            [e.message_id for e in events],
        ],
    )
    found = {row[0]: (row[1], row[2], row[3]) for row in rows if row[1] is not None}
    return found, {row[0] for row in rows if row[1] is None}


_LOOKUP_CHUNK = 500  # message ids per IN (…): well under SQLite's limit of parameters


def _events_insert_all_portable(events: list[SesEvent], source: str) -> tuple[Found, set[str]]:
    """Any database (SQLite, the demo): the notifications found with IN (…), then one INSERT …
    ON CONFLICT DO NOTHING RETURNING per event."""
    found: Found = {}
    inserted: set[str] = set()
    adapt = connection.ops.adapt_datetimefield_value
    now = adapt(timezone.now())
    message_ids = sorted({e.message_id for e in events})
    with connection.cursor() as cursor:
        for start in range(0, len(message_ids), _LOOKUP_CHUNK):
            chunk = message_ids[start : start + _LOOKUP_CHUNK]
            cursor.execute(
                f"SELECT message_id, id, contact_id, campaign_id FROM {_NOTIFICATION_TABLE} "  # noqa: S608
                f"WHERE message_id IN ({', '.join(['%s'] * len(chunk))}) ORDER BY id DESC",
                chunk,
            )
            found.update((row[0], (row[1], row[2], row[3])) for row in cursor.fetchall())
        for e in events:
            if e.message_id not in found:
                continue
            cursor.execute(
                f"INSERT INTO {_EVENT_TABLE} ({EVENT_INSERT_COLUMNS}) "  # noqa: S608
                f"VALUES {EVENT_INSERT_ROW} "
                "ON CONFLICT (esp_event_id) DO NOTHING RETURNING esp_event_id",
                [str(e.type), str(source), adapt(e.occurred_at), found[e.message_id][0], None,
                 e.user_agent, e.ip, e.esp_event_id, e.description, "", "", str(e.bounce_type),
                 json.dumps(e.payload), now],
            )  # fmt: skip
            inserted.update(row[0] for row in cursor.fetchall())
    return found, inserted


def _contact_suppress(contact_id: int, status: str, event: SesEvent) -> None:
    if Contact.objects.filter(pk=contact_id, status=Contact.Status.ACTIVE).update(status=status):
        logger.info("contact %s suppressed status=%s by=%s", contact_id, status, event.type)


def _soft_bounce_limit_reached(contact_id: int, event: SesEvent) -> bool:
    """SOFT_BOUNCE_LIMIT soft bounces of the contact (this one included) within the window
    before this one, counted from its Event rows (any campaign, any source)."""
    since = event.occurred_at - timedelta(days=settings.SOFT_BOUNCE_WINDOW_DAYS)
    count = Event.objects.filter(
        notification__contact_id=contact_id,
        type=E.BOUNCED,
        bounce_type=Event.BounceType.SOFT,
        occurred_at__gt=since,
    ).count()
    return count >= settings.SOFT_BOUNCE_LIMIT


def _suppress_all(events: list[SesEvent], found: Found) -> None:
    """Suppress the contacts these newly recorded events call for, in event order: a contact's
    first complaint, hard bounce, or soft bounce reaching the limit decides."""
    decided: set[int] = set()
    for event in events:
        contact_id = found[event.message_id][1]
        if contact_id in decided or event.type not in (E.COMPLAINED, E.BOUNCED):
            continue
        if event.type == E.COMPLAINED:
            status = Contact.Status.COMPLAINED
        elif event.bounce_type == Event.BounceType.HARD or _soft_bounce_limit_reached(
            contact_id, event
        ):
            status = Contact.Status.BOUNCED
        else:
            continue
        decided.add(contact_id)
        _contact_suppress(contact_id, status, event)

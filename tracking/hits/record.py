"""Recording opens and clicks from our pixel and redirect (SES events: tracking.ses_events).

Buffered (a flusher's batches) and direct (a view's one hit) run the same
`tracking_hits_record`, one transaction per batch: Events with their verdicts, first
engagements and counters, so counts and rows cannot drift apart. Idempotent: each hit's id is
its Event's esp_event_id ("trk:…"), so a batch recorded twice counts once.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from django.db import (
    connection,
    transaction,
)

from campaigns.counters import (
    CounterName,
    counter_hour,
    counters_add,
    hourly_counter,
    link_counter,
)
from campaigns.models import Notification
from infra.db import pg_rows
from tracking.hits.classify import (
    CLICK,
    FAST_CLICK_SECONDS,
    HONEYPOT_WINDOW_SECONDS,
    HUMAN,
    MACHINE,
    OPEN,
    Click,
    burst_reasons,
    classify_hit,
    parse_ip,
)
from tracking.hits.lookups import campaign_links, notification_events, notifications_by_id
from tracking.models import EVENT_INSERT_COLUMNS, EVENT_INSERT_ROW, Event, FirstEngagement

logger = logging.getLogger(__name__)

N = Notification.Status
FE = FirstEngagement.Kind

EVENT_ID_PREFIX = "trk:"
_HIT_FORMAT = 1  # the first field of a buffered record: lets the format change safely
# Advisory-lock namespace for "recording engagement of notification N" (pg_advisory_xact_lock
# (class, N mod 2^31)): batches touching the same notification take turns, so "is this the
# first click of this link?" is never answered by two transactions at once.
_LOCK_CLASS = 0x74726B00
_INSERT_CHUNK = 500  # rows per INSERT statement (14 columns: 7,000 parameters)


# --- hits -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One request to the pixel or a click URL, as the view saw it."""

    id: str  # unique per request: the Event's idempotency key
    kind: str  # classify.OPEN or classify.CLICK
    notification_id: int
    at: float  # Unix time of the request
    method: str  # GET or HEAD
    user_agent: str
    ip: str | None
    index: int | None = None  # the link index, for a click
    honeypot: bool = False  # a click on the invisible link

    def dumps(self) -> str:
        return json.dumps(
            [_HIT_FORMAT, self.id, self.kind, self.notification_id, self.at, self.method,
             self.user_agent, self.ip, self.index, self.honeypot],
            separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def loads(cls, raw: bytes | str) -> Hit:
        """A buffered record back; ValueError if it is not one."""
        try:
            fmt, hit_id, kind, nid, at, method, user_agent, ip, index, honeypot = json.loads(raw)
        except (TypeError, ValueError) as err:
            raise ValueError(f"not a tracking record: {err}") from None
        valid = (
            fmt == _HIT_FORMAT
            and isinstance(hit_id, str) and 0 < len(hit_id) <= 100
            and kind in (OPEN, CLICK)
            and isinstance(nid, int) and nid > 0
            and isinstance(at, int | float)
            and method in ("GET", "HEAD")
            and isinstance(user_agent, str)
            and (ip is None or isinstance(ip, str))
            and (index is None or isinstance(index, int))
            and isinstance(honeypot, bool)
        )  # fmt: skip
        if not valid:
            raise ValueError("not a tracking record: bad field")
        return cls(hit_id, kind, nid, float(at), method, user_agent, ip, index, honeypot)


def hit_new(
    *,
    kind: str,
    notification_id: int,
    method: str,
    user_agent: str,
    ip: str | None,
    index: int | None = None,
    honeypot: bool = False,
) -> Hit:
    return Hit(
        id=EVENT_ID_PREFIX + secrets.token_urlsafe(12),  # 96 random bits
        kind=kind,
        notification_id=notification_id,
        at=time.time(),
        method=method,
        user_agent=user_agent[:500],
        ip=ip,
        index=index,
        honeypot=honeypot,
    )


# --- recording --------------------------------------------------------------------------------


@dataclass
class _Row:
    hit: Hit
    campaign_id: int
    link_id: int | None
    verdict: str
    reason: str


def tracking_hits_record(*, hits: Sequence[Hit]) -> int:
    """Record hits with their verdicts, first engagements and counters, in one transaction;
    returns how many Events were written. Hits of unknown notifications (a valid signature
    for a row that does not exist) and of links that do not exist are dropped; a hit recorded
    before (same id) is not recorded or counted again."""
    if not hits:
        return 0
    with transaction.atomic():
        _lock_notifications({hit.notification_id for hit in hits})
        rows = _resolve(hits)
        if not rows:
            return 0
        deltas: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        prior = _prior_clicks(rows)
        _apply_bursts(rows, prior, deltas)
        inserted = _insert_events(rows)
        fresh = [row for row in rows if row.hit.id in inserted]
        _count(fresh, prior, deltas)
        for campaign_id in sorted(deltas):
            counters_add(campaign_id=campaign_id, deltas=deltas[campaign_id])
    dropped = len(hits) - len(rows)
    if dropped or len(hits) > 1:
        logger.info(
            "tracking recorded hits=%d events=%d dropped=%d", len(hits), len(inserted), dropped
        )
    return len(inserted)


def _lock_notifications(notification_ids: Iterable[int]) -> None:
    if connection.vendor != "postgresql":
        return  # SQLite (the demo): write transactions are serialized anyway
    keys = sorted({nid % 2**31 for nid in notification_ids})  # one order for everyone
    pg_rows(
        "SELECT count(pg_advisory_xact_lock(%b::int, k)) FROM unnest(%b::int[]) AS k",
        [_LOCK_CLASS, keys],
    )


def _resolve(hits: Sequence[Hit]) -> list[_Row]:
    """The hits that name a real notification (and, for clicks, a link), with first verdicts."""
    nids = {hit.notification_id for hit in hits}
    notifications = {
        row["id"]: (row["campaign_id"], row["status"], row["updated_at"])
        for row in notifications_by_id(nids, fields=["id", "campaign_id", "status", "updated_at"])
    }
    # Send times matter only to the fast-click rule, so only for clicks of notifications
    # whose ledger row changed (sent, delivered…) less than FAST_CLICK_SECONDS before them:
    # every send or delivery came before that change, so for the others it cannot apply.
    recent = {
        hit.notification_id
        for hit in hits
        if hit.kind == CLICK
        and hit.notification_id in notifications
        and notifications[hit.notification_id][2].timestamp() > hit.at - FAST_CLICK_SECONDS
    }
    sent_at = _send_times(recent, notifications)
    rows = []
    for hit in hits:
        found = notifications.get(hit.notification_id)
        if found is None:
            continue  # signed by us, but no such notification (deleted, another database)
        campaign_id = found[0]
        link_id = None
        honeypot = False
        if hit.kind == CLICK:
            links = campaign_links(campaign_id)
            if hit.index == links.honeypot_index:
                honeypot = True
            elif hit.index in links.urls:
                link_id = links.ids[hit.index]
            else:
                continue  # the view never queues these; a forged record would be one
        verdict = classify_hit(
            kind=hit.kind,
            method=hit.method,
            user_agent=hit.user_agent,
            ip=hit.ip,
            seconds_since_send=_seconds_since_send(hit.at, sent_at.get(hit.notification_id, [])),
            honeypot=honeypot,
        )
        rows.append(
            _Row(
                hit=hit if honeypot == hit.honeypot else replace(hit, honeypot=honeypot),
                campaign_id=campaign_id,
                link_id=link_id,
                verdict=verdict.verdict,
                reason=verdict.reason,
            )
        )
    return rows


def _send_times(nids: set[int], notifications: dict) -> dict[int, list[float]]:
    """When each message was handed to SES and delivered (Unix times), where known: the
    ledger's last change while the row is still `sent` (that change was the send), and SES's
    Send / Delivery events. Gateways scan as a message arrives, so the fast-click rule counts
    from the latest of these before the click."""
    if not nids:
        return {}
    times: dict[int, list[float]] = defaultdict(list)
    for nid, (_, status, updated_at) in notifications.items():
        if nid in nids and status == N.SENT:
            times[nid].append(updated_at.timestamp())
    for event in notification_events(
        nids,
        types=[Event.Type.SENT, Event.Type.DELIVERED],
        fields=["notification_id", "occurred_at"],
    ):
        times[event["notification_id"]].append(event["occurred_at"].timestamp())
    return times


def _seconds_since_send(at: float, send_times: list[float]) -> float | None:
    before = [t for t in send_times if t <= at]
    return at - max(before) if before else None


def _prior_clicks(rows: list[_Row]) -> dict[int, list[dict]]:
    """The clicks already recorded for the notifications clicked in this batch, by
    notification (one query, used by the burst rules and by the unique-per-link counts). A
    batch recorded before (the same hit ids) is left out: it is this batch."""
    nids = {row.hit.notification_id for row in rows if row.hit.kind == CLICK}
    if not nids:
        return {}
    batch_ids = {row.hit.id for row in rows}
    prior: dict[int, list[dict]] = defaultdict(list)
    for event in notification_events(
        nids,
        types=[Event.Type.CLICKED],
        fields=["id", "notification_id", "occurred_at", "link_id", "verdict", "esp_event_id"],
        source=Event.Source.TRACKING,
    ):
        if event["esp_event_id"] not in batch_ids:
            prior[event["notification_id"]].append(event)
    return prior


def _apply_bursts(
    rows: list[_Row], prior: dict[int, list[dict]], deltas: dict[int, dict[str, int]]
) -> None:
    """The burst rules over each notification's clicks, those in this batch and those already
    recorded near them: batch clicks they catch become machine before they are written;
    recorded human clicks they catch are turned to machine, and their counts taken back."""
    clicks_by_nid: dict[int, list[_Row]] = defaultdict(list)
    for row in rows:
        if row.hit.kind == CLICK:
            clicks_by_nid[row.hit.notification_id].append(row)
    if not clicks_by_nid:
        return
    times = [row.hit.at for group in clicks_by_nid.values() for row in group]
    low, high = min(times) - HONEYPOT_WINDOW_SECONDS, max(times) + HONEYPOT_WINDOW_SECONDS
    recorded = {
        nid: [e for e in prior.get(nid, ()) if low <= e["occurred_at"].timestamp() <= high]
        for nid in clicks_by_nid
    }

    flips: dict[str, list[dict]] = defaultdict(list)
    for nid, group in clicks_by_nid.items():
        links = campaign_links(group[0].campaign_id)
        clicks = [
            Click(key=("hit", row.hit.id), at=row.hit.at, index=row.hit.index,
                  honeypot=row.hit.honeypot)
            for row in group
        ]  # fmt: skip
        for event in recorded[nid]:
            honeypot = event["link_id"] is None  # every real click has its link
            clicks.append(
                Click(key=("event", event["id"]), at=event["occurred_at"].timestamp(),
                      index=None if honeypot else links.index_of.get(event["link_id"]),
                      honeypot=honeypot)
            )  # fmt: skip
        reasons = burst_reasons(clicks, link_count=len(links.urls))
        if not reasons:
            continue
        for row in group:
            reason = reasons.get(("hit", row.hit.id))
            if reason and row.verdict == HUMAN:
                row.verdict, row.reason = MACHINE, reason
        for event in recorded[nid]:
            reason = reasons.get(("event", event["id"]))
            if reason and event["verdict"] == HUMAN:
                event["campaign_id"] = group[0].campaign_id
                event["index"] = links.index_of.get(event["link_id"])
                flips[reason].append(event)
    if flips:
        _flip_to_machine(flips, deltas)


def _flip_to_machine(flips: dict[str, list[dict]], deltas: dict[int, dict[str, int]]) -> None:
    touched: dict[int, int] = {}  # notification → campaign
    for reason, events in flips.items():
        Event.objects.filter(pk__in=[e["id"] for e in events], verdict=HUMAN).update(
            verdict=MACHINE, verdict_reason=reason
        )
        for event in events:
            counts = deltas[event["campaign_id"]]
            counts[CounterName.HUMAN_CLICKS] -= 1
            hour = counter_hour(at=event["occurred_at"])
            counts[hourly_counter(series=CounterName.HUMAN_CLICKS, hour=hour)] -= 1
            if event["index"] is not None:
                counts[link_counter(index=event["index"], series=CounterName.HUMAN_CLICKS)] -= 1
            touched[event["notification_id"]] = event["campaign_id"]
    still_human = {
        event["notification_id"]
        for event in notification_events(
            touched, types=[Event.Type.CLICKED], fields=["notification_id"], verdict=HUMAN
        )
    }
    for nid, campaign_id in touched.items():
        if nid in still_human:
            continue
        deleted, _ = FirstEngagement.objects.filter(
            notification_id=nid, kind=FE.HUMAN_CLICK
        ).delete()
        if deleted:
            deltas[campaign_id][CounterName.UNIQUE_HUMAN_CLICKS] -= 1
    logger.info(
        "tracking clicks turned machine by burst rules: %s",
        {reason: len(events) for reason, events in flips.items()},
    )


def _insert_events(rows: list[_Row]) -> dict[str, int]:
    """INSERT … ON CONFLICT (esp_event_id) DO NOTHING: {hit id: event id} of rows written."""
    table = Event._meta.db_table
    types, times, nids, link_ids, agents, ips, hit_ids, verdicts, reasons = ([] for _ in range(9))
    for row in rows:
        hit = row.hit
        ip = parse_ip(hit.ip)
        types.append("opened" if hit.kind == OPEN else "clicked")  # Event.Type values
        times.append(datetime.fromtimestamp(hit.at, tz=UTC))
        nids.append(hit.notification_id)
        link_ids.append(row.link_id)
        agents.append(hit.user_agent[:500])
        ips.append(str(ip) if ip is not None else None)
        hit_ids.append(hit.id)
        verdicts.append(row.verdict)
        reasons.append(row.reason[:40])
    if connection.vendor == "postgresql":
        # One statement of 9 array parameters, whatever the batch size (a VALUES list of
        # 2,000 rows × 14 placeholders costs psycopg more to parse than the insert itself).
        return dict(
            pg_rows(
                f"INSERT INTO {table} ({EVENT_INSERT_COLUMNS}) "  # noqa: S608 (our names)
                "SELECT t, %b, o, n, l, u, i, e, '', v, r, '', NULL, now() FROM unnest("
                "%b::text[], %b::timestamptz[], %b::bigint[], %b::bigint[], %b::text[], "
                "%b::inet[], %b::text[], %b::text[], %b::text[]) AS x(t, o, n, l, u, i, e, v, r) "
                "ON CONFLICT (esp_event_id) DO NOTHING RETURNING esp_event_id, id",
                [str(Event.Source.TRACKING), types, times, nids, link_ids, agents, ips, hit_ids,
                 verdicts, reasons],
            )
        )  # fmt: skip
    inserted: dict[str, int] = {}
    with connection.cursor() as cursor:
        adapt = connection.ops.adapt_datetimefield_value
        now = adapt(datetime.now(tz=UTC))
        columns = list(zip(types, times, nids, link_ids, agents, ips, hit_ids, verdicts, reasons,
                           strict=True))  # fmt: skip
        for start in range(0, len(columns), _INSERT_CHUNK):
            chunk = columns[start : start + _INSERT_CHUNK]
            params = [
                p
                for t, o, n, lk, u, i, e, v, r in chunk
                for p in (
                    t,
                    Event.Source.TRACKING,
                    adapt(o),
                    n,
                    lk,
                    u,
                    i,
                    e,
                    "",
                    v,
                    r,
                    "",
                    None,
                    now,
                )  # fmt: skip
            ]
            values = ", ".join([EVENT_INSERT_ROW] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} ({EVENT_INSERT_COLUMNS}) VALUES {values} "  # noqa: S608
                "ON CONFLICT (esp_event_id) DO NOTHING RETURNING esp_event_id, id",
                params,
            )
            inserted.update(cursor.fetchall())
    return inserted


def _count(rows: list[_Row], prior: dict[int, list[dict]], deltas: dict) -> None:
    """Counters for the Events just written, and their first engagements."""
    firsts: dict[tuple[int, str], tuple[float, int]] = {}
    link_pairs: dict[tuple[int, int], tuple[int, int]] = {}  # (nid, link id) → (campaign, index)
    for row in rows:
        hit = row.hit
        counts = deltas[row.campaign_id]
        human = row.verdict == HUMAN
        every, humans = _SERIES[hit.kind]
        hour = counter_hour(at=datetime.fromtimestamp(hit.at, tz=UTC))
        counts[every] += 1
        counts[hourly_counter(series=every, hour=hour)] += 1
        if human:
            counts[humans] += 1
            counts[hourly_counter(series=humans, hour=hour)] += 1
        # A honeypot hit is a (machine) click of the message, so it counts in the clicks of
        # all kinds, as the recount (tracking.reports.recount) counts every click event; it is not
        # a link of the message, so no link counts it.
        if hit.kind == CLICK and not hit.honeypot:
            counts[link_counter(index=hit.index, series=CounterName.CLICKS)] += 1
            if human:
                counts[link_counter(index=hit.index, series=CounterName.HUMAN_CLICKS)] += 1
            link_pairs[(hit.notification_id, row.link_id)] = (row.campaign_id, hit.index)
        kinds = [FE.OPEN, FE.HUMAN_OPEN] if hit.kind == OPEN else [FE.CLICK, FE.HUMAN_CLICK]
        for kind in kinds[: 2 if human else 1]:
            key = (hit.notification_id, kind)
            if key not in firsts or hit.at < firsts[key][0]:
                firsts[key] = (hit.at, row.campaign_id)
    if firsts:
        for nid, kind in _insert_first_engagements(firsts):
            deltas[firsts[(nid, kind)][1]][_UNIQUE_COUNTERS[kind]] += 1
    if link_pairs:
        seen = {(nid, e["link_id"]) for nid, events in prior.items() for e in events}
        for pair, (campaign_id, index) in link_pairs.items():
            if pair not in seen:
                deltas[campaign_id][
                    link_counter(index=index, series=CounterName.UNIQUE_CLICKS)
                ] += 1


# The counters of a hit's kind: (all, human ones).
_SERIES = {
    OPEN: (CounterName.OPENS, CounterName.HUMAN_OPENS),
    CLICK: (CounterName.CLICKS, CounterName.HUMAN_CLICKS),
}
# The counter a new first engagement of each kind adds one to.
_UNIQUE_COUNTERS = {
    FE.OPEN: CounterName.UNIQUE_OPENS,
    FE.CLICK: CounterName.UNIQUE_CLICKS,
    FE.HUMAN_OPEN: CounterName.UNIQUE_HUMAN_OPENS,
    FE.HUMAN_CLICK: CounterName.UNIQUE_HUMAN_CLICKS,
}


def _insert_first_engagements(firsts: dict[tuple[int, str], tuple[float, int]]):
    """INSERT … ON CONFLICT DO NOTHING: the (notification, kind) pairs that were new."""
    table = FirstEngagement._meta.db_table
    items = sorted(firsts.items())
    nids = [nid for (nid, _), _ in items]
    kinds = [kind for (_, kind), _ in items]
    times = [datetime.fromtimestamp(at, tz=UTC) for _, (at, _) in items]
    conflict = "ON CONFLICT (notification_id, kind) DO NOTHING RETURNING notification_id, kind"
    if connection.vendor == "postgresql":
        return pg_rows(
            f"INSERT INTO {table} (notification_id, kind, occurred_at) "  # noqa: S608
            f"SELECT * FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[]) {conflict}",
            [nids, [str(kind) for kind in kinds], times],
        )
    new = []
    with connection.cursor() as cursor:
        adapt = connection.ops.adapt_datetimefield_value
        rows = list(zip(nids, kinds, times, strict=True))
        for start in range(0, len(rows), _INSERT_CHUNK * 4):
            chunk = rows[start : start + _INSERT_CHUNK * 4]
            params = [p for nid, kind, at in chunk for p in (nid, kind, adapt(at))]
            values = ", ".join(["(%s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} (notification_id, kind, occurred_at) VALUES {values} "  # noqa: S608
                + conflict,
                params,
            )
            new += cursor.fetchall()
    return new

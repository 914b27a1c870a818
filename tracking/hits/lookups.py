"""What the tracking views and flushers read: a campaign's links (what a click may lead to,
cached in the process), a notification's campaign, and a batch's notifications and events."""

import bisect
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from django.db import connection

from campaigns.models import CampaignLink, Notification
from infra.db import pg_lookup
from tracking.models import Event

SAFE_SCHEMES = ("http://", "https://")


# --- links: what a click may lead to (the click view's reads, cached in the process) ---------


@dataclass(frozen=True)
class CampaignLinks:
    urls: dict[int, str]  # followable links (http/https only): index → URL
    ids: dict[int, int]  # index → CampaignLink id (every link)
    index_of: dict[int, int]  # CampaignLink id → index
    honeypot_index: int  # one past the last link: the invisible link (templates_app.instrument)


@lru_cache(maxsize=1024)
def campaign_links(campaign_id: int) -> CampaignLinks:
    """A campaign's links, cached in process memory: they are written once, in the same
    transaction that freezes the audience (campaign_start), and never change after, so no
    token for the campaign can exist before them. 1,024 campaigns × a few links is small."""
    rows = list(
        CampaignLink.objects.filter(campaign_id=campaign_id).values_list("id", "index", "url")
    )
    return CampaignLinks(
        urls={index: url for _, index, url in rows if url.lower().startswith(SAFE_SCHEMES)},
        ids={index: link_id for link_id, index, _ in rows},
        index_of={link_id: index for link_id, index, _ in rows},
        honeypot_index=max((index for _, index, _ in rows), default=-1) + 1,
    )


@dataclass(frozen=True)
class ClickTarget:
    url: str | None  # where to send the person; None for the honeypot
    honeypot: bool = False


def link_target(*, notification_id: int, index: int) -> ClickTarget | None:
    """Where a click leads, or None (nothing to record) for a link that does not exist or is
    not http(s). The destination comes from the campaign's links, never from the request:
    no open redirect, no javascript: links. The notification's campaign comes from the
    process's map of campaign id ranges, else from one primary-key read; the links from the
    process's cache."""
    campaign_id = notification_campaign(notification_id=notification_id)
    if campaign_id is None:
        return None
    links = campaign_links(campaign_id)
    if index == links.honeypot_index:
        return ClickTarget(url=None, honeypot=True)
    url = links.urls.get(index)
    return ClickTarget(url=url) if url else None


# Which campaign a notification belongs to, without a query for most clicks. A campaign's
# notifications are written by one INSERT … SELECT when it starts, so they usually hold one
# dense run of ids; once a campaign has been looked up RANGE_AFTER times in this process, one
# query (min, max, count) tells whether its ids are exactly [min, max] (count = max − min + 1:
# then no other campaign's id can be inside, and ids are never reused, so none can come
# later). Runs with gaps or interleaved with another campaign are never mapped: those clicks
# keep their primary-key read. RANGE_AFTER lookups keep small campaigns from paying for the
# query, which reads the campaign's rows (once per process; cost: docs/PERFORMANCE.md).
RANGE_AFTER = 50
_ranges: tuple[list[int], list[tuple[int, int, int]]] = ([], [])  # (firsts, (first, last, c))
_lookups: dict[int, int] = {}  # campaign → lookups since the process started, unmapped ones
_not_dense: set[int] = set()
_ranges_lock = threading.Lock()


def notification_campaign(*, notification_id: int) -> int | None:
    """The campaign of a notification, None if there is no such notification."""
    firsts, ranges = _ranges
    i = bisect.bisect_right(firsts, notification_id) - 1
    if i >= 0 and notification_id <= ranges[i][1]:
        return ranges[i][2]
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT campaign_id FROM {table} WHERE id = %s", [notification_id])  # noqa: S608
        row = cursor.fetchone()
    if row is None:
        return None
    campaign_id = row[0]
    if campaign_id not in _not_dense:
        seen = _lookups[campaign_id] = _lookups.get(campaign_id, 0) + 1
        if seen >= RANGE_AFTER:
            _map_campaign_range(campaign_id)
    return campaign_id


def _map_campaign_range(campaign_id: int) -> None:
    global _ranges
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT min(id), max(id), count(*) FROM {table} WHERE campaign_id = %s",  # noqa: S608
            [campaign_id],
        )
        first, last, count = cursor.fetchone()
    with _ranges_lock:
        _lookups.pop(campaign_id, None)
        if len(_lookups) > 10_000:  # many campaigns, each clicked rarely: start counting again
            _lookups.clear()
        if not count or last - first + 1 != count:
            _not_dense.add(campaign_id)
            return
        ranges = sorted([*_ranges[1], (first, last, campaign_id)])
        _ranges = ([r[0] for r in ranges], ranges)  # swapped whole: readers take no lock


def notifications_by_id(notification_ids: Iterable[int], *, fields: Sequence[str]) -> list[dict]:
    """These notifications (those that exist), as dicts of `fields`: a flusher's batch. On
    PostgreSQL one primary-key lookup per id (pg_lookup: a planner left to choose scanned a new
    campaign's whole ledger for every batch)."""
    ids = set(notification_ids)
    if not ids:
        return []
    if connection.vendor != "postgresql":
        return list(Notification.objects.filter(pk__in=ids).values(*fields))
    columns = [Notification._meta.get_field(f).column for f in fields]  # ours, checked
    rows = pg_lookup(table=Notification._meta.db_table, key="id", ids=ids, columns=columns)
    return [dict(zip(fields, row, strict=True)) for row in rows]


def notification_events(
    notification_ids: Iterable[int], *, types: Sequence[str], fields: Sequence[str], **equal
) -> list[dict]:
    """The events of `types` (and with the `equal` field values) of these notifications, as
    dicts of `fields`: the flushers' reads of what a batch's notifications already have. On
    PostgreSQL, one lookup per notification in the (notification, type) index (pg_lookup: a
    planner left to choose scanned all of a new campaign's clicks for every batch)."""
    ids = set(notification_ids)
    if not ids:
        return []
    if connection.vendor != "postgresql":
        rows = Event.objects.filter(notification_id__in=ids, type__in=list(types), **equal)
        return list(rows.values(*fields))
    column = {f: Event._meta.get_field(f).column for f in (*fields, *equal)}  # ours, checked
    rows = pg_lookup(
        table=Event._meta.db_table,
        key="notification_id",
        ids=ids,
        columns=[column[f] for f in fields],
        where=" AND ".join(["t.type = ANY(%b::text[])", *(f"t.{column[n]} = %b" for n in equal)]),
        params=[[str(t) for t in types], *(str(v) for v in equal.values())],
    )
    return [dict(zip(fields, row, strict=True)) for row in rows]

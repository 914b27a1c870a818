"""Send at this local time in each contact's time zone: which UTC moment each zone reaches the
wall-clock time typed, and the waves that makes (docs/DATAFLOW.md, "Local-time sends").

A wave is every zone that reaches the time at the same UTC moment. Nothing here writes:
campaigns.services schedules (the first wave's moment is the campaign's scheduled_at) and
freezes each wave into the ledger as it comes due, through the one start/freeze path.

Zones are read from the contacts each time a wave is frozen, not stored with the schedule, so
a contact who joins or changes zone in between is frozen with the first wave due at or after
their own moment (the ledger's unique (campaign, contact) still sends nobody twice), and the
last wave takes every remaining member, whatever their zone.
"""

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Count

from campaigns.models import Campaign
from campaigns.preferences import known_time_zones
from campaigns.selectors import audience_memberships

WALL_TIME_FORMAT = "%Y-%m-%dT%H:%M"


@dataclass(frozen=True)
class Wave:
    moment: datetime  # in UTC
    zones: tuple[str, ...]  # the zones that reach the wall-clock time at this moment
    recipients: int


def zone_or_fallback(name: str, fallback: str) -> str:
    """The zone a contact is sent in: theirs if it is a known zone, else the fallback (the
    scheduling user's): a blank or stale name must not hold a contact back forever."""
    return name if name in known_time_zones() else fallback


def zone_moment(wall: datetime, zone: str) -> datetime:
    """The UTC moment `zone`'s clocks show the naive `wall` time.

    At the DST edges, Python's rule (fold=0): a time the clocks skip (02:30 when they jump
    from 02:00 to 03:00) is read with the offset before the jump, so it goes out at what the
    clocks then show as 03:30; a time they show twice (01:30 when they fall back) is the first.
    """
    return wall.replace(tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(UTC)


def wall_time_text(wall: datetime) -> str:
    return wall.strftime(WALL_TIME_FORMAT)


def wall_time_parse(text: str) -> datetime:
    return datetime.strptime(text, WALL_TIME_FORMAT)  # noqa: DTZ007 (a wall-clock time, no zone)


def audience_zones(*, contact_list_id: int) -> dict[str, int]:
    """The audience (selectors.audience_memberships, the one audience rule) per stored time
    zone (blank included): what a freeze would take now, counted in one grouped read."""
    rows = (
        audience_memberships(contact_list_id=contact_list_id)
        .order_by()
        .values_list("contact__time_zone")
        .annotate(recipients=Count("pk"))
    )
    return dict(rows)


def waves_plan(*, wall: datetime, fallback_zone: str, zone_counts: dict[str, int]) -> list[Wave]:
    """The waves for these per-zone counts, earliest first (pure: no database)."""
    by_moment: dict[datetime, dict[str, int]] = {}
    for stored, count in zone_counts.items():
        zone = zone_or_fallback(stored, fallback_zone)
        zones = by_moment.setdefault(zone_moment(wall, zone), {})
        zones[zone] = zones.get(zone, 0) + count
    return [
        Wave(moment=moment, zones=tuple(sorted(zones)), recipients=sum(zones.values()))
        for moment, zones in sorted(by_moment.items())
    ]


def waves_due(
    *, wall: datetime, fallback_zone: str, zone_counts: dict[str, int], now: datetime
) -> tuple[list[str] | None, datetime | None, int]:
    """What a freeze at `now` takes: (the stored zone values now due, or None for every member
    when no wave is left to come; the next wave's moment or None; recipients still waiting)."""
    due: list[str] = []
    later: list[datetime] = []
    waiting = 0
    for stored, count in zone_counts.items():
        moment = zone_moment(wall, zone_or_fallback(stored, fallback_zone))
        if moment <= now:
            due.append(stored)
        else:
            later.append(moment)
            waiting += count
    if not later:
        return None, None, 0
    return sorted(due), min(later), waiting


def campaign_waves(*, campaign: Campaign) -> list[Wave]:
    """A local-time campaign's waves as its audience stands ([] for any other campaign)."""
    if not campaign.local_send_time:
        return []
    return waves_plan(
        wall=wall_time_parse(campaign.local_send_time),
        fallback_zone=campaign.local_fallback_zone,
        zone_counts=audience_zones(contact_list_id=campaign.contact_list_id),
    )

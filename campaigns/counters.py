"""Report counts kept incrementally: writers add, the report reads a handful of rows.

A million-recipient campaign's report must render in well under 200 ms, so it never counts
the ledger or the event table; every writer that changes a count adds to it here, in the
same transaction as its own write, so counts and rows cannot drift apart. Every name is
spelled here (`CounterName`, `link_counter`, `hourly_counter`); who writes which:
docs/REPORTS.md.
"""

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from django.db import connection
from django.db.models import Sum

from campaigns.models import CampaignCounter

COUNTER_TABLE = CampaignCounter._meta.db_table


class CounterName:
    """The campaign-wide counters' names: plain strings (dict keys, SQL parameters and log
    lines everywhere, where an enum member would print as its repr)."""

    # The hand-off's outcome: every recipient ends in exactly one (HANDED_OFF).
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"
    # SES events.
    DELIVERED = "delivered"
    BOUNCED_HARD = "bounced_hard"
    BOUNCED_SOFT = "bounced_soft"
    COMPLAINED = "complained"
    REJECTED = "rejected"
    DELAYED = "delayed"
    RENDERING_FAILED = "rendering_failed"
    # Engagement: all, and those judged a person's; every one, and each message's first.
    OPENS = "opens"
    CLICKS = "clicks"
    UNIQUE_OPENS = "unique_opens"
    UNIQUE_CLICKS = "unique_clicks"
    HUMAN_OPENS = "human_opens"
    HUMAN_CLICKS = "human_clicks"
    UNIQUE_HUMAN_OPENS = "unique_human_opens"
    UNIQUE_HUMAN_CLICKS = "unique_human_clicks"
    UNSUBSCRIBED = "unsubscribed"


# The hand-off's outcomes: once they add up to the audience frozen, every row has its answer.
HANDED_OFF = (CounterName.SENT, CounterName.FAILED, CounterName.UNKNOWN, CounterName.SKIPPED)
# The series counted per link (link_counter) and per UTC hour (hourly_counter).
LINK_SERIES = (CounterName.CLICKS, CounterName.UNIQUE_CLICKS, CounterName.HUMAN_CLICKS)
HOURLY_SERIES = (
    CounterName.OPENS,
    CounterName.CLICKS,
    CounterName.HUMAN_OPENS,
    CounterName.HUMAN_CLICKS,
)
HOUR_FORMAT = "%Y-%m-%dT%H"  # the UTC hour in an hourly counter's name
_LINK_PREFIX = "link:"


def link_counter(*, index: int, series: str) -> str:
    """The name of the link's counter of `series` (one of LINK_SERIES): link:<index>:<series>."""
    return f"{_LINK_PREFIX}{index}:{series}"


def counter_hour(*, at: datetime) -> str:
    """The UTC hour of `at` as hourly counters' names spell it (YYYY-MM-DDTHH)."""
    return at.astimezone(UTC).strftime(HOUR_FORMAT)


def hourly_counter(*, series: str, hour: str) -> str:
    """The name of the counter of `series` (one of HOURLY_SERIES) in `hour` (counter_hour):
    <series>@<hour>."""
    return f"{series}@{hour}"


def link_counter_series(*, name: str) -> str | None:
    """The series of a per-link counter's name, None if `name` is not one."""
    if not name.startswith(_LINK_PREFIX):
        return None
    return name.rsplit(":", 1)[-1]


def hourly_counter_parse(*, name: str) -> tuple[str, datetime] | None:
    """(series, UTC hour) of an hourly counter's name; None if `name` is not one."""
    series, _, hour = name.partition("@")
    if not hour:
        return None
    try:
        return series, datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def counters_add(*, campaign_id: int, deltas: Mapping[str, int]) -> None:
    """Add `deltas` ({name: n}) to the campaign's counters: one upsert statement.

    Names are written in sorted order so two transactions adding to the same counters lock
    their rows in the same order and cannot deadlock.
    """
    rows = [(name, n) for name, n in sorted(deltas.items()) if n]
    if not rows:
        return
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    params = [p for name, n in rows for p in (campaign_id, name, n)]
    with connection.cursor() as cursor:
        # Only the table name and placeholders are formatted in; every value is a parameter.
        cursor.execute(
            f"INSERT INTO {COUNTER_TABLE} (campaign_id, name, value) VALUES {values} "  # noqa: S608
            f"ON CONFLICT (campaign_id, name) "
            f"DO UPDATE SET value = {COUNTER_TABLE}.value + excluded.value",
            params,
        )


def counter_add_count_sql(*, rows: str) -> str:
    """SQL adding the number of rows of `rows` (a CTE of the same statement) to one counter;
    its parameters: campaign id, counter name (both %b). For a writer that changes rows and
    counts them in one statement: one round trip, and atomic without a transaction block."""
    return (
        f"INSERT INTO {COUNTER_TABLE} (campaign_id, name, value) "  # noqa: S608 (our names)
        f"SELECT %b, %b, count(*) FROM {rows} HAVING count(*) > 0 "
        "ON CONFLICT (campaign_id, name) "
        f"DO UPDATE SET value = {COUNTER_TABLE}.value + excluded.value"
    )


def campaign_counters(*, campaign_id: int) -> dict[str, int]:
    """Every counter of the campaign ({name: value}; a name never added to is absent)."""
    return dict(
        CampaignCounter.objects.filter(campaign_id=campaign_id).values_list("name", "value")
    )


def counters_sum(*, campaign_id: int, names: Iterable[str]) -> int:
    """The sum of the campaign's counters `names` (one indexed read)."""
    total = CampaignCounter.objects.filter(campaign_id=campaign_id, name__in=list(names)).aggregate(
        total=Sum("value")
    )["total"]
    return total or 0

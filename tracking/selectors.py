"""Reading reports and journeys.

A campaign's report reads its counters (`campaigns.counters`: one row per campaign and name,
kept by the writers in the same transaction as what they count), its row and its links: three
indexed queries whatever the campaign's size, never a scan of the ledger or the event table.
A million-recipient campaign's report costs what a ten-recipient one does.

`campaign_counters_recount` is the one place that counts from the rows themselves (the ledger
and the events): the `recount_campaign` command uses it to fill counters for campaigns sent
before counters existed, and to check them for drift. docs/REPORTS.md says what each number
means.
"""

import bisect
import functools
import operator
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from django.db import connection
from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    IntegerField,
    Max,
    Q,
    Value,
    When,
    Window,
)
from django.db.models.expressions import RowRange
from django.db.models.functions import Coalesce, TruncHour

from campaigns.counters import campaign_counters
from campaigns.models import Campaign, CampaignLink, Notification
from infra.db import pg_lookup
from tracking.models import Event

N = Notification.Status
E = Event.Type

# The hand-off's outcomes: every recipient ends in exactly one (campaigns.delivery, sweeper).
HANDED_OFF = ("sent", "failed", "unknown", "skipped")
# Hourly counters (`<series>@YYYY-MM-DDTHH`, UTC) that the timeline chart draws.
TIMELINE_SERIES = ("opens", "clicks", "human_opens", "human_clicks")
HOUR_FORMAT = "%Y-%m-%dT%H"
# Up to 14 days (336 points) the timeline is drawn per hour; a longer one per day, so a
# campaign still opened a year later is 365 points, not 8,760.
HOURLY_SPAN = timedelta(days=14)
# Counter names the report reads (besides link:* and the hourly series): the recount rebuilds
# exactly these, and leaves any other name alone.
PLAIN_COUNTERS = (
    *HANDED_OFF,
    "delivered", "bounced_hard", "bounced_soft", "complained", "rejected", "delayed",
    "rendering_failed",
    "opens", "clicks", "unique_opens", "unique_clicks",
    "human_opens", "human_clicks", "unique_human_opens", "unique_human_clicks",
    "unsubscribed",
)  # fmt: skip
LINK_COUNTERS = ("clicks", "unique_clicks", "human_clicks")


@dataclass(frozen=True)
class Rate:
    """A share (`part / whole`), None when the whole is zero; prints as a percentage."""

    part: int
    whole: int

    @property
    def value(self) -> float | None:
        return self.part / self.whole if self.whole else None

    @property
    def percent(self) -> float | None:
        return None if self.value is None else round(100 * self.value, 1)

    def __str__(self) -> str:
        return "—" if self.percent is None else f"{self.percent:.1f} %"


@dataclass(frozen=True)
class LinkClicks:
    index: int
    url: str
    clicks: int
    unique_clicks: int
    human_clicks: int


@dataclass(frozen=True)
class Timeline:
    """Opens and clicks over time, from the hourly counters, zeros filled in (UTC)."""

    unit: str  # "hour" or "day"
    labels: list[str]
    series: dict[str, list[int]]  # TIMELINE_SERIES → one value per label

    def as_json(self) -> dict:
        return {"unit": self.unit, "labels": self.labels, **self.series}

    def rows(self) -> Iterable[tuple]:
        """(label, opens, clicks, human_opens, human_clicks) per point (the CSV export)."""
        return zip(self.labels, *(self.series[name] for name in TIMELINE_SERIES), strict=True)


@dataclass(frozen=True)
class CampaignReport:
    campaign_id: int
    status: str
    recipients: int  # the audience frozen at start (Campaign.recipient_count)
    # The hand-off: each recipient ends in exactly one of these four, or is still pending.
    sent: int  # SES accepted it (a MessageId)
    failed: int  # SES refused it outright
    unknown: int  # the hand-off's outcome is unknown (5xx, timeout, worker died): never re-sent
    skipped: int  # contact no longer active at its turn, or the campaign was cancelled
    # What SES said afterwards (messages, from SES event publishing).
    delivered: int
    bounced_hard: int
    bounced_soft: int
    complained: int
    rejected: int
    delayed: int
    rendering_failed: int
    # Engagement: every open / click, and those judged a person's (not a proxy or a scanner).
    opens: int
    unique_opens: int
    human_opens: int
    unique_human_opens: int
    clicks: int
    unique_clicks: int
    human_clicks: int
    unique_human_clicks: int
    unsubscribed: int
    links: list[LinkClicks]
    timeline: Timeline
    counters: dict[str, int] = field(repr=False)

    @property
    def processed(self) -> int:
        return sum((self.sent, self.failed, self.unknown, self.skipped))

    @property
    def pending(self) -> int:
        """Not handed to SES yet (created or sending in the ledger)."""
        return max(0, self.recipients - self.processed)

    @property
    def progress_percent(self) -> int:
        if not self.recipients:
            return 0
        return min(100, round(100 * self.processed / self.recipients))

    @property
    def bounced(self) -> int:
        return self.bounced_hard + self.bounced_soft

    @property
    def rate_basis(self) -> str:
        """What rates are out of: "delivered" once SES delivery events arrive; "sent" when
        there are none (event publishing not set up), so rates are not divided by zero."""
        return "delivered" if self.delivered else "sent"

    @property
    def rate_base(self) -> int:
        return self.delivered if self.delivered else self.sent

    @property
    def open_rate(self) -> Rate:
        return Rate(self.unique_opens, self.rate_base)

    @property
    def human_open_rate(self) -> Rate:
        return Rate(self.unique_human_opens, self.rate_base)

    @property
    def click_through_rate(self) -> Rate:
        return Rate(self.unique_clicks, self.rate_base)

    @property
    def human_click_through_rate(self) -> Rate:
        return Rate(self.unique_human_clicks, self.rate_base)

    @property
    def click_to_open_rate(self) -> Rate:
        return Rate(self.unique_clicks, self.unique_opens)

    @property
    def human_click_to_open_rate(self) -> Rate:
        return Rate(self.unique_human_clicks, self.unique_human_opens)

    @property
    def unsubscribe_rate(self) -> Rate:
        return Rate(self.unsubscribed, self.rate_base)

    @property
    def bounce_rate(self) -> Rate:
        return Rate(self.bounced, self.sent)

    @property
    def complaint_rate(self) -> Rate:
        return Rate(self.complained, self.rate_base)

    def rows(self) -> list[tuple[str, int | Rate, int | Rate | None]]:
        """(label, all, human or None) in the order the page and the CSV show them."""
        return [
            ("Recipients", self.recipients, None),
            ("Sent (accepted by SES)", self.sent, None),
            ("Delivered", self.delivered, None),
            ("Bounced, hard", self.bounced_hard, None),
            ("Bounced, soft", self.bounced_soft, None),
            ("Complained", self.complained, None),
            ("Rejected by SES", self.rejected, None),
            ("Delayed", self.delayed, None),
            ("Rendering failed", self.rendering_failed, None),
            ("Failed (refused at hand-off)", self.failed, None),
            ("Unknown (hand-off outcome unknown; never re-sent)", self.unknown, None),
            ("Skipped", self.skipped, None),
            ("Pending", self.pending, None),
            ("Opens", self.opens, self.human_opens),
            ("Unique opens", self.unique_opens, self.unique_human_opens),
            ("Clicks", self.clicks, self.human_clicks),
            ("Unique clicks", self.unique_clicks, self.unique_human_clicks),
            ("Unsubscribed", self.unsubscribed, None),
            (f"Open rate (unique opens / {self.rate_basis})", self.open_rate,
             self.human_open_rate),
            (f"Click-through rate (unique clicks / {self.rate_basis})", self.click_through_rate,
             self.human_click_through_rate),
            ("Click-to-open rate (unique clicks / unique opens)", self.click_to_open_rate,
             self.human_click_to_open_rate),
            (f"Unsubscribe rate (/ {self.rate_basis})", self.unsubscribe_rate, None),
            ("Bounce rate (/ sent)", self.bounce_rate, None),
            (f"Complaint rate (/ {self.rate_basis})", self.complaint_rate, None),
        ]  # fmt: skip


def campaign_report(*, campaign_id: int) -> CampaignReport:
    """The campaign's report from its counters (three indexed queries, whatever its size)."""
    campaign = Campaign.objects.values("status", "recipient_count").get(pk=campaign_id)
    counters = campaign_counters(campaign_id=campaign_id)
    count = counters.get
    links = [
        LinkClicks(
            index=index,
            url=url,
            clicks=count(f"link:{index}:clicks", 0),
            unique_clicks=count(f"link:{index}:unique_clicks", 0),
            human_clicks=count(f"link:{index}:human_clicks", 0),
        )
        for index, url in CampaignLink.objects.filter(campaign_id=campaign_id)
        .order_by("index")
        .values_list("index", "url")
    ]
    plain = {name: count(name, 0) for name in PLAIN_COUNTERS}
    return CampaignReport(
        campaign_id=campaign_id,
        status=campaign["status"],
        recipients=campaign["recipient_count"],
        links=links,
        timeline=timeline_from_counters(counters),
        counters=counters,
        **plain,
    )


def timeline_from_counters(counters: Mapping[str, int]) -> Timeline:
    """The hourly counters as evenly spaced points (per hour, or per day past 14 days)."""
    by_hour: dict[datetime, dict[str, int]] = defaultdict(dict)
    for name, value in counters.items():
        series, _, hour = name.partition("@")
        if series not in TIMELINE_SERIES or not hour:
            continue
        try:
            at = datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue  # not a counter this chart draws
        by_hour[at][series] = value
    if not by_hour:
        return Timeline(unit="hour", labels=[], series={name: [] for name in TIMELINE_SERIES})
    first, last = min(by_hour), max(by_hour)
    step, unit, label = timedelta(hours=1), "hour", "%Y-%m-%d %H:00"
    if last - first > HOURLY_SPAN:
        step, unit, label = timedelta(days=1), "day", "%Y-%m-%d"
        first = first.replace(hour=0)
    points: dict[datetime, dict[str, int]] = {}
    at = first
    while at <= last:
        points[at] = dict.fromkeys(TIMELINE_SERIES, 0)
        at += step
    for hour, values in by_hour.items():
        bucket = hour if unit == "hour" else hour.replace(hour=0)
        for series, value in values.items():
            points[bucket][series] += value
    return Timeline(
        unit=unit,
        labels=[at.strftime(label) for at in points],
        series={name: [p[name] for p in points.values()] for name in TIMELINE_SERIES},
    )


# -- recounting from the rows (the recount_campaign command) ---------------------------------


def counter_is_recounted(name: str) -> bool:
    """True for the names `campaign_counters_recount` rebuilds (others are left alone)."""
    if name in PLAIN_COUNTERS:
        return True
    if name.startswith("link:"):
        return name.rsplit(":", 1)[-1] in LINK_COUNTERS
    series, at, _ = name.partition("@")
    return bool(at) and series in TIMELINE_SERIES


def _ses_outcomes_recount(ses, hard: Q) -> dict[str, int]:
    """The SES outcome counters of `ses` (a campaign's SES events; `hard`: which bounces are
    hard), by tracking.esp_events' rule: each row moves forward only (campaigns.ledger.RANK), so
    an event moved its row when its status ranks above every earlier event's of that row (and
    above `sent`, where every row SES reports on starts)."""
    from campaigns.ledger import RANK
    from tracking.esp_events import BOUNCE_COUNTERS, COUNTERS, NOTIFICATION_STATUS

    moves = []  # (condition, rank, counter)
    for event_type, status in NOTIFICATION_STATUS.items():
        if event_type == E.BOUNCED:
            moves.append((Q(type=E.BOUNCED) & hard, RANK[status], BOUNCE_COUNTERS["hard"]))
        else:
            moves.append((Q(type=event_type), RANK[status], COUNTERS[event_type]))
    # Before SES events had their own intake, anymail recorded SES's Rendering Failure as
    # `failed`.
    moves.append((Q(type=E.FAILED), RANK[N.FAILED], COUNTERS[E.RENDERING_FAILED]))
    rank = Case(*(When(c, then=Value(r)) for c, r, _ in moves), output_field=IntegerField())
    counter = Case(*(When(c, then=Value(n)) for c, _, n in moves), output_field=CharField())
    moved = (
        ses.filter(functools.reduce(operator.or_, (c for c, _, _ in moves)))
        .annotate(rank=rank, counter=counter)
        .annotate(
            before=Window(
                Max("rank"),
                partition_by=[F("notification_id")],
                order_by=F("id").asc(),
                frame=RowRange(start=None, end=-1),
            )
        )
        .filter(rank__gt=Coalesce("before", RANK[N.SENT]))
    )
    counts = {name: 0 for _, _, name in moves}
    # Grouped outside: SQL cannot group by a window function's result.
    counts.update(
        Event.objects.filter(pk__in=moved.values("pk"))
        .annotate(counter=counter)
        .values_list("counter")
        .annotate(n=Count("id"))
        .order_by()
    )
    soft = Case(When(hard, then=None), When(type=E.BOUNCED, then=F("notification_id")))
    counts.update(
        ses.aggregate(
            bounced_soft=Count(soft, distinct=True),
            delayed=Count("notification_id", distinct=True, filter=Q(type=E.DEFERRED)),
        )
    )
    return counts


def campaign_counters_recount(*, campaign_id: int) -> dict[str, int]:
    """The campaign's counters counted from its ledger rows and events (non-zero ones only).

    Seconds for a million recipients: a handful of GROUP BY queries over the campaign's rows.
    What each counts (the writers count the same, one at a time):
    - sent: rows with an SES MessageId (accepted, whatever SES said later); failed: `failed`
      rows without one (a later Rendering Failure makes a sent row `failed`); unknown, skipped:
      rows in that status.
    - SES outcomes count messages, as tracking.esp_events does: an outcome that moves the
      ledger (delivered, hard bounce, complaint, reject, rendering failure) counts where it
      moved its row, found by replaying each row's SES events in the order they were recorded;
      soft bounces and delays count the rows that had one.
    - opens and clicks are our own pixel's and redirect's events (source `tracking`); unique
      ones count notifications; human ones have the verdict `human` (events recorded before
      verdicts existed have none, so they count in "all" only). Hourly series by UTC hour.
    - unsubscribed: notifications with an unsubscribe event.
    """
    counts: dict[str, int] = {}
    not_accepted = Q(message_id__isnull=True) | Q(message_id="")
    counts.update(
        Notification.objects.filter(campaign_id=campaign_id).aggregate(
            sent=Count("id", filter=~not_accepted),
            failed=Count("id", filter=Q(status=N.FAILED) & not_accepted),
            unknown=Count("id", filter=Q(status=N.UNKNOWN)),
            skipped=Count("id", filter=Q(status=N.SKIPPED)),
        )
    )

    events = Event.objects.filter(notification__campaign_id=campaign_id)
    ses = events.filter(source__in=[Event.Source.SES, Event.Source.SES_FILE])
    # Bounces recorded before `bounce_type` existed: SES's own bounceType says which.
    hard = Q(bounce_type=Event.BounceType.HARD) | Q(
        bounce_type="", payload__bounce__bounceType="Permanent"
    )

    counts.update(_ses_outcomes_recount(ses, hard))
    counts["unsubscribed"] = events.filter(type=E.UNSUBSCRIBED).aggregate(
        n=Count("notification_id", distinct=True)
    )["n"]

    own = events.filter(source=Event.Source.TRACKING)
    human = Q(verdict=Event.Verdict.HUMAN)
    for kind, event_type in (("opens", E.OPENED), ("clicks", E.CLICKED)):
        of_type = Q(type=event_type)
        counts.update(
            own.aggregate(
                **{
                    kind: Count("id", filter=of_type),
                    f"unique_{kind}": Count("notification_id", distinct=True, filter=of_type),
                    f"human_{kind}": Count("id", filter=of_type & human),
                    f"unique_human_{kind}": Count(
                        "notification_id", distinct=True, filter=of_type & human
                    ),
                }
            )
        )
    for row in (
        own.filter(type=E.CLICKED, link__isnull=False)
        .values("link__index")
        .annotate(
            clicks=Count("id"),
            unique_clicks=Count("notification_id", distinct=True),
            human_clicks=Count("id", filter=human),
        )
        .order_by()
    ):
        for name in LINK_COUNTERS:
            counts[f"link:{row['link__index']}:{name}"] = row[name]
    for row in (
        own.filter(type__in=[E.OPENED, E.CLICKED])
        .annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
        .values("hour", "type")
        .annotate(all=Count("id"), human=Count("id", filter=human))
        .order_by()
    ):
        kind = "opens" if row["type"] == E.OPENED else "clicks"
        hour = row["hour"].astimezone(UTC).strftime(HOUR_FORMAT)
        counts[f"{kind}@{hour}"] = row["all"]
        counts[f"human_{kind}@{hour}"] = row["human"]
    return {name: value for name, value in counts.items() if value}


# -- journeys: one notification's story, in time order -----------------------------------------

# A notification opened by a proxy every few minutes for months can have thousands of events:
# the page shows the first 200 (in time order) and says how many more there are.
JOURNEY_EVENTS_SHOWN = 200


@dataclass(frozen=True)
class JourneyStep:
    at: datetime
    what: str  # "queued", an Event type ("opened", "bounced"…), or "status: <status>"
    source: str  # "ledger", or an Event source ("tracking", "ses", "ses_file", "recipient")
    detail: str = ""
    verdict: str = ""
    verdict_reason: str = ""
    user_agent: str = ""
    ip: str | None = None
    event_id: int | None = None


@dataclass(frozen=True)
class Journey:
    notification_id: int
    campaign_id: int
    campaign_name: str
    contact_id: int
    contact_email: str
    status: str
    reason: str
    message_id: str | None
    created_at: datetime
    updated_at: datetime
    steps: list[JourneyStep]
    events_not_shown: int = 0


_NOTIFICATION_FIELDS = (
    "id", "campaign_id", "campaign__name", "contact_id", "contact__email", "status", "reason",
    "message_id", "created_at", "updated_at",
)  # fmt: skip


def notification_journey(*, notification_id: int) -> Journey:
    """Every event of one notification in time order, with the ledger row's own times and
    status. Raises Notification.DoesNotExist for an unknown id."""
    row = Notification.objects.values(*_NOTIFICATION_FIELDS).get(pk=notification_id)
    return _journey(row)


def contact_journeys(*, contact_id: int, limit: int = 20) -> list[Journey]:
    """The contact's notifications, newest first (at most `limit`), each with its journey:
    "where did my email to X go?"."""
    rows = (
        Notification.objects.filter(contact_id=contact_id)
        .order_by("-created_at", "-id")
        .values(*_NOTIFICATION_FIELDS)[:limit]
    )
    return [_journey(row) for row in rows]


def _journey(row: dict) -> Journey:
    events = list(
        Event.objects.filter(notification_id=row["id"])
        .select_related("link")
        .order_by("occurred_at", "id")[: JOURNEY_EVENTS_SHOWN + 1]
    )
    not_shown = 0
    if len(events) > JOURNEY_EVENTS_SHOWN:
        events = events[:JOURNEY_EVENTS_SHOWN]
        not_shown = Event.objects.filter(notification_id=row["id"]).count() - len(events)
    steps = [
        JourneyStep(at=row["created_at"], what="queued", source="ledger",
                    detail="frozen into the campaign's audience")
    ]  # fmt: skip
    if row["status"] != N.CREATED:
        # updated_at is the time of the row's last status change (campaigns.ledger sets it).
        detail = row["reason"]
        if row["message_id"]:
            detail = f"SES MessageId {row['message_id']}" + (f"; {detail}" if detail else "")
        steps.append(
            JourneyStep(
                at=row["updated_at"], what=f"status: {row['status']}", source="ledger",
                detail=detail,
            )
        )  # fmt: skip
    steps.extend(_event_step(event) for event in events)
    steps.sort(key=lambda step: (step.at, step.source != "ledger"))
    return Journey(
        notification_id=row["id"],
        campaign_id=row["campaign_id"],
        campaign_name=row["campaign__name"],
        contact_id=row["contact_id"],
        contact_email=row["contact__email"],
        status=row["status"],
        reason=row["reason"],
        message_id=row["message_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        steps=steps,
        events_not_shown=not_shown,
    )


def _event_step(event: Event) -> JourneyStep:
    details = []
    if event.link is not None:
        details.append(f"link {event.link.index}: {event.link.url}")
    if event.bounce_type:
        details.append(f"{event.get_bounce_type_display().lower()} bounce")
    if event.description:
        details.append(event.description)
    return JourneyStep(
        at=event.occurred_at,
        what=event.type,
        source=event.source,
        detail="; ".join(details),
        verdict=event.verdict,
        verdict_reason=event.verdict_reason,
        user_agent=event.user_agent,
        ip=event.ip,
        event_id=event.pk,
    )


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
    token for the campaign can exist before them. 1,024 campaigns × a few links is ~1 MB."""
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
# keep their primary-key read. 50 lookups keep small campaigns from paying for the query
# (~50 ms for a million rows, once per process).
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

"""A campaign's report.

A campaign's report reads its counters (`campaigns.counters`: one row per campaign and name,
kept by the writers in the same transaction as what they count), its row and its links: three
indexed queries whatever the campaign's size, never a scan of the ledger or the event table.
A million-recipient campaign's report costs what a ten-recipient one does.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from campaigns.counters import (
    HANDED_OFF,
    HOURLY_SERIES,
    LINK_SERIES,
    CounterName,
    campaign_counters,
    hourly_counter_parse,
    link_counter,
)
from campaigns.models import Campaign, CampaignCounter, CampaignLink, Notification
from tracking.models import Event

N = Notification.Status
E = Event.Type

# Hourly counters (campaigns.counters.hourly_counter) that the timeline chart draws.
TIMELINE_SERIES = HOURLY_SERIES
# Up to 14 days (336 points) the timeline is drawn per hour; a longer one per day, so a
# campaign still opened a year later is 365 points, not 8,760.
HOURLY_SPAN = timedelta(days=14)
# Counter names the report reads (besides link:* and the hourly series): the recount rebuilds
# exactly these, and leaves any other name alone.
PLAIN_COUNTERS = (
    *HANDED_OFF,
    CounterName.DELIVERED, CounterName.BOUNCED_HARD, CounterName.BOUNCED_SOFT,
    CounterName.COMPLAINED, CounterName.REJECTED, CounterName.DELAYED,
    CounterName.RENDERING_FAILED,
    CounterName.OPENS, CounterName.CLICKS, CounterName.UNIQUE_OPENS, CounterName.UNIQUE_CLICKS,
    CounterName.HUMAN_OPENS, CounterName.HUMAN_CLICKS, CounterName.UNIQUE_HUMAN_OPENS,
    CounterName.UNIQUE_HUMAN_CLICKS,
    CounterName.UNSUBSCRIBED,
)  # fmt: skip
# The per-link counters (campaigns.counters.link_counter) the report reads.
LINK_COUNTERS = LINK_SERIES


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
            clicks=count(link_counter(index=index, series=CounterName.CLICKS), 0),
            unique_clicks=count(link_counter(index=index, series=CounterName.UNIQUE_CLICKS), 0),
            human_clicks=count(link_counter(index=index, series=CounterName.HUMAN_CLICKS), 0),
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
        hourly = hourly_counter_parse(name=name)
        if hourly is None or hourly[0] not in TIMELINE_SERIES:
            continue  # not a counter this chart draws
        series, at = hourly
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


def campaign_summaries(*, campaign_ids: Iterable[int]) -> dict[int, CampaignReport]:
    """Reports of several campaigns at once, without links or timeline (the dashboard): two
    indexed queries for any number of campaigns, the rates as `campaign_report` computes them."""
    ids = list(campaign_ids)
    campaigns = Campaign.objects.filter(pk__in=ids).values_list("pk", "status", "recipient_count")
    counters: dict[int, dict[str, int]] = defaultdict(dict)
    rows = CampaignCounter.objects.filter(campaign_id__in=ids, name__in=PLAIN_COUNTERS)
    for campaign_id, name, value in rows.values_list("campaign_id", "name", "value"):
        counters[campaign_id][name] = value
    no_timeline = timeline_from_counters({})
    return {
        pk: CampaignReport(
            campaign_id=pk,
            status=status,
            recipients=recipient_count,
            links=[],
            timeline=no_timeline,
            counters=counters[pk],
            **{name: counters[pk].get(name, 0) for name in PLAIN_COUNTERS},
        )
        for pk, status, recipient_count in campaigns
    }

"""A campaign's report.

A campaign's report reads its counters (`campaigns.counters`: one row per campaign and name,
kept by the writers in the same transaction as what they count), its row and its links: three
indexed queries whatever the campaign's size, never a scan of the ledger or the event table.
A million-recipient campaign's report costs what a ten-recipient one does.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

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
from campaigns.selectors import campaign_status_label
from tracking.models import Event

C = Campaign.Status
N = Notification.Status
E = Event.Type
# Statuses after which the delivery numbers no longer change (the page stops polling). A paused
# campaign is not one: its claimed rows still finish, and it can be resumed.
FINAL_STATUSES = frozenset({C.SENT, C.CANCELLED, C.FAILED})

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
    """A share (`part / whole`), None when the whole is zero; prints as a percentage.

    Never above 100 %: counts that arrive apart (a click recorded before the delivery event
    that explains it) could make the part outrun its whole for a while, and "150 %" says
    nothing true. `basis` names the whole ("delivered"), so the page can say what a rate is
    out of (`detail`).
    """

    part: int
    whole: int
    basis: str = ""

    @property
    def value(self) -> float | None:
        return min(self.part, self.whole) / self.whole if self.whole else None

    @property
    def detail(self) -> str:
        """ "12 of 400 delivered": the counts behind the percentage."""
        return f"{min(self.part, self.whole):,} of {self.whole:,} {self.basis}".rstrip()

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
    """Opens and clicks over time, from the hourly counters, zeros filled in. Hours are
    labelled in `time_zone` (the reader's); days are UTC days."""

    unit: str  # "hour" or "day"
    labels: list[str]
    series: dict[str, list[int]]  # TIMELINE_SERIES → one value per label
    time_zone: str = "UTC"

    def as_json(self) -> dict:
        return {"unit": self.unit, "labels": self.labels, **self.series}

    def rows(self) -> Iterable[tuple]:
        """(label, opens, clicks, human_opens, human_clicks) per point (the CSV export)."""
        return zip(self.labels, *(self.series[name] for name in TIMELINE_SERIES), strict=True)


@dataclass(frozen=True)
class CampaignReport:
    campaign_id: int
    status: str
    status_label: str  # as a marketer reads it (campaigns.selectors.campaign_status_label)
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
    def final(self) -> bool:
        """Nothing more will change its delivery numbers (the page stops polling)."""
        return self.status in FINAL_STATUSES

    @property
    def not_sent(self) -> int:
        """Recipients SES did not accept and never will for this campaign: failed, skipped, and
        (once final) those never handed over. Unknown ones may have gone out: apart."""
        return max(0, self.recipients - self.sent - self.unknown)

    @property
    def summary(self) -> str:
        """One sentence saying where the campaign stands, in a marketer's words: "Cancelled: 400
        of 1,000 sent, 600 not sent". Empty before it has an audience."""
        if not self.recipients:
            return ""
        sent = f"{self.sent:,} of {self.recipients:,} sent"
        unknown = f", {self.unknown:,} outcome unknown" if self.unknown else ""
        if self.status == C.SENDING:
            return f"Sending: {sent} so far, {self.pending:,} waiting{unknown}"
        if self.status == C.PAUSED:
            return f"Paused: {sent} so far, {self.pending:,} waiting{unknown}"
        if self.status in (C.CANCELLED, C.FAILED, C.SENT):
            # "Sent: 900 of 1,000 sent" would say sent twice.
            label = "Finished" if self.status == C.SENT else C(self.status).label
            return f"{label}: {sent}, {self.not_sent:,} not sent{unknown}"
        return ""

    def progress(self) -> dict:
        """What the campaign page polls (progress_view): numbers and the words around them."""
        return {
            "status": self.status,
            "status_label": self.status_label,
            "final": self.final,
            "recipients": self.recipients,
            "pending": self.pending,
            "sent": self.sent,
            "progress_percent": self.progress_percent,
            "summary": self.summary,
        }

    @property
    def processed(self) -> int:
        return sum((self.sent, self.failed, self.unknown, self.skipped))

    @property
    def pending(self) -> int:
        """Not handed to SES yet (created or sending in the ledger)."""
        return max(0, self.recipients - self.processed)

    @property
    def progress_percent(self) -> int:
        """The share of recipients SES accepted (the bar): rounded down, so the bar reaches
        100 only when every one was, and a cancelled campaign never reads 100."""
        if not self.recipients:
            return 0
        return min(100, 100 * self.sent // self.recipients)

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
        return Rate(self.unique_opens, self.rate_base, self.rate_basis)

    @property
    def human_open_rate(self) -> Rate:
        return Rate(self.unique_human_opens, self.rate_base, self.rate_basis)

    @property
    def click_through_rate(self) -> Rate:
        return Rate(self.unique_clicks, self.rate_base, self.rate_basis)

    @property
    def human_click_through_rate(self) -> Rate:
        return Rate(self.unique_human_clicks, self.rate_base, self.rate_basis)

    @property
    def click_to_open_rate(self) -> Rate:
        return Rate(self.unique_clicks, openers(self.unique_opens, self.unique_clicks), "openers")

    @property
    def human_click_to_open_rate(self) -> Rate:
        return Rate(
            self.unique_human_clicks,
            openers(self.unique_human_opens, self.unique_human_clicks),
            "openers",
        )

    @property
    def unsubscribe_rate(self) -> Rate:
        return Rate(self.unsubscribed, self.rate_base, self.rate_basis)

    @property
    def bounce_rate(self) -> Rate:
        return Rate(self.bounced, self.sent, "sent")

    @property
    def complaint_rate(self) -> Rate:
        return Rate(self.complained, self.rate_base, self.rate_basis)

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
            ("Click-to-open rate (unique clicks / openers)", self.click_to_open_rate,
             self.human_click_to_open_rate),
            (f"Unsubscribe rate (/ {self.rate_basis})", self.unsubscribe_rate, None),
            ("Bounce rate (/ sent)", self.bounce_rate, None),
            (f"Complaint rate (/ {self.rate_basis})", self.complaint_rate, None),
        ]  # fmt: skip


def openers(unique_opens: int, unique_clicks: int) -> int:
    """Recipients who opened, for the click-to-open rate: a recipient who clicked did see the
    message, even when their images were off and our pixel never loaded. The counters do not
    say how many clickers also opened, so this is the fewest openers the counts allow
    (max, not sum): the rate can read low, never above 100 % (docs/REPORTS.md)."""
    return max(unique_opens, unique_clicks)


def campaign_report(*, campaign_id: int, time_zone: tzinfo = UTC) -> CampaignReport:
    """The campaign's report from its counters (three indexed queries, whatever its size);
    the timeline's hours are labelled in `time_zone` (the reader's)."""
    campaign = Campaign.objects.values("status", "recipient_count", "scheduled_at").get(
        pk=campaign_id
    )
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
    return _report(
        campaign_id=campaign_id,
        status=campaign["status"],
        scheduled_at=campaign["scheduled_at"],
        recipients=campaign["recipient_count"],
        counters=counters,
        links=links,
        timeline=timeline_from_counters(counters, time_zone=time_zone),
    )


def _report(
    *,
    campaign_id: int,
    status: str,
    scheduled_at: datetime | None,
    recipients: int,
    counters: dict[str, int],
    links: list[LinkClicks],
    timeline: Timeline,
) -> CampaignReport:
    """The report of one campaign from its row's fields and its counters: how both
    campaign_report and campaign_summaries build it."""
    return CampaignReport(
        campaign_id=campaign_id,
        status=status,
        status_label=campaign_status_label(status=status, scheduled_at=scheduled_at),
        recipients=recipients,
        links=links,
        timeline=timeline,
        counters=counters,
        **{name: counters.get(name, 0) for name in PLAIN_COUNTERS},
    )


def timeline_from_counters(counters: Mapping[str, int], *, time_zone: tzinfo = UTC) -> Timeline:
    """The hourly counters as evenly spaced points (per hour, labelled in `time_zone`; or per
    UTC day past 14 days)."""
    zone = str(time_zone)
    by_hour: dict[datetime, dict[str, int]] = defaultdict(dict)
    for name, value in counters.items():
        hourly = hourly_counter_parse(name=name)
        if hourly is None or hourly[0] not in TIMELINE_SERIES:
            continue  # not a counter this chart draws
        series, at = hourly
        by_hour[at][series] = value
    if not by_hour:
        return Timeline(
            unit="hour", labels=[], series={name: [] for name in TIMELINE_SERIES}, time_zone=zone
        )
    first, last = min(by_hour), max(by_hour)
    # Minutes shown: a zone half an hour off UTC (India) starts its hours at :30.
    step, unit, label, shown_in = timedelta(hours=1), "hour", "%Y-%m-%d %H:%M", time_zone
    if last - first > HOURLY_SPAN:
        step, unit, label, shown_in = timedelta(days=1), "day", "%Y-%m-%d", UTC
        first = first.replace(hour=0)
        zone = "UTC"
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
        labels=[at.astimezone(shown_in).strftime(label) for at in points],
        series={name: [p[name] for p in points.values()] for name in TIMELINE_SERIES},
        time_zone=zone,
    )


def campaign_summaries(*, campaign_ids: Iterable[int]) -> dict[int, CampaignReport]:
    """Reports of several campaigns at once, without links or timeline (the dashboard): two
    indexed queries for any number of campaigns, the rates as `campaign_report` computes them."""
    ids = list(campaign_ids)
    campaigns = Campaign.objects.filter(pk__in=ids).values_list(
        "pk", "status", "scheduled_at", "recipient_count"
    )
    counters: dict[int, dict[str, int]] = defaultdict(dict)
    rows = CampaignCounter.objects.filter(campaign_id__in=ids, name__in=PLAIN_COUNTERS)
    for campaign_id, name, value in rows.values_list("campaign_id", "name", "value"):
        counters[campaign_id][name] = value
    no_timeline = timeline_from_counters({})
    return {
        pk: _report(
            campaign_id=pk,
            status=status,
            scheduled_at=scheduled_at,
            recipients=recipient_count,
            counters=counters[pk],
            links=[],
            timeline=no_timeline,
        )
        for pk, status, scheduled_at, recipient_count in campaigns
    }

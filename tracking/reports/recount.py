"""Counting a campaign's report from the rows themselves (the ledger and the events): the one
place that does, for the `recount_campaign` command (campaigns sent before counters existed,
and checks for drift). docs/REPORTS.md says what each number means."""

import functools
import operator
from datetime import UTC

from django.db import connection, transaction
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

from campaigns.counters import (
    COUNTER_TABLE,
    CounterName,
    campaign_counters,
    counter_hour,
    counters_add,
    hourly_counter,
    hourly_counter_parse,
    link_counter,
    link_counter_series,
)
from campaigns.models import CampaignCounter, Notification
from tracking.models import Event
from tracking.reports.report import LINK_COUNTERS, PLAIN_COUNTERS, TIMELINE_SERIES

N = Notification.Status
E = Event.Type

# Our own opens' and clicks' counters: (all, unique, human, unique human).
_ENGAGEMENT_COUNTERS = {
    E.OPENED: (CounterName.OPENS, CounterName.UNIQUE_OPENS, CounterName.HUMAN_OPENS,
               CounterName.UNIQUE_HUMAN_OPENS),
    E.CLICKED: (CounterName.CLICKS, CounterName.UNIQUE_CLICKS, CounterName.HUMAN_CLICKS,
                CounterName.UNIQUE_HUMAN_CLICKS),
}  # fmt: skip

# -- recounting from the rows (the recount_campaign command) ---------------------------------


def counter_is_recounted(name: str) -> bool:
    """True for the names `campaign_counters_recount` rebuilds (others are left alone)."""
    if name in PLAIN_COUNTERS:
        return True
    series = link_counter_series(name=name)
    if series is not None:
        return series in LINK_COUNTERS
    hourly = hourly_counter_parse(name=name)
    return hourly is not None and hourly[0] in TIMELINE_SERIES


def _ses_outcomes_recount(ses, hard: Q) -> dict[str, int]:
    """The SES outcome counters of `ses` (a campaign's SES events; `hard`: which bounces are
    hard), by tracking.ses_events.record's rule: each row moves forward only
    (campaigns.ledger.RANK), so an event moved its row when its status ranks above every earlier
    event's of that row (and above `sent`, where every row SES reports on starts)."""
    from campaigns.ledger import RANK
    from tracking.ses_events.record import COUNTERS, NOTIFICATION_STATUS

    moves = []  # (condition, rank, counter)
    for event_type, status in NOTIFICATION_STATUS.items():
        if event_type == E.BOUNCED:
            moves.append((Q(type=E.BOUNCED) & hard, RANK[status], CounterName.BOUNCED_HARD))
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
            **{
                CounterName.BOUNCED_SOFT: Count(soft, distinct=True),
                CounterName.DELAYED: Count(
                    "notification_id", distinct=True, filter=Q(type=E.DEFERRED)
                ),
            }
        )
    )
    return counts


def campaign_counters_recount(*, campaign_id: int) -> dict[str, int]:
    """The campaign's counters counted from its ledger rows and events (non-zero ones only).

    A handful of GROUP BY queries that read all of the campaign's rows: for an operator
    (recount_campaign), never a hot path.
    What each counts (the writers count the same, one at a time):
    - sent: rows with an SES MessageId (accepted, whatever SES said later); failed: `failed`
      rows without one (a later Rendering Failure makes a sent row `failed`); unknown, skipped:
      rows in that status.
    - SES outcomes count messages, as tracking.ses_events.record does: an outcome that moves the
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
            **{
                CounterName.SENT: Count("id", filter=~not_accepted),
                CounterName.FAILED: Count("id", filter=Q(status=N.FAILED) & not_accepted),
                CounterName.UNKNOWN: Count("id", filter=Q(status=N.UNKNOWN)),
                CounterName.SKIPPED: Count("id", filter=Q(status=N.SKIPPED)),
            }
        )
    )

    events = Event.objects.filter(notification__campaign_id=campaign_id)
    ses = events.filter(source__in=[Event.Source.SES, Event.Source.SES_FILE])
    # Bounces recorded before `bounce_type` existed: SES's own bounceType says which.
    hard = Q(bounce_type=Event.BounceType.HARD) | Q(
        bounce_type="", payload__bounce__bounceType="Permanent"
    )

    counts.update(_ses_outcomes_recount(ses, hard))
    counts[CounterName.UNSUBSCRIBED] = events.filter(type=E.UNSUBSCRIBED).aggregate(
        n=Count("notification_id", distinct=True)
    )["n"]

    own = events.filter(source=Event.Source.TRACKING)
    human = Q(verdict=Event.Verdict.HUMAN)
    for event_type, (every, unique, humans, unique_humans) in _ENGAGEMENT_COUNTERS.items():
        of_type = Q(type=event_type)
        counts.update(
            own.aggregate(
                **{
                    every: Count("id", filter=of_type),
                    unique: Count("notification_id", distinct=True, filter=of_type),
                    humans: Count("id", filter=of_type & human),
                    unique_humans: Count("notification_id", distinct=True, filter=of_type & human),
                }
            )
        )
    for row in (
        own.filter(type=E.CLICKED, link__isnull=False)
        .values("link__index")
        .annotate(
            **{
                CounterName.CLICKS: Count("id"),
                CounterName.UNIQUE_CLICKS: Count("notification_id", distinct=True),
                CounterName.HUMAN_CLICKS: Count("id", filter=human),
            }
        )
        .order_by()
    ):
        for series in LINK_COUNTERS:
            counts[link_counter(index=row["link__index"], series=series)] = row[series]
    for row in (
        own.filter(type__in=[E.OPENED, E.CLICKED])
        .annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
        .values("hour", "type")
        .annotate(all=Count("id"), human=Count("id", filter=human))
        .order_by()
    ):
        every, _, humans, _ = _ENGAGEMENT_COUNTERS[row["type"]]
        hour = counter_hour(at=row["hour"])
        counts[hourly_counter(series=every, hour=hour)] = row["all"]
        counts[hourly_counter(series=humans, hour=hour)] = row["human"]
    return {name: value for name, value in counts.items() if value}


def counters_rebuild(*, campaign_id: int, apply: bool = True) -> dict[str, tuple[int, int]]:
    """Recount the campaign's report counters from its ledger and events; where they drifted,
    replace them (unless `apply` is False: a check). Returns {name: (stored, recounted)} for
    every counter that differed. Only the counters the report reads are recounted
    (tracking.reports.recount.counter_is_recounted); any other name is left alone.
    """
    with transaction.atomic():
        if apply and connection.vendor == "postgresql":
            # Writers add to counters in the same transaction as the rows they count. This
            # lock waits for every writer holding counter rows to commit, and holds back new
            # ones until the rebuild commits: a writer blocked here has not committed its row,
            # so the recount misses it and its delta lands on top of the rebuilt value; nothing
            # is counted twice or lost. It pauses every campaign's counter writes for the
            # recount's duration.
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {COUNTER_TABLE} IN SHARE ROW EXCLUSIVE MODE")
        recounted = campaign_counters_recount(campaign_id=campaign_id)
        stored = {
            name: value
            for name, value in campaign_counters(campaign_id=campaign_id).items()
            if counter_is_recounted(name)
        }
        drift = {
            name: (stored.get(name, 0), recounted.get(name, 0))
            for name in sorted(stored.keys() | recounted.keys())
            if stored.get(name, 0) != recounted.get(name, 0)
        }
        if apply and drift:
            CampaignCounter.objects.filter(campaign_id=campaign_id, name__in=stored).delete()
            counters_add(campaign_id=campaign_id, deltas=recounted)
    return drift

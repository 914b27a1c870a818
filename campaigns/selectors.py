"""Reads with rules for the campaign life cycle (services write, selectors read)."""

from collections.abc import Iterable
from datetime import datetime

from django.db.models import F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.counters import HANDED_OFF
from campaigns.models import Campaign, CampaignCounter


def campaigns_with_unanswered_rows(*, statuses: Iterable[str]) -> list[int]:
    """Ids of the campaigns in `statuses` whose counters say some ledger rows have no answer
    yet (created or sending), in one query.

    Why: the ledger has no index on status (so that its status changes are HOT updates, see
    Notification), and finding a campaign's created or sending rows reads all its rows. A
    cancelled campaign is finished with: its counters add up, and the sweeper never reads its
    ledger again.
    """
    answered = (
        CampaignCounter.objects.filter(campaign_id=OuterRef("pk"), name__in=HANDED_OFF)
        .values("campaign_id")
        .annotate(total=Sum("value"))
        .values("total")
    )
    return list(
        Campaign.objects.filter(status__in=list(statuses))
        .annotate(answered=Coalesce(Subquery(answered), 0))
        .filter(Q(answered__lt=F("recipient_count")))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


# A scheduled campaign whose time has come waits only for its start task (seconds): that is
# what Send now leaves, and "Scheduled" there reads as "not going out yet".
STARTING_LABEL = "Starting"


def campaign_status_label(*, status: str, scheduled_at: datetime | None) -> str:
    """The campaign's status as a marketer reads it: the status's label, except a scheduled
    campaign that is due (Send now, or a schedule whose time came) reads "Starting"."""
    if status == Campaign.Status.SCHEDULED and scheduled_at and scheduled_at <= timezone.now():
        return STARTING_LABEL
    return Campaign.Status(status).label

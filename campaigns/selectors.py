"""Reads with rules for the campaign life cycle (services write, selectors read)."""

from collections.abc import Iterable

from django.db.models import F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

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

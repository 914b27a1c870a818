"""Reads with rules for the campaign life cycle (services write, selectors read)."""

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.counters import HANDED_OFF
from campaigns.models import Campaign, CampaignCounter, Contact, Membership

# Why a member of the list is left out of a campaign, in the words the review page shows.
EXCLUDED_REASONS = {
    "list_unsubscribed": "unsubscribed from this list",
    Contact.Status.UNSUBSCRIBED: "unsubscribed from all mail",
    Contact.Status.BOUNCED: "bounced (address does not exist)",
    Contact.Status.COMPLAINED: "marked a message as spam",
}


def audience_memberships(*, contact_list_id: int) -> QuerySet[Membership]:
    """The members a campaign to this list sends to: the one audience rule, read by the
    freeze (services._freeze_audience), the sendable check, the pre-send review and the
    local-time waves (waves.audience_zones).

    Left out: members who unsubscribed from this list (Membership.unsubscribed_at) and contacts
    who are not active (unsubscribed from all mail, bounced, complained).
    """
    return Membership.objects.filter(
        contact_list_id=contact_list_id,
        unsubscribed_at__isnull=True,
        contact__status=Contact.Status.ACTIVE,
    )


def audience_counts(*, contact_list_id: int) -> tuple[int, dict[str, int]]:
    """(recipients, {reason: members left out for it}) for a campaign to this list, in one
    query. A member unsubscribed from the list counts under that reason whatever its status."""
    listed = Q(unsubscribed_at__isnull=False)
    counts = Membership.objects.filter(contact_list_id=contact_list_id).aggregate(
        recipients=Count("pk", filter=~listed & Q(contact__status=Contact.Status.ACTIVE)),
        list_unsubscribed=Count("pk", filter=listed),
        **{
            status: Count("pk", filter=~listed & Q(contact__status=status))
            for status in EXCLUDED_REASONS
            if status != "list_unsubscribed"
        },
    )
    recipients = counts.pop("recipients")
    return recipients, {reason: counts[reason] for reason in EXCLUDED_REASONS}


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

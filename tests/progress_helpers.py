"""A campaign mid-send and SES accepting its rows, for the progress tests (report and browser)."""

from django.utils import timezone

from campaigns.counters import CounterName
from campaigns.ledger import ledger_transition
from campaigns.models import Campaign, Notification
from tests.factories import CampaignFactory, NotificationFactory, list_with_contacts

C = Campaign.Status
N = Notification.Status


def sending_campaign(n: int, *, status: str = C.SENDING) -> tuple[Campaign, list[int]]:
    """A campaign mid-send: `n` recipients frozen into the ledger, none handed to SES yet."""
    campaign = CampaignFactory(contact_list=list_with_contacts(n))
    Campaign.objects.filter(pk=campaign.pk).update(
        status=status, recipient_count=n, started_at=timezone.now()
    )
    ids = [
        NotificationFactory(campaign=campaign, contact=contact).pk
        for contact in campaign.contact_list.contacts.order_by("id")
    ]
    campaign.refresh_from_db()
    return campaign, ids


def accept(campaign: Campaign, ids: list[int]) -> None:
    """SES accepts these rows, written as the send path writes them (row and counter at once)."""
    ledger_transition(
        ids=ids, from_statuses={N.CREATED, N.SENDING}, to=N.SENT,
        message_ids={i: f"m-{i}" for i in ids}, counter=(campaign.pk, CounterName.SENT),
    )  # fmt: skip

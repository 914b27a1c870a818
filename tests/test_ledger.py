import pytest

from campaigns.ledger import ledger_claim
from campaigns.models import Notification
from tests.factories import CampaignFactory, ContactFactory

ATTRIBUTES = {
    "plain": "Leeds",
    "quoted": 'say "hi"',
    "backslash": "a\\b",
    "unicode": "Zürich ✓",
    "control": "tab\there",
    "number": 3.5,
    "whole": 42,
    "flag": True,
    "nothing": None,
    "empty": "",
}


@pytest.mark.django_db
def test_claim_returns_the_contacts_attributes_as_stored():
    contact = ContactFactory(attributes=ATTRIBUTES)
    campaign = CampaignFactory()
    row = Notification.objects.create(campaign=campaign, contact=contact)
    (claimed,) = ledger_claim(
        campaign_id=campaign.pk,
        contact_list_id=campaign.contact_list_id,
        first_id=row.pk,
        last_id=row.pk,
        attributes=[*ATTRIBUTES, "missing"],
    )
    assert claimed.attributes == {**ATTRIBUTES, "missing": None}
    assert (claimed.id, claimed.email, claimed.skip_reason) == (row.pk, contact.email, "")
    row.refresh_from_db()
    assert row.status == Notification.Status.SENDING
    assert (
        ledger_claim(
            campaign_id=campaign.pk,
            contact_list_id=campaign.contact_list_id,
            first_id=row.pk,
            last_id=row.pk,
        )
        == []
    )  # claimed once

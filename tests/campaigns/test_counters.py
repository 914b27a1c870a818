import pytest

from campaigns.counters import campaign_counters, counters_add
from tests.factories import CampaignFactory


@pytest.mark.django_db
def test_counters_add_up_and_start_at_zero():
    campaign = CampaignFactory()
    counters_add(campaign_id=campaign.pk, deltas={"opens": 2, "clicks": 1, "unsubscribed": 0})
    counters_add(campaign_id=campaign.pk, deltas={"opens": 3, "link:0:clicks": 1})
    assert campaign_counters(campaign_id=campaign.pk) == {
        "opens": 5,
        "clicks": 1,
        "link:0:clicks": 1,
    }
    assert campaign_counters(campaign_id=CampaignFactory().pk) == {}

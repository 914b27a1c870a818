"""A local-time campaign in two waves through a real Celery worker process, Redis, PostgreSQL
and the local SES endpoint: each wave goes out only when beat finds it due, and each contact
gets it exactly once. Beat's two periodic tasks are called here at the chosen moments; the
clock is moved as in tests/campaigns/test_local_time.py (no sleeping for hours)."""

from collections import Counter

import pytest

from campaigns import services
from campaigns.models import Campaign, Notification
from tests.campaigns.test_local_time import (
    accepted,
    clock_moves_to,
    make_local_campaign,
    schedule,
)
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

N = Notification.Status


def test_two_waves_reach_each_contact_once_each_at_its_time(celery_worker_process, ses):
    # Tokyo, and contacts without a zone in the user's (Tokyo too): wave 1; Bogota: wave 2.
    campaign = make_local_campaign({"Asia/Tokyo": 60, "": 15, "America/Bogota": 45})
    plan = schedule(campaign, fallback_zone="Asia/Tokyo")
    assert [(w.zones, w.recipients) for w in plan] == [
        (("Asia/Tokyo",), 75),
        (("America/Bogota",), 45),
    ]

    def sent_count() -> int:
        return Notification.objects.filter(campaign=campaign, status=N.SENT).count()

    clock_moves_to(campaign, plan[0].moment)
    assert services.campaigns_start_due() == [campaign.pk]
    wait_for(
        lambda: sent_count() == 75,
        timeout=120,
        message=lambda: f"first wave sent\n{celery_worker_process.output()}",
    )
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING
    assert campaign.next_wave_at is not None and campaign.frozen_at is None
    first = accepted(ses, campaign)
    assert len(first) == 75 and set(first.values()) == {1}
    bogota = set(
        campaign.contact_list.contacts.filter(time_zone="America/Bogota").values_list(
            "email", flat=True
        )
    )
    assert not bogota & set(first)
    assert services.campaign_waves_start_due() == []  # not due yet: nothing more goes

    clock_moves_to(campaign, plan[1].moment)
    assert services.campaign_waves_start_due() == [campaign.pk]

    def finished() -> bool:
        campaign.refresh_from_db()
        return campaign.status == Campaign.Status.SENT

    wait_for(finished, timeout=120, message=lambda: celery_worker_process.output())
    everyone = accepted(ses, campaign)
    assert everyone == Counter(dict.fromkeys(set(first) | bogota, 1))
    assert ses.stats(header=f"X-Campaign:{campaign.pk}")["duplicate_recipients"] == 0
    assert campaign.recipient_count == 120

"""A local-time campaign whose worker dies mid-wave, with the next wave coming due while no
worker runs (real worker processes, Redis, PostgreSQL, the local SES endpoint; the idioms of
test_faults.py). The promise: at most once per recipient per campaign, whatever crashes."""

import pytest

from campaigns import services
from campaigns.models import Campaign, Contact, Membership
from tests.campaigns.test_faults import (
    assert_at_most_once,
    batch_in_progress,
    status_of,
    statuses,
    sweep_while,
)
from tests.campaigns.test_local_time import clock_moves_to, schedule
from tests.conftest import wait_for
from tests.factories import CampaignFactory, ContactListFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ZONES = {"Asia/Tokyo": 2000, "America/Bogota": 1000}


def make_campaign() -> Campaign:
    contact_list = ContactListFactory()
    contacts = Contact.objects.bulk_create(
        [
            Contact(email=f"lt{zone[-5:].lower()}{i}@example.org", time_zone=zone)
            for zone, n in ZONES.items()
            for i in range(n)
        ],
        batch_size=1000,
    )
    Membership.objects.bulk_create(
        [Membership(contact_list=contact_list, contact=c) for c in contacts], batch_size=1000
    )
    return CampaignFactory(contact_list=contact_list)


def test_worker_killed_mid_wave_and_restarted_after_the_next_sends_nobody_twice(
    ses, celery_workers
):
    ses.faults(latency_ms=250)
    worker = celery_workers.start(concurrency=1)
    campaign = make_campaign()
    plan = schedule(campaign, fallback_zone="Asia/Tokyo")
    assert [w.recipients for w in plan] == [2000, 1000]

    clock_moves_to(campaign, plan[0].moment)
    assert services.campaigns_start_due() == [campaign.pk]
    wait_for(lambda: batch_in_progress(worker, campaign), timeout=60, message="a batch sending")
    worker.kill()  # mid-hand-off of the first wave

    # The second wave comes due while no worker runs: beat takes it, its freeze waits queued.
    clock_moves_to(campaign, plan[1].moment)
    assert services.campaign_waves_start_due() == [campaign.pk]
    assert services.campaign_waves_start_due() == []

    celery_workers.start(concurrency=1)
    sweep_while(
        lambda: status_of(campaign) == Campaign.Status.SENT,
        timeout=120,
        message=lambda: f"sent after the restart: {statuses(campaign)}\n{celery_workers.logs()}",
    )
    counts = assert_at_most_once(ses, campaign, 3000)
    assert counts["sent"] + counts["unknown"] == 3000
    assert counts["unknown"] <= 4 * 50  # only the killed worker's calls in flight

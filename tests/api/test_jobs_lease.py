"""A bulk job's creation lease (campaigns.jobs): a live creator is never doubled, and one
whose lease ran out is handed on by the sweeper at once."""

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns import jobs, services, sweeper
from campaigns.models import Campaign, JobRequest, Notification
from tests.api.helpers import api_client
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def job_id(ses):
    TemplateFactory(slug="notice", subject="Notice", html="<p>Notice</p>")
    rows = [{"to": f"l{i}@example.com"} for i in range(3)]
    job = api_client().post("/api/v1/jobs", {"template": "notice", "rows": rows}, format="json")
    job_id = job.json()["id"]
    # Started as campaign_start does, its freeze left to the test.
    services.campaign_transition(
        campaign_id=job_id, from_statuses={"scheduled"}, to="sending", started_at=timezone.now()
    )
    return job_id


def test_a_live_creator_is_not_doubled_and_a_dead_ones_creation_is_resumed(job_id, caplog):
    assert jobs.job_creation_lease_take(job_id=job_id, holder="alive")
    # Another freeze (the sweeper's, a task delivered twice) leaves it to the live creator.
    assert services.campaign_freeze(campaign_id=job_id) == 0
    assert not Notification.objects.filter(campaign_id=job_id).exists()
    assert jobs.jobs_creation_dead(now=timezone.now()) == []
    assert jobs.job_creation_lease_take(job_id=job_id, holder="alive")  # its own: renewed

    # Its lease runs out (the creator was killed): the sweeper hands the creation on at once.
    later = timezone.now() + timedelta(seconds=jobs.job_creation_lease_seconds() + 1)
    assert jobs.jobs_creation_dead(now=later) == [job_id]
    with caplog.at_level(logging.WARNING, logger="campaigns.sweeper"):
        sweeper._refreeze_stalled(now=later)  # its freeze enqueued (to Redis; no worker)
        request = JobRequest.objects.get(pk=job_id)
        assert (request.creator, request.creator_until) == ("", None)
        sweeper._refreeze_stalled(now=later)  # not again while the resumed freeze is queued
    resumed = [r for r in caplog.records if "lease ran out" in r.getMessage()]
    assert [r.getMessage() for r in resumed] == [
        f"job {job_id} creator's lease ran out: resuming its creation"
    ]

    assert services.campaign_freeze(campaign_id=job_id) == 3
    job = Campaign.objects.get(pk=job_id)
    assert job.frozen_at is not None
    assert JobRequest.objects.get(pk=job_id).creator_until is None  # done: no creator

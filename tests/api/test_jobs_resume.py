"""POST /api/v1/jobs/{id}/resume: a job the circuit breaker paused is sent on over the API,
through the admin's resume (services.campaign_resume); anything else is a 409."""

import pytest

from campaigns import services
from campaigns.breaker import campaign_circuit_check
from campaigns.counters import CounterName, counters_add
from campaigns.models import Campaign, Notification
from tests.api.helpers import api_client
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)

N = Notification.Status


@pytest.fixture
def template():
    return TemplateFactory(slug="notice", subject="Notice", html="<p>Notice {{ ref }}</p>")


def paused_job(client, settings) -> int:
    """A sending job of 4 rows (its batches queued, not run) that the breaker paused: its
    counters say 10 of 20 sent bounced (the breaker reads the counters, as after SES's
    events)."""
    rows = [{"to": f"p{i}@example.com", "personalisation": {"ref": i}} for i in range(4)]
    job_id = client.post(
        "/api/v1/jobs", {"template": "notice", "rows": rows}, format="json"
    ).json()["id"]
    services.campaign_start(campaign_id=job_id)
    settings.CIRCUIT_BREAKER_MIN_SENT = 20
    counters_add(campaign_id=job_id, deltas={CounterName.SENT: 20, CounterName.BOUNCED_HARD: 10})
    assert campaign_circuit_check(campaign_id=job_id)
    return job_id


def test_a_job_paused_by_the_breaker_is_resumed_and_sends(template, settings, ses, request):
    client = api_client()
    job_id = paused_job(client, settings)
    shown = client.get(f"/api/v1/jobs/{job_id}").json()
    assert shown["status"] == "paused"
    assert shown["status_reason"].startswith("Paused automatically: 10 of 20")

    request.getfixturevalue("eager_celery")  # the resume's batches run inline from here
    answer = client.post(f"/api/v1/jobs/{job_id}/resume")
    assert answer.status_code == 200, answer.content
    # Sending again, and (its batches inline) already sent: the fan-out of its waiting rows
    # went, every one handed to the SES endpoint.
    assert answer.json()["status"] == "sent"
    assert answer.json()["status_reason"] == ""
    assert set(
        Notification.objects.filter(campaign_id=job_id).values_list("status", flat=True)
    ) == {N.SENT}
    assert ses.stats(header=f"X-Campaign:{job_id}")["recipients"] == 4


def test_only_a_paused_job_can_be_resumed(template, settings):
    client = api_client()
    job_id = client.post(
        "/api/v1/jobs",
        {"template": "notice", "rows": [{"to": "a@example.com", "personalisation": {"ref": 1}}]},
        format="json",
    ).json()["id"]
    for expected in ["scheduled", "cancelled"]:
        assert Campaign.objects.get(pk=job_id).status == expected
        answer = client.post(f"/api/v1/jobs/{job_id}/resume")
        assert answer.status_code == 409, answer.content
        assert answer.json()["errors"] == [
            {
                "code": "not_paused",
                "field": "",
                "message": f"A {expected} job cannot be resumed: only a paused one.",
            }
        ]
        client.post(f"/api/v1/jobs/{job_id}/cancel")


def test_resume_needs_jobs_send_and_the_keys_mode(template, settings):
    client = api_client()
    job_id = paused_job(client, settings)
    reader = api_client(scopes=["jobs:read"])
    assert reader.post(f"/api/v1/jobs/{job_id}/resume").status_code == 403
    assert api_client(test=True).post(f"/api/v1/jobs/{job_id}/resume").status_code == 404
    assert client.post(f"/api/v1/jobs/{2**63}/resume").status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}/resume").status_code == 405
    assert Campaign.objects.get(pk=job_id).status == Campaign.Status.PAUSED

"""Transactional is never starved by bulk, on real components: bulk worker processes send a
20,000-recipient campaign at the account's whole SES rate, a transactional worker takes the
API's messages, and each message POSTed meanwhile reaches the local SES endpoint within
seconds (a correctness bound, generous for CI: not a benchmark)."""

import time

import pytest

from campaigns import services
from campaigns.models import Campaign, Notification
from tests.api.helpers import api_client
from tests.campaigns.test_faults import make_campaign
from tests.conftest import wait_for
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.e2e, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

RECIPIENTS = 20_000
MAX_SEND_RATE = 300  # recipients/s: the campaign alone would send for over a minute
HANDOFF_BOUND_SECONDS = 5.0
MESSAGES = 5


def test_a_message_reaches_ses_within_seconds_while_a_large_campaign_sends(celery_workers, ses):
    env = {"SES_MAX_SEND_RATE": str(MAX_SEND_RATE), "TRANSACTIONAL_RATE_SHARE": "0.2"}
    # Two bulk workers (8 processes) keep the shared limit saturated; one transactional
    # worker, as docker-compose runs them.
    bulk = [celery_workers.start(concurrency=4, env=env, queues="bulk") for _ in range(2)]
    celery_workers.start(concurrency=1, env=env, queues="transactional")
    TemplateFactory(slug="reset", subject="Reset", html="<p>Reset</p>", text="Reset")
    campaign = make_campaign(RECIPIENTS, "prio")
    client = api_client()

    services.campaign_send_now(campaign=campaign)
    # The campaign is well under way: the limit is taken by bulk.
    wait_for(
        lambda: ses.stats()["recipients"] >= 2 * MAX_SEND_RATE,
        timeout=120,
        message=lambda: f"campaign sending\n{bulk[0].output()[-3000:]}",
    )

    waits = []
    for n in range(MESSAGES):
        posted = time.monotonic()
        answer = client.post(
            "/api/v1/messages",
            {"template": "reset", "to": f"reset{n}@example.net"},
            format="json",
        )
        assert answer.status_code == 202, answer.content
        stream = Notification.objects.get(pk=answer.json()["id"]).campaign_id
        wait_for(
            lambda n=n, stream=stream: any(
                m["to"] == [f"reset{n}@example.net"]
                for m in ses.messages(header=f"X-Campaign:{stream}", bodies=0)
            ),
            timeout=30,
            interval=0.05,
            message=f"message {n} at SES",
        )
        waits.append(time.monotonic() - posted)
        time.sleep(0.5)

    campaign.refresh_from_db()
    sent = ses.stats()["recipients"] - MESSAGES
    try:
        assert campaign.status == Campaign.Status.SENDING and sent < RECIPIENTS, (
            "the campaign was still sending throughout"
        )
        assert max(waits) < HANDOFF_BOUND_SECONDS, f"202 → SES took {max(waits):.2f} s: {waits}"
    finally:
        services.campaign_cancel(campaign=campaign)  # no need to send the rest

"""Test keys (mw_test_…): every step (validation, ledger, status, events), never SES.

In-process (tasks eager) through the real delivery code, the real event recorder and the
local SES endpoint, which must see no call at all for a test key's messages."""

import pytest

from campaigns.counters import CounterName
from campaigns.models import Campaign, CampaignCounter, Contact, Notification
from campaigns.simulator import simulated_accepted_at
from tests.api.helpers import api_client
from tests.conftest import wait_for
from tests.factories import TemplateFactory
from tracking.models import Event
from tracking.ses_events.simulated import simulated_events_record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def template():
    return TemplateFactory(
        slug="reset",
        subject="Reset your password, {{ first_name }}",
        html="<p>Hello {{ first_name }}, <a href='https://example.com/r'>reset</a>.</p>",
        text="Hello {{ first_name }}, reset: https://example.com/r",
    )


def _send(client, to: str) -> Notification:
    answer = client.post(
        "/api/v1/messages",
        {"template": "reset", "to": to, "personalisation": {"first_name": "Ada"}},
        format="json",
    )
    assert answer.status_code == 202, answer.content
    return Notification.objects.select_related("campaign", "contact").get(pk=answer.json()["id"])


def _journey(message: Notification) -> list[tuple[str, str]]:
    return list(
        Event.objects.filter(notification=message)
        .order_by("occurred_at", "id")
        .values_list("type", "source")
    )


def _counters(campaign_id: int) -> dict[str, int]:
    return dict(
        CampaignCounter.objects.filter(campaign_id=campaign_id).values_list("name", "value")
    )


def test_a_test_key_message_ends_delivered_with_a_journey_and_never_reaches_ses(
    template, ses, eager_celery
):
    message = _send(api_client(test=True), "ada@example.com")

    assert message.campaign.test_mode is True
    assert message.campaign.kind == Campaign.Kind.TRANSACTIONAL
    assert message.status == Notification.Status.DELIVERED
    assert message.message_id.startswith("simulated-")
    assert simulated_accepted_at(message.message_id) is not None
    simulated = Event.Source.SIMULATED
    assert _journey(message) == [("sent", simulated), ("delivered", simulated)]
    counts = _counters(message.campaign_id)
    assert counts[CounterName.SENT] == 1 and counts[CounterName.DELIVERED] == 1
    stats = ses.stats()
    assert ses.messages() == [], stats
    assert not any(stats.get(key) for key in ("calls", "messages", "recipients")), stats


def test_the_bounce_address_ends_bounced_and_suppresses_nobody(template, ses, eager_celery):
    message = _send(api_client(test=True), "bounce@simulator.amazonses.com")

    assert message.status == Notification.Status.BOUNCED
    assert "Permanent" in message.reason
    assert [t for t, _ in _journey(message)] == ["sent", "bounced"]
    assert _counters(message.campaign_id)[CounterName.BOUNCED_HARD] == 1
    # A test key changes nothing beyond its own messages: the contact stays active.
    assert message.contact.status == Contact.Status.ACTIVE
    assert Contact.objects.get(pk=message.contact_id).status == Contact.Status.ACTIVE
    assert ses.messages() == []


def test_the_complaint_address_ends_complained_and_suppresses_nobody(template, ses, eager_celery):
    client = api_client(test=True)
    message = _send(client, "complaint+signup@simulator.amazonses.com")

    assert message.status == Notification.Status.COMPLAINED
    assert [t for t, _ in _journey(message)] == ["sent", "delivered", "complained"]
    assert Contact.objects.get(pk=message.contact_id).status == Contact.Status.ACTIVE
    # The next message to the same address is sent (simulated) as before: nothing suppressed.
    again = _send(client, "complaint+signup@simulator.amazonses.com")
    assert again.status == Notification.Status.COMPLAINED
    assert ses.messages() == []


def test_simulated_events_recorded_twice_are_recorded_once(template, ses, eager_celery):
    message = _send(api_client(test=True), "ada@example.com")
    before = Event.objects.filter(notification=message).count()

    summary = simulated_events_record(notification_ids=[message.pk])

    assert summary["recorded"] == 0 and summary["duplicate"] == before
    assert Event.objects.filter(notification=message).count() == before


def test_a_live_message_is_never_given_simulated_events(template, ses, eager_celery):
    live = _send(api_client(), "ada@example.com")
    assert live.status == Notification.Status.SENT

    summary = simulated_events_record(notification_ids=[live.pk])

    assert summary["recorded"] == 0
    assert not Event.objects.filter(notification=live).exists()
    assert Notification.objects.get(pk=live.pk).status == Notification.Status.SENT


def test_a_live_key_message_reaches_ses(template, ses, eager_celery):
    message = _send(api_client(), "bounce@simulator.amazonses.com")

    assert message.campaign.test_mode is False
    assert message.status == Notification.Status.SENT
    assert not message.message_id.startswith("simulated-")
    [sent] = ses.messages()
    assert "Hello Ada" in str(sent)


def test_test_and_live_messages_of_one_template_go_by_separate_streams(template, ses, eager_celery):
    test = _send(api_client(test=True), "ada@example.com")
    live = _send(api_client(), "ada@example.com")

    assert test.campaign_id != live.campaign_id
    assert len(ses.messages()) == 1


@pytest.mark.worker
def test_with_a_real_worker_a_test_message_ends_delivered_and_ses_sees_nothing(
    template, ses, celery_worker_process
):
    """The simulated events' task is found by name and run on the transactional queue."""
    client = api_client(test=True)
    answer = client.post(
        "/api/v1/messages", {"template": "reset", "to": "ada@example.com"}, format="json"
    )
    assert answer.status_code == 202, answer.content
    message_id = answer.json()["id"]

    def delivered():
        return Notification.objects.filter(
            pk=message_id, status=Notification.Status.DELIVERED
        ).exists()

    wait_for(delivered, timeout=60, message=lambda: celery_worker_process.output()[-3000:])
    message = Notification.objects.get(pk=message_id)
    assert [t for t, _ in _journey(message)] == ["sent", "delivered"]
    assert ses.messages() == [] and not ses.stats()["calls"]

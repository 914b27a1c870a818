"""The ledger's outcomes as callbacks: message.sent when SES accepts a message, message.failed
when the ledger fails it, message.unknown when SES may have sent it; real PostgreSQL, the
local SES endpoint and a local receiver (docs/DATAFLOW.md#callbacks-to-integrators)."""

import itertools
import json

import pytest

from campaigns import delivery, ledger, outcomes, services, sweeper
from campaigns.models import Campaign, Contact, Membership, MessageOutcome, Notification
from tests.api.helpers import api_client, post_message
from tests.conftest import wait_for
from tests.factories import CampaignFactory, EventFactory, TemplateFactory, list_with_contacts
from tests.tracking.callbacks.receiver import Receiver, documented_verify
from tracking import callbacks
from tracking.models import CallbackDelivery, CallbackEndpoint, Event

N = Notification.Status
_numbers = itertools.count()


@pytest.fixture(autouse=True)
def fresh_flag(monkeypatch):
    """Each test starts with this process's cached answer forgotten (another test's
    endpoints are rolled back, its cached flag would linger for seconds)."""
    monkeypatch.setattr(outcomes, "_cached", None)


@pytest.fixture
def receiver(settings):
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = True  # the receiver is on 127.0.0.1
    server = Receiver()
    yield server
    server.close()


def run() -> None:
    """One beat: fan out and deliver (the delivery tasks run inline)."""
    callbacks.callbacks_fan_out()
    for endpoint_id in CallbackEndpoint.objects.values_list("pk", flat=True):
        callbacks.callbacks_deliver(endpoint_id=endpoint_id, budget=5)


def started_campaign(django_capture_on_commit_callbacks, *, recipients: int, bad: int = 0):
    """A campaign started (audience frozen), no batch run yet; `bad` recipients have an
    address SES cannot take (a special-use domain)."""
    contact_list = list_with_contacts(recipients)
    for _ in range(bad):
        contact = Contact.objects.create(email=f"nobody{next(_numbers)}@example.invalid")
        Membership.objects.create(contact_list=contact_list, contact=contact)
    campaign = CampaignFactory(contact_list=contact_list)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_send_now(campaign=campaign)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_start(campaign_id=campaign.pk)
    return campaign


def deliver(campaign) -> delivery.BatchResult:
    ids = Notification.objects.filter(campaign=campaign).values_list("id", flat=True)
    return delivery.deliver_batch(campaign_id=campaign.pk, first_id=min(ids), last_id=max(ids))


@pytest.mark.django_db
def test_accepted_messages_are_posted_sent_and_a_refused_address_failed(
    ses, receiver, django_capture_on_commit_callbacks
):
    endpoint = callbacks.endpoint_create(
        url=receiver.url, event_types=["message.sent", "message.failed"]
    )
    campaign = started_campaign(django_capture_on_commit_callbacks, recipients=3, bad=1)
    result = deliver(campaign)
    assert (result.sent, result.failed) == (3, 1)

    run()

    verify = documented_verify()
    by_id = {}
    for request in receiver.requests:
        headers = request["headers"]
        assert verify(endpoint.secret, headers["Mailwright-Signature"], request["body"])
        payload = json.loads(request["body"])
        assert headers["Mailwright-Event-Id"] == payload["id"]
        by_id[payload["id"]] = payload
    assert len(receiver.requests) == 4 == len(by_id)
    for message in Notification.objects.filter(campaign=campaign, status=N.SENT):
        payload = by_id[f"msg_{message.pk}_sent"]
        assert payload["type"] == "message.sent" and payload["test"] is False
        data = payload["data"]["message"]
        assert data["id"] == message.pk and data["campaign_id"] == campaign.pk
        assert data["ses_message_id"] == message.message_id  # SES's id, as SES said it
        assert data["to"] == message.contact.email and "reason" not in payload["data"]
    failed = Notification.objects.get(campaign=campaign, status=N.FAILED)
    payload = by_id[f"msg_{failed.pk}_failed"]
    assert payload["type"] == "message.failed"
    assert payload["data"]["reason"] == "address not sendable"
    assert payload["data"]["message"]["ses_message_id"] is None

    run()  # read again: nothing posted twice
    assert len(receiver.requests) == 4


@pytest.mark.django_db
def test_nobody_wanting_outcomes_writes_no_outbox_row(
    ses, receiver, django_capture_on_commit_callbacks
):
    callbacks.endpoint_create(url=receiver.url, event_types=["message.delivered"])
    campaign = started_campaign(django_capture_on_commit_callbacks, recipients=60, bad=1)
    assert deliver(campaign).sent == 60
    assert not MessageOutcome.objects.exists()
    run()
    assert receiver.requests == []

    # An endpoint that wants them: the next messages are recorded (the flag follows at once
    # in this process; a send worker's within campaigns.outcomes.OUTCOMES_CACHE_SECONDS).
    callbacks.endpoint_create(url=receiver.url, event_types=["message.sent"])
    campaign = started_campaign(django_capture_on_commit_callbacks, recipients=2, bad=1)
    deliver(campaign)
    # Only the outcome some endpoint wants: the refused address's `failed` is not written.
    assert sorted(MessageOutcome.objects.values_list("status", flat=True)) == [N.SENT, N.SENT]


@pytest.mark.django_db
def test_the_flag_is_per_outcome_and_follows_the_endpoints(receiver):
    assert outcomes.outcomes_wanted() == frozenset()
    endpoint = callbacks.endpoint_create(url=receiver.url, event_types=["message.sent"])
    assert outcomes.outcomes_wanted() == {N.SENT}
    callbacks.endpoint_update(endpoint, event_types=["message.failed", "message.unknown"])
    assert outcomes.outcomes_wanted() == {N.FAILED, N.UNKNOWN}
    callbacks.endpoint_disable(endpoint, reason="x")
    assert outcomes.outcomes_wanted() == frozenset()
    callbacks.endpoint_enable(endpoint)
    assert outcomes.outcomes_wanted() == {N.FAILED, N.UNKNOWN}
    callbacks.endpoint_delete(endpoint)
    assert outcomes.outcomes_wanted() == frozenset()


@pytest.mark.django_db
def test_an_ses_send_event_and_the_ledger_post_message_sent_once(
    ses, receiver, django_capture_on_commit_callbacks
):
    callbacks.endpoint_create(url=receiver.url, event_types=["message.sent"])
    campaign = started_campaign(django_capture_on_commit_callbacks, recipients=2)
    deliver(campaign)
    messages = list(Notification.objects.filter(campaign=campaign))
    for message in messages:  # SES publishes Send events too
        EventFactory(type=Event.Type.SENT, source=Event.Source.SES, notification=message)

    run()
    run()

    ids = sorted(r["headers"]["Mailwright-Event-Id"] for r in receiver.requests)
    assert ids == sorted(f"msg_{m.pk}_sent" for m in messages)
    assert CallbackDelivery.objects.count() == 2


@pytest.mark.django_db
def test_an_answer_ses_may_have_acted_on_is_posted_unknown(
    ses, receiver, django_capture_on_commit_callbacks
):
    callbacks.endpoint_create(url=receiver.url, event_types=list(callbacks.EVENT_TYPES))
    campaign = started_campaign(django_capture_on_commit_callbacks, recipients=2)
    ses.faults(error_5xx=1.0, error_5xx_after_accept=True)
    assert deliver(campaign).unknown == 2
    ses.faults(error_5xx=0)

    run()

    payloads = [json.loads(r["body"]) for r in receiver.requests]
    assert {p["type"] for p in payloads} == {"message.unknown"}
    assert len(payloads) == 2
    for payload in payloads:
        assert payload["id"].endswith("_unknown")
        assert payload["data"]["reason"]  # what SES answered: it may have sent it
        assert payload["data"]["message"]["ses_message_id"] is None


@pytest.mark.django_db
def test_a_batch_that_died_mid_hand_off_is_posted_unknown_by_the_sweeper(
    receiver, django_capture_on_commit_callbacks
):
    """The sweeper's path (a lease run out: rows left `sending` → unknown), and a stream
    whose template no longer compiles (its waiting messages → failed): both are the ledger's."""
    callbacks.endpoint_create(url=receiver.url, event_types=["message.failed", "message.unknown"])
    campaign = started_campaign(django_capture_on_commit_callbacks, recipients=3)
    ids = sorted(Notification.objects.filter(campaign=campaign).values_list("id", flat=True))
    ledger.ledger_transition(ids=ids[:2], from_statuses={N.CREATED}, to=N.SENDING)
    assert sweeper.flag_unknown(campaign.pk, ids) == 2  # the third is `created`: not moved
    Campaign.objects.filter(pk=campaign.pk).update(kind=Campaign.Kind.TRANSACTIONAL)
    services.campaign_fail_sending(campaign_id=campaign.pk, reason="the template broke")

    run()

    got = {r["headers"]["Mailwright-Event-Id"]: json.loads(r["body"]) for r in receiver.requests}
    assert set(got) == {f"msg_{ids[0]}_unknown", f"msg_{ids[1]}_unknown", f"msg_{ids[2]}_failed"}
    assert got[f"msg_{ids[0]}_unknown"]["data"]["reason"] == (
        "batch died during the hand-off to SES"
    )
    assert got[f"msg_{ids[2]}_failed"]["data"]["reason"] == "the template broke"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_transactional_api_message_sent_by_a_worker_is_posted_sent(
    ses, receiver, celery_worker_process
):
    TemplateFactory(slug="reset", subject="Reset", html="<p>Reset</p>")
    endpoint = callbacks.endpoint_create(url=receiver.url, event_types=["message.sent"])
    message_id = post_message(api_client(), to="ada@example.com", reference="order-7")

    def posted():
        run()
        return receiver.requests

    wait_for(posted, timeout=60, message=lambda: celery_worker_process.output()[-3000:])
    (request,) = receiver.requests
    assert documented_verify()(
        endpoint.secret, request["headers"]["Mailwright-Signature"], request["body"]
    )
    payload = json.loads(request["body"])
    message = Notification.objects.get(pk=message_id)
    assert payload["id"] == f"msg_{message_id}_sent" and payload["type"] == "message.sent"
    data = payload["data"]["message"]
    assert data["reference"] == "order-7" and data["ses_message_id"] == message.message_id
    assert message.campaign.kind == Campaign.Kind.TRANSACTIONAL
    assert len(ses.messages()) == 1

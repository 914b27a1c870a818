"""The buffered SES event intake (ESP_EVENTS_BUFFER, tracking.ses_events) and the webhook's WSGI
fast route (tracking.ses_events.webhook.ses_webhook_wsgi)."""

import base64
import json
import time

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test import RequestFactory

from campaigns.models import Contact
from infra import queue
from tests.conftest import call_wsgi, redis_buffer
from tests.factories import CampaignFactory, ContactFactory, NotificationFactory
from tests.sns_signing import default_signer, sns_headers
from tests.tracking.ses_events.test_webhooks import (
    AUTH,
    WEBHOOK,
    counters,
    post,
    ses_event,
    sns_envelope,
)
from tracking.models import Event, PendingEspEvent
from tracking.ses_events import buffer as events_buffer
from tracking.ses_events.buffer import (
    ESP_EVENTS_DEAD_LETTERS,
    ESP_EVENTS_QUEUE,
    _record_loads,
    esp_events_buffer_flush,
    esp_events_flush_if_late,
)
from tracking.ses_events.parse import ses_event_parse
from tracking.ses_events.record import ses_events_record
from tracking.ses_events.webhook import ses_webhook_wsgi

pytestmark = pytest.mark.django_db


@pytest.fixture
def buffered(settings):
    """Buffered intake on the test Redis, flushed by the test itself (not by a thread)."""
    settings.ESP_EVENTS_BUFFER = True
    settings.TRACKING_FLUSH_IN_WEB = False
    with redis_buffer("esp:events*") as client:
        yield client


def scenario(prefix: str):
    """Two campaigns' notifications and the SNS envelopes of a mixed run of events: deliveries,
    a hard bounce, a complaint after a delivery, three soft bounces of one contact (the limit),
    a redelivered SNS message, an event naming an unknown message, an SES open."""
    campaigns = [CampaignFactory(), CampaignFactory()]
    contacts = [ContactFactory() for _ in range(4)]
    notifications = [
        NotificationFactory(
            campaign=campaigns[i // 4], contact=contacts[i % 4], sent=True,
            message_id=f"{prefix}-m{i}",
        )
        for i in range(8)
    ]  # fmt: skip
    events = []
    for i in range(6):
        events.append(ses_event("Delivery", f"{prefix}-m{i}", contacts[i % 4].email))
    events.append(ses_event("Bounce", f"{prefix}-m6", contacts[2].email))
    events.append(ses_event("Complaint", f"{prefix}-m1", contacts[1].email))
    events.append(ses_event("Open", f"{prefix}-m0", contacts[0].email))
    for i in (3, 7):  # contact 3 soft-bounces on m3 (after its delivery) and on m7
        soft = ses_event("Bounce", f"{prefix}-m{i}", contacts[3].email)
        soft["bounce"]["bounceType"] = "Transient"
        events.append(soft)
    soft = ses_event("Bounce", f"{prefix}-m7", contacts[3].email)  # a later, distinct one
    soft["bounce"].update(bounceType="Transient", timestamp="2026-11-20T11:00:00.000Z")
    events.append(soft)
    events.append(ses_event("Delivery", f"{prefix}-unknown", "x@example.org"))
    envelopes = [sns_envelope(event) for event in events]
    envelopes.append(envelopes[0])  # SNS delivers a message twice
    return campaigns, contacts, notifications, envelopes


def outcome(campaigns, contacts, notifications) -> dict:
    """What was recorded, without the ids that differ between two runs of the scenario."""
    for row in [*contacts, *notifications]:
        row.refresh_from_db()
    events = Event.objects.filter(notification__in=notifications)
    return {
        "statuses": [(n.status, n.reason) for n in notifications],
        "contacts": [c.status for c in contacts],
        "counters": [counters(c.pk) for c in campaigns],
        "events": sorted(
            (notifications.index(e.notification), e.type, e.bounce_type, e.description)
            for e in events
        ),
        "pending": PendingEspEvent.objects.filter(message_id__endswith="-unknown").count(),
    }


def test_buffered_intake_records_exactly_what_the_direct_path_records(client, settings, buffered):
    settings.SOFT_BOUNCE_LIMIT = 3
    settings.ESP_EVENTS_BUFFER = False
    direct = scenario("d")
    for envelope in direct[3]:
        assert post(client, envelope).status_code == 200
    assert not buffered.exists(ESP_EVENTS_QUEUE)  # the direct path used no buffer
    expected = outcome(*direct[:3])
    PendingEspEvent.objects.all().delete()

    settings.ESP_EVENTS_BUFFER = True
    queued = scenario("q")
    for envelope in queued[3]:
        assert post(client, envelope).status_code == 200
    assert buffered.llen(ESP_EVENTS_QUEUE) == len(queued[3])
    assert not Event.objects.filter(notification__in=queued[2]).exists()  # not before the flush
    assert esp_events_buffer_flush() == 12  # 14 posts: 13 events, less the unknown one (pending)

    got = outcome(*queued[:3])
    assert got == expected
    # The scenario did what it says: each kind of outcome is in it.
    assert got["contacts"] == ["active", "complained", "bounced", "bounced"]
    assert got["statuses"][1] == ("complained", "abuse")
    assert got["statuses"][6] == ("bounced", "Permanent: General")
    assert got["counters"][0] == {"delivered": 4, "complained": 1, "bounced_soft": 1}
    # m7 soft-bounced twice: one message, counted once.
    assert got["counters"][1] == {"delivered": 2, "bounced_hard": 1, "bounced_soft": 1}
    assert got["pending"] == 1
    assert queue.buffer_backlog(queue=ESP_EVENTS_QUEUE) == {"queued": 0, "claimed": 0}


def test_a_batch_flushed_twice_records_nothing_twice(client, buffered):
    campaigns, contacts, notifications, envelopes = scenario("r")
    for envelope in envelopes:
        post(client, envelope)
    # A flusher commits the batch and dies before acknowledging it: the batch stays claimed.
    key, items = queue.buffer_claim(queue=ESP_EVENTS_QUEUE)
    events = [
        ses_event_parse(payload=payload, recipient=recipient)
        for _, recipients in map(_record_loads, items)
        for recipient, payload in recipients
    ]
    assert ses_events_record(events=events, source=Event.Source.SES)["recorded"] == 12
    before = outcome(campaigns, contacts, notifications)
    assert esp_events_buffer_flush() == 0  # its lease (60 s) has not passed: left alone
    assert queue.buffer_backlog(queue=ESP_EVENTS_QUEUE) == {"queued": 0, "claimed": 1}
    assert esp_events_buffer_flush(lease_seconds=0) == 0  # taken over: all duplicates
    assert outcome(campaigns, contacts, notifications) == before
    assert Event.objects.count() == 12
    assert PendingEspEvent.objects.count() == 1
    assert queue.buffer_backlog(queue=ESP_EVENTS_QUEUE) == {"queued": 0, "claimed": 0}
    # SNS delivers the whole run again, later: nothing new either.
    for envelope in envelopes:
        post(client, envelope)
    assert esp_events_buffer_flush() == 0
    assert outcome(campaigns, contacts, notifications) == before


def test_a_web_process_records_events_left_waiting_by_a_stopped_flusher(
    client, buffered, monkeypatch
):
    monkeypatch.setattr(events_buffer, "_head_seen", None)
    _, _, notifications, envelopes = scenario("w")
    post(client, envelopes[0])
    assert esp_events_flush_if_late(after_seconds=0.3) is None  # the head, seen for the first time
    time.sleep(0.1)
    assert esp_events_flush_if_late(after_seconds=0.3) is None  # not late yet
    assert not Event.objects.exists()
    time.sleep(0.3)
    assert esp_events_flush_if_late(after_seconds=0.3) == 1
    notifications[0].refresh_from_db()
    assert notifications[0].status == "delivered"
    assert esp_events_flush_if_late(after_seconds=0.3) is None  # nothing waits


def test_a_head_that_moves_is_left_to_the_flusher(client, buffered, monkeypatch):
    monkeypatch.setattr(events_buffer, "_head_seen", None)
    _, _, _, envelopes = scenario("v")
    post(client, envelopes[0])
    assert esp_events_flush_if_late(after_seconds=0.3) is None
    assert esp_events_buffer_flush() == 1  # the flusher takes it
    post(client, envelopes[1])
    time.sleep(0.4)
    assert esp_events_flush_if_late(after_seconds=0.3) is None  # another record: not stuck
    assert buffered.llen(ESP_EVENTS_QUEUE) == 1


def test_unreadable_records_are_kept_aside(client, buffered):
    _, contacts, notifications, envelopes = scenario("u")
    post(client, envelopes[0])
    buffered.rpush(ESP_EVENTS_QUEUE, b"not json", b'[9, "x", "y", {}]')
    assert esp_events_buffer_flush() == 1
    assert buffered.lrange(ESP_EVENTS_DEAD_LETTERS, 0, -1) == [b"not json", b'[9, "x", "y", {}]']
    notifications[0].refresh_from_db()
    assert notifications[0].status == "delivered"


def test_an_event_for_two_recipients_is_one_record_and_two_events(client, settings, buffered):
    """The flusher splits an SNS message per recipient on its message, as the direct path
    does: the same Event rows, and the message counted once."""
    recorded = {}
    for buffered_intake in (False, True):
        settings.ESP_EVENTS_BUFFER = buffered_intake
        prefix = f"two-{buffered_intake}"
        contact = ContactFactory()
        notification = NotificationFactory(contact=contact, sent=True, message_id=f"{prefix}-m")
        event = ses_event("Delivery", f"{prefix}-m", contact.email)
        event["delivery"]["recipients"].append("cc@example.org")
        event["mail"]["destination"].append("cc@example.org")
        event["delivery"]["recipients"].append("not-on-the-message@example.org")
        assert post(client, sns_envelope(event)).status_code == 200
        if buffered_intake:
            assert buffered.llen(ESP_EVENTS_QUEUE) == 1  # one record per SNS message
            assert esp_events_buffer_flush() == 2
        recorded[buffered_intake] = sorted(
            (e.type, e.description) for e in Event.objects.filter(notification=notification)
        )
        assert counters(notification.campaign_id) == {"delivered": 1}
    assert recorded[True] == recorded[False] == [("delivered", "250 2.6.0 Message received")] * 2


def test_a_record_of_another_format_is_kept_aside(client, buffered):
    """Only the one record format is read; anything else (here a JSON array) is kept for a
    person in the dead letters, not recorded and not lost."""
    _, contacts, notifications, _ = scenario("f1")
    payload = ses_event("Delivery", "f1-m0", contacts[0].email)
    buffered.rpush(ESP_EVENTS_QUEUE, json.dumps([1, "sns-1", contacts[0].email, payload]))
    assert esp_events_buffer_flush() == 0
    notifications[0].refresh_from_db()
    assert notifications[0].status == "sent"
    assert buffered.llen(ESP_EVENTS_DEAD_LETTERS) == 1


def test_messages_that_are_not_ses_events_are_not_queued(client, buffered):
    """SNS's topic-validation notice (ignored), an inbound "Received" notification (refused:
    the receipt rule points at the wrong URL), a Message that is not an SES event object."""
    notice = "Successfully validated SNS topic for Amazon SES event publishing."
    assert post(client, sns_envelope(notice)).status_code == 200
    inbound = ses_event("Delivery", "r-m", "x@example.org")
    del inbound["eventType"]
    inbound["notificationType"] = "Received"
    assert post(client, sns_envelope(inbound)).status_code == 400
    assert post(client, sns_envelope("not json")).status_code == 400
    assert post(client, sns_envelope("[1, 2]")).status_code == 400
    assert not buffered.exists(ESP_EVENTS_QUEUE)


def test_the_flusher_ignores_recipients_not_on_the_message(client, buffered):
    """A complaint naming its recipient and 600 others counts once; one naming only others
    (another contact of the campaign, strangers) moves nothing, as on the direct path."""
    campaigns, contacts, notifications, _ = scenario("o")
    many = ses_event("Complaint", "o-m0", contacts[0].email)
    many["complaint"]["complainedRecipients"] = [
        {"emailAddress": a} for a in [*(f"x{i}@example.org" for i in range(600)), contacts[0].email]
    ]
    others = ses_event("Bounce", "o-m1", contacts[1].email)
    others["bounce"]["bouncedRecipients"] = [
        {"emailAddress": contacts[2].email}, {"emailAddress": "stranger@example.org"},
    ]  # fmt: skip
    for record in (many, others):
        assert post(client, sns_envelope(record)).status_code == 200
    assert buffered.llen(ESP_EVENTS_QUEUE) == 2
    assert esp_events_buffer_flush() == 1
    assert counters(campaigns[0].pk) == {"complained": 1}
    assert [c.status for c in Contact.objects.filter(pk__in=[c.pk for c in contacts])
            .order_by("pk")] == ["complained", "active", "active", "active"]  # fmt: skip
    notifications[1].refresh_from_db()
    assert notifications[1].status == "sent"
    assert not buffered.exists(ESP_EVENTS_DEAD_LETTERS)


def test_redis_down_means_recorded_during_the_request(client, buffered, settings, monkeypatch):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(queue, "_down_until", 0.0)
    campaigns, contacts, notifications, envelopes = scenario("x")
    started = time.monotonic()
    assert post(client, envelopes[0]).status_code == 200
    assert queue._down_until > time.monotonic()  # the next requests do not try Redis
    assert post(client, envelopes[6]).status_code == 200  # the hard bounce
    assert time.monotonic() - started < 5
    for row in notifications:
        row.refresh_from_db()
    assert [notifications[0].status, notifications[6].status] == ["delivered", "bounced"]
    assert counters(campaigns[0].pk) == {"delivered": 1}
    assert counters(campaigns[1].pk) == {"bounced_hard": 1}
    assert Contact.objects.get(pk=contacts[2].pk).status == "bounced"


def test_a_full_buffer_records_during_the_request_and_stays_bounded(client, buffered, settings):
    """The events buffer is bounded (ESP_EVENTS_BUFFER_MAX, claimed batches included): past
    it an event is recorded during its request, as with Redis down, and Redis (the broker
    too) never holds more."""
    settings.ESP_EVENTS_BUFFER_MAX = 3
    campaigns, contacts, notifications, envelopes = scenario("full")
    for envelope in envelopes[:6]:  # six deliveries
        assert post(client, envelope).status_code == 200
        assert buffered.llen(ESP_EVENTS_QUEUE) <= 3
    assert buffered.llen(ESP_EVENTS_QUEUE) == 3
    for row in notifications[:6]:
        row.refresh_from_db()
    # The first three wait in the buffer; the rest were recorded at once, nothing lost.
    assert [row.status for row in notifications[:6]] == ["sent"] * 3 + ["delivered"] * 3
    assert queue._down_until <= time.monotonic()  # full is not down: the next push tries
    esp_events_buffer_flush()
    for row in notifications[:6]:
        row.refresh_from_db()
    assert [row.status for row in notifications[:6]] == ["delivered"] * 6
    assert post(client, envelopes[6]).status_code == 200  # room again: queued
    assert buffered.llen(ESP_EVENTS_QUEUE) == 1


# --- the WSGI fast route --------------------------------------------------------------------------


class Wsgi:
    """POSTs straight to a WSGI application (as a WSGI server would call it)."""

    def __init__(self, application):
        self.application = application
        self.factory = RequestFactory()

    def __call__(self, envelope, *, auth=AUTH, body=None, **headers):
        headers = {**sns_headers(envelope), **headers}
        if auth:
            headers["HTTP_AUTHORIZATION"] = auth
        data = body if body is not None else json.dumps(envelope)
        request = self.factory.post(WEBHOOK, data=data, content_type="text/plain", **headers)
        return call_wsgi(self.application, request.environ)


@pytest.fixture
def wsgi_pair():
    calls = []
    django_app = WSGIHandler()

    def spy(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return django_app(environ, start_response)

    return Wsgi(spy), Wsgi(ses_webhook_wsgi(spy)), calls


def test_the_fast_route_answers_exactly_as_django_does(wsgi_pair):
    plain, fast, calls = wsgi_pair
    campaigns, contacts, notifications, _ = scenario("f")
    delivery = ses_event("Delivery", "f-m0", contacts[0].email)
    tampered = sns_envelope(delivery)
    tampered["Message"] = tampered["Message"].replace("250 2.6.0", "550 5.0.0")
    wrong = "Basic " + base64.b64encode(b"sns:wrong").decode()
    cases = [
        ("no credentials", sns_envelope(delivery), {"auth": None}, 401),
        ("wrong credentials", sns_envelope(delivery), {"auth": wrong}, 403),
        ("headers disagree", sns_envelope(delivery), {"HTTP_X_AMZ_SNS_MESSAGE_ID": "x"}, 400),
        ("not JSON", sns_envelope(delivery), {"body": "{not json"}, 400),
        ("bad signature", tampered, {}, 403),
        ("a delivery", sns_envelope(delivery), {}, 200),
    ]
    for name, envelope, kwargs, status in cases:
        expected = plain(envelope, **kwargs)
        del calls[:]
        got = fast(envelope, **kwargs)
        assert calls == [], f"{name} went through Django"
        assert (got[0], expected[0]) == (status, status), name
        assert got[2] == expected[2], name
        assert got[1].get("WWW-Authenticate") == expected[1].get("WWW-Authenticate"), name
    notifications[0].refresh_from_db()
    assert notifications[0].status == "delivered"
    assert Event.objects.count() == 1  # the delivery, once (the second time: a duplicate)
    assert counters(campaigns[0].pk) == {"delivered": 1}


def test_the_fast_route_leaves_confirmations_and_the_rest_to_django(wsgi_pair, settings):
    _, fast, calls = wsgi_pair
    settings.ANYMAIL = {**settings.ANYMAIL, "AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS": False}
    signer = default_signer()
    signer.seed()
    assert fast(signer.confirmation())[0] == 200  # (auto-confirm off: nothing sent to SNS)
    assert calls == [WEBHOOK]
    del calls[:]
    envelope = sns_envelope(ses_event("Delivery", "none", "x@example.org"))
    settings.ALLOWED_HOSTS = ["testserver"]
    assert fast(envelope, HTTP_HOST="evil.example")[0] == 400  # ALLOWED_HOSTS, by Django
    assert calls == [WEBHOOK]
    assert not PendingEspEvent.objects.exists()


def test_the_fast_route_with_the_buffer_queues_and_answers(wsgi_pair, buffered):
    _, fast, calls = wsgi_pair
    campaigns, contacts, notifications, envelopes = scenario("g")
    for envelope in envelopes:
        assert fast(envelope)[0] == 200
    assert calls == []
    assert buffered.llen(ESP_EVENTS_QUEUE) == len(envelopes)
    assert not Event.objects.exists()
    assert esp_events_buffer_flush() == 12
    assert counters(campaigns[1].pk) == {"delivered": 2, "bounced_hard": 1, "bounced_soft": 1}


def test_an_event_the_database_refuses_is_kept_aside_once(client, buffered):
    """PostgreSQL refuses a NUL character in text: the batch fails, then each event alone; the
    record (two recipients, both refused) is kept aside once, the rest of the batch recorded."""
    _, contacts, notifications, envelopes = scenario("n")
    bad = ses_event("Delivery", "n-m1", contacts[1].email)
    bad["delivery"]["recipients"].append("cc@example.org")
    bad["delivery"]["smtpResponse"] = "250 ok\u0000"
    post(client, envelopes[0])
    post(client, sns_envelope(bad))
    assert esp_events_buffer_flush() == 1
    dead = buffered.lrange(ESP_EVENTS_DEAD_LETTERS, 0, -1)
    assert len(dead) == 1 and b"n-m1" in dead[0]
    notifications[0].refresh_from_db()
    assert notifications[0].status == "delivered"

"""Callbacks delivered to a real local HTTP receiver: signed, retried, given up, disabled."""

import json
import logging
import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Campaign, MessageRequest
from tests.factories import CampaignFactory, CampaignLinkFactory, EventFactory, NotificationFactory
from tests.tracking.callbacks.receiver import Receiver, documented_verify
from tracking import callbacks
from tracking.models import CallbackDelivery, CallbackEndpoint, Event

pytestmark = pytest.mark.django_db

D = CallbackDelivery.Status


@pytest.fixture
def receiver(settings):
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = True  # the receiver is on 127.0.0.1
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def endpoint(receiver):
    return callbacks.endpoint_create(url=receiver.url, event_types=list(callbacks.EVENT_TYPES))


def run() -> None:
    """One beat: fan out and deliver (the delivery tasks run inline)."""
    callbacks.callbacks_fan_out()
    for endpoint_id in CallbackEndpoint.objects.values_list("pk", flat=True):
        callbacks.callbacks_deliver(endpoint_id=endpoint_id, budget=5)


def test_a_click_is_posted_signed_with_its_verdict_and_reference(receiver, endpoint):
    message = NotificationFactory(sent=True, campaign__kind=Campaign.Kind.TRANSACTIONAL)
    MessageRequest.objects.create(notification=message, reference="order-1187")
    link = CampaignLinkFactory(campaign=message.campaign, url="https://shop.example.com/o/1")
    event = EventFactory(
        clicked=True, notification=message, link=link, verdict="human", verdict_reason="x"
    )

    run()

    (request,) = receiver.requests
    verify = documented_verify()
    headers = request["headers"]
    assert verify(endpoint.secret, headers["Mailwright-Signature"], request["body"])
    assert not verify("whsec_other", headers["Mailwright-Signature"], request["body"])
    assert not verify(endpoint.secret, headers["Mailwright-Signature"], request["body"] + b" ")
    assert headers["Mailwright-Event-Id"] == f"evt_{event.pk}"
    assert headers["Mailwright-Event-Type"] == "message.clicked"
    assert request["path"] == "/hooks/mailwright?x=1"
    payload = json.loads(request["body"])
    assert payload["id"] == f"evt_{event.pk}" and payload["type"] == "message.clicked"
    data = payload["data"]
    assert data["verdict"] == "human" and data["url"] == "https://shop.example.com/o/1"
    assert data["message"]["id"] == message.pk
    assert data["message"]["reference"] == "order-1187"
    assert data["message"]["job_id"] is None and data["message"]["campaign_id"] is None
    row = CallbackDelivery.objects.get()
    assert (row.status, row.attempts, row.last_status) == (D.DELIVERED, 1, 200)

    run()  # found again: queued once, posted once
    assert len(receiver.requests) == 1


def test_only_the_types_an_endpoint_wants_and_events_after_it_was_made(receiver):
    before = EventFactory(bounced=True)
    only_bounces = callbacks.endpoint_create(url=receiver.url, event_types=["message.bounced"])
    EventFactory(opened=True)
    bounce = EventFactory(bounced=True)

    run()

    assert [e["id"] for e in receiver.events()] == [f"evt_{bounce.pk}"]
    assert receiver.events()[0]["data"]["bounce_type"] == "hard"
    assert before.pk and only_bounces.pk


def test_job_and_campaign_finished(receiver, endpoint):
    job = CampaignFactory(kind=Campaign.Kind.JOB, contact_list=None)
    campaign = CampaignFactory()
    for row in (job, campaign):
        Campaign.objects.filter(pk=row.pk).update(
            status=Campaign.Status.SENT, finished_at=timezone.now()
        )
    run()
    by_type = {e["type"]: e for e in receiver.events()}
    assert by_type["job.finished"]["data"]["job"]["id"] == job.pk
    assert by_type["job.finished"]["id"] == f"job_{job.pk}_finished"
    assert by_type["campaign.finished"]["data"]["campaign"]["status"] == "sent"


def test_retried_after_a_500_with_backoff(receiver, endpoint):
    receiver.statuses = [500]
    EventFactory(delivered=True)

    run()
    row = CallbackDelivery.objects.get()
    assert (row.status, row.attempts, row.last_status) == (D.PENDING, 1, 500)
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=5)
    run()  # not due yet
    assert len(receiver.requests) == 1

    CallbackDelivery.objects.update(next_attempt_at=timezone.now())  # the clock, moved on
    run()
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_status) == (D.DELIVERED, 2, 200)
    first, second = receiver.requests
    assert first["headers"]["Mailwright-Event-Id"] == second["headers"]["Mailwright-Event-Id"]


def test_retried_after_a_timeout(receiver, endpoint, settings):
    settings.CALLBACK_TIMEOUT_SECONDS = 1
    receiver.delay = 2
    EventFactory(delivered=True)
    run()
    row = CallbackDelivery.objects.get()
    assert (row.status, row.last_error) == (D.PENDING, "timed out")

    receiver.delay = 0
    CallbackDelivery.objects.update(next_attempt_at=timezone.now())
    run()
    row.refresh_from_db()
    assert row.status == D.DELIVERED


def test_redirects_are_not_followed(receiver, endpoint):
    receiver.statuses = [302]
    EventFactory(delivered=True)
    run()
    row = CallbackDelivery.objects.get()
    assert row.status == D.PENDING and "redirect" in row.last_error


def test_given_up_after_72_hours(receiver, endpoint):
    receiver.statuses = [503]
    EventFactory(delivered=True)
    callbacks.callbacks_fan_out()
    CallbackDelivery.objects.update(created_at=timezone.now() - timedelta(hours=72, minutes=1))
    callbacks.callbacks_deliver(endpoint_id=endpoint.pk, budget=5)
    row = CallbackDelivery.objects.get()
    assert (row.status, row.last_status) == (D.FAILED, 503)


def test_an_endpoint_failing_for_a_day_is_disabled_with_the_reason(receiver, endpoint):
    receiver.statuses = [500, 500]
    EventFactory(delivered=True)
    run()
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.failing_since is not None

    # A day of failures, through the model's times (no sleep).
    CallbackEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(hours=24, minutes=1)
    )
    CallbackDelivery.objects.update(next_attempt_at=timezone.now())
    run()
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_at is not None
    assert "HTTP 500" in endpoint.disabled_reason
    EventFactory(delivered=True)
    run()  # disabled: nothing new queued, nothing posted
    assert len(receiver.requests) == 2
    assert CallbackDelivery.objects.count() == 1

    callbacks.endpoint_enable(endpoint)  # the waiting delivery goes
    run()
    assert CallbackDelivery.objects.order_by("pk").first().status == D.DELIVERED


def test_a_claim_of_answers_and_failures_records_each_and_a_late_answer_moves_nothing(
    receiver, endpoint, settings
):
    # One thread posts a claim's rows in id order, so the 500 is the first row's answer.
    # (The fan-out's INSERT … SELECT numbers the rows in its plan's order, not the events'.)
    settings.CALLBACK_CONCURRENCY = 1
    receiver.statuses = [500, 201]
    for _ in range(3):
        EventFactory(delivered=True)
    run()
    first, second, third = CallbackDelivery.objects.exclude(tracking_event_id=None).order_by("pk")
    assert (first.status, first.last_status, first.last_error) == (D.PENDING, 500, "HTTP 500")
    assert first.delivered_at is None and first.next_attempt_at > timezone.now()
    assert (second.status, second.last_status, second.last_error) == (D.DELIVERED, 201, "")
    assert (third.status, third.last_status) == (D.DELIVERED, 200)
    assert second.delivered_at is not None
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None  # a claim with a success is not a failing one
    # An answer recorded for an attempt the row has moved past (its lease ran out and another
    # worker claimed it again) changes nothing.
    CallbackDelivery.objects.filter(pk=first.pk).update(attempts=2)
    claimed = callbacks.Claimed(first.pk, first.event_id, first.event_type, None, None, None, 1,
                                first.created_at)  # fmt: skip
    callbacks._record(endpoint, [claimed], {first.pk: callbacks.Outcome(200, "")})
    first.refresh_from_db()
    assert (first.status, first.attempts) == (D.PENDING, 2)


def test_a_success_clears_the_failing_clock(receiver, endpoint):
    receiver.statuses = [500]
    EventFactory(delivered=True)
    run()
    CallbackDelivery.objects.update(next_attempt_at=timezone.now())
    run()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None and endpoint.enabled


def test_rotation_signs_with_both_secrets_during_the_overlap(receiver, endpoint):
    old = endpoint.secret
    new = callbacks.endpoint_rotate_secret(endpoint)
    EventFactory(delivered=True)
    run()
    header, body = (
        receiver.requests[0]["headers"]["Mailwright-Signature"],
        receiver.requests[0]["body"],
    )
    verify = documented_verify()
    assert header.count("v1=") == 2
    assert verify(old, header, body) and verify(new, header, body)

    CallbackEndpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    EventFactory(delivered=True)
    run()
    header, body = (
        receiver.requests[1]["headers"]["Mailwright-Signature"],
        receiver.requests[1]["body"],
    )
    assert verify(new, header, body) and not verify(old, header, body)


def test_an_old_signature_is_refused_by_the_snippet(endpoint):
    verify = documented_verify()
    body = b'{"id":"evt_1"}'
    stale = callbacks.signature_header(body, [endpoint.secret], timestamp=1_000_000_000)
    assert not verify(endpoint.secret, stale, body)


def test_logs_carry_no_address_url_or_body(receiver, endpoint, caplog):
    receiver.statuses = [500]
    message = NotificationFactory(sent=True, contact__email="secret.person@example.org")
    EventFactory(delivered=True, notification=message)
    with caplog.at_level(logging.DEBUG):
        run()
        CallbackDelivery.objects.update(next_attempt_at=timezone.now())
        run()
    text = caplog.text
    assert "callback endpoint" in text
    assert "secret.person" not in text and "127.0.0.1" not in text and "hooks" not in text
    assert "evt_" not in text or "message" not in text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://192.168.0.10/hook",
        "http://localhost/hook",
        "http://localtest.me/hook",  # a public name resolving to 127.0.0.1
        "ftp://example.com/hook",
        "http://user:pass@example.com/hook",
        "http://exa mple.com/hook",
        "http://example.com\r\nX: y/hook",
        # Names no DNS could answer for, refused at once whether or not a resolver is here.
        "https://hooks/mailwright",
        "https://crm..example.com/hook",
        "https://crm_1.example.com/hook",
        "https://10.0.0.999/hook",
        "https://-crm.example.com/hook",
    ],
)
def test_private_and_odd_targets_are_refused(url, settings):
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = False
    if "localtest.me" in url:
        try:
            resolved = socket.gethostbyname("localtest.me")
        except OSError:
            pytest.skip("no DNS here for a public name resolving to loopback")
        assert resolved == "127.0.0.1"
    with pytest.raises(callbacks.TargetRefused):
        callbacks.endpoint_create(url=url, event_types=["message.sent"])


def test_a_name_that_resolves_to_loopback_later_is_refused_at_delivery(
    receiver, endpoint, settings
):
    """Saved while allowed (as a name resolving elsewhere would be), refused when posting."""
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = False
    EventFactory(delivered=True)
    run()
    row = CallbackDelivery.objects.get()
    assert row.status == D.PENDING and row.last_error.startswith("refused")
    assert receiver.requests == []


def test_a_name_that_does_not_resolve_yet_is_saved_and_its_deliveries_wait(settings):
    """An integrator's DNS may not be live yet (or a lookup fail for a moment): the endpoint is
    saved, and nothing is posted until the name resolves to public addresses: its deliveries
    are refused and retried, the log saying why (.invalid never resolves: RFC 6761)."""
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = False
    endpoint = callbacks.endpoint_create(
        url="https://crm.example.invalid/hooks", event_types=list(callbacks.EVENT_TYPES)
    )
    callbacks.endpoint_update(endpoint, url="https://crm2.example.invalid/hooks")
    EventFactory(delivered=True)
    run()
    row = CallbackDelivery.objects.get()
    assert row.status == D.PENDING and row.attempts == 1
    assert row.last_error == "refused: The host does not resolve."
    assert row.next_attempt_at > timezone.now()


def test_a_deleted_event_posts_nothing(receiver, endpoint):
    event = EventFactory(delivered=True)
    callbacks.callbacks_fan_out()
    Event.objects.filter(pk=event.pk).delete()  # cascades: its delivery goes with it
    run()
    assert receiver.requests == []


def test_a_path_outside_ascii_is_sent_percent_encoded(receiver):
    url = receiver.url.replace("/hooks/mailwright?x=1", "/hooks/caf\u00e9%20ok?q=\u00fc&x=1")
    callbacks.endpoint_create(url=url, event_types=["message.delivered"])
    EventFactory(delivered=True)
    run()
    assert receiver.requests[0]["path"] == "/hooks/caf%C3%A9%20ok?q=%C3%BC&x=1"
    assert CallbackDelivery.objects.get().status == D.DELIVERED


def test_a_kept_connection_that_died_is_replaced_without_a_failure(receiver, endpoint):
    EventFactory(delivered=True)
    run()
    # The kept connection breaks while idle (the receiver or a proxy closed it).
    for pool in callbacks._pools.values():
        for connection in pool.idle:
            connection.sock.shutdown(socket.SHUT_RDWR)
    EventFactory(delivered=True)
    run()
    assert len(receiver.requests) == 2
    assert set(CallbackDelivery.objects.values_list("status", "attempts")) == {(D.DELIVERED, 1)}


def test_dispatch_enqueues_once_per_endpoint_until_its_tasks_end(
    receiver, endpoint, eager_celery, django_capture_on_commit_callbacks
):
    from infra.redis_client import redis_client

    EventFactory(delivered=True)
    flag = callbacks._dispatch_flag_key(endpoint.pk)
    redis_client(timeout=1).set(flag, 1)  # tasks for it queued or running: none enqueued
    with django_capture_on_commit_callbacks(execute=True):
        callbacks.callbacks_dispatch()
    assert receiver.requests == []
    redis_client(timeout=1).delete(flag)
    with django_capture_on_commit_callbacks(execute=True):
        callbacks.callbacks_dispatch()  # the task runs inline, posts, drops the flag
    assert len(receiver.requests) == 1
    assert not redis_client(timeout=1).exists(flag)


def test_https_verifies_the_certificate_for_the_name_while_connecting_to_the_checked_address(
    tmp_path, settings, monkeypatch
):
    """The URL names `localhost`; the post connects to the address that name was checked to
    have (127.0.0.1 here) and verifies the certificate for `localhost`, not for the address."""
    import ssl

    from tests.tracking.callbacks.receiver import TlsReceiver

    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = True
    server = TlsReceiver(tmp_path)
    try:
        endpoint = callbacks.endpoint_create(url=server.url, event_types=["message.delivered"])
        EventFactory(delivered=True)
        # Not trusted (the system's authorities): refused, nothing delivered.
        monkeypatch.setattr(callbacks, "_tls", None)
        run()
        row = CallbackDelivery.objects.get()
        assert row.status == D.PENDING and "SSL" in row.last_error
        # Trusted: delivered, the certificate checked for the URL's name.
        monkeypatch.setattr(callbacks, "_tls", ssl.create_default_context(cafile=server.cert))
        callbacks._pools.clear()
        CallbackDelivery.objects.update(next_attempt_at=timezone.now())
        run()
        row.refresh_from_db()
        assert row.status == D.DELIVERED
        (request,) = [r for r in server.requests if r["path"] == "/hooks/tls"]
        assert request["headers"]["Host"] == f"localhost:{server.server.server_port}"
        assert documented_verify()(
            endpoint.secret, request["headers"]["Mailwright-Signature"], request["body"]
        )
    finally:
        callbacks._pools.clear()
        server.close()


def test_a_receiver_that_is_down_loses_nothing(receiver, endpoint):
    receiver.close()  # nothing listens on its port now
    EventFactory(delivered=True)
    run()
    row = CallbackDelivery.objects.get()
    assert (row.status, row.last_error) == (D.PENDING, "no answer: ConnectionRefusedError")
    back = Receiver()  # up again (on another port: the endpoint follows it)
    try:
        CallbackEndpoint.objects.filter(pk=endpoint.pk).update(url=back.url)
        CallbackDelivery.objects.update(next_attempt_at=timezone.now())
        run()
        assert CallbackDelivery.objects.get().status == D.DELIVERED
        assert [r["headers"]["Mailwright-Event-Id"] for r in back.requests] == [row.event_id]
    finally:
        back.close()

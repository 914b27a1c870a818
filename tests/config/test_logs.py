"""Logs carry ids, never addresses, names or bodies: a whole send, its events and its tracking
are run with every logger at DEBUG, and nothing personal may show up in what they wrote."""

import logging

import pytest

from campaigns.models import Notification
from campaigns.tokens import token_for
from tests.factories import CampaignFactory, ContactFactory, TemplateFactory
from tests.review_helpers import confirm_send_now
from tests.tracking.ses_events.test_webhooks import post, ses_event, sns_envelope

pytestmark = pytest.mark.django_db


def test_a_send_and_its_events_log_no_personal_data(
    client, admin_client, caplog, eager_celery, ses, django_capture_on_commit_callbacks
):
    contacts = [
        ContactFactory(email=f"secret.person{i}@private.example", first_name="Zebedee")
        for i in range(3)
    ]
    template = TemplateFactory(
        subject="Confidential subject line {{ first_name }}",
        html='<p>Body text for {{ first_name }}</p><a href="https://example.com/x">x</a>',
    )
    campaign = CampaignFactory(template=template)
    campaign.contact_list.contacts.add(*contacts)

    caplog.set_level(logging.DEBUG)
    with django_capture_on_commit_callbacks(execute=True):
        confirm_send_now(admin_client, campaign)
    notification = Notification.objects.get(contact=contacts[0])
    assert notification.status == "sent"
    ses.faults(error_5xx=1.0)  # an error path logs too
    # Events and tracking for that message.
    post(client, sns_envelope(ses_event("Bounce", notification.message_id, contacts[0].email)))
    post(client, sns_envelope(ses_event("Delivery", "unknown-id", contacts[1].email)))
    client.get(f"/t/o/{token_for(notification.pk)}.gif")
    client.get(f"/t/c/{token_for(notification.pk)}/0")

    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records
    )
    assert f"campaign {campaign.pk}" in logged  # the logs did record the send, by id
    for secret in ["secret.person", "private.example", "Zebedee", "Confidential", "Body text"]:
        assert secret not in logged, f"{secret!r} was logged"


def test_celery_failure_lines_name_the_exception_not_its_text(settings):
    """Celery logs a failed task as `Task …[id] raised unexpected: <exc>` with a traceback:
    through the configured handlers, the exception's type and frames, never its message."""
    import copy
    import io
    import logging.config

    from celery import shared_task
    from celery.app.trace import build_tracer

    # (Data reaches an exception at run time, never from the source lines a traceback shows.)
    address, subject = "secret.person@private.example", "Subject: Confidential for Zebedee"

    @shared_task(name="tests.config.test_logs.fails_with_data")
    def fails_with_data():
        try:
            {}[address]
        except KeyError as err:
            raise ValueError(subject) from err

    stream = io.StringIO()
    config = copy.deepcopy(settings.LOGGING)
    config["handlers"]["console"]["stream"] = stream
    logging.config.dictConfig(config)
    try:
        tracer = build_tracer(
            fails_with_data.name, fails_with_data, eager=False, app=fails_with_data._get_app()
        )
        tracer("task-id-1", (), {}, {"id": "task-id-1", "hostname": "test"})
    finally:
        logging.config.dictConfig(settings.LOGGING)
    logged = stream.getvalue()
    assert (
        "tests.config.test_logs.fails_with_data[task-id-1] raised unexpected: ValueError" in logged
    )
    assert "KeyError (message withheld)" in logged  # the chain, frames and types kept
    for secret in ["secret.person", "private.example", "Confidential", "Zebedee"]:
        assert secret not in logged, f"{secret!r} was logged"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_poisoned_campaign_through_a_real_worker_logs_no_personal_data(
    celery_worker_process, ses
):
    """The poisoned batch of tests/campaigns/test_poisoned_batch.py (addresses SES refuses, a
    name with a line break) sent by a real worker at DEBUG, with SES answering 5xx and throttling
    some calls: neither the worker's output nor the SES endpoint's holds an address, a name
    or the subject."""
    from campaigns import services
    from campaigns.models import Campaign, Contact, Membership
    from tests.conftest import wait_for
    from tests.factories import ContactListFactory

    names = ["Zebedee", "Quentin\r\nBcc: spy@evil.example"]
    contact_list = ContactListFactory()
    contacts = [
        Contact(email=f"secret.person{i}@private.example", first_name=names[i % 2])
        for i in range(120)
    ]
    poison = ['"a\x01b"@private.example', "user@\u2603.com", '"john..doe"@private.example']
    for position, address in zip([0, 60, 119], poison, strict=True):
        contacts[position].email = address
    contacts = Contact.objects.bulk_create(contacts)
    Membership.objects.bulk_create(
        Membership(contact_list=contact_list, contact=c) for c in contacts
    )
    template = TemplateFactory(
        subject="Confidential subject line {{ first_name }}",
        html='<p>Body text for {{ first_name }}</p><a href="https://example.com/x">x</a>',
    )
    campaign = CampaignFactory(template=template, contact_list=contact_list)
    ses.faults(seed=3, error_5xx=0.2, throttle=0.2)
    services.campaign_send_now(campaign=campaign)

    def finished() -> bool:
        campaign.refresh_from_db()
        return campaign.status == Campaign.Status.SENT

    wait_for(finished, timeout=120, message=celery_worker_process.output())
    assert Notification.objects.filter(campaign=campaign, status="failed").count() == 3
    logged = celery_worker_process.output() + ses.log_text()
    assert f"campaign={campaign.pk}" in logged  # the logs did record the send, by id
    secrets = [
        "secret.person", "private.example", "Zebedee", "Quentin", "evil.example",
        "Confidential", "Body text", "john..doe", "\u2603", "xn--n3h",
    ]  # fmt: skip
    for secret in secrets:
        assert secret not in logged, f"{secret!r} was logged"


@pytest.mark.django_db(transaction=True)
def test_the_api_logs_no_bodies_addresses_or_personalisation(caplog, settings, ses, eager_celery):
    """POST /api/v1/messages through runserver's own request handler (its access log) with
    Django's request logger and every logger at DEBUG, on the configured handlers: accepted,
    replayed, refused in every way (400, 409, 413, 415, 422) and failed (a 500 whose database
    error quotes the personalisation). No address, personalisation or body text is written."""
    import copy
    import io
    import json
    import logging.config
    import threading
    import urllib.error
    import urllib.request

    from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
    from django.core.wsgi import get_wsgi_application
    from django.db import connection, connections

    from tests.api.helpers import api_client

    TemplateFactory(
        slug="receipt",
        subject="Confidential subject line {{ secret_word }}",
        html="<p>Body text for {{ first_name }}: {{ secret_word }}</p>",
    )
    secret = api_client().secret
    address = "secret.person@private.example"
    personalisation = {"first_name": "Quentin", "secret_word": "Zebedee"}

    server = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    # First, as both configure logging as the settings say (django.setup(), again when
    # Celery's Django fixup first imports the task modules).
    server.set_app(get_wsgi_application())
    eager_celery.loader.import_default_modules()
    stream = io.StringIO()
    config = copy.deepcopy(settings.LOGGING)
    config["handlers"]["console"]["stream"] = stream
    config["root"]["level"] = "DEBUG"
    logging.config.dictConfig(config)
    logging.getLogger().addHandler(caplog.handler)  # (dictConfig replaced the root's handlers)
    caplog.set_level(logging.DEBUG)

    def serve() -> None:
        try:
            server.serve_forever()
        finally:
            connections.close_all()  # the thread's own connection

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{server.server_port}"

    def call(path: str, body: bytes | None = None, **headers) -> int:
        request = urllib.request.Request(  # noqa: S310 (our own test server)
            base + path,
            data=body,
            method="POST" if body is not None else "GET",
            headers={
                "Authorization": f"Bearer {secret}",
                "Content-Type": "application/json",
                **headers,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (ours)
                return answer.status
        except urllib.error.HTTPError as refused:
            return refused.code

    def message(**changes) -> bytes:
        return json.dumps(
            {"template": "receipt", "to": address, "personalisation": personalisation, **changes}
        ).encode()

    try:
        statuses = [
            call("/api/v1/messages", message(), **{"Idempotency-Key": "k1"}),
            call("/api/v1/messages", message(), **{"Idempotency-Key": "k1"}),
            call("/api/v1/messages", message(reference="x"), **{"Idempotency-Key": "k1"}),
            call("/api/v1/messages", message(personalization=personalisation)),
            call("/api/v1/messages", message()[:-5]),
            call("/api/v1/messages", message(to=f"{address}\r\nBcc: spy@evil.example")),
            call("/api/v1/messages", message(to=f"Zebedee <{address}>")),
            call("/api/v1/messages", message(reference="Zebedee" * 200_000)),
            call("/api/v1/messages", message(), **{"Content-Type": "text/plain"}),
            call(f"/api/v1/messages?reference=Zebedee&to={address}"),
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE FUNCTION test_quote_row() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused %', NEW.personalisation::text; END $$;"
                "CREATE TRIGGER test_quote_row BEFORE INSERT ON campaigns_messagerequest "
                "FOR EACH ROW EXECUTE FUNCTION test_quote_row();"
            )
        try:
            statuses.append(call("/api/v1/messages", message(reference="fails")))
        finally:
            with connection.cursor() as cursor:
                cursor.execute(
                    "DROP TRIGGER test_quote_row ON campaigns_messagerequest;"
                    "DROP FUNCTION test_quote_row();"
                )
    finally:
        server.shutdown()
        serving.join(timeout=10)
        server.server_close()
        logging.config.dictConfig(settings.LOGGING)

    assert statuses == [202, 202, 409, 400, 400, 422, 422, 413, 415, 400, 500]
    logged = stream.getvalue() + "\n".join(
        f"{record.getMessage()} {record.args!r}" for record in caplog.records
    )
    assert '"POST /api/v1/messages HTTP/1.1" 202' in logged  # the access log did log them
    assert "Internal Server Error: /api/v1/messages" in logged
    assert "(message withheld)" in logged  # the 500's traceback, without the error's text
    for secret_text in [
        "secret.person", "private.example", "Zebedee", "Quentin", "evil.example",
        "Confidential", "Body text",
    ]:  # fmt: skip
        assert secret_text not in logged, f"{secret_text!r} was logged"

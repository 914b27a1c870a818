"""202 means durable: a failure at the last moment before the commit (the COMMIT itself
refused) is a 5xx, and leaves no message, no request, no contact, no idempotency record and
no task on the broker. The same request once the failure is gone is accepted and queued."""

import pytest
import redis
from django.conf import settings
from django.db import connection

from campaigns.models import Contact, IdempotencyRecord, MessageRequest, Notification
from campaigns.ready import READY_KEY
from tests.api.helpers import api_client
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/messages"
BODY = {"template": "receipt", "to": "fresh.person@example.com", "personalisation": {"n": 1}}


def queued() -> int:
    """Messages handed to the transactional worker: on the ready list (campaigns.ready)."""
    return redis.Redis.from_url(settings.CELERY_BROKER_URL).llen(READY_KEY)


def test_a_failure_at_commit_is_a_5xx_and_stores_and_enqueues_nothing(failing_commit):
    TemplateFactory(slug="receipt", subject="Hi", html="<p>Hi</p>")
    client = api_client()
    client.raise_request_exception = False
    before = queued()

    answer = client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert answer.status_code == 500
    assert Notification.objects.count() == 0
    assert MessageRequest.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0
    assert not Contact.objects.filter(email=BODY["to"]).exists()
    assert queued() == before

    # The client retries with the same key once the fault is gone: a new, durable message.
    failing_commit()
    answer = client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert answer.status_code == 202, answer.content
    assert "Idempotent-Replayed" not in answer
    assert Notification.objects.filter(pk=answer.json()["id"]).exists()
    assert IdempotencyRecord.objects.count() == 1
    assert queued() == before + 1


@pytest.fixture
def failing_record():
    """A trigger that refuses the idempotency record's row: the last thing the message's
    statement writes (campaigns.transactional), after its contact, ledger row and request."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_record() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected failure at the record'; END $$;"
            "CREATE TRIGGER test_refuse_record AFTER INSERT ON campaigns_idempotencyrecord "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_record();"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER test_refuse_record ON campaigns_idempotencyrecord;"
            "DROP FUNCTION test_refuse_record();"
        )


def test_a_failure_writing_the_record_after_the_message_stores_nothing(failing_record):
    """The idempotency record is refused once the message's rows are written (one statement):
    the message, its request and its new contact go with it, and nothing is queued."""
    TemplateFactory(slug="receipt", subject="Hi", html="<p>Hi</p>")
    client = api_client()
    client.raise_request_exception = False
    before = queued()
    answer = client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert answer.status_code == 500
    assert Notification.objects.count() == 0
    assert MessageRequest.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0
    assert not Contact.objects.filter(email=BODY["to"]).exists()
    assert queued() == before

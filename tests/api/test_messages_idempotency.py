"""Idempotency keys on POST /api/v1/messages (Stripe's semantics, docs/API.md#idempotency):
the same key and request within 24 h answer the first answer and create nothing; another
request with the key is a 409; concurrent requests with one key make one message."""

import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from campaigns.api.idempotency import idempotency_records_expire
from campaigns.models import Contact, IdempotencyRecord, MessageRequest, Notification
from tests.api.helpers import api_client
from tests.factories import TemplateFactory

URL = "/api/v1/messages"
BODY = {
    "template": "receipt",
    "to": "ada@example.com",
    "personalisation": {"order": "A-17", "first_name": "Ada"},
    "reference": "order-17",
}


@pytest.fixture
def template():
    return TemplateFactory(slug="receipt", subject="Order {{ order }}", html="<p>{{ order }}</p>")


@pytest.mark.django_db
class TestOneAtATime:
    def test_the_same_request_again_answers_the_first_answer_and_creates_nothing(self, template):
        client = api_client()
        first = client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-17-receipt")
        assert first.status_code == 202, first.content
        assert "Idempotent-Replayed" not in first
        # The same body with its keys in another order is the same request.
        reordered = dict(reversed(list(BODY.items())))
        again = client.post(URL, reordered, format="json", HTTP_IDEMPOTENCY_KEY="order-17-receipt")
        assert again.status_code == 202
        assert again.json() == first.json()
        assert again["Idempotent-Replayed"] == "true"
        assert Notification.objects.count() == 1
        assert MessageRequest.objects.count() == 1
        record = IdempotencyRecord.objects.get()
        assert (record.key, record.status_code, record.response) == (
            "order-17-receipt", 202, first.json()
        )  # fmt: skip

    def test_the_key_with_another_body_is_a_409_and_creates_nothing(self, template):
        client = api_client()
        client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        other = client.post(
            URL, {**BODY, "to": "bob@example.com"}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
        )
        assert other.status_code == 409
        [error] = other.json()["errors"]
        assert (error["code"], error["field"]) == ("idempotency_key_reused", "Idempotency-Key")
        assert Notification.objects.count() == 1
        assert not Contact.objects.filter(email="bob@example.com").exists()

    def test_the_key_on_another_path_is_another_request(self, template):
        """The path is part of the request: the key cannot replay one endpoint's answer on
        another."""
        client = api_client()
        client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        other = client.post(f"{URL}?x=1", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert other.status_code == 202  # the query string is not part of the path
        assert other["Idempotent-Replayed"] == "true"

    def test_a_repeat_whose_own_work_is_refused_still_gets_the_first_answer_or_409(self, template):
        """The record is written after the work: a repeat's refusal must not hide the key."""
        client = api_client()
        first = client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert first.status_code == 202
        template.slug = "renamed"  # the same request would now be refused (422)
        template.save()
        again = client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert again.status_code == 202
        assert again.json() == first.json()
        assert again["Idempotent-Replayed"] == "true"
        other = client.post(
            URL, {**BODY, "template": "missing"}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
        )
        assert other.status_code == 409
        assert other.json()["errors"][0]["code"] == "idempotency_key_reused"
        invalid = client.post(URL, {"to": 5}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert invalid.status_code == 409
        assert IdempotencyRecord.objects.count() == 1

    def test_keys_belong_to_their_api_key(self, template):
        first, second = api_client(), api_client()
        a = first.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        b = second.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert a.status_code == b.status_code == 202
        assert a.json()["id"] != b.json()["id"]
        assert Notification.objects.count() == 2

    def test_without_a_key_each_request_is_a_new_message(self, template):
        client = api_client()
        ids = {client.post(URL, BODY, format="json").json()["id"] for _ in range(2)}
        assert len(ids) == 2
        assert IdempotencyRecord.objects.count() == 0

    def test_a_refused_request_is_not_remembered_so_it_can_be_fixed_and_retried(self, template):
        client = api_client()
        refused = client.post(
            URL, {**BODY, "template": "nope"}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
        )
        assert refused.status_code == 422
        fixed = client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert fixed.status_code == 202
        assert "Idempotent-Replayed" not in fixed
        assert Notification.objects.count() == 1

    def test_a_record_older_than_24_hours_counts_for_nothing(self, template):
        client = api_client()
        first = client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
        # Another body is no conflict any more, and the same body makes a new message.
        again = client.post(URL, BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert again.status_code == 202
        assert "Idempotent-Replayed" not in again
        assert again.json()["id"] != first.json()["id"]
        record = IdempotencyRecord.objects.get()
        assert record.response == again.json()
        assert record.created_at > timezone.now() - timedelta(minutes=1)

    def test_a_staff_session_cannot_send_a_key(self, template, admin_client):
        answer = admin_client.post(
            URL, BODY, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1"
        )
        assert answer.status_code == 400
        assert answer.json()["errors"][0]["code"] == "idempotency_key_needs_api_key"
        assert Notification.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("cheap_work", [False, True])  # the record written first, or last
def test_an_answer_with_times_and_decimals_is_replayed_as_it_was_first_rendered(cheap_work):
    """What another endpoint (a job's) may answer: kept as the JSON the client read."""
    import datetime
    import decimal

    from rest_framework.parsers import JSONParser
    from rest_framework.request import Request
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory, force_authenticate

    from campaigns.api.idempotency import idempotent_response

    key = api_client().key
    when = datetime.datetime(2026, 12, 5, 10, 0, 0, 120000, tzinfo=datetime.UTC)
    answers = []
    for _ in range(2):
        raw = APIRequestFactory().post(
            "/api/v1/jobs", {"rows": [1]}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
        )
        force_authenticate(raw, user=None, token=key)
        request = Request(raw, parsers=[JSONParser()])
        answers.append(
            idempotent_response(
                request,
                lambda: Response({"at": when, "share": decimal.Decimal("0.5")}, 202),
                cheap_work=cheap_work,
            )
        )
    assert answers[0].data == {"at": when, "share": decimal.Decimal("0.5")}
    assert answers[1].data == {"at": "2026-12-05T10:00:00.120000Z", "share": 0.5}
    assert answers[1]["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_the_periodic_cleanup_deletes_only_expired_records(template):
    client = api_client()
    for n in range(5):
        client.post(URL, {**BODY, "reference": str(n)}, format="json", HTTP_IDEMPOTENCY_KEY=f"k{n}")
    old = timezone.now() - timedelta(hours=25)
    IdempotencyRecord.objects.filter(key__in=["k0", "k1", "k2"]).update(created_at=old)
    assert idempotency_records_expire() == 3
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == ["k3", "k4"]
    assert idempotency_records_expire() == 0
    entry = settings.CELERY_BEAT_SCHEDULE["idempotency-records-expire"]
    assert entry["task"] == "campaigns.tasks.idempotency_records_expire"
    assert entry["schedule"] <= timedelta(hours=1)


# -- concurrent requests: each thread has its own database connection ----------------------


@pytest.fixture
def slow_message_insert():
    """Every message's request row takes 0.5 s to insert, inside the POST's transaction: the
    first request holds its idempotency record uncommitted long enough that every other one
    arrives while it is in flight (without it, the race is a matter of luck)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;"
            "CREATE TRIGGER test_slow_insert BEFORE INSERT ON campaigns_messagerequest "
            "FOR EACH ROW EXECUTE FUNCTION test_slow_insert();"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER test_slow_insert ON campaigns_messagerequest;"
            "DROP FUNCTION test_slow_insert();"
        )


def post_at_once(secret: str, bodies: list[dict], key: str) -> list:
    """POST each body at the same moment from its own thread (and database connection)."""
    from rest_framework.test import APIClient

    start = threading.Barrier(len(bodies))
    answers: list = [None] * len(bodies)

    def post(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        try:
            start.wait()
            answers[index] = client.post(
                URL, bodies[index], format="json", HTTP_IDEMPOTENCY_KEY=key
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_make_one_message(template, slow_message_insert):
    client = api_client()
    answers = post_at_once(client.secret, [BODY] * 8, key="order-17-receipt")
    assert [a.status_code for a in answers] == [202] * 8, [a.content for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.get("Idempotent-Replayed") == "true" for a in answers) == 7
    assert Notification.objects.count() == 1
    assert MessageRequest.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1
    assert Contact.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_and_two_bodies_make_one_message(
    template, slow_message_insert
):
    client = api_client()
    other = {**BODY, "to": "bob@example.com"}
    answers = post_at_once(client.secret, [BODY, other] * 3, key="k1")
    accepted = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 409]
    assert len(accepted) == 3 and len(refused) == 3, [a.content for a in answers]
    assert len({a.json()["id"] for a in accepted}) == 1
    assert {a.json()["errors"][0]["code"] for a in refused} == {"idempotency_key_reused"}
    assert Notification.objects.count() == 1
    assert Contact.objects.count() == 1  # the loser's contact was never committed

"""Group commit (infra.group_commit, campaigns.transactional): the messages the threads of one
process POST while another's statement runs are written by one statement, each answered 202
only after that statement committed, with the same rows a message's own statement writes;
what a batch cannot write (a row it leaves out, a batch that fails) is written alone, by the
rules of one message.

Each test holds a first message's statement on a contact row locked by another connection,
so the next POSTs queue behind it, then lets it go: the queued POSTs are one batch."""

import threading
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns import transactional
from campaigns.models import Contact, IdempotencyRecord, MessageRequest, Notification
from campaigns.ready import READY_KEY
from tests.api.helpers import api_client, other_connection
from tests.conftest import wait_for
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/messages"
HELD = "held@example.com"


@pytest.fixture(autouse=True)
def unlimited(settings):
    settings.API_RATE_LIMIT_PER_SECOND = 0


@pytest.fixture
def template():
    return TemplateFactory(slug="receipt", subject="Order {{ order }}", html="<p>{{ order }}</p>")


@pytest.fixture
def batches(monkeypatch) -> list[int]:
    """The size of every batch statement run (the real one runs)."""
    sizes: list[int] = []
    write_batch = transactional._MESSAGE_WRITES._write_batch

    def counted(items):
        sizes.append(len(items))
        return write_batch(items)

    monkeypatch.setattr(transactional._MESSAGE_WRITES, "_write_batch", counted)
    return sizes


def ready() -> list[bytes]:
    """The ready list: messages handed to the transactional worker (campaigns.ready)."""
    return redis.Redis.from_url(settings.CELERY_BROKER_URL).lrange(READY_KEY, 0, -1)


def lock_waits() -> int:
    with other_connection() as watcher:
        return watcher.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()[0]


def post_queued_behind_a_held_message(secret: str, bodies: list[dict], keys=None) -> tuple:
    """POST a message to HELD (its statement waits on the contact row another connection
    locks), then `bodies` at once, each on its own thread; once all of them wait behind the
    first, let it go. The first answer and the others', in `bodies`' order."""
    held = Contact.objects.get(email=HELD)
    locker = other_connection()
    locker.execute("SELECT 1 FROM campaigns_contact WHERE id = %s FOR UPDATE", [held.pk])
    answers: list = [None] * (len(bodies) + 1)

    def post(index: int, body: dict, key: str | None) -> None:
        client = APIClient()
        client.raise_request_exception = False  # a 500 is an answer here
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
        try:
            answers[index] = client.post(URL, body, format="json", **headers)
        finally:
            connections.close_all()

    first = threading.Thread(target=post, args=(0, {"template": "receipt", "to": HELD}, None))
    first.start()
    wait_for(lambda: lock_waits() == 1, timeout=10, interval=0.01,
             message="the first message waits on the locked contact")  # fmt: skip
    keys = keys or [None] * len(bodies)
    threads = [
        threading.Thread(target=post, args=(i + 1, body, key))
        for i, (body, key) in enumerate(zip(bodies, keys, strict=True))
    ]
    for thread in threads:
        thread.start()
    queued = transactional._MESSAGE_WRITES._queued
    wait_for(lambda: len(queued) == len(bodies), timeout=10, interval=0.01,
             message="the others queue behind the first")  # fmt: skip
    locker.commit()
    locker.close()
    for thread in [first, *threads]:
        thread.join(timeout=30)
    return answers[0], answers[1:]


def test_messages_posted_while_a_statement_runs_are_one_batch(template, batches):
    Contact.objects.create(email=HELD)
    known = Contact.objects.create(email="known@example.com", first_name="Kim")
    client = api_client()
    later = (timezone.now() + timedelta(hours=1)).replace(microsecond=123456)
    bodies = [
        {"template": "receipt", "to": "new.one@example.com", "reference": "a",
         "personalisation": {"order": 1, "name": 'Zoë "Z" \\ ✓'}},
        {"template": "receipt", "to": "New.Two@Example.com ", "reference": "b ✓ \"q\""},
        {"template": "receipt", "to": "known@example.com", "reference": "c"},
        {"template": "receipt", "contact": known.pk, "reference": "d",
         "send_at": later.isoformat()},
        {"template": "receipt", "to": "new.one@example.com", "reference": "e"},
    ]  # fmt: skip
    keys = ["k-a", None, "k-c", None, "k-e"]
    before, started = ready(), timezone.now()
    first, answers = post_queued_behind_a_held_message(client.secret, bodies, keys)

    assert first.status_code == 202, first.content
    assert [a.status_code for a in answers] == [202] * 5, [a.content for a in answers]
    assert batches == [5]  # the first alone, the five queued behind it in one statement
    messages = [Notification.objects.get(pk=a.json()["id"]) for a in answers]
    assert [a.json() for a in answers] == [{"id": m.pk, "status": "created"} for m in messages]
    # The same rows as a message's own statement: the contact found or made (once for an
    # address twice in the batch), the ledger row, its request, the record with the answer.
    new_one = Contact.objects.get(email="new.one@example.com")
    assert [m.contact_id for m in messages] == [
        new_one.pk,
        Contact.objects.get(email="new.two@example.com").pk,
        known.pk,
        known.pk,
        new_one.pk,
    ]
    assert (new_one.status, new_one.first_name, new_one.attributes) == ("active", "", {})
    assert Contact.objects.get(pk=known.pk).first_name == "Kim"
    assert {m.status for m in messages} == {"created"}
    assert len({m.repeat_key for m in messages}) == 5 and all(m.repeat_key for m in messages)
    assert {m.campaign_id for m in messages} == {
        Notification.objects.get(pk=first.json()["id"]).campaign_id
    }
    requests = [MessageRequest.objects.get(pk=m.pk) for m in messages]
    assert [r.reference for r in requests] == ["a", 'b ✓ "q"', "c", "d", "e"]
    assert requests[0].personalisation == {"order": 1, "name": 'Zoë "Z" \\ ✓'}
    assert [r.send_at for r in requests] == [None, None, None, later, None]
    assert all(started <= m.created_at <= timezone.now() for m in messages)
    assert {r.api_key_id for r in requests} == {client.key.pk}
    records = {r.key: r for r in IdempotencyRecord.objects.all()}
    assert sorted(records) == ["k-a", "k-c", "k-e"]
    for key, answer in zip(keys, answers, strict=True):
        if key:
            assert (records[key].status_code, records[key].response) == (202, answer.json())
    # Each due one handed to the worker once: the batch's in one push after its commit; the
    # one for later is the sweeper's at its send_at.
    handed = [item.decode() for item in ready()[len(before) :]]
    stream = messages[0].campaign_id
    due = [first_message(first), *messages[:3], messages[4]]
    assert sorted(handed) == sorted(f"{stream}:{m.pk}" for m in due)


def first_message(answer) -> Notification:
    return Notification.objects.get(pk=answer.json()["id"])


def test_a_batch_that_fails_at_commit_stores_and_hands_over_nothing(
    template, batches, failing_commit
):
    Contact.objects.create(email=HELD)
    client = api_client()
    bodies = [{"template": "receipt", "to": f"n{n}@example.com"} for n in range(3)]
    before = ready()
    first, answers = post_queued_behind_a_held_message(
        client.secret, bodies, keys=["k0", "k1", None]
    )

    assert batches == [3]
    # The batch wrote nothing; alone, each fails at its own commit: a 5xx, nothing stored.
    assert [a.status_code for a in [first, *answers]] == [500] * 4
    assert Notification.objects.count() == 0
    assert MessageRequest.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0
    assert not Contact.objects.filter(email__startswith="n").exists()
    assert ready() == before


def test_a_row_the_batch_leaves_out_is_written_alone_by_its_own_rules(template, batches):
    Contact.objects.create(email=HELD)
    gone = Contact.objects.create(email="gone@example.com", erased_at="2026-01-01T00:00Z")
    client = api_client()
    bodies = [
        {"template": "receipt", "to": "fine@example.com"},
        {"template": "receipt", "contact": gone.pk},
        {"template": "receipt", "contact": 987654},
    ]
    before = ready()
    first, answers = post_queued_behind_a_held_message(client.secret, bodies)

    assert batches == [3]
    assert len(ready()) == len(before) + 2
    assert [a.status_code for a in answers] == [202, 422, 422], [a.content for a in answers]
    assert {a.json()["errors"][0]["code"] for a in answers[1:]} == {"contact_not_found"}
    assert Notification.objects.count() == 2  # the held one and the fine one
    assert MessageRequest.objects.count() == 2


def test_a_batch_that_fails_writes_nothing_and_each_message_is_written_alone(template, batches):
    """Two POSTs with one key in a batch: its record's unique constraint fails the batch, so
    nothing of it is kept; alone, one owns the key and the other gets its answer replayed, and
    the batch's other messages are accepted."""
    Contact.objects.create(email="held@example.com")
    client = api_client()
    same = {"template": "receipt", "to": "twice@example.com"}
    bodies = [same, {"template": "receipt", "to": "other@example.com"}, same]
    before = ready()
    first, answers = post_queued_behind_a_held_message(
        client.secret, bodies, keys=["dup", None, "dup"]
    )

    assert batches == [3]
    assert [a.status_code for a in answers] == [202] * 3, [a.content for a in answers]
    assert answers[0].json() == answers[2].json()
    assert sum(a.get("Idempotent-Replayed") == "true" for a in answers) == 1
    assert Notification.objects.count() == 3  # held, twice (once), other
    assert Contact.objects.filter(email="twice@example.com").count() == 1
    assert IdempotencyRecord.objects.count() == 1
    assert len(ready()) == len(before) + 3  # one each, the replay's none


def test_a_message_alone_is_its_own_statement(template, batches):
    """Without a statement running, a message goes at once, by its own statement."""
    client = api_client()
    for n in range(3):
        answer = client.post(URL, {"template": "receipt", "to": f"m{n}@example.com"},
                             format="json")  # fmt: skip
        assert answer.status_code == 202, answer.content
    assert batches == []
    assert Notification.objects.count() == 3

"""What a POST /api/v1/messages costs the web process in statements (docs/PERFORMANCE.md,
"Web path"): the template from the process's copy; the contact found or made, the ledger row,
its request and the idempotency record with its answer in one statement, in autocommit (no
BEGIN, no COMMIT)."""

import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.apikeys import api_key_cache_clear
from campaigns.models import Campaign, Contact, IdempotencyRecord, MessageRequest, Notification
from templates_app.models import Template
from tests.api.helpers import api_client, other_connection
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/messages"


@pytest.fixture(autouse=True)
def cached(settings):
    settings.API_RATE_LIMIT_PER_SECOND = 0  # these tests count statements, not requests
    settings.API_KEY_CACHE_SECONDS = 60
    settings.API_TEMPLATE_CACHE_SECONDS = 60
    api_key_cache_clear()
    yield
    api_key_cache_clear()


@pytest.fixture
def template():
    return TemplateFactory(slug="receipt", subject="Order {{ order }}", html="<p>{{ order }}</p>")


def body(n: int, **fields) -> dict:
    return {"template": "receipt", "to": f"m{n}@example.com", "reference": f"r{n}", **fields}


def statements(queries) -> list[str]:
    return [q["sql"].split(None, 1)[0].upper() for q in queries]


def test_a_message_to_a_new_address_is_one_statement(template):
    client = api_client()
    for n in (-1, 0):  # the stream made, then its id read once (campaigns.transactional)
        client.post(URL, body(n), format="json", HTTP_IDEMPOTENCY_KEY=f"k{n}")
    with CaptureQueriesContext(connection) as queries:
        answer = client.post(URL, body(1), format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert answer.status_code == 202, answer.content
    # The contact's INSERT … ON CONFLICT, the ledger row, its request and the idempotency
    # record with its answer, in one WITH; no transaction, no template or key query.
    assert statements(queries.captured_queries) == ["WITH"]
    message = Notification.objects.get(pk=answer.json()["id"])
    assert answer.json() == {"id": message.pk, "status": "created"}
    assert message.contact.email == "m1@example.com"
    request = MessageRequest.objects.get(pk=message.pk)
    assert (request.api_key_id, request.reference) == (client.key.pk, "r1")
    assert message.repeat_key != 0
    record = IdempotencyRecord.objects.get(key="k1")
    assert (record.status_code, record.response) == (202, answer.json())


def test_a_known_address_is_found_by_the_same_statement_and_kept(template):
    ada = Contact.objects.create(email="ada@example.com", first_name="Ada")
    client = api_client()
    for n in (-1, 0):
        client.post(URL, body(n), format="json")
    with CaptureQueriesContext(connection) as queries:
        answer = client.post(URL, body(1, to="  Ada@Example.com "), format="json")
    assert answer.status_code == 202, answer.content
    assert statements(queries.captured_queries) == ["WITH"]
    assert Notification.objects.get(pk=answer.json()["id"]).contact_id == ada.pk
    ada.refresh_from_db()
    assert ada.first_name == "Ada"  # found, never overwritten
    assert Contact.objects.count() == 3  # ada and the two warm-up addresses


def test_a_template_edited_in_another_process_is_used_once_the_copy_expires(settings, template):
    client = api_client()
    first = client.post(URL, body(1), format="json").json()["id"]
    # As another process would edit it: no signal reaches this one.
    Template.objects.filter(pk=template.pk).update(subject="Changed {{ order }}")
    kept = client.post(URL, body(2), format="json").json()["id"]
    settings.API_TEMPLATE_CACHE_SECONDS = 0
    fresh = client.post(URL, body(3), format="json").json()["id"]
    streams = [Notification.objects.get(pk=pk).campaign_id for pk in (first, kept, fresh)]
    assert streams[0] == streams[1] != streams[2]
    assert Campaign.objects.get(pk=streams[2]).template_snapshot["subject"] == "Changed {{ order }}"


def test_a_template_saved_in_this_process_is_used_at_once(template):
    client = api_client()
    first = client.post(URL, body(1), format="json").json()["id"]
    template.subject = "Changed {{ order }}"
    template.save()
    second = client.post(URL, body(2), format="json").json()["id"]
    assert (
        Notification.objects.get(pk=first).campaign_id
        != Notification.objects.get(pk=second).campaign_id
    )
    template.slug = "renamed"
    template.save()
    answer = client.post(URL, body(3), format="json")
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["code"] == "template_not_found"


def test_an_unknown_template_is_never_kept(template):
    client = api_client()
    assert client.post(URL, body(1, template="later"), format="json").status_code == 422
    TemplateFactory(slug="later", subject="Hi", html="<p>Hi</p>")
    assert client.post(URL, body(2, template="later"), format="json").status_code == 202


def test_a_contact_committed_while_the_insert_waits_on_it_is_found(template):
    """Another transaction makes the same contact and commits while the contact's INSERT waits
    on the address's unique index: the INSERT does nothing (no error), the statement's SELECT
    (its snapshot older than that commit) finds nothing, so it writes nothing and is run
    again, which finds the contact (never a second one)."""
    client = api_client()
    for n in (-1, 0):
        client.post(URL, body(n), format="json")
    other = other_connection()
    (late,) = other.execute(
        "INSERT INTO campaigns_contact (email, first_name, last_name, attributes, status,"
        " time_zone, created_at, updated_at) VALUES ('late@example.com', '', '', '{}', 'active',"
        " '', now(), now()) RETURNING id"
    ).fetchone()

    waited = []

    def commit_once_the_post_waits() -> None:
        watcher = other_connection(autocommit=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (waiting,) = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            if waiting:
                waited.append(True)
                break
            time.sleep(0.01)
        other.commit()
        watcher.close()

    committer = threading.Thread(target=commit_once_the_post_waits)
    committer.start()
    try:
        with CaptureQueriesContext(connection) as queries:
            answer = client.post(URL, body(1, to="late@example.com"), format="json")
    finally:
        committer.join(timeout=15)
        other.close()
    assert answer.status_code == 202, answer.content
    assert waited  # the POST's INSERT did wait on the other transaction's row
    # The statement that found no contact and wrote nothing, then the one that did.
    assert statements(queries.captured_queries) == ["WITH", "WITH"]
    assert Notification.objects.get(pk=answer.json()["id"]).contact_id == late
    assert Contact.objects.filter(email="late@example.com").count() == 1
    assert MessageRequest.objects.filter(pk=answer.json()["id"]).exists()


def test_the_idempotency_records_readers_use_the_unique_index(template):
    """The record has no index on api_key alone (one fewer to write per keyed POST): the
    key's lookup and the cascade of a deleted API key are served by (api_key, key)."""
    client = api_client()
    client.post(URL, body(1), format="json", HTTP_IDEMPOTENCY_KEY="k1")
    table = IdempotencyRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY indexname", [table]
        )
        indexes = [name for (name,) in cursor.fetchall()]
        assert not [name for name in indexes if "api_key_id" in name and "uniq" not in name]
        cursor.execute("SET enable_seqscan = off")  # the table is tiny: ask what it would use
        try:
            for sql in (
                f"SELECT * FROM {table} WHERE api_key_id = %s AND key = %s",  # noqa: S608
                f"DELETE FROM {table} WHERE api_key_id = %s",  # noqa: S608
            ):
                params = [client.key.pk, "k1"][: sql.count("%s")]
                cursor.execute(f"EXPLAIN {sql}", params)
                plan = " ".join(row[0] for row in cursor.fetchall())
                assert "uniq_idempotency_key" in plan, plan
        finally:
            cursor.execute("RESET enable_seqscan")

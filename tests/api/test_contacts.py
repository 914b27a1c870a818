"""/api/v1/contacts: create, read, update, delete, filters, memberships, unsubscribe and
suppress, on PostgreSQL, through the same services as the admin."""

import datetime

import pytest
from django.db import connection
from django.http import QueryDict
from django.utils import timezone

from campaigns.api.contacts import ContactListQuery, _filtered
from campaigns.models import Contact, ContactStatusChange, CustomField, Membership
from tests.api.helpers import api_client
from tests.conftest import plan_nodes
from tests.factories import ContactFactory, ContactListFactory

pytestmark = pytest.mark.django_db(transaction=True)

S = Contact.Status


@pytest.fixture
def client():
    return api_client(scopes=("contacts:read", "contacts:write"))


def test_create_read_update_delete(client):
    newsletter = ContactListFactory(name="Newsletter")
    made = client.post(
        "/api/v1/contacts",
        {
            "email": " Ada@Example.COM ",
            "first_name": "Ada",
            "attributes": {"city": "London", "score": 42, "vip": True},
            "lists": [newsletter.pk],
        },
        format="json",
    )
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["email"] == "ada@example.com"  # the one address rule
    assert body["status"] == "active"
    assert body["attributes"] == {"city": "London", "score": 42, "vip": True}
    assert [m["list"] for m in body["lists"]] == [newsletter.pk]
    assert body["lists"][0]["subscribed"] is True
    pk = body["id"]

    again = client.post("/api/v1/contacts", {"email": "ADA@example.com"}, format="json")
    assert again.status_code == 409
    assert again.json()["errors"][0]["code"] == "contact_exists"
    assert Contact.objects.count() == 1

    read = client.get(f"/api/v1/contacts/{pk}")
    assert read.status_code == 200 and read.json()["first_name"] == "Ada"

    patched = client.patch(
        f"/api/v1/contacts/{pk}",
        {"last_name": "Lovelace", "attributes": {"city": None, "plan": "pro"}},
        format="json",
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["last_name"] == "Lovelace"
    assert patched.json()["attributes"] == {"score": 42, "vip": True, "plan": "pro"}
    assert patched.json()["first_name"] == "Ada"  # not given: kept

    assert client.delete(f"/api/v1/contacts/{pk}").status_code == 204
    assert client.get(f"/api/v1/contacts/{pk}").status_code == 404
    assert client.delete(f"/api/v1/contacts/{pk}").status_code == 404
    assert not Contact.objects.filter(pk=pk).exists()  # never mailed: deleted outright


def test_patch_to_an_address_another_contact_has_is_a_409(client):
    ContactFactory(email="taken@example.com")
    other = ContactFactory(email="mine@example.com")
    answer = client.patch(
        f"/api/v1/contacts/{other.pk}", {"email": "TAKEN@example.com"}, format="json"
    )
    assert answer.status_code == 409
    assert answer.json()["errors"][0] == {
        "code": "contact_exists",
        "field": "email",
        "message": "Another contact has this address.",
    }


def test_declared_custom_fields_are_typed_as_in_the_admin(client):
    CustomField.objects.create(name="birthday", label="Birthday", type=CustomField.Type.DATE)
    CustomField.objects.create(name="seats", label="Seats", type=CustomField.Type.NUMBER)
    ok = client.post(
        "/api/v1/contacts",
        {"email": "b@example.com", "attributes": {"birthday": "1990-05-01", "seats": "12"}},
        format="json",
    )
    assert ok.status_code == 201, ok.content
    assert ok.json()["attributes"] == {"birthday": "1990-05-01", "seats": 12}
    bad = client.post(
        "/api/v1/contacts",
        {"email": "c@example.com", "attributes": {"birthday": "May 1st", "seats": 10**20}},
        format="json",
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"attributes.birthday", "attributes.seats"}


def test_filters_and_cursor_pagination(client):
    paris = ContactListFactory(name="Paris")
    old = timezone.now() - datetime.timedelta(days=3)
    contacts = [
        ContactFactory(email=f"p{i}@example.com", attributes={"city": "Paris", "n": i})
        for i in range(5)
    ]
    for c in contacts[:3]:
        Membership.objects.create(contact_list=paris, contact=c)
    ContactFactory(email="l@example.com", attributes={"city": "London"}, status=S.BOUNCED)
    Contact.objects.filter(pk=contacts[0].pk).update(updated_at=old)

    def ids(query: str) -> list[int]:
        answer = client.get(f"/api/v1/contacts?{query}")
        assert answer.status_code == 200, answer.content
        return [c["id"] for c in answer.json()["results"]]

    assert ids(f"list={paris.pk}") == [c.pk for c in reversed(contacts[:3])]
    assert len(ids("attr.city=Paris")) == 5
    assert ids("attr.n=4") == [contacts[4].pk]  # a number, compared as one
    assert ids("status=bounced&attr.city=London") != []
    assert ids("status=bounced&attr.city=Paris") == []
    since = (old + datetime.timedelta(days=1)).isoformat()
    assert contacts[0].pk not in ids(f"updated_since={since.replace('+', '%2B')}")
    assert ids("email=P3@EXAMPLE.com") == [contacts[3].pk]
    for odd in ("1e999", "nan", "-inf", "9" * 999, "%E2%80%A8", "=1%2B1"):
        assert ids(f"attr.n={odd}") == []  # no such value; never a database error
    # Field names that are Django lookups are keys like any other.
    ContactFactory(attributes={"isnull": "x", "contains": "y", "in": "z", "has_key": "w"})
    for name, value in (("isnull", "x"), ("contains", "y"), ("in", "z"), ("has_key", "w")):
        assert len(ids(f"attr.{name}={value}")) == 1, name
        assert ids(f"attr.{name}=true") == []

    first = client.get("/api/v1/contacts?limit=4").json()
    second = client.get(first["next"]).json()
    assert len(first["results"]) == 4 and len(second["results"]) == 3
    assert second["next"] is None
    seen = [c["id"] for c in first["results"] + second["results"]]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 7


def test_attribute_filters_keep_their_meaning_as_containment(client):
    """Text as text, a number's spellings as that number, yes/no as either; a list stored
    under the name (older data) never matches one of its items."""
    text12 = ContactFactory(attributes={"seats": "12"})
    num12 = ContactFactory(attributes={"seats": 12})
    float12 = ContactFactory(attributes={"seats": 12.0})
    yes = ContactFactory(attributes={"vip": True})
    yes_text = ContactFactory(attributes={"vip": "true"})
    listed = ContactFactory(attributes={"seats": [12], "tags": ["a", "b"], "vip": [True]})
    nested = ContactFactory(attributes={"seats": {"n": 12}})

    def ids(query: str) -> set[int]:
        answer = client.get(f"/api/v1/contacts?{query}")
        assert answer.status_code == 200, answer.content
        return {c["id"] for c in answer.json()["results"]}

    assert ids("attr.seats=12") == {text12.pk, num12.pk, float12.pk}
    assert ids("attr.seats=12.0") == {num12.pk, float12.pk}  # not the text "12"
    assert ids("attr.vip=true") == {yes.pk, yes_text.pk}
    assert ids("attr.tags=a") == set()
    assert ids("attr.seats=12&attr.vip=true") == set()
    assert listed.pk not in ids("attr.vip=true") and nested.pk not in ids("attr.seats=12")


def test_an_attribute_filter_reads_the_gin_index_not_every_contact(client):
    """On a table the planner knows is large, a rare value is found through
    contact_attributes_gin (a bitmap of the index), never a scan of every contact."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Contact._meta.db_table} "  # noqa: S608 (our names)
            "(email, first_name, last_name, attributes, status, time_zone, created_at, updated_at) "
            "SELECT 'g' || i || '@example.com', '', '', jsonb_build_object('city', "
            "CASE WHEN i % 5000 = 0 THEN 'Oslo' ELSE 'Paris' END, 'n', i), 'active', '', now(), "
            "now() FROM generate_series(1, 100000) AS i"
        )
        # As autovacuum leaves it: the index's pending list merged, the statistics known.
        cursor.execute(f"VACUUM ANALYZE {Contact._meta.db_table}")
    for query, found in (("attr.city=Oslo", 20), ("attr.n=777", 1), ("attr.city=Oslo&limit=1", 1)):
        values = ContactListQuery(data=QueryDict(query))
        assert values.is_valid(), values.errors
        rows = _filtered(values.validated_data).order_by("-id")[: values.validated_data["limit"]]
        sql, params = rows.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            ((plan,),) = cursor.fetchall()
        indexes = {node.get("Index Name") for node in plan_nodes(plan[0]["Plan"])}
        assert "contact_attributes_gin" in indexes, (query, plan)
        assert len(client.get(f"/api/v1/contacts?{query}").json()["results"]) == found


@pytest.mark.parametrize(
    "query",
    [
        "status=nope",
        "list=99999999999999999999999",
        "updated_since=yesterday",
        "attr.Not-A-Name=x",
        "attr.city=%00",
        "cursor=nope",
        "limit=0",
        "surprise=1",
    ],
)
def test_bad_filters_are_400s_in_the_error_shape(client, query):
    answer = client.get(f"/api/v1/contacts?{query}")
    assert answer.status_code == 400, (query, answer.content)
    assert answer.json()["errors"][0]["code"]


def test_memberships_add_and_remove_keep_an_unsubscribe(client):
    contact = ContactFactory()
    a, b = ContactListFactory(), ContactListFactory()
    Membership.objects.create(contact_list=b, contact=contact, unsubscribed_at=timezone.now())
    added = client.post(
        f"/api/v1/contacts/{contact.pk}/lists", {"lists": [a.pk, b.pk]}, format="json"
    )
    assert added.status_code == 200, added.content
    lists = {m["list"]: m["subscribed"] for m in added.json()["lists"]}
    assert lists == {a.pk: True, b.pk: False}  # adding is not consent

    assert client.delete(f"/api/v1/contacts/{contact.pk}/lists/{a.pk}").status_code == 200
    removed = client.delete(f"/api/v1/contacts/{contact.pk}/lists/{b.pk}")
    assert {m["list"] for m in removed.json()["lists"]} == {b.pk}  # kept, as unsubscribed
    missing = client.post(
        f"/api/v1/contacts/{contact.pk}/lists", {"lists": [a.pk + 1000]}, format="json"
    )
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["code"] == "list_not_found"


def test_unsubscribe_from_a_list_then_from_everything_then_suppress(client, admin_client):
    contact = ContactFactory()
    news = ContactListFactory(name="News")
    Membership.objects.create(contact_list=news, contact=contact)
    url = f"/api/v1/contacts/{contact.pk}"

    left = client.post(f"{url}/unsubscribe", {"list": news.pk, "reason": "CRM"}, format="json")
    assert left.status_code == 200, left.content
    assert left.json()["changed"] is True
    assert left.json()["contact"]["lists"][0]["subscribed"] is False
    assert left.json()["contact"]["status"] == "active"
    repeat = client.post(f"{url}/unsubscribe", {"list": news.pk}, format="json")
    assert repeat.json()["changed"] is False

    everything = client.post(f"{url}/unsubscribe", {}, format="json")
    assert everything.json()["changed"] is True
    assert everything.json()["contact"]["status"] == "unsubscribed"

    suppressed = client.post(f"{url}/suppress", {"status": "complained"}, format="json")
    assert suppressed.json()["contact"]["status"] == "complained"
    assert client.post(f"{url}/suppress", {"status": "active"}, format="json").status_code == 400

    # Each change is recorded as the admin's resubscribes are, with the key that made it.
    changes = list(ContactStatusChange.objects.filter(contact=contact).order_by("id"))
    assert [(c.from_status, c.to_status) for c in changes] == [
        ("subscribed", "unsubscribed"),
        ("active", "unsubscribed"),
        ("unsubscribed", "complained"),
    ]
    assert changes[0].reason == "CRM" and changes[1].reason == ""
    assert {c.api_key_id for c in changes} == {client.key.pk}
    assert changes[0].list_name == "News"
    # …and shown on the contact's admin page, as the admin's own changes are.
    page = admin_client.get(f"/admin/campaigns/contact/{contact.pk}/change/").content.decode()
    assert f"API key {client.key}" in page
    assert "all mail: unsubscribed → complained" in page


def test_scopes(client):
    contact = ContactFactory()
    reader = api_client(scopes=("contacts:read",))
    assert reader.get(f"/api/v1/contacts/{contact.pk}").status_code == 200
    assert reader.get("/api/v1/lists").status_code == 200
    for method, path in [
        ("post", "/api/v1/contacts"),
        ("post", "/api/v1/contacts/upsert"),
        ("post", "/api/v1/contacts/bulk"),
        ("patch", f"/api/v1/contacts/{contact.pk}"),
        ("delete", f"/api/v1/contacts/{contact.pk}"),
        ("post", f"/api/v1/contacts/{contact.pk}/suppress"),
        ("post", "/api/v1/lists"),
    ]:
        answer = getattr(reader, method)(path, {}, format="json")
        assert answer.status_code == 403, (method, path)
        assert answer.json()["errors"][0]["code"] == "missing_scope"
    other = api_client(scopes=("messages:send",))
    assert other.get("/api/v1/contacts").status_code == 403


def test_an_idempotency_key_replays_the_first_create(client):
    body = {"email": "idem@example.com", "first_name": "Ida"}
    first = client.post("/api/v1/contacts", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post("/api/v1/contacts", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201  # not the 409 of a second create
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post(
        "/api/v1/contacts", {"email": "x@example.com"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert other.status_code == 409
    assert other.json()["errors"][0]["code"] == "idempotency_key_reused"
    assert Contact.objects.count() == 1

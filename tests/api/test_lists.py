"""/api/v1/lists: create, read with the admin's per-list counts, rename, delete."""

import pytest
from django.utils import timezone

from campaigns.models import Contact, ContactList, Membership
from tests.api.helpers import api_client
from tests.factories import CampaignFactory, ContactFactory, ContactListFactory

pytestmark = pytest.mark.django_db(transaction=True)

S = Contact.Status


@pytest.fixture
def client():
    return api_client(scopes=("contacts:read", "contacts:write"))


def test_crud_and_counts(client):
    made = client.post(
        "/api/v1/lists", {"name": " Newsletter ", "description": "Monthly\nnews"}, format="json"
    )
    assert made.status_code == 201, made.content
    pk = made.json()["id"]
    assert made.json()["name"] == "Newsletter"
    assert made.json()["counts"] == {
        "subscribed": 0, "unsubscribed_list": 0, "unsubscribed_all": 0, "suppressed": 0,
        "total": 0,
    }  # fmt: skip
    assert client.post("/api/v1/lists", {"name": "Newsletter"}, format="json").status_code == 409

    news = ContactList.objects.get(pk=pk)
    for status in (S.ACTIVE, S.ACTIVE, S.UNSUBSCRIBED, S.BOUNCED):
        Membership.objects.create(contact_list=news, contact=ContactFactory(status=status))
    Membership.objects.create(
        contact_list=news, contact=ContactFactory(), unsubscribed_at=timezone.now()
    )
    read = client.get(f"/api/v1/lists/{pk}").json()
    assert read["counts"] == {
        "subscribed": 2, "unsubscribed_list": 1, "unsubscribed_all": 1, "suppressed": 1,
        "total": 5,
    }  # fmt: skip

    renamed = client.patch(f"/api/v1/lists/{pk}", {"name": "News"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "News"

    assert client.delete(f"/api/v1/lists/{pk}").status_code == 204
    assert Contact.objects.count() == 5  # its contacts stay
    assert client.get(f"/api/v1/lists/{pk}").status_code == 404


def test_pages_newest_first(client):
    made = [ContactListFactory().pk for _ in range(3)]
    first = client.get("/api/v1/lists?limit=2").json()
    assert [r["id"] for r in first["results"]] == made[:0:-1]
    assert [r["id"] for r in client.get(first["next"]).json()["results"]] == made[:1]


def test_a_list_a_campaign_was_sent_to_cannot_be_deleted(client):
    campaign = CampaignFactory()
    answer = client.delete(f"/api/v1/lists/{campaign.contact_list_id}")
    assert answer.status_code == 409
    assert answer.json()["errors"][0]["code"] == "list_in_use"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "A\r\nB"},
        {"name": "\x00"},
        {"name": "x" * 201},
        {"name": ""},
        {"name": ["x"]},
        {"name": "ok", "description": "a\x00b"},
        {"name": "ok", "colour": "red"},
        {},
    ],
)
def test_hostile_lists_are_400s(client, body):
    answer = client.post("/api/v1/lists", body, format="json")
    assert answer.status_code == 400, answer.content
    assert answer.json()["errors"][0]["code"]
    assert not ContactList.objects.exists()

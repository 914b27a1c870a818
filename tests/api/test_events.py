"""GET /api/v1/events: the journeys' events (SES's, opens and clicks with the verdict,
unsubscribes) of campaigns as well as the API's messages, by campaign, contact, message, type
and time, newest first with the cursor; the key's mode only; the journey's shape."""

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.api import events as events_view
from campaigns.models import Notification
from campaigns.tokens import token_for
from tests.api.helpers import api_client
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    EventFactory,
    NotificationFactory,
    TemplateFactory,
)
from tests.tracking.ses_events.test_webhooks import post, ses_event, sns_envelope
from tracking.models import Event

pytestmark = pytest.mark.django_db

URL = "/api/v1/events"
E = Event.Type


@pytest.fixture
def template():
    return TemplateFactory(
        slug="receipt",
        subject="Receipt",
        html='<p>Receipt</p><a href="https://example.com/orders">your orders</a>',
    )


def listed(api, **query) -> list[int]:
    answer = api.get(URL, query)
    assert answer.status_code == 200, answer.content
    return [e["id"] for e in answer.json()["results"]]


@pytest.mark.django_db(transaction=True)  # delivery runs on commit
def test_a_messages_events_through_the_real_doors_in_the_journeys_shape(
    template, client, ses, eager_celery
):
    api = api_client()
    answer = api.post(
        "/api/v1/messages", {"template": "receipt", "to": "ada@example.com"}, format="json"
    )
    message_id = answer.json()["id"]
    message = Notification.objects.get(pk=message_id)
    post(client, sns_envelope(ses_event("Delivery", message.message_id, "ada@example.com")))
    assert client.get(f"/t/o/{token_for(message_id)}.gif").status_code == 200
    assert client.get(f"/t/c/{token_for(message_id)}/0").status_code == 302

    page = api.get(URL, {"message": message_id}).json()
    assert [e["type"] for e in page["results"]] == ["clicked", "opened", "delivered"]
    assert page["next"] is None
    clicked = page["results"][0]
    assert set(clicked) == {
        "id", "at", "type", "source", "detail", "verdict", "verdict_reason", "message",
        "campaign", "contact",
    }  # fmt: skip
    assert (clicked["message"], clicked["campaign"], clicked["contact"]) == (
        message_id, message.campaign_id, message.contact_id
    )  # fmt: skip
    assert clicked["verdict"] in ("human", "machine") and clicked["verdict_reason"]
    assert "https://example.com/orders" in clicked["detail"]
    # One shape: the message's journey answers the same events, oldest first.
    journey = api.get(f"/api/v1/messages/{message_id}").json()["events"]
    assert journey == page["results"][::-1]


@pytest.fixture
def history():
    """A campaign's events and a job-like API stream's, to two contacts, over three days."""
    ada, bob = ContactFactory(email="ada@example.com"), ContactFactory(email="bob@example.com")
    campaign = CampaignFactory()
    row_ada = NotificationFactory(campaign=campaign, contact=ada, sent=True)
    row_bob = NotificationFactory(campaign=campaign, contact=bob, sent=True)
    stream = CampaignFactory(kind="transactional", contact_list=None, stream_key="s1")
    row_api = NotificationFactory(campaign=stream, contact=ada, sent=True, repeat_key=7)
    test_stream = CampaignFactory(
        kind="transactional", contact_list=None, stream_key="s2", test_mode=True
    )
    row_test = NotificationFactory(campaign=test_stream, contact=ada, sent=True, repeat_key=8)
    now = timezone.now()
    made = {
        "delivered_ada": EventFactory(
            notification=row_ada, type=E.DELIVERED, source="ses",
            occurred_at=now - timedelta(days=3),
        ),
        "opened_ada": EventFactory(
            notification=row_ada, type=E.OPENED, verdict="machine", verdict_reason="apple-mpp",
            occurred_at=now - timedelta(days=2),
        ),
        "bounced_bob": EventFactory(
            notification=row_bob, type=E.BOUNCED, source="ses", bounce_type="hard",
            occurred_at=now - timedelta(days=2),
        ),
        "unsubscribed_ada": EventFactory(
            notification=row_ada, type=E.UNSUBSCRIBED, source="recipient",
            occurred_at=now - timedelta(hours=1),
        ),
        "delivered_api": EventFactory(
            notification=row_api, type=E.DELIVERED, source="ses", occurred_at=now
        ),
        "delivered_test": EventFactory(
            notification=row_test, type=E.DELIVERED, source="simulated", occurred_at=now
        ),
    }  # fmt: skip
    ids = {name: event.pk for name, event in made.items()}
    return ids, campaign, stream, ada, bob, row_api


def test_campaign_events_are_included_and_filtered(history):
    ids, campaign, stream, ada, bob, row_api = history
    api = api_client()
    live = ["delivered_api", "unsubscribed_ada", "bounced_bob", "opened_ada", "delivered_ada"]
    assert listed(api) == [ids[name] for name in live]
    assert listed(api, campaign=campaign.pk) == [ids[n] for n in live[1:]]
    assert listed(api, campaign=stream.pk) == [ids["delivered_api"]]
    assert listed(api, contact=bob.pk) == [ids["bounced_bob"]]
    assert listed(api, contact=ada.pk, campaign=campaign.pk) == [
        ids["unsubscribed_ada"], ids["opened_ada"], ids["delivered_ada"]
    ]  # fmt: skip
    assert listed(api, message=row_api.pk) == [ids["delivered_api"]]
    assert listed(api, type="delivered") == [ids["delivered_api"], ids["delivered_ada"]]
    assert listed(api, type="bounced,unsubscribed") == [
        ids["unsubscribed_ada"], ids["bounced_bob"]
    ]  # fmt: skip
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert listed(api, since=since) == [ids["delivered_api"], ids["unsubscribed_ada"]]
    [opened] = api.get(URL, {"type": "opened"}).json()["results"]
    assert (opened["verdict"], opened["verdict_reason"]) == ("machine", "apple-mpp")
    [bounced] = api.get(URL, {"type": "bounced"}).json()["results"]
    assert bounced["detail"] == "hard bounce"
    assert "ip" not in bounced and "user_agent" not in bounced


def test_a_key_reads_its_own_modes_events_and_needs_messages_read(history):
    ids, *_ = history
    assert listed(api_client(test=True)) == [ids["delivered_test"]]
    assert api_client(scopes=["messages:send"]).get(URL).status_code == 403
    assert api_client(scopes=["messages:read"]).get(URL).status_code == 200


def test_pages_follow_next_and_a_type_alone_reads_a_bounded_window(history, monkeypatch):
    ids, *_ = history
    api = api_client()
    seen, url = [], f"{URL}?limit=2"
    while url:
        page = api.get(url).json()
        assert len(page["results"]) <= 2
        seen += [e["id"] for e in page["results"]]
        url = page["next"]
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)

    monkeypatch.setattr(events_view, "TYPE_WINDOW", 2)
    seen, pages, url = [], 0, f"{URL}?type=delivered&limit=5"
    while url:
        page = api.get(url).json()
        seen += [e["id"] for e in page["results"]]
        url, pages = page["next"], pages + 1
        assert pages < 10
    assert seen == [ids["delivered_api"], ids["delivered_ada"]]
    assert pages > 1  # the window ended pages before they filled


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"type": "opened,nonsense"}, "type"),
        ({"type": "x" * 5000}, "type"),
        ({"message": 2**63}, "message"),
        ({"campaign": -1}, "campaign"),
        ({"contact": "NaN"}, "contact"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-01T00:00:00Z"}, "since"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ({"limit": 101}, "limit"),
        ({"verdict": "human"}, "verdict"),
    ],
)
def test_bad_queries_are_400s_in_the_shape(query, field):
    answer = api_client().get(URL, query)
    assert answer.status_code == 400, answer.content
    assert [e["field"] for e in answer.json()["errors"]] == [field]


def test_only_get(history):
    answer = api_client().post(URL, {}, format="json")
    assert answer.status_code == 405
    assert answer.json()["errors"][0]["code"] == "method_not_allowed"

"""GET /api/v1/messages/{id} (status, reason, timestamps, the journey) and GET
/api/v1/messages (filters, cursor pagination), and messages to contacts who get no mail."""

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import Contact, MessageRequest, Notification
from campaigns.tokens import token_for
from tests.api.helpers import api_client
from tests.factories import CampaignFactory, ContactFactory, NotificationFactory, TemplateFactory
from tests.tracking.ses_events.test_webhooks import post, ses_event, sns_envelope

pytestmark = pytest.mark.django_db

URL = "/api/v1/messages"


@pytest.fixture
def template():
    return TemplateFactory(
        slug="receipt",
        subject="Order {{ order }}",
        html='<p>Order {{ order }}</p><a href="https://example.com/orders">your orders</a>',
    )


def send(client, **fields) -> int:
    answer = client.post(URL, {"template": "receipt", **fields}, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


@pytest.mark.django_db(transaction=True)  # delivery runs on commit
def test_a_message_shows_its_status_timestamps_and_journey_in_time_order(
    template, client, ses, eager_celery
):
    api = api_client()
    message_id = send(api, to="ada@example.com", reference="order-17")
    message = Notification.objects.get(pk=message_id)
    assert message.status == "sent"
    # What happened next, through the real doors: SES's event, the pixel, the link.
    post(client, sns_envelope(ses_event("Delivery", message.message_id, "ada@example.com")))
    assert client.get(f"/t/o/{token_for(message_id)}.gif").status_code == 200
    assert client.get(f"/t/c/{token_for(message_id)}/0").status_code == 302

    shown = api.get(f"{URL}/{message_id}")
    assert shown.status_code == 200
    data = shown.json()
    assert (data["id"], data["status"], data["reason"]) == (message_id, "delivered", "")
    assert (data["reference"], data["to"], data["template"]) == (
        "order-17", "ada@example.com", template.pk
    )  # fmt: skip
    types = [event["type"] for event in data["events"]]
    assert types == ["delivered", "opened", "clicked"]
    times = [event["at"] for event in data["events"]]
    assert times == sorted(times)
    opened, clicked = data["events"][1], data["events"][2]
    assert opened["source"] == "tracking"
    assert opened["verdict"] in ("human", "machine") and opened["verdict_reason"]
    assert "https://example.com/orders" in clicked["detail"]
    assert set(data["timestamps"]) >= {"created", "status_changed", "delivered", "opened"}
    assert data["timestamps"]["delivered"] == data["events"][0]["at"]
    assert data["events_not_shown"] == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (Contact.Status.BOUNCED, "suppressed: the address bounced"),
        (Contact.Status.COMPLAINED, "suppressed: the recipient marked a message as spam"),
        (Contact.Status.UNSUBSCRIBED, "unsubscribed from all mail"),
    ],
)
def test_a_message_to_a_contact_who_gets_no_mail_is_accepted_and_skipped_with_the_reason(
    template, ses, eager_celery, status, reason
):
    contact = ContactFactory(email="gone@example.com", status=status)
    api = api_client()
    by_address = send(api, to="Gone@Example.com")
    by_id = send(api, contact=contact.pk)
    for message_id in (by_address, by_id):
        data = api.get(f"{URL}/{message_id}").json()
        assert (data["status"], data["reason"]) == ("skipped", reason)
    assert ses.stats()["recipients"] == 0


def test_which_messages_a_caller_sees(template):
    live, other_live, test = api_client(), api_client(), api_client(test=True)
    live_id = send(live, to="ada@example.com")
    test_id = send(test, to="ada@example.com")
    campaign_row = NotificationFactory(campaign=CampaignFactory())

    assert other_live.get(f"{URL}/{live_id}").status_code == 200  # every live key
    assert other_live.get(f"{URL}/{test_id}").status_code == 404  # not test messages
    assert test.get(f"{URL}/{live_id}").status_code == 404
    assert test.get(f"{URL}/{test_id}").status_code == 200
    assert live.get(f"{URL}/{campaign_row.pk}").status_code == 404  # never a campaign's row
    assert [m["id"] for m in live.get(URL).json()["results"]] == [live_id]
    assert [m["id"] for m in test.get(URL).json()["results"]] == [test_id]


def test_reading_needs_the_read_scope(template):
    sender = api_client(scopes=["messages:send"])
    message_id = send(sender, to="ada@example.com")
    assert sender.get(f"{URL}/{message_id}").status_code == 403
    assert sender.get(URL).status_code == 403


class TestTheList:
    @pytest.fixture
    def messages(self, template):
        other = TemplateFactory(slug="reset", subject="Reset", html="<p>Reset</p>")
        api = api_client()
        ids = [
            send(api, to=f"p{n}@example.com", reference="batch-a" if n < 3 else f"r{n}")
            for n in range(6)
        ]
        ids.append(send(api, template="reset", to="p6@example.com"))
        Notification.objects.filter(pk__in=ids[:2]).update(status="sent")
        three_days_ago = timezone.now() - timedelta(days=3)
        Notification.objects.filter(pk=ids[0]).update(created_at=three_days_ago)
        MessageRequest.objects.filter(pk=ids[0]).update(created_at=three_days_ago)
        return api, ids, other

    def ids(self, api, **query) -> list[int]:
        answer = api.get(URL, query)
        assert answer.status_code == 200, answer.content
        return [m["id"] for m in answer.json()["results"]]

    def test_newest_first(self, messages):
        api, ids, _ = messages
        assert self.ids(api) == ids[::-1]

    def test_by_reference(self, messages):
        api, ids, _ = messages
        assert self.ids(api, reference="batch-a") == ids[2::-1]
        assert self.ids(api, reference="r4") == [ids[4]]
        assert self.ids(api, reference="none") == []

    def test_by_status(self, messages):
        api, ids, _ = messages
        assert self.ids(api, status="sent") == [ids[1], ids[0]]
        assert self.ids(api, status="created") == ids[:1:-1]

    def test_since(self, messages):
        api, ids, _ = messages
        since = (timezone.now() - timedelta(days=1)).isoformat()
        assert self.ids(api, since=since) == ids[:0:-1]

    def test_by_template_id_or_slug(self, messages):
        api, ids, other = messages
        assert self.ids(api, template="reset") == [ids[6]]
        assert self.ids(api, template=str(other.pk)) == [ids[6]]
        assert self.ids(api, template="receipt") == ids[5::-1]

    def test_filters_combine(self, messages):
        api, ids, _ = messages
        assert self.ids(api, reference="batch-a", status="sent") == [ids[1], ids[0]]

    def test_a_listed_message_has_the_fields_of_one_message(self, messages):
        api, ids, _ = messages
        [listed] = api.get(URL, {"reference": "r4"}).json()["results"]
        assert listed["id"] == ids[4]
        assert (listed["status"], listed["reference"], listed["test"]) == ("created", "r4", False)

    def test_pages_follow_next_links_without_a_count(self, messages):
        api, ids, _ = messages
        seen, url, pages = [], f"{URL}?limit=3&template=receipt", 0
        while url:
            with CaptureQueriesContext(connection) as queries:
                answer = api.get(url)
            assert answer.status_code == 200, answer.content
            assert not [q for q in queries if "COUNT(" in q["sql"].upper()]
            page = answer.json()
            assert len(page["results"]) <= 3
            seen += [m["id"] for m in page["results"]]
            url, pages = page["next"], pages + 1
            if url:
                query = parse_qs(urlsplit(url).query)
                assert query["template"] == ["receipt"] and query["limit"] == ["3"]
        assert seen == ids[5::-1]  # every message once, newest first
        assert pages == 2  # 3 + 3: the second page knows it is the last

    def test_the_page_size_is_capped_at_100_and_defaults_to_50(self, template):
        api = api_client()
        for n in range(51):
            send(api, to="ada@example.com", reference=str(n))
        page = api.get(URL).json()
        assert len(page["results"]) == 50 and page["next"]
        assert len(api.get(URL, {"limit": 100}).json()["results"]) == 51
        assert api.get(URL, {"limit": 101}).status_code == 400

"""GET /api/v1/messages's filters by campaign (a stream or a job) and contact, and the status
filter's bounded window: pages that may be short, or empty, while `next` leads on, and that
together list every match once."""

import pytest

from campaigns.api import views
from campaigns.models import Notification
from tests.api.helpers import api_client
from tests.factories import CampaignFactory, ContactFactory, NotificationFactory, TemplateFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/messages"


@pytest.fixture
def sent(template_pair, ses):
    """Messages of two streams (two templates), one job, and a campaign's row, to two
    contacts; (client, ids by name)."""
    api = api_client()
    ada = ContactFactory(email="ada@example.com")
    bob = ContactFactory(email="bob@example.com")
    ids = {
        "a1": send(api, template="receipt", contact=ada.pk),
        "b1": send(api, template="receipt", contact=bob.pk),
        "a2": send(api, template="reset", contact=ada.pk),
    }
    job = api.post(
        "/api/v1/jobs",
        {"template": "receipt", "rows": [{"to": "ada@example.com"}, {"to": "bob@example.com"}]},
        format="json",
    ).json()["id"]
    from campaigns import services

    services.campaign_start(campaign_id=job)  # (its rows made; their batches left queued)
    ids["job"] = job
    ids["campaign_row"] = NotificationFactory(campaign=CampaignFactory(), contact=ada).pk
    return api, ids, ada, bob


@pytest.fixture
def template_pair():
    TemplateFactory(slug="receipt", subject="Receipt", html="<p>Receipt</p>")
    TemplateFactory(slug="reset", subject="Reset", html="<p>Reset</p>")


def send(client, **fields) -> int:
    answer = client.post(URL, fields, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def listed(api, **query) -> list[int]:
    answer = api.get(URL, query)
    assert answer.status_code == 200, answer.content
    return [m["id"] for m in answer.json()["results"]]


def stream_of(message_id: int) -> int:
    return Notification.objects.values_list("campaign_id", flat=True).get(pk=message_id)


def test_by_campaign_a_stream_or_a_job(sent):
    api, ids, ada, _ = sent
    assert listed(api, campaign=stream_of(ids["a1"])) == [ids["b1"], ids["a1"]]
    assert listed(api, campaign=stream_of(ids["a2"])) == [ids["a2"]]
    job_rows = list(
        Notification.objects.filter(campaign_id=ids["job"])
        .order_by("-pk")
        .values_list("pk", flat=True)
    )
    assert len(job_rows) == 2 and listed(api, campaign=ids["job"]) == job_rows
    # A marketer's campaign is not the API's: its id lists nothing (and its row is never shown).
    campaign = Notification.objects.get(pk=ids["campaign_row"]).campaign_id
    assert listed(api, campaign=campaign) == []
    assert listed(api, campaign=10**12) == []


def test_by_contact_and_combined(sent):
    api, ids, ada, bob = sent
    ada_job_row = Notification.objects.get(campaign_id=ids["job"], contact=ada).pk
    assert listed(api, contact=ada.pk) == [ada_job_row, ids["a2"], ids["a1"]]
    assert listed(api, contact=bob.pk, campaign=stream_of(ids["b1"])) == [ids["b1"]]
    assert listed(api, contact=ada.pk, template="reset") == [ids["a2"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"campaign": "x"}, "campaign"),
        ({"campaign": 0}, "campaign"),
        ({"contact": 2**63}, "contact"),
        ({"contact": "1\x00"}, "contact"),
        ({"campaign": "1e3"}, "campaign"),
    ],
)
def test_bad_ids_are_400s_in_the_shape(template_pair, query, field):
    answer = api_client().get(URL, query)
    assert answer.status_code == 400
    assert [e["field"] for e in answer.json()["errors"]] == [field]


def test_a_status_page_reads_a_bounded_window_and_next_leads_on(template_pair, monkeypatch):
    """With a window of 3 ids a page, 9 messages of which 3 failed: pages may be short or
    empty, `next` is set until the oldest id is read, and every failed message comes once."""
    monkeypatch.setattr(views, "STATUS_WINDOW", 3)
    api = api_client()
    ids = [send(api, template="receipt", to=f"w{n}@example.com") for n in range(9)]
    failed = [ids[0], ids[4], ids[5]]
    Notification.objects.filter(pk__in=failed).update(status="failed", reason="test")
    seen, sizes, url = [], [], f"{URL}?status=failed&limit=2"
    while url:
        page = api.get(url).json()
        seen += [m["id"] for m in page["results"]]
        sizes.append(len(page["results"]))
        url = page["next"]
        assert len(sizes) < 20, "next never ended"
    assert seen == sorted(failed, reverse=True)
    assert 0 in sizes or 1 in sizes  # short pages, as the window ends before a page fills
    # With a filter that has an index of its own, no window: one full page.
    by_reference = api.get(
        URL, {"status": "failed", "contact": Notification.objects.get(pk=ids[4]).contact_id}
    ).json()
    assert [m["id"] for m in by_reference["results"]] == [ids[4]]
    assert by_reference["next"] is None

"""GET /api/v1/campaigns/{id}/report: the admin's report as JSON, from the same report object
(tracking.reports.report.campaign_report): every number the admin page shows, all and human,
per link, and the timeline."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.counters import counters_add
from tests.api.helpers import api_client
from tests.factories import CampaignFactory, campaign_with_opens_and_clicks
from tracking.reports.report import Rate

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign():
    # A rendering failure too: the admin's row and the API's are compared with a number.
    return campaign_with_opens_and_clicks(rendering_failed=3)


@pytest.fixture
def client():
    return api_client(scopes=("campaigns:read",))


def percent(rate: Rate | None):
    return None if rate is None else rate.percent


def test_the_numbers_are_the_admin_reports(client, admin_client, campaign):
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    admin = page.context["report"]
    api = client.get(f"/api/v1/campaigns/{campaign.pk}/report").json()

    # Every row of the admin's table (label, all, human), found in the JSON.
    shown = {
        "Recipients": api["recipients"],
        "Sent (accepted by SES)": api["delivery"]["sent"],
        "Delivered": api["delivery"]["delivered"],
        "Bounced, hard": api["delivery"]["bounced_hard"],
        "Bounced, soft": api["delivery"]["bounced_soft"],
        "Complained": api["delivery"]["complained"],
        "Rejected by SES": api["delivery"]["rejected"],
        "Delayed": api["delivery"]["delayed"],
        "Rendering failed": api["delivery"]["rendering_failed"],
        "Failed (refused at hand-off)": api["delivery"]["failed"],
        "Unknown (hand-off outcome unknown; never re-sent)": api["delivery"]["unknown"],
        "Skipped": api["delivery"]["skipped"],
        "Pending": api["pending"],
        "Unsubscribed": api["unsubscribed"],
    }
    pairs = {
        "Opens": api["engagement"]["opens"],
        "Unique opens": api["engagement"]["unique_opens"],
        "Clicks": api["engagement"]["clicks"],
        "Unique clicks": api["engagement"]["unique_clicks"],
    }
    rates = {
        "Open rate": api["rates"]["open_rate"],
        "Click-through rate": api["rates"]["click_through_rate"],
        "Click-to-open rate": api["rates"]["click_to_open_rate"],
        "Unsubscribe rate": api["rates"]["unsubscribe_rate"],
        "Bounce rate": api["rates"]["bounce_rate"],
        "Complaint rate": api["rates"]["complaint_rate"],
    }
    rows = admin.rows()
    assert len(rows) == len(shown) + len(pairs) + len(rates)
    for label, all_, human in rows:
        if label in shown:
            assert (shown[label], human) == (all_, None), label
        elif label in pairs:
            assert pairs[label] == {"all": all_, "human": human}, label
        else:
            [rate] = [value for name, value in rates.items() if label.startswith(name)]
            assert rate["all"]["percent"] == percent(all_), label
            assert (rate["human"] or {}).get("percent") == percent(human), label
    assert api["rate_basis"] == admin.rate_basis == "delivered"
    assert api["rates"]["open_rate"]["all"] == {"percent": 50.0, "part": 400, "whole": 800}
    assert api["rates"]["open_rate"]["human"] == {"percent": 25.0, "part": 200, "whole": 800}
    assert (api["status"], api["final"], api["progress_percent"]) == ("sent", True, 90)
    assert api["summary"] == admin.summary
    assert api["links"] == [
        {"index": 0, "url": "https://example.com/0", "clicks": 120, "unique_clicks": 80,
         "human_clicks": 70},
        {"index": 1, "url": "https://example.com/1", "clicks": 30, "unique_clicks": 25,
         "human_clicks": 20},
    ]  # fmt: skip
    assert [
        (link.index, link.url, link.clicks, link.unique_clicks, link.human_clicks)
        for link in admin.links
    ] == [tuple(link.values()) for link in api["links"]]
    timeline = {k: v for k, v in api["timeline"].items() if k != "time_zone"}
    assert timeline == admin.timeline.as_json()
    assert api["timeline"]["labels"] == [f"2026-03-01 {h:02}:00" for h in (9, 10, 11, 12)]
    assert api["timeline"]["human_opens"] == [200, 0, 0, 100]


def test_the_timeline_in_a_time_zone(client, campaign):
    api = client.get(f"/api/v1/campaigns/{campaign.pk}/report?time_zone=Asia/Kolkata").json()
    assert api["timeline"]["time_zone"] == "Asia/Kolkata"
    assert api["timeline"]["labels"][0] == "2026-03-01 14:30"


def test_an_empty_report_has_no_rates(client):
    draft = CampaignFactory()
    api = client.get(f"/api/v1/campaigns/{draft.pk}/report").json()
    assert (api["recipients"], api["pending"], api["links"], api["summary"]) == (0, 0, [], "")
    assert api["rates"]["open_rate"]["all"] == {"percent": None, "part": 0, "whole": 0}
    assert api["timeline"]["labels"] == []


def test_a_part_counted_ahead_of_its_whole_is_never_above_it(client, campaign):
    # Opens counted before the deliveries that explain them (events arrive apart).
    counters_add(campaign_id=campaign.pk, deltas={"unique_opens": 500})
    api = client.get(f"/api/v1/campaigns/{campaign.pk}/report").json()
    assert api["engagement"]["unique_opens"] == {"all": 900, "human": 200}
    assert api["rates"]["open_rate"]["all"] == {"percent": 100.0, "part": 800, "whole": 800}


def test_the_report_reads_counters_not_the_ledger(client, campaign):
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/api/v1/campaigns/{campaign.pk}/report").status_code == 200
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "campaigns_notification" not in sql and "tracking_event" not in sql


def test_an_unknown_campaign_or_zone_is_a_4xx(client, campaign):
    assert client.get("/api/v1/campaigns/0/report").status_code == 404
    assert client.get("/api/v1/campaigns/99999999999999999999999/report").status_code == 404
    answer = client.get(f"/api/v1/campaigns/{campaign.pk}/report?time_zone=Nowhere/Land")
    assert answer.status_code == 400
    assert answer.json()["errors"][0] == {
        "code": "invalid_time_zone",
        "field": "time_zone",
        "message": answer.json()["errors"][0]["message"],
    }

"""The campaign page's progress in a real browser: the bar follows what SES accepts, also
while paused; a cancelled campaign says what happened; Send now reads Starting; one hour of
opens draws as bars. Statuses are driven through the services (not the buttons: Send now may
sit behind a confirmation) and rows are accepted as the send path writes them, between polls."""

import pytest

from campaigns import services
from campaigns.models import Campaign
from tests.factories import CampaignFactory, list_with_contacts
from tests.progress_helpers import accept, sending_campaign

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

C = Campaign.Status
POLL_MS = 10_000  # the page polls every 2 s; room for a slow shared machine


def _wait_text(page, field: str, text: str) -> None:
    page.wait_for_function(
        "([field, text]) => (document.querySelector(`[data-field=${field}]`) || {})"
        ".textContent === text",
        arg=[field, text],
        timeout=POLL_MS,
    )


def test_the_bar_follows_accepted_rows_also_while_paused(page, live_server):
    campaign, ids = sending_campaign(30)
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    assert page.inner_text("[data-field=done]") == "0"

    accept(campaign, ids[:7])
    _wait_text(page, "done", "7")
    assert page.get_attribute("[data-field=progressbar]", "aria-valuenow") == "23"

    services.campaign_pause(campaign=campaign)
    _wait_text(page, "status", "Paused")  # the page reloads on the change of status
    accept(campaign, ids[7:20])  # rows claimed before the pause finish
    _wait_text(page, "done", "20")
    assert page.inner_text("[data-field=summary]") == "Paused: 20 of 30 sent so far, 10 waiting"
    width = page.eval_on_selector("[data-field=bar]", "el => el.style.width")
    assert width == "66%"


def test_a_cancelled_campaign_says_what_was_and_was_not_sent(page, live_server):
    campaign, ids = sending_campaign(10)
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    accept(campaign, ids[:4])
    _wait_text(page, "done", "4")

    services.campaign_cancel(campaign=campaign)
    _wait_text(page, "summary", "Cancelled: 4 of 10 sent, 6 not sent")
    assert page.inner_text("[data-field=status]") == "Cancelled"
    assert "processed" not in page.inner_text("#campaign-panel")
    # Final: the page says so to its script, which stops polling.
    assert page.get_attribute("#campaign-panel", "data-final") is not None


def test_send_now_reads_starting(page, live_server):
    campaign = CampaignFactory(contact_list=list_with_contacts(2))
    services.campaign_send_now(campaign=campaign)  # no worker here: it stays due to start
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    assert page.inner_text("[data-field=status]") == "Starting"
    page.goto(f"{live_server.url}/admin/campaigns/campaign/")
    assert page.inner_text(f"tr:has(a[href*='/{campaign.pk}/change/']) .field-status_label") == (
        "Starting"
    )


def test_one_hour_of_opens_draws_as_bars(page, live_server):
    from campaigns.counters import counters_add

    campaign = CampaignFactory(status=C.SENT, recipient_count=10)
    counters_add(
        campaign_id=campaign.pk,
        deltas={"sent": 10, "opens": 3, "opens@2026-03-01T09": 3, "human_opens@2026-03-01T09": 2},
    )
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    page.wait_for_selector("#campaign-timeline-chart[data-kind='bar'][data-points='1']")
    box = page.locator("#campaign-timeline-chart").bounding_box()
    assert box["width"] > 300 and box["height"] > 200

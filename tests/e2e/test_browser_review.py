"""The pre-send review in a real browser: Send now and Schedule ask first, with the count, and
the schedule reads and shows times in the user's time zone."""

from datetime import UTC, datetime

import pytest

from campaigns.models import Campaign
from campaigns.preferences import user_preferences_update
from tests.factories import CampaignFactory, list_with_contacts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _campaign_page(page, live_server, campaign):
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")


def test_send_now_asks_with_the_count_and_sends_only_once_confirmed(
    page, live_server, eager_celery, ses
):
    campaign = CampaignFactory(contact_list=list_with_contacts(3))
    _campaign_page(page, live_server, campaign)

    page.click("text=Send now…")
    confirm = page.locator("button:has-text('Send to 3 recipients now')")
    confirm.wait_for()
    assert page.inner_text("#review-recipients").startswith("3 recipients")
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT and ses.stats()["distinct_recipients"] == 0

    confirm.click()
    page.wait_for_selector("text=Sending to 3 recipients.")
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENT
    assert ses.stats()["distinct_recipients"] == 3


def test_a_past_time_is_refused_with_the_reason(page, live_server):
    campaign = CampaignFactory(contact_list=list_with_contacts(1))
    _campaign_page(page, live_server, campaign)

    page.fill("#schedule_send_at", "2000-01-01T09:00")
    page.click("button:has-text('Review and schedule')")

    page.wait_for_selector("#review-blocked >> text=That time has passed")
    assert page.locator("#review-confirm button[type=submit]").is_disabled()
    campaign.refresh_from_db()
    assert (campaign.status, campaign.scheduled_at) == (Campaign.Status.DRAFT, None)


def test_scheduling_in_a_non_utc_zone_shows_the_same_wall_time_back(page, live_server, admin_user):
    user_preferences_update(user=admin_user, time_zone="Asia/Tokyo")
    campaign = CampaignFactory(contact_list=list_with_contacts(2))
    _campaign_page(page, live_server, campaign)
    assert page.input_value("#schedule_time_zone") == "Asia/Tokyo"

    page.fill("#schedule_send_at", "2030-01-15T09:00")
    page.click("button:has-text('Review and schedule')")
    page.click("button:has-text('Schedule for 2 recipients on Tuesday 15 January 2030, 09:00')")

    page.wait_for_selector("text=Scheduled for Tuesday 15 January 2030, 09:00 (Asia/Tokyo)")
    assert "9 a.m. (Asia/Tokyo)" in page.inner_text(".campaign-status")
    campaign.refresh_from_db()
    assert campaign.scheduled_at == datetime(2030, 1, 15, 0, tzinfo=UTC)  # Tokyo is UTC+9
    page.goto(f"{live_server.url}/admin/campaigns/campaign/")
    assert "Tuesday 15 January 2030, 09:00 (Asia/Tokyo)" in page.inner_text("#result_list")


def test_the_browser_zone_is_one_click_away(page, live_server, admin_user):
    browser_zone = page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    other = "Asia/Tokyo" if browser_zone != "Asia/Tokyo" else "Europe/Paris"
    user_preferences_update(user=admin_user, time_zone=other)
    campaign = CampaignFactory(contact_list=list_with_contacts(1))
    _campaign_page(page, live_server, campaign)

    page.click(f'button:has-text("Use my browser\'s zone ({browser_zone})")')
    assert page.input_value("#schedule_time_zone") == browser_zone

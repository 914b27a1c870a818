"""The campaign page in a real browser (Debian's chromium, driven by Playwright): what a
marketer clicks must work, not only the URLs the buttons post to."""

import pytest

from campaigns.counters import counters_add
from campaigns.models import Campaign
from tests.factories import CampaignFactory, NotificationFactory, list_with_contacts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_send_now_button_sends_the_campaign(page, live_server, eager_celery, ses):
    campaign = CampaignFactory(contact_list=list_with_contacts(5))
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")

    page.click("text=Send now…")
    page.click("button:has-text('Send to 5 recipients now')")

    page.wait_for_selector("text=Sending to 5 recipients.")
    assert page.inner_text("[data-field=status]") == "Sent"
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENT
    assert ses.stats()["distinct_recipients"] == 5


def test_schedule_button_schedules_at_the_chosen_time(page, live_server):
    campaign = CampaignFactory(contact_list=list_with_contacts(1))
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")

    page.fill("#schedule_send_at", "2999-03-04T05:06")
    page.select_option("#schedule_time_zone", "UTC")
    page.click("button:has-text('Review and schedule')")
    page.click("button:has-text('Schedule for 1 recipient on')")

    page.wait_for_selector("text=Scheduled for")
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert (campaign.scheduled_at.month, campaign.scheduled_at.hour) == (3, 5)
    page.click("button:has-text('Unschedule')")
    page.wait_for_selector("text=Unschedule: done.")
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_progress_updates_live_with_rate_and_eta(page, live_server):
    from campaigns.models import Notification

    campaign = CampaignFactory(contact_list=list_with_contacts(100))
    Campaign.objects.filter(pk=campaign.pk).update(
        status=Campaign.Status.SENDING, recipient_count=100
    )
    for contact in campaign.contact_list.contacts.all():
        NotificationFactory(campaign=campaign, contact=contact)
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    page.wait_for_timeout(2500)  # the first poll: the baseline of the rate

    ids = list(Notification.objects.filter(campaign=campaign).values_list("id", flat=True)[:40])
    Notification.objects.filter(id__in=ids).update(status="sent", message_id="m")
    counters_add(campaign_id=campaign.pk, deltas={"sent": 40})  # as the send path does

    page.wait_for_function(
        "document.querySelector('[data-field=done]').textContent === '40'", timeout=10_000
    )
    page.wait_for_function(
        "document.querySelector('[data-field=rate]').textContent.includes('left')",
        timeout=10_000,
    )
    assert "/s" in page.inner_text("[data-field=rate]")


def test_a_view_only_user_gets_a_403_page_for_an_import(page, live_server):
    from django.contrib.auth.models import Permission, User

    viewer = User.objects.create_user(username="viewer", password="password", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_contact"))
    page.context.clear_cookies()  # the fixture logged the superuser in
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "viewer")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")

    page.goto(f"{live_server.url}/admin/campaigns/contact/")
    assert page.locator("a:has-text('Export')").count() == 1
    assert page.locator("a:has-text('Import')").count() == 0
    response = page.goto(f"{live_server.url}/admin/campaigns/contact/import/")
    assert response.status == 403
    assert "does not have the permission" in page.inner_text("#content")

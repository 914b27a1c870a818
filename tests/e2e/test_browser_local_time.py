"""Send at this local time in each contact's time zone, in a real browser: a contact's time
zone on its page, the schedule option on the campaign page, and the waves it shows."""

from datetime import UTC, datetime

import pytest

from campaigns.models import Campaign, Contact, Membership
from campaigns.preferences import user_preferences_update
from tests.factories import CampaignFactory, ContactFactory, ContactListFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_contacts_time_zone_is_chosen_on_its_page(page, live_server):
    contact = ContactFactory()
    page.goto(f"{live_server.url}/admin/campaigns/contact/{contact.pk}/change/")
    assert "time zone of the person who schedules it" in page.inner_text("#contact_form")
    page.select_option("#id_time_zone", "Asia/Tokyo")
    page.click("input[name=_save]")
    page.wait_for_selector("text=was changed successfully")
    contact.refresh_from_db()
    assert contact.time_zone == "Asia/Tokyo"


def test_schedule_at_local_time_shows_the_waves_and_refuses_a_passed_zone(
    page, live_server, admin_user
):
    user_preferences_update(user=admin_user, time_zone="Europe/Paris")
    contact_list = ContactListFactory()
    contacts = [
        *(ContactFactory(time_zone="Asia/Tokyo") for _ in range(2)),
        *(ContactFactory(time_zone="") for _ in range(3)),  # the user's zone: Paris
        ContactFactory(time_zone="America/New_York"),
    ]
    Membership.objects.bulk_create(
        [Membership(contact_list=contact_list, contact=c) for c in contacts]
    )
    campaign = CampaignFactory(contact_list=contact_list)
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    assert "no time zone get it at this time in your time zone" in page.inner_text(
        ".campaign-schedule"
    )

    # Today 00:01 has passed in Tokyo whatever the time: refused, with the reason.
    today = datetime.now(UTC).date()
    page.fill("#campaign-send-at", f"{today:%Y-%m-%d}T00:01")
    page.check("#campaign-local-time")
    page.click("button:has-text('Schedule')")
    page.wait_for_selector("text=has already passed in Asia/Tokyo")
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT

    page.fill("#campaign-send-at", "2031-01-15T09:00")
    page.check("#campaign-local-time")
    page.click("button:has-text('Schedule')")
    page.wait_for_selector("text=Scheduled.")
    waves = page.inner_text("#campaign-waves")
    assert "in 3 waves" in waves
    assert "Next: 2 recipients at 09:00 Asia/Tokyo = 2031-01-15 00:00 UTC" in waves
    assert "Later: 3 recipients at 09:00 Europe/Paris = 2031-01-15 08:00 UTC" in waves
    assert "Later: 1 recipient at 09:00 America/New_York = 2031-01-15 14:00 UTC" in waves
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.scheduled_at == datetime(2031, 1, 15, 0, 0, tzinfo=UTC)
    assert Contact.objects.filter(time_zone="").count() == 3

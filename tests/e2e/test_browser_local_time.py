"""Send at this local time in each contact's time zone, in a real browser: a contact's time
zone on its page, the schedule option on the campaign page, and the waves it shows."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

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
    assert "no time zone get it at this time in the zone above" in page.inner_text(
        ".campaign-schedule"
    )

    # A minute ago on Tokyo's clock: still to come in Paris (the review lets it through), past
    # in Tokyo, so the confirmation refuses it with the reason.
    passed = datetime.now(ZoneInfo("Asia/Tokyo")) - timedelta(minutes=1)
    page.fill("#schedule_send_at", f"{passed:%Y-%m-%dT%H:%M}")
    page.check("#schedule_local_time")
    page.click("button:has-text('Review and schedule')")
    page.click("button:has-text('in each contact')")
    page.wait_for_selector("text=has already passed in Asia/Tokyo")
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT

    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    page.fill("#schedule_send_at", "2031-01-15T09:00")
    page.check("#schedule_local_time")
    page.click("button:has-text('Review and schedule')")
    page.click("button:has-text('Schedule for 6 recipients at 2031-01-15 09:00 in each contact')")
    page.wait_for_selector("text=Scheduled for 2031-01-15 09:00 in each contact's time zone.")
    waves = page.inner_text("#campaign-waves")
    assert "in 3 waves" in waves
    assert "Next: 2 recipients at 09:00 Asia/Tokyo = 2031-01-15 00:00 UTC" in waves
    assert "Later: 3 recipients at 09:00 Europe/Paris = 2031-01-15 08:00 UTC" in waves
    assert "Later: 1 recipient at 09:00 America/New_York = 2031-01-15 14:00 UTC" in waves
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.scheduled_at == datetime(2031, 1, 15, 0, 0, tzinfo=UTC)
    assert Contact.objects.filter(time_zone="").count() == 3

"""Sending a test from the campaign page in a real browser (Debian's chromium, driven by
Playwright): the proof reaches the local SES endpoint once and the report still counts nothing."""

import pytest

from campaigns.models import Campaign, Contact, Notification
from tests.factories import CampaignFactory, list_with_contacts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_test_send_from_the_campaign_page_arrives_once_and_counts_nothing(page, live_server, ses):
    campaign = CampaignFactory(contact_list=list_with_contacts(3))
    first = campaign.contact_list.contacts.order_by("id").first()
    Contact.objects.filter(pk=first.pk).update(first_name="Ada")
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    # The box sits below the campaign's form, not behind it (the admin floats the form).
    form, proof = (page.locator(sel).bounding_box() for sel in ("#campaign_form", "#test-send"))
    assert proof["y"] >= form["y"] + form["height"] - 1, (form, proof)

    page.fill("#proof-addresses", "proof@example.net")
    page.click("button:has-text('Send test')")

    page.wait_for_selector("text=Test sent: Amazon SES accepted it for 1 address.")
    [message] = ses.messages()
    assert message["to"] == ["proof@example.net"]
    assert message["subject"] == "[Test] Hello Ada"
    # The page remembers the address, and its report still shows nothing sent.
    assert page.input_value("#proof-addresses") == "proof@example.net"
    sent = page.locator("tr:has(th:text-is('Sent')) td").first.inner_text()
    assert sent == "0"
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert not Notification.objects.filter(campaign=campaign).exists()

"""Audiences in a real browser: a recipient's list-level unsubscribe, made on the real
unsubscribe page, shows on their contact page and in the list's counts; the status is not a
dropdown; resubscribing asks why."""

import pytest

from campaigns.models import Contact, ContactStatusChange, Membership
from campaigns.tokens import unsubscribe_token_for
from tests.factories import CampaignFactory, NotificationFactory, list_with_contacts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_list_unsubscribe_shows_on_the_contact_and_the_list(page, live_server):
    contact_list = list_with_contacts(3)
    contact_list.name = "Weekly news"
    contact_list.save()
    campaign = CampaignFactory(contact_list=contact_list)
    contact = contact_list.contacts.order_by("pk").first()
    notification = NotificationFactory(campaign=campaign, contact=contact)

    # The recipient, in their mail client: "unsubscribe from this list" (the default choice).
    page.goto(f"{live_server.url}/t/u/{unsubscribe_token_for(notification.pk)}")
    page.click("button:has-text('Unsubscribe')")
    page.wait_for_load_state()
    assert Membership.objects.get(contact=contact).unsubscribed_at is not None

    # The marketer: the list counts them apart, the contact page says so.
    page.goto(f"{live_server.url}/admin/campaigns/contactlist/{contact_list.pk}/change/")
    assert page.inner_text("[data-count=subscribed]") == "2"
    assert page.inner_text("[data-count=unsubscribed_list]") == "1"
    page.goto(f"{live_server.url}/admin/campaigns/contactlist/")
    assert page.inner_text("td.field-unsubscribed_list") == "1"

    page.goto(f"{live_server.url}/admin/campaigns/contact/{contact.pk}/change/")
    row = page.locator("#contact-lists tr", has_text="Weekly news")
    assert "Unsubscribed from this list on" in row.inner_text()
    assert page.locator("select[name=status]").count() == 0
    page.goto(f"{live_server.url}/admin/campaigns/contact/")
    assert "unsubscribed from 1 list" in page.inner_text("#result_list")


def test_resubscribe_asks_for_a_reason(page, live_server):
    contact = Contact.objects.create(email="left@example.com", status=Contact.Status.UNSUBSCRIBED)
    page.goto(f"{live_server.url}/admin/campaigns/contact/{contact.pk}/change/")
    assert page.locator("select[name=status]").count() == 0
    page.click("#resubscribe-all")

    page.click("input[type=submit][value=Resubscribe]")  # no reason: the browser refuses
    assert page.evaluate("document.querySelector('#id_reason').validity.valueMissing")
    contact.refresh_from_db()
    assert contact.status == Contact.Status.UNSUBSCRIBED

    page.fill("#id_reason", "Wrote to us on 3 March asking for the newsletter again")
    page.click("input[type=submit][value=Resubscribe]")
    page.wait_for_selector("#contact-status-changes")
    assert "asking for the newsletter again" in page.inner_text("#contact-status-changes")
    assert ContactStatusChange.objects.get().contact_id == contact.pk
    contact.refresh_from_db()
    assert contact.status == Contact.Status.ACTIVE

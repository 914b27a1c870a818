"""Erasing a contact (tracking.erase): the API's DELETE and the admin's delete, a mailed contact
emptied rather than deleted, and an erased address that was suppressed staying suppressed
wherever it comes back (an upsert, an import, the admin's form, a message, a job)."""

import logging

import pytest
from django.db import connection

from campaigns.counters import CounterName, campaign_counters
from campaigns.erased import address_digest, new_contact_status_sql
from campaigns.models import (
    Contact,
    ContactStatusChange,
    ErasedAddress,
    Membership,
    MessageRequest,
    Notification,
)
from tests.admin_helpers import import_file
from tests.api.helpers import api_client
from tests.factories import (
    ContactFactory,
    ContactListFactory,
    EventFactory,
    NotificationFactory,
    TemplateFactory,
)
from tracking.erase import contact_erase
from tracking.models import Event

pytestmark = pytest.mark.django_db(transaction=True)

S = Contact.Status
ADDRESS = "gone@example.com"


@pytest.fixture
def client():
    return api_client(scopes=("contacts:read", "contacts:write", "messages:send", "jobs:send"))


def mailed_contact(status=S.ACTIVE) -> Contact:
    """A contact with a list, a status change, a sent message with its request, and events
    carrying what the erase must remove."""
    contact = ContactFactory(
        email=ADDRESS,
        first_name="Grace",
        last_name="Hopper",
        time_zone="Europe/Paris",
        attributes={"city": "Arlington"},
        status=status,
    )
    Membership.objects.create(contact_list=ContactListFactory(), contact=contact)
    ContactStatusChange.objects.create(
        contact=contact, from_status="bounced", to_status="active", reason="asked by Grace"
    )
    message = NotificationFactory(contact=contact, sent=True)
    MessageRequest.objects.create(
        notification=message, reference="order-1", personalisation={"name": "Grace"}
    )
    EventFactory(
        notification=message,
        delivered=True,
        description=f"250 OK <{ADDRESS}>",
        payload={"mail": {"destination": [ADDRESS]}},
    )
    EventFactory(
        notification=message, opened=True, ip="203.0.113.9", user_agent="Mozilla/5.0 Grace's"
    )
    EventFactory(notification=message, bounced=True, description="Permanent: General")
    return contact


def test_deleting_a_mailed_contact_empties_it_and_keeps_the_ledger(client):
    contact = mailed_contact(status=S.BOUNCED)
    message = Notification.objects.get(contact=contact)

    assert client.delete(f"/api/v1/contacts/{contact.pk}").status_code == 204

    row = Contact.objects.get(pk=contact.pk)  # the ledger names it: kept, emptied
    assert row.email == f"erased-{contact.pk}@erased.invalid"
    assert (row.first_name, row.last_name, row.time_zone, row.attributes) == ("", "", "", {})
    assert row.erased_at is not None
    assert not Membership.objects.filter(contact=contact).exists()
    assert not ContactStatusChange.objects.filter(contact=contact).exists()
    message.refresh_from_db()
    assert message.status == Notification.Status.SENT  # the ledger and its reports stand
    request = MessageRequest.objects.get(pk=message.pk)
    assert (request.personalisation, request.reference) == ({}, "")
    events = {e.type: e for e in Event.objects.filter(notification=message)}
    assert len(events) == 3
    for event in events.values():
        assert (event.ip, event.user_agent, event.payload) == (None, "", None)
    assert events["delivered"].description == ""  # an SMTP answer may quote the address
    assert events["bounced"].description == "Permanent: General"  # our own words
    assert ADDRESS not in str(list(Event.objects.values()))

    assert client.get(f"/api/v1/contacts/{contact.pk}").status_code == 404
    assert client.get("/api/v1/contacts").json()["results"] == []
    assert client.delete(f"/api/v1/contacts/{contact.pk}").status_code == 404
    kept = ErasedAddress.objects.get()
    assert kept.digest == address_digest(ADDRESS) and kept.status == S.BOUNCED


def test_an_erased_suppressed_address_stays_suppressed_wherever_it_comes_back(
    client, admin_client, eager_celery, ses
):
    contact = mailed_contact(status=S.BOUNCED)
    assert contact_erase(contact_id=contact.pk)

    # An upsert (the API), one row of a bulk upsert.
    made = client.post("/api/v1/contacts/upsert", {"email": "Gone@Example.com"}, format="json")
    assert made.status_code == 201 and made.json()["status"] == "bounced"
    Contact.objects.filter(email=ADDRESS).delete()
    bulk = client.post(
        "/api/v1/contacts/bulk",
        {"contacts": [{"email": ADDRESS}, {"email": "new@example.com"}]},
        format="json",
    )
    assert bulk.status_code == 200, bulk.content
    assert Contact.objects.get(email=ADDRESS).status == S.BOUNCED
    assert Contact.objects.get(email="new@example.com").status == S.ACTIVE
    Contact.objects.filter(email=ADDRESS).delete()

    # The CSV import (the admin).
    import_file(admin_client, f"email,first_name\n{ADDRESS},Again\n")
    assert Contact.objects.get(email=ADDRESS).status == S.BOUNCED
    Contact.objects.filter(email=ADDRESS).delete()

    # The admin's form.
    answer = admin_client.post(
        "/admin/campaigns/contact/add/",
        {"email": ADDRESS, "first_name": "", "last_name": "", "time_zone": "", "attributes": "{}"},
    )
    assert answer.status_code == 302, answer.content[:2000]
    assert Contact.objects.get(email=ADDRESS).status == S.BOUNCED
    Contact.objects.filter(email=ADDRESS).delete()

    # A transactional message: accepted, never sent.
    TemplateFactory(slug="receipt", subject="Hi", html="<p>Hi</p>", text="Hi")
    sent = client.post("/api/v1/messages", {"template": "receipt", "to": ADDRESS}, format="json")
    assert sent.status_code == 202, sent.content
    assert Contact.objects.get(email=ADDRESS).status == S.BOUNCED
    assert Notification.objects.get(pk=sent.json()["id"]).status == Notification.Status.SKIPPED
    Notification.objects.filter(pk=sent.json()["id"]).delete()
    Contact.objects.filter(email=ADDRESS).delete()

    # A bulk job's row.
    job = client.post(
        "/api/v1/jobs", {"template": "receipt", "rows": [{"to": ADDRESS}]}, format="json"
    )
    assert job.status_code == 202, job.content
    assert Contact.objects.get(email=ADDRESS).status == S.BOUNCED
    assert ses.messages() == []


def test_an_erased_unsubscribed_contact_never_mailed_is_deleted_and_stays_unsubscribed(client):
    contact = ContactFactory(email=ADDRESS, status=S.UNSUBSCRIBED)
    assert client.delete(f"/api/v1/contacts/{contact.pk}").status_code == 204
    assert not Contact.objects.filter(pk=contact.pk).exists()
    again = client.post("/api/v1/contacts", {"email": ADDRESS}, format="json")
    assert again.json()["status"] == "unsubscribed"


def test_an_active_contact_leaves_nothing_and_forgets_an_earlier_erasure(client):
    ErasedAddress.objects.create(digest=address_digest(ADDRESS), status=S.COMPLAINED)
    contact = ContactFactory(email=ADDRESS)  # (resubscribed since, say)
    assert contact_erase(contact_id=contact.pk)
    assert not ErasedAddress.objects.exists()
    made = client.post("/api/v1/contacts", {"email": ADDRESS}, format="json")
    assert made.json()["status"] == "active"


def test_the_admins_delete_goes_through_the_erase(admin_client):
    one, two = mailed_contact(status=S.COMPLAINED), ContactFactory()
    page = admin_client.get(f"/admin/campaigns/contact/{one.pk}/delete/")
    assert page.status_code == 200
    assert b"protected" not in page.content.lower()  # the ledger does not block it
    answer = admin_client.post(f"/admin/campaigns/contact/{one.pk}/delete/", {"post": "yes"})
    assert answer.status_code == 302
    assert Contact.objects.get(pk=one.pk).erased_at is not None  # emptied, not deleted
    assert ErasedAddress.objects.get().status == S.COMPLAINED
    # The changelist's bulk delete, too; an erased contact is no longer listed.
    three = ContactFactory()
    answer = admin_client.post(
        "/admin/campaigns/contact/",
        {"action": "delete_selected", "_selected_action": [two.pk, three.pk], "post": "yes"},
    )
    assert answer.status_code == 302
    assert not Contact.objects.filter(pk__in=[two.pk, three.pk]).exists()
    listed = admin_client.get("/admin/campaigns/contact/")
    assert b"erased.invalid" not in listed.content


def test_the_sql_digest_is_the_python_digest():
    with connection.cursor() as cursor:
        ErasedAddress.objects.create(digest=address_digest(ADDRESS), status=S.BOUNCED)
        cursor.execute(f"SELECT {new_contact_status_sql('%s::text')}", [ADDRESS])
        assert cursor.fetchone()[0] == S.BOUNCED
        cursor.execute(f"SELECT {new_contact_status_sql('%s::text')}", ["other@example.com"])
        assert cursor.fetchone()[0] == S.ACTIVE


def test_logs_carry_no_address(client, caplog):
    caplog.set_level(logging.DEBUG)
    contact = mailed_contact(status=S.BOUNCED)
    client.post("/api/v1/contacts", {"email": "log1@example.com"}, format="json")
    client.post("/api/v1/contacts/upsert", {"email": "log2@example.com"}, format="json")
    client.post("/api/v1/contacts/bulk", {"contacts": [{"email": "log3@x.com"}]}, format="json")
    client.post(f"/api/v1/contacts/{contact.pk}/unsubscribe", {}, format="json")
    client.post(f"/api/v1/contacts/{contact.pk}/suppress", {"status": "bounced"}, format="json")
    client.delete(f"/api/v1/contacts/{contact.pk}")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "erased" in text  # the erase was logged, by id
    for address in (ADDRESS, "log1@", "log2@", "log3@", "Grace"):
        assert address not in text


def test_renaming_a_contact_to_an_erased_suppressed_address_does_not_lift_it(client, admin_client):
    ErasedAddress.objects.create(digest=address_digest(ADDRESS), status=S.COMPLAINED)
    other = ContactFactory(email="other@example.com")
    answer = client.patch(f"/api/v1/contacts/{other.pk}", {"email": ADDRESS}, format="json")
    assert answer.status_code == 200 and answer.json()["status"] == "complained"
    third = ContactFactory(email="third@example.com")
    form = {"email": ADDRESS.replace("gone", "gone2"), "first_name": "", "last_name": ""}
    ErasedAddress.objects.create(digest=address_digest(form["email"]), status=S.BOUNCED)
    changed = admin_client.post(
        f"/admin/campaigns/contact/{third.pk}/change/",
        {**form, "time_zone": "", "attributes": "{}"},
    )
    assert changed.status_code == 302, changed.content[:2000]
    assert Contact.objects.get(pk=third.pk).status == S.BOUNCED


def test_an_erased_contacts_waiting_rows_end_skipped_and_are_never_sent(client):
    # A row frozen into a campaign but not claimed yet would be claimed later and read the
    # emptied address: the erase ends it skipped, counted in its campaign's report.
    contact = mailed_contact()
    waiting = NotificationFactory(contact=contact)
    other = NotificationFactory()  # another contact's waiting row is left alone
    assert client.delete(f"/api/v1/contacts/{contact.pk}").status_code == 204
    waiting.refresh_from_db()
    assert (waiting.status, waiting.reason) == (Notification.Status.SKIPPED, "contact erased")
    assert campaign_counters(campaign_id=waiting.campaign_id)[CounterName.SKIPPED] == 1
    other.refresh_from_db()
    assert other.status == Notification.Status.CREATED

"""Audiences a marketer can see: list counts, a contact's lists and status, resubscribe with a
recorded reason, typed custom fields, list actions and the export's list-level unsubscribes."""

import csv
import datetime
import io

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns import audiences
from campaigns.models import Contact, ContactStatusChange, CustomField, Membership
from templates_app.render import merge_value
from tests.admin_helpers import EXPORT_URL
from tests.factories import ContactFactory, ContactListFactory

pytestmark = pytest.mark.django_db

S = Contact.Status
T = CustomField.Type
LISTS_URL = "/admin/campaigns/contactlist/"
CONTACTS_URL = "/admin/campaigns/contact/"
MEMBERSHIP_SELECT = 'SELECT "campaigns_membership"."'


def _member(contact_list, *, status=S.ACTIVE, left=False, **kwargs):
    contact = ContactFactory(status=status, **kwargs)
    Membership.objects.create(
        contact_list=contact_list,
        contact=contact,
        unsubscribed_at=timezone.now() if left else None,
    )
    return contact


@pytest.fixture
def mixed_list():
    """A list with 3 subscribed, 2 unsubscribed from it, 1 from all mail, 1 bounced and
    1 complained who also left the list (counted as suppressed: the stronger reason)."""
    contact_list = ContactListFactory(name="Newsletter")
    for _ in range(3):
        _member(contact_list)
    for _ in range(2):
        _member(contact_list, left=True)
    _member(contact_list, status=S.UNSUBSCRIBED)
    _member(contact_list, status=S.BOUNCED)
    _member(contact_list, status=S.COMPLAINED, left=True)
    return contact_list


# -- counts -----------------------------------------------------------------------------------


def test_list_counts_split_members_by_what_the_next_send_does(mixed_list):
    empty = ContactListFactory()
    counts = audiences.list_counts(list_ids=[mixed_list.pk, empty.pk])
    assert counts[mixed_list.pk] == audiences.ListCounts(
        subscribed=3, unsubscribed_list=2, unsubscribed_all=1, suppressed=2
    )
    assert counts[mixed_list.pk].total == 8
    assert counts[empty.pk] == audiences.ListCounts()


def test_the_list_changelist_counts_in_three_queries_whatever_the_number_of_lists(
    admin_client, mixed_list
):
    for _ in range(5):
        other = ContactListFactory()
        _member(other)
    with CaptureQueriesContext(connection) as few:
        response = admin_client.get(LISTS_URL)
    membership_queries = [q for q in few.captured_queries if q["sql"].startswith(MEMBERSHIP_SELECT)]
    assert len(membership_queries) == 3  # grouped over the page's lists, not per list
    page = response.content.decode()
    assert "Unsubscribed from this list" in page and "Bounced or marked as spam" in page
    assert 'class="field-subscribed">3<' in page and 'class="field-suppressed">2<' in page


def test_the_list_page_shows_its_counts(admin_client, mixed_list):
    page = admin_client.get(f"{LISTS_URL}{mixed_list.pk}/change/").content.decode()
    assert '<td data-count="subscribed">3</td>' in page
    assert '<td data-count="unsubscribed_list">2</td>' in page
    assert '<td data-count="unsubscribed_all">1</td>' in page
    assert '<td data-count="suppressed">2</td>' in page


# -- the contact page -------------------------------------------------------------------------


def test_the_contact_page_shows_lists_and_a_read_only_status(admin_client):
    kept = ContactListFactory(name="Kept <b>list</b>")
    left = ContactListFactory(name="Left list")
    contact = ContactFactory()
    Membership.objects.create(contact_list=kept, contact=contact)
    Membership.objects.create(contact_list=left, contact=contact, unsubscribed_at=timezone.now())

    page = admin_client.get(f"{CONTACTS_URL}{contact.pk}/change/").content.decode()
    assert 'name="status"' not in page  # no dropdown
    assert "Kept &lt;b&gt;list&lt;/b&gt;" in page  # escaped
    assert "Unsubscribed from this list on" in page
    assert f"resubscribe/?list={left.pk}" in page
    assert 'id="resubscribe-all"' not in page  # they get mail: nothing to resubscribe


def test_a_forged_status_in_the_form_changes_nothing(admin_client):
    contact = ContactFactory(status=S.UNSUBSCRIBED, email="u@example.com")
    response = admin_client.post(
        f"{CONTACTS_URL}{contact.pk}/change/",
        {"email": "u@example.com", "first_name": "", "last_name": "", "attributes": "{}",
         "status": "active"},
    )  # fmt: skip
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.status == S.UNSUBSCRIBED


def test_the_contact_list_shows_list_level_unsubscribes(admin_client, mixed_list):
    only_left = Contact.objects.filter(membership__unsubscribed_at__isnull=False, status=S.ACTIVE)
    page = admin_client.get(CONTACTS_URL).content.decode()
    assert "Gets mail, but unsubscribed from 1 list" in page
    # The status filter says it in the same words as the column (the status's own labels).
    assert ">Marked an email as spam</a>" in page and ">Complained</a>" not in page
    filtered = admin_client.get(CONTACTS_URL + "?list_unsubscribed=yes").content.decode()
    for contact in only_left:
        assert contact.email in filtered
    subscribed = Contact.objects.filter(membership__unsubscribed_at__isnull=True).first()
    assert subscribed.email not in filtered


# -- resubscribe ------------------------------------------------------------------------------


def test_resubscribe_needs_a_reason_and_records_who_when_why(admin_client, admin_user):
    contact = ContactFactory(status=S.UNSUBSCRIBED)
    url = f"{CONTACTS_URL}{contact.pk}/resubscribe/"
    refused = admin_client.post(url, {"reason": "   "})
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    contact.refresh_from_db()
    assert contact.status == S.UNSUBSCRIBED and not ContactStatusChange.objects.exists()

    done = admin_client.post(url, {"reason": "Asked by <script>email</script> on 3 March"})
    assert done.status_code == 302
    contact.refresh_from_db()
    change = ContactStatusChange.objects.get()
    assert contact.status == S.ACTIVE
    assert (change.user, change.from_status, change.to_status, change.contact_list) == (
        admin_user, S.UNSUBSCRIBED, S.ACTIVE, None,
    )  # fmt: skip
    page = admin_client.get(f"{CONTACTS_URL}{contact.pk}/change/").content.decode()
    assert "Asked by &lt;script&gt;email&lt;/script&gt; on 3 March" in page


def test_a_bounced_contact_needs_the_warning_confirmed(admin_client):
    contact = ContactFactory(status=S.BOUNCED)
    url = f"{CONTACTS_URL}{contact.pk}/resubscribe/"
    page = admin_client.get(url).content.decode()
    assert "sender reputation" in page and 'name="confirm_suppressed"' in page
    refused = admin_client.post(url, {"reason": "They say it works now"})
    assert "tick the box" in refused.content.decode()
    contact.refresh_from_db()
    assert contact.status == S.BOUNCED
    admin_client.post(url, {"reason": "They say it works now", "confirm_suppressed": "on"})
    contact.refresh_from_db()
    assert contact.status == S.ACTIVE


def test_resubscribe_to_one_list_keeps_the_status_for_all_mail(admin_client):
    contact_list = ContactListFactory()
    contact = _member(contact_list, left=True)
    url = f"{CONTACTS_URL}{contact.pk}/resubscribe/?list={contact_list.pk}"
    assert admin_client.post(url, {"reason": "Phoned us"}).status_code == 302
    membership = Membership.objects.get()
    assert membership.unsubscribed_at is None
    assert ContactStatusChange.objects.get().list_name == contact_list.name
    with pytest.raises(audiences.ResubscribeError):
        audiences.membership_resubscribe(
            contact=contact, contact_list=contact_list, user=None, reason="again"
        )


def test_resubscribe_services_refuse_without_a_reason_or_an_active_contact():
    active = ContactFactory()
    with pytest.raises(audiences.ResubscribeError, match="already"):
        audiences.contact_resubscribe(contact=active, user=None, reason="x")
    left = ContactFactory(status=S.UNSUBSCRIBED)
    with pytest.raises(audiences.ResubscribeError, match="Say why"):
        audiences.contact_resubscribe(contact=left, user=None, reason="")


# -- typed custom fields ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "raw", "stored"),
    [
        (T.TEXT, "  London ", "London"),
        (T.TEXT, "=1+1", "=1+1"),  # stored as typed; the export escapes it
        (T.NUMBER, "42", 42),
        (T.NUMBER, "3.50", 3.5),
        (T.NUMBER, "-1 000", -1000),
        (T.NUMBER, 7, 7),
        (T.DATE, "2025-03-31", "2025-03-31"),
        (T.DATE, datetime.date(2025, 1, 2), "2025-01-02"),
        (T.YES_NO, "Yes", True),
        (T.YES_NO, "no", False),
        (T.YES_NO, False, False),
        (T.TEXT, "", None),
        (T.NUMBER, "  ", None),
    ],
)
def test_custom_field_value_stores_the_canonical_form(kind, raw, stored):
    field = CustomField(name="f", label="F", type=kind)
    assert audiences.custom_field_value(field, raw) == stored
    assert type(audiences.custom_field_value(field, raw)) is type(stored)


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        (T.NUMBER, "1,5", "a point for decimals"),
        (T.NUMBER, "NaN", "a number"),
        (T.NUMBER, "1e999", "too large"),
        (T.NUMBER, "9" * 16, "too large"),
        (T.NUMBER, True, "not yes/no"),
        (T.DATE, "31/03/2025", "year-month-day"),
        (T.DATE, "2025-02-30", "year-month-day"),
        (T.YES_NO, "maybe", "yes or no"),
        (T.TEXT, "Line\r\nBcc: x@example.com", "control character"),
        (T.TEXT, "x" * 1001, "at most 1000"),
        (T.TEXT, ["a"], "holds text"),
    ],
)
def test_custom_field_value_refuses_with_the_reason(kind, raw, reason):
    field = CustomField(name="f", label="F", type=kind)
    with pytest.raises(ValidationError, match=reason):
        audiences.custom_field_value(field, raw)


def test_stored_values_render_sensibly_in_templates():
    assert merge_value(audiences.custom_field_value(CustomField(type=T.DATE), "2025-03-31")) == (
        "2025-03-31"
    )
    assert merge_value(audiences.custom_field_value(CustomField(type=T.NUMBER), "3.50")) == "3.5"
    assert merge_value(audiences.custom_field_value(CustomField(type=T.YES_NO), "yes")) == "true"
    assert merge_value(audiences.custom_field_value(CustomField(type=T.YES_NO), "no")) == ""


def test_a_custom_field_name_must_work_in_templates(admin_client):
    response = admin_client.post(
        "/admin/campaigns/customfield/add/", {"name": "First Name", "label": "x", "type": "text"}
    )
    assert "lower-case letters" in response.content.decode()
    admin_client.post(
        "/admin/campaigns/customfield/add/", {"name": "email", "label": "x", "type": "text"}
    )
    assert not CustomField.objects.exists()


def test_the_contact_form_has_one_typed_field_per_declared_field(admin_client):
    CustomField.objects.create(name="city", label="City", type=T.TEXT)
    CustomField.objects.create(name="orders", label="Orders", type=T.NUMBER)
    CustomField.objects.create(name="birthday", label="Birthday", type=T.DATE)
    CustomField.objects.create(name="vip", label="VIP", type=T.YES_NO)
    contact = ContactFactory(
        email="ada@example.com",
        attributes={"city": "Paris", "orders": 2, "legacy": "kept", "vip": True},
    )
    url = f"{CONTACTS_URL}{contact.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="custom__birthday"' in page and 'type="date"' in page
    assert '<option value="yes" selected>' in page
    assert "&quot;legacy&quot;: &quot;kept&quot;" in page  # undeclared: still shown
    assert "&quot;city&quot;" not in page  # declared: in its own field, not in the JSON

    form = {
        "email": "ada@example.com", "first_name": "Ada", "last_name": "",
        "attributes": '{"legacy": "kept"}', "custom__city": "London", "custom__orders": "12",
        "custom__birthday": "1815-12-10", "custom__vip": "no",
    }  # fmt: skip
    assert admin_client.post(url, form).status_code == 302
    contact.refresh_from_db()
    assert contact.attributes == {
        "legacy": "kept", "city": "London", "orders": 12, "birthday": "1815-12-10", "vip": False,
    }  # fmt: skip

    bad = admin_client.post(url, {**form, "custom__orders": "twelve", "custom__city": "A\nB"})
    text = bad.content.decode()
    assert bad.status_code == 200
    assert "“Orders” is a number" in text and "control character" in text
    contact.refresh_from_db()
    assert contact.attributes["orders"] == 12  # nothing changed

    admin_client.post(url, {**form, "custom__city": ""})
    contact.refresh_from_db()
    assert "city" not in contact.attributes  # emptied: removed, not stored as ""


# -- list actions -----------------------------------------------------------------------------


def _staff(*perms: str) -> Client:
    user = User.objects.create_user(username="staff", password="x", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


def _action(client, action, contacts, contact_list=None):
    data = {"action": action, "_selected_action": [c.pk for c in contacts]}
    if contact_list is None:
        data["index"] = "0"
    else:
        data |= {"apply": "yes", "contact_list": contact_list.pk}
    return client.post(CONTACTS_URL, data)


def test_add_and_remove_from_a_list_keep_the_unsubscribe_record(admin_client):
    contact_list = ContactListFactory(name="Newsletter")
    left = _member(contact_list, left=True)
    member = _member(contact_list)
    new = ContactFactory()

    page = _action(admin_client, "add_to_list", [left, member, new]).content.decode()
    assert "Add the 3 selected contacts to a list" in page and 'name="contact_list"' in page
    assert Membership.objects.count() == 2  # the intermediate page changed nothing

    done = _action(admin_client, "add_to_list", [left, member, new], contact_list)
    assert done.status_code == 302
    assert Membership.objects.filter(unsubscribed_at__isnull=True).count() == 2
    assert Membership.objects.get(contact=left).unsubscribed_at is not None  # still left

    _action(admin_client, "remove_from_list", [left, member, new], contact_list)
    logged = LogEntry.objects.filter(object_id=str(contact_list.pk)).order_by("pk")
    assert [e.change_message for e in logged] == ["Added 1 contacts.", "Removed 2 contacts."]
    assert list(Membership.objects.values_list("contact_id", flat=True)) == [left.pk]
    _action(admin_client, "add_to_list", [left], contact_list)
    assert Membership.objects.get(contact=left).unsubscribed_at is not None


def test_list_actions_need_the_change_permission_on_lists():
    contact_list = ContactListFactory()
    contact = ContactFactory()
    viewer = _staff("campaigns.view_contact", "campaigns.change_contact")
    page = viewer.get(CONTACTS_URL).content.decode()
    assert "add_to_list" not in page
    _action(viewer, "add_to_list", [contact], contact_list)
    assert not Membership.objects.exists()

    User.objects.get(username="staff").user_permissions.add(
        Permission.objects.get(codename="change_contactlist")
    )
    assert "add_to_list" in viewer.get(CONTACTS_URL).content.decode()
    _action(viewer, "add_to_list", [contact], contact_list)
    assert Membership.objects.filter(contact=contact).exists()


def test_resubscribe_needs_the_change_permission():
    contact = ContactFactory(status=S.UNSUBSCRIBED)
    viewer = _staff("campaigns.view_contact")
    url = f"{CONTACTS_URL}{contact.pk}/resubscribe/"
    assert viewer.post(url, {"reason": "x"}).status_code == 403
    page = viewer.get(f"{CONTACTS_URL}{contact.pk}/change/").content.decode()
    assert "resubscribe" not in page.lower().replace("resubscribed by hand", "")
    contact.refresh_from_db()
    assert contact.status == S.UNSUBSCRIBED


# -- export -----------------------------------------------------------------------------------


def test_the_export_names_the_lists_a_contact_unsubscribed_from(admin_client):
    alpha, beta, formula = (ContactListFactory(name=n) for n in ("Alpha", "Beta", "=HYPERLINK"))
    contact = ContactFactory(email="left@example.com")
    for contact_list in (alpha, beta):
        Membership.objects.create(
            contact_list=contact_list, contact=contact, unsubscribed_at=timezone.now()
        )
    other = _member(formula, left=True, email="other@example.com")
    ContactFactory(email="stays@example.com")

    fields = ("email", "status", "unsubscribed_from_lists")
    data = {"format": "0", "resource": "0", **{f"contactresource_{f}": "on" for f in fields}}
    with CaptureQueriesContext(connection) as export:
        response = admin_client.post(EXPORT_URL, data)
    lists_read = [q for q in export.captured_queries if q["sql"].startswith(MEMBERSHIP_SELECT)]
    assert len(lists_read) == 1  # for the whole chunk, not per contact
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == list(fields)
    by_email = {row[0]: row for row in rows[1:]}
    assert by_email["left@example.com"] == ["left@example.com", "active", "Alpha; Beta"]
    assert by_email[other.email][2] == "'=HYPERLINK"
    assert by_email["stays@example.com"][2] == ""


def test_view_only_and_add_pages_work_with_declared_fields(admin_client):
    CustomField.objects.create(name="city", label="City <i>", type=T.TEXT)
    CustomField.objects.create(name="orders", label="Orders", type=T.NUMBER)
    contact = ContactFactory(attributes={"city": "Paris"})
    viewer = _staff("campaigns.view_contact")
    page = viewer.get(f"{CONTACTS_URL}{contact.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "&quot;city&quot;: &quot;Paris&quot;" in text and "None" not in text
    assert (
        "City &lt;i&gt;" in admin_client.get(f"{CONTACTS_URL}{contact.pk}/change/").content.decode()
    )

    response = admin_client.post(
        f"{CONTACTS_URL}add/",
        {"email": "new@example.com", "first_name": "", "last_name": "", "attributes": "{}",
         "custom__city": "Oslo", "custom__orders": "3"},
    )  # fmt: skip
    assert response.status_code == 302
    new = Contact.objects.get(email="new@example.com")
    assert (new.status, new.attributes) == (S.ACTIVE, {"city": "Oslo", "orders": 3})

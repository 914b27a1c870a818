"""The contact import (campaigns.imports and its admin pages): detection, column matching,
the check's counts and refused lines, the error file, add-only vs update, never a
resubscription, lists, permissions; and the contact form's rules, the same as the import's."""

import codecs
import csv
import html
import io

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns import contact_upsert, imports
from campaigns.models import Contact, ContactList, CustomField, ImportJob, Membership
from tests.admin_helpers import (
    IMPORT_URL,
    check,
    checked,
    import_file,
    job_url,
    mapping_data,
    start,
    upload,
    uploaded,
)
from tests.factories import ContactFactory, ContactListFactory

pytestmark = pytest.mark.django_db

# Addresses Django's EmailValidator accepts that the sender cannot send (SES takes no control
# characters, no quoted local parts with two dots, no non-IDNA domains).
UNSENDABLE = {
    '"a\x01b"@example.com': "control character",
    "user@☃.com": "The part after the @-sign is invalid",
    '"john..doe"@example.com': "Quoting the part before the @-sign is not allowed",
}


def _csv(rows: list[list[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n", delimiter=delimiter).writerows(rows)
    return out.getvalue()


def _page(response) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def _reasons(job: ImportJob) -> dict[int, str]:
    return dict(job.row_errors.values_list("line", "reason"))


# -- reading the file -------------------------------------------------------------------------

MAILCHIMP = (
    '"Email Address","First Name","Last Name","Address","Phone Number",MEMBER_RATING,'
    "OPTIN_TIME,TAGS\n"
    '"ada@example.com","Ada","Lovelace","12 St James\'s Sq, London","+44 20 7946",2,'
    '"2024-01-02 10:00:00","vip"\n'
)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("email;first_name\nzoe@example.com;Zoë\n".encode(), "UTF-8"),
        (codecs.BOM_UTF8 + "email;first_name\nzoe@example.com;Zoë\n".encode(), "UTF-8"),
        ("email;first_name\nzoe@example.com;Zoë\n".encode("utf-16"), "UTF-16"),
        ("email;first_name\nzoe@example.com;Zoë\n".encode("cp1252"), "Windows-1252"),
    ],
)
def test_the_encoding_and_the_delimiter_are_detected(admin_client, data, encoding):
    job = uploaded(admin_client, data)
    assert (job.encoding, job.delimiter) == (encoding, ";")
    page = _page(admin_client.get(job_url(job)))
    assert f"read as {encoding} text, columns separated by semicolons" in page
    assert "Zoë" in page  # a sample value, decoded


def test_tabs_and_a_chosen_delimiter(admin_client):
    assert uploaded(admin_client, "email\tfirst name\na@example.com\tA\n").delimiter == "\t"
    # One column: nothing to sniff; the marketer's choice wins over the guess.
    assert uploaded(admin_client, "email\na@example.com\n").delimiter == ","
    job = uploaded(admin_client, "email,name\na@example.com,A;B\n", delimiter=";")
    assert job.delimiter == ";"


def test_a_mailchimp_export_is_matched_by_its_header_names(admin_client):
    job = uploaded(admin_client, MAILCHIMP)
    assert [entry["to"] for entry in job.mapping] == [
        "email", "first_name", "last_name", "custom", "custom", "custom", "custom", "custom",
    ]  # fmt: skip
    assert job.mapping[4]["name"] == "phone_number"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("EMAIL,FNAME,LNAME", ["email", "first_name", "last_name"]),
        ("E-mail, given name ,Family_Name", ["email", "first_name", "last_name"]),
        (
            "e_mail,firstname,surname,id,status",
            ["email", "first_name", "last_name", "skip", "skip"],
        ),
        ("email,email,1st", ["email", "custom", "skip"]),  # the second: a custom field to rename
    ],
)
def test_common_headers_are_matched_in_any_case_and_spacing(header, expected):
    assert [entry["to"] for entry in imports.mapping_guess(header.split(","))] == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The submitted file is empty"),
        (b",,\n,,\n", "The file is empty"),
        (b"email,first_name\n", "The file has no rows below its first line"),
        (b"PK\x03\x04\x00\x00\x08\x00binary\x00\x00", "This is not a CSV file"),
    ],
)
def test_files_that_cannot_be_imported_are_refused_with_the_reason(admin_client, content, message):
    page = _page(upload(admin_client, content))
    assert message in page and "Traceback" not in page
    assert not ImportJob.objects.exists()


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(admin_client, settings):
    settings.CONTACT_IMPORT_MAX_MB = 1
    content = "email\n" + "".join(f"person{i:07d}@example.com\n" for i in range(40_000))
    page = _page(upload(admin_client, content))
    assert "an import takes at most 1 MB (CONTACT_IMPORT_MAX_MB)" in page
    assert not ImportJob.objects.exists()


# -- matching columns -------------------------------------------------------------------------


def test_a_file_without_an_email_column_asks_for_one(admin_client, eager_celery):
    job = uploaded(admin_client, "name,city\nAda,London\n")
    page = _page(check(admin_client, job))
    assert "Choose which column holds the email address." in page
    job.refresh_from_db()
    assert job.status == ImportJob.Status.MAPPING
    check(admin_client, job, to_0="email")  # "name" holds the addresses, say
    job.refresh_from_db()
    assert (job.status, job.error_count) == (ImportJob.Status.CHECKED, 1)


def test_two_columns_filling_one_field_are_refused(admin_client, eager_celery):
    job = uploaded(admin_client, "email,City,city\na@example.com,x,y\n")
    page = _page(check(admin_client, job, to_2="custom", name_2="City"))
    assert "The columns “City” and “city” would both fill “city”: skip one of them." in page
    page = _page(check(admin_client, job, to_1="first_name", to_2="first_name"))
    assert "would both fill “first_name”" in page
    assert not Contact.objects.exists()


# -- the check ---------------------------------------------------------------------------------


def test_the_check_counts_and_lists_every_refused_line_and_writes_nothing(
    admin_client, eager_celery
):
    ContactFactory(email="same@example.com", first_name="Same")
    ContactFactory(email="old@example.com", first_name="Old")
    rows = [["Email Address", "First Name", "City"],
            ["new@example.com", "New", ""],  # line 2
            ["SAME@example.com", "Same", ""],  # 3: unchanged
            ["old@example.com", "Renamed", ""],  # 4: updated
            ["not-an-email", "Bad", ""],  # 5
            ["new@example.com", "Again", ""],  # 6: repeats line 2
            ["crlf@example.com", "Ada\r\nBcc: victim@example.com", ""],  # 7-8
            ["tab@example.com", "Tab\there", ""],  # 9
            ["city@example.com", "", "Lon\u2028don"]]  # fmt: skip
    rows += [[address, "Someone", ""] for address in UNSENDABLE]  # 11, 12, 13
    content = _csv(rows) + "ragged@example.com,too,many,cells\n"  # 14
    job = checked(admin_client, content, existing="update")

    assert (job.total_rows, job.new_count, job.updated_count, job.unchanged_count) == (12, 1, 1, 1)
    assert (job.error_count, job.duplicate_count) == (8, 1)
    reasons = _reasons(job)
    assert reasons[5] == "An email address must have an @-sign."
    assert (
        reasons[6] == "Line 6 repeats the address of line 2: line 2 is imported, this line is not."
    )
    assert reasons[7].startswith("The first name contains a control character")
    assert reasons[9].startswith("The first name contains a control character")
    assert reasons[10].startswith("The custom field “city” contains a control character")
    for line, reason in zip((11, 12, 13), UNSENDABLE.values(), strict=True):
        assert reason in reasons[line]
    assert reasons[14] == "This row has 4 cells but the first line names 3."
    assert Contact.objects.count() == 2  # a dry run
    assert Contact.objects.get(email="old@example.com").first_name == "Old"

    page = _page(admin_client.get(job_url(job)))
    assert "Import 3 contacts" in page  # new, updated and unchanged rows
    for line, reason in reasons.items():
        assert f"<td>{line}</td><td>{reason}</td>" in page


def test_broken_quotes_and_multi_line_cells_report_the_line_a_row_starts_on(
    admin_client, eager_celery
):
    content = (
        'email,first_name\na@example.com,"Two\nlines"\nb@example.com,"Ok"\nbad,X\n'
        'c@example.com,"Ada"x\nd@example.com,"Gr\ne@example.com,E\n'
    )
    reasons = _reasons(checked(admin_client, content))
    assert reasons[2].startswith("The first name contains a control character")
    assert reasons[5] == "An email address must have an @-sign."
    assert reasons[6].startswith("A quote inside a cell")
    assert reasons[7].startswith("A cell opens a quote that is never closed")


def test_the_error_file_holds_each_refused_row_formula_safe(admin_client, eager_celery):
    content = "email,first_name\n=cmd|' /C calc'!A0,=HYPERLINK(\"x\")\nok@example.com,Ok\n"
    content += "OK@example.com,+again\n"
    job = checked(admin_client, content)
    response = admin_client.get(job_url(job, "errors.csv"))
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["Line", "Reason", "email", "first_name"]
    assert rows[1][0] == "2" and rows[1][2:] == ["'=cmd|' /C calc'!A0", '\'=HYPERLINK("x")']
    assert rows[2][:2] == ["4", "Line 4 repeats the address of line 3: line 3 is imported, "
                                "this line is not."]  # fmt: skip
    assert rows[2][2:] == ["OK@example.com", "'+again"]
    assert len(rows) == 3


def test_refused_rows_are_paginated(admin_client, eager_celery):
    content = "email\n" + "".join(f"bad{i}\n" for i in range(250))
    job = checked(admin_client, content)
    page = _page(admin_client.get(job_url(job) + "?page=3"))
    assert "page 3 of 3" in page and "<td>251</td>" in page and "<td>2</td>" not in page


# -- the import --------------------------------------------------------------------------------


@pytest.fixture(params=["upsert", "orm"])
def writer(request, monkeypatch):
    """Each write test runs with PostgreSQL's one-statement upsert and with the ORM writes the
    demo's SQLite takes: both must leave the same contacts and counts."""
    if request.param == "orm":
        monkeypatch.setattr(contact_upsert, "_upsert_pg", contact_upsert._upsert_portable)
    return request.param


def test_add_only_leaves_existing_contacts_as_they_are(admin_client, eager_celery, writer):
    ContactFactory(email="ada@example.com", first_name="Ada", attributes={"city": "Paris"})
    job, response = import_file(
        admin_client,
        "email,first_name,city\nada@example.com,Changed,Rome\nb@example.com,B,\n",
        update=False,
    )
    assert response.status_code == 302
    assert (job.status, job.new_count, job.updated_count, job.unchanged_count) == ("done", 1, 0, 1)
    ada = Contact.objects.get(email="ada@example.com")
    assert (ada.first_name, ada.attributes) == ("Ada", {"city": "Paris"})
    assert Contact.objects.get(email="b@example.com").attributes == {}


def test_update_changes_names_and_custom_fields_but_empty_cells_erase_nothing(
    admin_client, eager_celery, writer
):
    ContactFactory(email="ada@example.com", first_name="Ada", last_name="L",
                   attributes={"city": "Paris", "plan": "pro"})  # fmt: skip
    job, _ = import_file(
        admin_client, "email,first_name,last_name,city\nADA@example.com,,Lovelace,Rome\n"
    )
    assert (job.new_count, job.updated_count) == (0, 1)
    ada = Contact.objects.get()
    assert (ada.first_name, ada.last_name) == ("Ada", "Lovelace")
    assert ada.attributes == {"city": "Rome", "plan": "pro"}


def test_an_import_never_resubscribes_anybody(admin_client, eager_celery, writer):
    gone = ContactFactory(email="gone@example.com", status=Contact.Status.UNSUBSCRIBED)
    left = ContactFactory(email="left@example.com")
    newsletter = ContactListFactory(name="Newsletter")
    Membership.objects.create(contact_list=newsletter, contact=left, unsubscribed_at=timezone.now())
    content = "email,first_name,status\ngone@example.com,G,active\nleft@example.com,L,active\n"
    job, _ = import_file(admin_client, content, newsletter)
    assert job.updated_count == 2
    gone.refresh_from_db()
    assert (gone.status, gone.first_name) == (Contact.Status.UNSUBSCRIBED, "G")
    assert Membership.objects.get(contact=left).unsubscribed_at is not None
    assert Membership.objects.filter(contact=gone, contact_list=newsletter).exists()


def test_a_time_zone_column_fills_the_contacts_time_zone(admin_client, eager_celery, writer):
    ContactFactory(email="ada@example.com", time_zone="Europe/London")
    content = (
        "email,Time Zone\nada@example.com,Asia/Tokyo\nb@example.com,\nc@example.com,Mars/Base\n"
    )
    job, _ = import_file(admin_client, content)
    assert (job.new_count, job.updated_count, job.error_count) == (1, 1, 1)
    assert "Line 4" in _reasons(job)[4] or "Mars/Base" in _reasons(job)[4]
    zones = dict(Contact.objects.values_list("email", "time_zone"))
    assert zones == {"ada@example.com": "Asia/Tokyo", "b@example.com": ""}


def test_a_declared_custom_field_takes_its_type(admin_client, eager_celery, writer):
    CustomField.objects.create(name="age", label="Age", type=CustomField.Type.NUMBER)
    CustomField.objects.create(name="vip", label="VIP", type=CustomField.Type.YES_NO)
    content = "email,age,vip,city\na@example.com,42,yes,Rome\nb@example.com,forty,no,Oslo\n"
    job, _ = import_file(admin_client, content)
    assert (job.new_count, job.error_count) == (1, 1)
    assert "Age" in _reasons(job)[3]
    assert Contact.objects.get().attributes == {"age": 42, "vip": True, "city": "Rome"}


def test_a_mailchimp_export_imports_into_a_new_list(admin_client, eager_celery):
    job = uploaded(admin_client, MAILCHIMP)
    check(admin_client, job, new_list_name="From Mailchimp")
    start(admin_client, job)
    job.refresh_from_db()
    assert (job.status, job.new_count) == (ImportJob.Status.DONE, 1)
    ada = Contact.objects.get()
    assert (ada.first_name, ada.last_name) == ("Ada", "Lovelace")
    assert ada.attributes["phone_number"] == "+44 20 7946"
    assert ada.attributes["address"] == "12 St James's Sq, London"
    assert list(ContactList.objects.get(name="From Mailchimp").contacts.all()) == [ada]
    page = _page(admin_client.get(job_url(job)))
    assert "Imported" in page and "From Mailchimp" in page


def test_a_new_list_name_already_taken_is_refused(admin_client, eager_celery):
    ContactListFactory(name="News")
    job = uploaded(admin_client, "email\na@example.com\n")
    page = _page(check(admin_client, job, new_list_name="news"))
    assert "A list has this name already" in page
    assert ContactList.objects.count() == 1


def test_an_import_lands_in_the_admin_log_once_with_its_counts_and_ids(admin_client, eager_celery):
    newsletter = ContactListFactory()
    import_file(admin_client, "email\na@example.com\nb@example.com\nbad\n", newsletter)
    entry = LogEntry.objects.get()
    assert entry.change_message == (
        "Imported contacts: 2 new, 0 updated, 0 unchanged, 1 refused; "
        f"added to list #{newsletter.pk}."
    )
    assert "@" not in entry.change_message + entry.object_repr


def test_a_job_whose_worker_died_is_stopped_and_restarts_where_it_stopped(
    admin_client, eager_celery, monkeypatch
):
    monkeypatch.setattr(imports, "CHUNK", 2)
    content = "email\n" + "".join(f"p{i}@example.com\n" for i in range(5))
    job = checked(admin_client, content)
    # A worker wrote the first chunk and died: the job is importing, its lease ran out.
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.IMPORTING)
    ContactFactory(email="p0@example.com")
    ContactFactory(email="p1@example.com")
    ImportJob.objects.filter(pk=job.pk).update(
        processed_rows=2, new_count=2, leased_until=timezone.now()
    )
    page = _page(admin_client.get(job_url(job)))
    assert "The background worker stopped working on this import" in page
    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    start(admin_client, job)
    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.new_count, job.unchanged_count) == (
        ImportJob.Status.DONE, 5, 5, 0,
    )  # fmt: skip
    assert Contact.objects.count() == 5


def test_a_check_whose_worker_died_restarts_as_a_check(admin_client, eager_celery):
    job = uploaded(admin_client, "email\na@example.com\nb@example.com\n")
    # The check was enqueued and its worker died before it finished.
    with TestCase.captureOnCommitCallbacks(execute=False):
        admin_client.post(job_url(job), mapping_data(job))
    ImportJob.objects.filter(pk=job.pk).update(processed_rows=1, leased_until=timezone.now())
    assert "The background worker stopped" in _page(admin_client.get(job_url(job)))
    start(admin_client, job)
    job.refresh_from_db()
    assert (job.status, job.total_rows, job.new_count) == (ImportJob.Status.CHECKED, 2, 2)
    assert not Contact.objects.exists()


def test_the_sweep_stops_a_job_no_worker_holds(admin_client, eager_celery):
    from campaigns.sweeper import campaigns_sweep

    job = checked(admin_client, "email\na@example.com\n")
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.IMPORTING, leased_until=timezone.now()
    )
    campaigns_sweep()
    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    assert job.status_reason.startswith("The background worker stopped")


def test_import_logs_carry_ids_not_addresses(admin_client, eager_celery, caplog):
    caplog.set_level("DEBUG")
    import_file(admin_client, "email,first_name\nsecret.person@example.com,Secretname\nbad\n")
    assert "secret.person" not in caplog.text and "Secretname" not in caplog.text
    assert "contact import" in caplog.text


def test_progress_is_a_small_json(admin_client, eager_celery):
    job, _ = import_file(admin_client, "email\na@example.com\n")
    data = admin_client.get(job_url(job, "progress.json")).json()
    assert data == {"status": "done", "processed": 1, "total": 1, "new": 1, "updated": 0,
                    "unchanged": 0}  # fmt: skip


def test_the_progress_poll_does_not_read_the_file(admin_client, eager_celery):
    job = checked(admin_client, "email\na@example.com\n")
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(job_url(job, "progress.json")).status_code == 200
    job_reads = [q["sql"] for q in queries.captured_queries if "campaigns_importjob" in q["sql"]]
    assert job_reads and not any('"data"' in sql for sql in job_reads)


# -- permissions -------------------------------------------------------------------------------


def _staff(*codenames: str) -> User:
    user = User.objects.create_user("staff", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def test_importing_needs_add_and_change_contact(client):
    client.force_login(_staff("view_contact", "add_contact"))
    assert client.get(IMPORT_URL).status_code == 403
    assert upload(client, "email\na@example.com\n").status_code == 403
    assert "/import/" not in client.get("/admin/campaigns/contact/").content.decode()


def test_lists_need_their_own_permissions(client, eager_celery):
    client.force_login(_staff("add_contact", "change_contact", "view_contact"))
    newsletter = ContactListFactory()
    assert (
        'href="/admin/campaigns/contact/import/"'
        in client.get("/admin/campaigns/contact/").content.decode()
    )
    job = uploaded(client, "email\na@example.com\n")
    page = _page(client.get(job_url(job)))
    assert 'name="contact_list"' not in page and 'name="new_list_name"' not in page
    # A forged field is ignored: the form has none.
    check(client, job, contact_list=newsletter.pk, new_list_name="Forged")
    job.refresh_from_db()
    assert (job.contact_list_id, ContactList.objects.count()) == (None, 1)


def test_the_import_pages_need_csrf(admin_user, eager_celery):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert upload(client, "email\na@example.com\n").status_code == 403
    job = ImportJob.objects.create(
        data=b"email\na@example.com\n", encoding="UTF-8", delimiter=",",
        mapping=[{"to": "email", "name": ""}],
    )  # fmt: skip
    assert client.post(job_url(job), mapping_data(job)).status_code == 403


# -- the contact form -------------------------------------------------------------------------

ADD_URL = "/admin/campaigns/contact/add/"


def _contact_form(**overrides) -> dict:
    return {"email": "ada@example.com", "first_name": "Ada", "last_name": "", "attributes": "{}",
            "status": "active", **overrides}  # fmt: skip


@pytest.mark.parametrize("address", list(UNSENDABLE))
def test_the_contact_form_refuses_unsendable_addresses(admin_client, address):
    page = _page(admin_client.post(ADD_URL, _contact_form(email=address)))
    assert UNSENDABLE[address] in page
    assert not Contact.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("first_name", "Ada\r\nBcc: x@example.com", "The first name contains a control character"),
        ("last_name", "Love\x00lace", "Null characters are not allowed."),
        ("attributes", '{"city": "Lon\\ndon"}', "The custom field “city” contains a control"),
        ("attributes", '{"city": {"nested": ["deep"]}}', "must be text or a number, not a list"),
        ("attributes", '["not", "an", "object"]', "Custom fields must be an object"),
    ],
)
def test_the_contact_form_refuses_control_characters_and_nesting(
    admin_client, field, value, message
):
    page = _page(admin_client.post(ADD_URL, _contact_form(**{field: value})))
    assert message in page
    assert not Contact.objects.exists()


def test_the_contact_form_stores_the_address_as_the_sender_sends_it(admin_client):
    response = admin_client.post(ADD_URL, _contact_form(email=" Ada@Bücher.Example "))
    assert response.status_code == 302
    assert Contact.objects.get().email == "ada@xn--bcher-kva.example"

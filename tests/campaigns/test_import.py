"""The contact import and the contact form: one address rule and one text rule at every entry,
each refusal with its line and reason, nothing written from a file with a bad row."""

import csv
import html
import io
import tempfile

import pytest
from django.contrib.admin.models import ADDITION, LogEntry

from campaigns.models import Contact
from tests.admin_helpers import CONFIRM_URL, IMPORT_URL, hidden_inputs, import_file, upload
from tests.factories import ContactFactory, ContactListFactory

pytestmark = pytest.mark.django_db

# Addresses Django's EmailValidator accepts that the sender cannot send (SES takes no control
# characters, no quoted local parts with two dots, no non-IDNA domains).
UNSENDABLE = {
    '"a\x01b"@example.com': "control character",
    "user@☃.com": "The part after the @-sign is invalid",
    '"john..doe"@example.com': "Quoting the part before the @-sign is not allowed",
}


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _page(response) -> str:
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_unsendable_addresses_and_names_with_line_breaks_are_refused_with_lines(admin_client):
    rows = [["email", "first_name", "last_name"], ["ok@example.com", "Ok", ""]]
    rows += [[address, "Someone", ""] for address in UNSENDABLE]  # lines 3, 4, 5
    rows.append(["crlf@example.com", "Ada\r\nBcc: victim@example.com", ""])  # lines 6-7
    rows.append(["lf@example.com", "Grace", "Hop\nper"])  # lines 8-9
    rows.append(["tab@example.com", "Tab\there", ""])  # line 10
    page = _page(upload(admin_client, _csv(rows), ContactListFactory()))

    for line, reason in zip((3, 4, 5), UNSENDABLE.values(), strict=True):
        assert f"Line {line}: " in page and reason in page
    assert "Line 6: The first name contains a control character" in page
    assert "Line 8: The last name contains a control character" in page
    assert "Line 10: The first name contains a control character" in page
    assert "Confirm import" not in page
    assert not Contact.objects.exists()


def test_the_same_address_twice_in_a_file_is_reported_with_both_lines(admin_client):
    content = "email,first_name\nada@example.com,Ada\ngrace@example.com,Grace\nADA@Example.com,A\n"
    page = _page(upload(admin_client, content))
    assert "Line 4: the same address as line 2" in page
    assert "Confirm import" not in page
    assert not Contact.objects.exists()


def test_custom_field_values_with_control_characters_are_refused(admin_client):
    content = _csv(
        [["email", "City"], ["a@example.com", "Lon\x00don"], ["b@example.com", "Ro\u2028me"]]
    )
    page = _page(upload(admin_client, content))
    assert "Line 2: The custom field “city” contains a control character" in page
    assert "Line 3: The custom field “city” contains a control character" in page
    assert not Contact.objects.exists()


def test_a_name_longer_than_the_field_is_refused_with_its_line(admin_client):
    page = _page(upload(admin_client, f"email,last_name\na@example.com,{'x' * 101}\n"))
    assert "Line 2: The last name has 101 characters; at most 100 are allowed." in page
    assert not Contact.objects.exists()


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("email,first_name,Email", "The columns “email” and “Email” would both fill “email”"),
        ("email,City,city ", "The columns “City” and “city” would both fill “city”"),
        ("email,2nd phone", "The column “2nd phone” cannot become a custom field"),
        ("email,_line", "The column name “_line” is reserved"),
        ("name,city", "The file has no “email” column"),
        (",,", "The file is empty"),
    ],
)
def test_a_first_line_that_would_lose_data_is_refused_with_the_reason(
    admin_client, header, message
):
    page = _page(upload(admin_client, f"{header}\na@example.com,x,y\n"))
    assert message in page
    assert "Traceback" not in page
    assert not Contact.objects.exists()


def test_a_value_in_an_unnamed_column_is_refused_not_dropped(admin_client):
    page = _page(
        upload(admin_client, "email,,city\na@example.com,,Paris\nb@example.com,lost,Rome\n")
    )
    assert "Line 3: a value in a column whose name is empty in the first line." in page
    assert "Line 2:" not in page  # an empty cell in the unnamed column is fine
    assert not Contact.objects.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('email,first_name\na@example.com,"Ada"x\n', "Line 2: a quote inside a cell"),
        (
            'email,first_name\na@example.com,Ada\nb@example.com,"Gr\nc@example.com,C\n',
            "Line 3: a cell opens a quote that is never closed.",
        ),
    ],
)
def test_malformed_csv_is_an_error_with_its_line_not_a_500(admin_client, content, message):
    page = _page(upload(admin_client, content))
    assert message in page
    assert not Contact.objects.exists()


def test_a_multi_line_cell_reports_the_line_its_row_starts_on(admin_client):
    content = 'email,first_name\na@example.com,"Two\nlines"\nb@example.com,"Ok"\nbad,X\n'
    page = _page(upload(admin_client, content))
    assert "Line 2: The first name contains a control character" in page
    assert "Line 5: An email address must have an @-sign." in page


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(admin_client, settings):
    settings.CONTACT_IMPORT_MAX_MB = 1
    content = "email\n" + "".join(f"person{i:07d}@example.com\n" for i in range(40_000))
    assert len(content) > 1_000_000
    page = _page(upload(admin_client, content))
    assert "an import takes at most 1 MB (CONTACT_IMPORT_MAX_MB)" in page
    assert "Line " not in page  # refused unread
    assert not Contact.objects.exists()


def test_a_refused_upload_leaves_no_copy_on_disk(admin_client, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _page(upload(admin_client, "email\nnot-an-address\n"))
    assert list(tmp_path.iterdir()) == []

    page = _page(upload(admin_client, "email\nok@example.com\n"))
    assert len(list(tmp_path.iterdir())) == 1  # kept for the confirm step
    admin_client.post(CONFIRM_URL, hidden_inputs(page))
    assert list(tmp_path.iterdir()) == []
    assert Contact.objects.count() == 1


def test_a_file_that_fails_at_the_confirm_step_writes_nothing(admin_client, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    page = _page(upload(admin_client, "email\nfirst@example.com\nsecond@example.com\n"))
    # The stored copy changes between the preview and the confirm (a forged confirm form
    # naming another upload does the same): its bad row must roll back the good one.
    (stored,) = tmp_path.iterdir()
    stored.write_text("email\nfirst@example.com\nuser@☃.com\n", encoding="utf-8")

    response = admin_client.post(CONFIRM_URL, hidden_inputs(page), follow=True)
    assert "Nothing was imported" in response.content.decode()
    assert response.redirect_chain[-1][0] == IMPORT_URL
    assert not Contact.objects.exists()
    assert not LogEntry.objects.exists()


def test_an_import_lands_in_the_admin_log_once_with_its_counts(admin_client, admin_user):
    ContactFactory(email="old@example.com")
    contact_list = ContactListFactory()
    content = "email,first_name\nold@example.com,Old\nnew1@example.com,A\nnew2@example.com,B\n"
    _, response = import_file(admin_client, content, contact_list)
    assert response.status_code == 302

    (entry,) = LogEntry.objects.all()
    assert (entry.user_id, entry.action_flag, entry.object_repr) == (
        admin_user.pk, ADDITION, "Contacts import",
    )  # fmt: skip
    assert entry.get_change_message() == (
        f"Imported a CSV file: 2 new, 1 updated, 0 unchanged; added to list #{contact_list.pk}."
    )
    assert "example.com" not in entry.change_message  # counts and ids, never addresses


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

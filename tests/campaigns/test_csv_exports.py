"""One formula-safe rule for every CSV this site writes (contacts, report, recipients): a cell a
spreadsheet would run as a formula gets a leading apostrophe, and nothing else changes."""

import csv
import io

import pytest
from django.contrib.admin.models import LogEntry

from campaigns.csv_cells import csv_cell_escape, csv_cell_unescape
from campaigns.models import Campaign, Contact
from tests.admin_helpers import EXPORT_URL, import_file
from tests.factories import (
    CampaignFactory,
    CampaignLinkFactory,
    ContactFactory,
    NotificationFactory,
)

pytestmark = pytest.mark.django_db

# Each value with the cell it must be written as. `-1` gets the prefix like any other text
# starting with "-" (OWASP's advice; a spreadsheet still shows -1); a value that starts with
# an apostrophe gets one more, or spreadsheets would eat it and the import could not tell.
CELLS = {
    "=2+5@x": "'=2+5@x",
    "==x": "'==x",
    '=HYPERLINK("http://evil.example","x")': '\'=HYPERLINK("http://evil.example","x")',
    "+1": "'+1",
    "-1": "'-1",
    "@SUM(A1)": "'@SUM(A1)",
    "\t=1+1": "'\t=1+1",
    "\r=1+1": "'\r=1+1",
    "'=1+1": "''=1+1",
    "'quoted": "''quoted",
    "plain 2+5=7": "plain 2+5=7",
    'Zoë, "the" 1st': 'Zoë, "the" 1st',
    "": "",
}


def _rows(response) -> list[list[str]]:
    assert response.status_code == 200, response.status_code
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


@pytest.mark.parametrize(("value", "cell"), CELLS.items())
def test_the_rule_prefixes_formula_starts_and_changes_nothing_else(value, cell):
    assert csv_cell_escape(value) == cell
    assert csv_cell_unescape(cell) == value


def _export_contacts(client) -> list[list[str]]:
    fields = ("email", "first_name", "last_name", "status", "attributes")
    data = {"format": "0", "resource": "0", **{f"contactresource_{f}": "on" for f in fields}}
    return _rows(client.post(EXPORT_URL, data))


def test_contacts_export_prefixes_formulas_and_keeps_every_value(admin_client):
    for i, value in enumerate(CELLS):
        ContactFactory(email=f"c{i}@example.com", first_name=value, last_name="-")
    ContactFactory(email="-dash@example.com", first_name="", last_name="")

    header, *rows = _export_contacts(admin_client)
    assert header == ["email", "first_name", "last_name", "status", "attributes"]
    by_email = {row[0]: row for row in rows}
    for i, (value, cell) in enumerate(CELLS.items()):
        row = by_email[f"c{i}@example.com"]
        assert (row[1], row[2]) == (cell, "'-"), value
    assert "'-dash@example.com" in by_email


def test_a_contacts_export_imports_back_unchanged(admin_client, eager_celery):
    originals = {}
    for i, value in enumerate(v for v in CELLS if "\r" not in v and "\t" not in v):
        contact = ContactFactory(email=f"c{i}@example.com", first_name=value, last_name="-1")
        originals[contact.pk] = (contact.email, value, "-1")
    minus = ContactFactory(email="-dash@example.com", first_name="=x", last_name="")
    originals[minus.pk] = (minus.email, "=x", "")

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(_export_contacts(admin_client))
    _, response = import_file(admin_client, out.getvalue())

    assert response.status_code == 302
    assert Contact.objects.count() == len(originals)  # matched, nobody created
    for contact in Contact.objects.all():
        assert (contact.email, contact.first_name, contact.last_name) == originals[contact.pk]
    assert "0 new" in LogEntry.objects.get().change_message


def test_report_csv_prefixes_formulas(admin_client):
    campaign = CampaignFactory(name="=2+5@x")
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENT)
    CampaignLinkFactory(campaign=campaign, index=0, url="https://example.com/=x")

    rows = _rows(admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/report.csv"))
    assert rows[0] == ["Campaign", str(campaign.pk), "'=2+5@x"]
    assert ["0", "https://example.com/=x", "0", "0", "0"] in rows
    formulas = [cell for row in rows for cell in row if cell.startswith(("=", "+", "-", "@"))]
    assert formulas == []


def test_recipients_csv_prefixes_formulas(admin_client):
    campaign = CampaignFactory()
    contacts = [ContactFactory(email=e) for e in ("+plus@example.com", "=eq@example.com")]
    for contact, (reason, message_id) in zip(
        contacts, [("=2+5@x", "@mid"), ("-1", "'mid")], strict=True
    ):
        NotificationFactory(
            campaign=campaign, contact=contact, status="failed", reason=reason,
            message_id=message_id,
        )  # fmt: skip

    header, *rows = _rows(
        admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/recipients.csv")
    )
    assert header[:5] == ["Notification", "Email", "Status", "Reason", "SES MessageId"]
    assert [row[1:5] for row in rows] == [
        ["'+plus@example.com", "failed", "'=2+5@x", "'@mid"],
        ["'=eq@example.com", "failed", "'-1", "''mid"],
    ]

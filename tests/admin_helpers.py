"""Driving the admin's contact import as a browser would: upload, preview, confirm."""

import re

from django.core.files.uploadedfile import SimpleUploadedFile

from campaigns.models import ContactList

IMPORT_URL = "/admin/campaigns/contact/import/"
CONFIRM_URL = "/admin/campaigns/contact/process_import/"
EXPORT_URL = "/admin/campaigns/contact/export/"


def csv_format(client) -> str:
    page = client.get(IMPORT_URL).content.decode()
    found = re.search(r'<option value="(\d+)"[^>]*>csv</option>', page) or re.search(
        r'name="format" value="(\d+)"', page
    )
    return found.group(1)


def upload(client, content: str | bytes, contact_list: ContactList | None = None, fmt=None):
    data = {
        "format": fmt if fmt is not None else csv_format(client),
        "import_file": SimpleUploadedFile(
            "contacts.csv", content.encode() if isinstance(content, str) else content, "text/csv"
        ),
    }
    if contact_list is not None:
        data["contact_list"] = contact_list.pk
    return client.post(IMPORT_URL, data)


def hidden_inputs(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))


def import_file(client, content: str, contact_list: ContactList | None = None):
    """Upload and confirm; returns (preview page, confirm response)."""
    preview = upload(client, content, contact_list)
    page = preview.content.decode()
    assert "Confirm import" in page, page[page.find("errorlist") - 200 :][:2000]
    return page, client.post(CONFIRM_URL, hidden_inputs(page))

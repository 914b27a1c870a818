"""CSV export of contacts (django-import-export); the import is campaigns.imports."""

import csv
import io

from import_export import fields, resources
from import_export.formats.base_formats import CSV

from campaigns.audiences import unsubscribed_list_names
from campaigns.csv_cells import csv_cell_escape
from campaigns.models import Contact

# The export reads the lists each contact left for this many contacts at a time.
EXPORT_CHUNK = 2000


class ContactCSV(CSV):
    """CSV written with the formula-safe cell rule (campaigns.csv_cells). Export only: the
    import is campaigns.imports."""

    def export_data(self, dataset, **kwargs) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        for row in (dataset.headers or [], *dataset):
            writer.writerow(["" if cell is None else csv_cell_escape(str(cell)) for cell in row])
        return out.getvalue()


def _with_unsubscribed_lists(contacts: list[Contact]) -> list[Contact]:
    names = unsubscribed_list_names(contact_ids=[contact.pk for contact in contacts])
    for contact in contacts:
        contact.unsubscribed_from_lists = names.get(contact.pk, "")
    return contacts


class ContactResource(resources.ModelResource):
    # The lists a contact unsubscribed from ("; "-joined names), so a file taken elsewhere
    # does not lose list-level unsubscribes.
    unsubscribed_from_lists = fields.Field(
        attribute="unsubscribed_from_lists", column_name="unsubscribed_from_lists", readonly=True
    )

    class Meta:
        model = Contact
        fields = (
            "email", "first_name", "last_name", "time_zone", "status", "attributes",
            "unsubscribed_from_lists",
        )  # fmt: skip

    def iter_queryset(self, queryset):
        # One query per EXPORT_CHUNK contacts for their lists, on any database (the demo's
        # SQLite too).
        chunk: list[Contact] = []
        for contact in super().iter_queryset(queryset):
            chunk.append(contact)
            if len(chunk) == EXPORT_CHUNK:
                yield from _with_unsubscribed_lists(chunk)
                chunk = []
        yield from _with_unsubscribed_lists(chunk)

    def dehydrate_unsubscribed_from_lists(self, contact) -> str:
        return getattr(contact, "unsubscribed_from_lists", None) or ""

"""CSV import and export of contacts (django-import-export).

Columns: email (required), first_name, last_name; every other column becomes a custom field
(attribute) named like a template field ("Favourite Colour" → favourite_colour). Rows are
matched by normalized email, so importing a contact twice updates it. A bad row is reported
with its line number and the whole file is refused until it is fixed (nothing half-written).
"""

import csv
import io

import tablib
from django.core.exceptions import ValidationError
from import_export import resources
from import_export.formats.base_formats import CSV

from campaigns.models import Contact, ContactList
from campaigns.services import contact_attribute_name, contact_list_add, contact_normalize_email

# Bookkeeping columns ContactCSV adds to each row: its line in the file, and what is wrong with
# its shape (a ragged row is a row error with its line number, not a failure of the whole file).
LINE, PROBLEM = "_line", "_problem"
KNOWN_COLUMNS = {"id", "email", "first_name", "last_name", "status", "attributes", LINE, PROBLEM}


class ContactFileError(ValueError):
    """A file that cannot be read as a table at all; the message is for the marketer."""


class ContactCSV(CSV):
    """CSV read with Python's csv module, keeping each row's line number and tolerating rows
    with too many or too few cells (reported per row instead of refusing the file unread)."""

    def create_dataset(self, in_stream, **kwargs):
        if isinstance(in_stream, bytes):
            try:
                in_stream = in_stream.decode("utf-8-sig")
            except UnicodeDecodeError as err:
                raise ContactFileError(unreadable_text_message(err)) from None
        reader = csv.reader(io.StringIO(in_stream))
        try:
            header = next(reader, None)
            if not header:
                raise ContactFileError("The file is empty: the first line must name the columns.")
            dataset = tablib.Dataset(headers=[*header, LINE, PROBLEM])
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank lines, often at the end of a file
                problem = ""
                if len(row) != len(header):
                    problem = (
                        f"this row has {len(row)} cells but the first line names {len(header)}"
                    )
                cells = (row + [""] * len(header))[: len(header)]
                dataset.append([*cells, reader.line_num, problem])
        except csv.Error as err:
            raise ContactFileError(f"Line {reader.line_num}: {err}.") from None
        return dataset


def unreadable_text_message(err: UnicodeDecodeError) -> str:
    return (
        f"The file is not UTF-8 text (byte {err.object[err.start]:#x} at position {err.start}). "
        "Save it as “CSV UTF-8” and upload it again."
    )


class ContactResource(resources.ModelResource):
    def __init__(self, contact_list: ContactList | None = None, **kwargs):
        super().__init__(**kwargs)
        self.contact_list = contact_list
        self.imported_ids: list[int] = []

    class Meta:
        model = Contact
        import_id_fields = ("email",)
        # status is exported but never imported: an import must not resubscribe anybody.
        fields = ("email", "first_name", "last_name", "status", "attributes")
        import_order = ("email", "first_name", "last_name")
        clean_model_instances = True

    def get_import_fields(self):
        return [self.fields[name] for name in ("email", "first_name", "last_name")]

    def before_import(self, dataset, **kwargs):
        headers = [h.strip().lower() for h in dataset.headers or []]
        if "email" not in headers:
            raise ValueError(
                "The file has no “email” column. The first line must name the columns, "
                "for example: email,first_name,last_name"
            )
        dataset.headers = headers

    def before_import_row(self, row, **kwargs):
        line = row.get(LINE) or kwargs.get("row_number", 0) + 1
        if row.get(PROBLEM):
            raise ValidationError(f"Line {line}: {row[PROBLEM]}.")
        try:
            row["email"] = contact_normalize_email(row.get("email") or "")
        except ValidationError:
            raise ValidationError(
                {"email": f"Line {line}: this is not a valid email address."}
            ) from None

    def import_instance(self, instance, row, **kwargs):
        super().import_instance(instance, row, **kwargs)
        extra = {}
        for column, value in row.items():
            name = contact_attribute_name(column or "")
            if column not in KNOWN_COLUMNS and name and value not in (None, ""):
                extra[name] = str(value).strip()
        if extra:
            instance.attributes = {**(instance.attributes or {}), **extra}

    def after_save_instance(self, instance, row, **kwargs):
        self.imported_ids.append(instance.pk)

    def after_import(self, dataset, result, **kwargs):
        if self.contact_list is not None and not result.has_errors():
            contact_list_add(contact_list=self.contact_list, contact_ids=self.imported_ids)

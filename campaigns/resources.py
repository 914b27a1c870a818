"""CSV import and export of contacts (django-import-export).

Rows are matched by normalized email and checked by campaigns.contact_fields; one bad row
refuses the whole file (nothing half-written; docs/DATAFLOW.md). Columns other than email,
first_name and last_name become custom fields named like template fields.
"""

import csv
import io

import tablib
from django.core.exceptions import ValidationError
from import_export import fields, resources
from import_export.formats.base_formats import CSV

from campaigns.audiences import unsubscribed_list_names
from campaigns.contact_fields import contact_text_check
from campaigns.csv_cells import csv_cell_escape, csv_cell_unescape
from campaigns.models import Contact, ContactList
from campaigns.services import contact_attribute_name, contact_list_add, contact_normalize_email

# Bookkeeping columns ContactCSV adds to each row: its first line in the file, and what is
# wrong with its shape (a ragged row is a row error with its line number, not a failure of the
# whole file).
LINE, PROBLEM = "_line", "_problem"
# Columns that are not custom fields: the contact's own, and what an export writes (status is
# exported but never imported: an import must not resubscribe anybody).
# unsubscribed_from_lists is exported only (audiences).
KNOWN_COLUMNS = {"id", "email", "first_name", "last_name", "status", "attributes", LINE, PROBLEM,
                 "unsubscribed_from_lists"}  # fmt: skip
NAMES = {"first_name": "first name", "last_name": "last name"}


class ContactFileError(ValueError):
    """A file that cannot be read as a table at all; the message is for the marketer."""


class ContactCSV(CSV):
    """CSV read with Python's csv module, keeping each row's line number and tolerating rows
    with too many or too few cells (reported per row instead of refusing the file unread);
    written with the formula-safe cell rule."""

    def create_dataset(self, in_stream, **kwargs):
        if isinstance(in_stream, bytes):
            try:
                in_stream = in_stream.decode("utf-8-sig")
            except UnicodeDecodeError as err:
                raise ContactFileError(unreadable_text_message(err)) from None
        # strict: a quote in the wrong place is an error with its line, not a value silently
        # joined with its neighbours.
        reader = csv.reader(io.StringIO(in_stream), strict=True)
        first_line = 1  # where the record being read starts
        try:
            header = next(reader, None)
            if not header or not any(cell.strip() for cell in header):
                raise ContactFileError("The file is empty: the first line must name the columns.")
            header_check(header)
            dataset = tablib.Dataset(headers=[*header, LINE, PROBLEM])
            first_line = reader.line_num + 1
            for row in reader:
                line, first_line = first_line, reader.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue  # blank lines, often at the end of a file
                problem = ""
                if len(row) != len(header):
                    problem = (
                        f"this row has {len(row)} cells but the first line names {len(header)}"
                    )
                cells = (row + [""] * len(header))[: len(header)]
                dataset.append([*(csv_cell_unescape(cell) for cell in cells), line, problem])
        except csv.Error as err:
            raise ContactFileError(f"Line {first_line}: {_csv_error_reason(err)}") from None
        return dataset

    def export_data(self, dataset, **kwargs) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        for row in (dataset.headers or [], *dataset):
            writer.writerow(["" if cell is None else csv_cell_escape(str(cell)) for cell in row])
        return out.getvalue()


def unreadable_text_message(err: UnicodeDecodeError) -> str:
    return (
        f"The file is not UTF-8 text (byte {err.object[err.start]:#x} at position {err.start}). "
        "Save it as “CSV UTF-8” and upload it again."
    )


def _csv_error_reason(err: csv.Error) -> str:
    text = str(err)
    if "expected after" in text:
        return (
            "a quote inside a cell: put the whole cell in quotes and double each quote in it "
            '(a cell holding Say "hi" is written "Say ""hi""").'
        )
    if "unexpected end of data" in text:
        return "a cell opens a quote that is never closed."
    return f"{text}."


def header_check(header: list[str]) -> None:
    """Refuse a first line whose columns would lose data silently: no email column, a column
    named twice, or two columns that would fill the same custom field."""
    seen: dict[str, str] = {}
    for column in header:
        name = column.strip().lower()
        if not name:
            continue  # an unnamed column: a row with a value in it is refused (ContactResource)
        if name in (LINE, PROBLEM):
            raise ContactFileError(f"The column name “{column.strip()}” is reserved: rename it.")
        field = name if name in KNOWN_COLUMNS else contact_attribute_name(name)
        if field is None:
            raise ContactFileError(
                f"The column “{column.strip()}” cannot become a custom field: its name must "
                "start with a letter. Rename it in the first line."
            )
        if field in seen:
            raise ContactFileError(
                f"The columns “{seen[field]}” and “{column.strip()}” would both fill "
                f"“{field}”. Rename or remove one of them in the first line."
            )
        seen[field] = column.strip()
    if "email" not in seen:
        raise ContactFileError(
            "The file has no “email” column. The first line must name the columns, "
            "for example: email,first_name,last_name"
        )


EXPORT_CHUNK = 2000


def _with_unsubscribed_lists(contacts: list[Contact]) -> list[Contact]:
    names = unsubscribed_list_names(contact_ids=[contact.pk for contact in contacts])
    for contact in contacts:
        contact.unsubscribed_from_lists = names.get(contact.pk, "")
    return contacts


class ContactResource(resources.ModelResource):
    # Exported only: the lists a contact unsubscribed from ("; "-joined names), so a file
    # taken elsewhere does not lose list-level unsubscribes.
    unsubscribed_from_lists = fields.Field(
        attribute="unsubscribed_from_lists", column_name="unsubscribed_from_lists", readonly=True
    )

    def __init__(self, contact_list: ContactList | None = None, **kwargs):
        super().__init__(**kwargs)
        self.contact_list = contact_list
        self.imported_ids: list[int] = []
        self.first_line_of: dict[str, int] = {}  # address → the line it first appears on

    class Meta:
        model = Contact
        import_id_fields = ("email",)
        # status is exported but never imported: an import must not resubscribe anybody.
        fields = (
            "email", "first_name", "last_name", "status", "attributes", "unsubscribed_from_lists",
        )  # fmt: skip
        import_order = ("email", "first_name", "last_name")
        clean_model_instances = True

    def get_import_fields(self):
        return [self.fields[name] for name in ("email", "first_name", "last_name")]

    def iter_queryset(self, queryset):
        # The lists each contact left, fetched for a chunk of contacts at a time: one query
        # per EXPORT_CHUNK rows, on any database (the demo's SQLite too).
        chunk: list[Contact] = []
        for contact in super().iter_queryset(queryset):
            chunk.append(contact)
            if len(chunk) == EXPORT_CHUNK:
                yield from _with_unsubscribed_lists(chunk)
                chunk = []
        yield from _with_unsubscribed_lists(chunk)

    def dehydrate_unsubscribed_from_lists(self, contact) -> str:
        return getattr(contact, "unsubscribed_from_lists", None) or ""

    def before_import(self, dataset, **kwargs):
        header_check([h for h in dataset.headers or [] if h not in (LINE, PROBLEM)])
        dataset.headers = [h.strip().lower() for h in dataset.headers]

    def before_import_row(self, row, **kwargs):
        """Every check of a row, each reported with the row's line, all at once."""
        line = row.get(LINE) or kwargs.get("row_number", 0) + 1
        if row.get(PROBLEM):
            raise ValidationError(f"Line {line}: {row[PROBLEM]}.")
        errors: dict[str, str] = {}
        try:
            email = contact_normalize_email(row.get("email") or "")
        except ValidationError as err:
            errors["email"] = f"Line {line}: {' '.join(err.messages)}"
        else:
            first = self.first_line_of.setdefault(email, line)
            if first != line:
                errors["email"] = (
                    f"Line {line}: the same address as line {first} (addresses are compared "
                    "without regard to case). Keep one of the two lines."
                )
            row["email"] = email
        for column, value in row.items():
            if column in (LINE, PROBLEM, "email") or value in (None, ""):
                continue
            text = str(value)
            if not column:
                errors["(unnamed column)"] = (
                    f"Line {line}: a value in a column whose name is empty in the first line."
                )
                continue
            label = NAMES.get(column, f"custom field “{column}”")
            max_length = Contact._meta.get_field(column).max_length if column in NAMES else None
            try:
                contact_text_check(text, label=label, max_length=max_length)
            except ValidationError as err:
                errors[column] = f"Line {line}: {' '.join(err.messages)}"
        if errors:
            raise ValidationError(errors)

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

"""Contact imports: read a marketer's file, match its columns, check it without writing, then
write it in bulk in the background (docs/DATAFLOW.md, "Contact import").

The steps, each a function here: import_job_create (upload: encoding and delimiter detected,
the bytes stored in the job), import_job_map (the columns matched, the list and the update
choice), import_job_check (a dry run: every row checked, counts and refused rows stored),
import_job_run (the valid rows upserted in chunks, each chunk with its counts and checkpoint
in one transaction, so a worker that dies leaves a job that resumes where it stopped).

Rules kept: the address by campaigns.addresses (services.contact_normalize_email), names and
values by campaigns.contact_fields, custom field names by services.contact_attribute_name. An
import never changes a contact's status nor a list-level unsubscribe; an empty cell never
erases a stored value; in a file naming one address twice, the first line wins and the later
ones are refused as repeats (in the error file, so nothing is lost).
"""

import codecs
import csv
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from campaigns import contact_upsert
from campaigns.audiences import custom_field_value, custom_fields
from campaigns.contact_fields import contact_text_check, contact_time_zone_check
from campaigns.contact_upsert import STORED, contact_would_change, contacts_upsert
from campaigns.csv_cells import csv_cell_unescape
from campaigns.models import (
    Contact,
    ContactList,
    CustomField,
    ImportJob,
    ImportRowError,
)
from campaigns.services import contact_attribute_name, contact_normalize_email
from infra.tasks import task_enqueue_on_commit

logger = logging.getLogger(__name__)

S = ImportJob.Status


@dataclass(frozen=True)
class ImportField:
    label: str
    headers: tuple[str, ...] = ()  # other header names it is recognised by (normalized)


# The contact fields an import fills, in the order the mapping page offers them (a field added
# here is also a column of the upsert, campaigns.contact_upsert). Header names are compared
# lower-case with spaces, dashes and underscores removed.
IMPORT_FIELDS: dict[str, ImportField] = {
    "email": ImportField("Email address", ("email", "emailaddress", "mail", "e-mail")),
    "first_name": ImportField("First name", ("firstname", "fname", "givenname", "forename")),
    "last_name": ImportField("Last name", ("lastname", "lname", "surname", "familyname")),
    "time_zone": ImportField("Time zone", ("timezone", "tz")),
}
# The contact fields other than the address: the ones campaigns.contact_upsert writes.
TEXT_FIELDS = contact_upsert.TEXT_FIELDS
CUSTOM, SKIP = "custom", "skip"
# Columns this site's own export writes that are not for importing: an import never sets a
# contact's status (it would resubscribe), and ids and dates are this database's own.
SKIPPED_HEADERS = {"id", "status", "attributes", "createdat", "updatedat", "unsubscribedfromlists"}

# Rows per transaction when writing (and per lookup when checking): a chunk is a few hundred
# milliseconds of work, so progress moves and a crash redoes little.
CHUNK = 5_000
# A worker renews its lease at each chunk; a job whose lease ran out has no worker any more.
LEASE = timedelta(minutes=5)
# A queued job whose task has not started within this time has lost it (no worker running?).
QUEUE_WAIT = timedelta(minutes=30)
ERRORS_KEPT = 1_000_000  # refused rows stored for the error file (the count is always exact)
SAMPLES = 3  # sample values shown per column on the mapping page

# A run from the start: the check's pass over the file counted rows as processed too.
RUN_RESET = {"processed_rows": 0, "new_count": 0, "updated_count": 0, "unchanged_count": 0}

CHECK_TASK = "campaigns.tasks.contact_import_check"
RUN_TASK = "campaigns.tasks.contact_import_run"


class ImportFileError(ValueError):
    """A file that cannot be imported at all; the message is for the marketer."""


# -- reading the file -------------------------------------------------------------------------

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}


def file_decode(data: bytes) -> tuple[str, str]:
    """(text, encoding used): UTF-8 with or without BOM, UTF-16 with BOM, else Windows-1252
    (Excel's "CSV" on Windows) or Latin-1 for the bytes Windows-1252 leaves undefined."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", errors="strict"), "UTF-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "UTF-16"
        except UnicodeDecodeError:
            raise ImportFileError(
                "The file starts as UTF-16 text but is not: save it as “CSV UTF-8” and "
                "upload it again."
            ) from None
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "Latin-1"


def file_delimiter(text: str) -> str:
    """The delimiter of `text`: csv.Sniffer limited to comma, semicolon and tab, else the one
    of those the first line holds most of (a one-column file: comma)."""
    sample = text[:64_000]
    try:
        return csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        first = sample.split("\n", 1)[0]
        counts = {d: first.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


@dataclass
class Row:
    line: int  # the file's line this record starts on
    cells: list[str]
    problem: str = ""


def file_rows(text: str, delimiter: str) -> tuple[list[str], Iterator[Row]]:
    """(header, rows) of `text`. A record of the wrong width, or one a quote breaks, is a
    row with its problem, never an exception."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise ImportFileError(f"Line 1 cannot be read: {_csv_reason(err)}") from None
    if not header or not any(cell.strip() for cell in header):
        raise ImportFileError("The file is empty: its first line must name the columns.")
    header = [cell.strip() for cell in header]

    def rows() -> Iterator[Row]:
        start = reader.line_num + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                line, start = start, reader.line_num + 1
                yield Row(line, [], _csv_reason(err))
                continue
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue  # blank lines, often at the end of a file
            problem = ""
            if len(cells) != len(header):
                problem = f"this row has {len(cells)} cells but the first line names {len(header)}"
            yield Row(line, [csv_cell_unescape(cell) for cell in cells], problem)

    return header, rows()


def _csv_reason(err: csv.Error) -> str:
    text = str(err)
    if "expected after" in text:
        return (
            "a quote inside a cell: put the whole cell in quotes and double each quote in it "
            '(a cell holding Say "hi" is written "Say ""hi""")'
        )
    if "unexpected end of data" in text:
        return (
            "a cell opens a quote that is never closed (every line after it was read into "
            "that cell)"
        )
    if "NUL" in text or "field larger" in text:
        return "this is not text a spreadsheet writes (a cell is too large or holds NUL bytes)"
    return text


def _job_text(job: ImportJob) -> str:
    text, _ = file_decode(bytes(job.data))
    return text


# -- matching columns -------------------------------------------------------------------------

_HEADER_NOISE = re.compile(r"[\s_\-]+")


def _header_key(header: str) -> str:
    return _HEADER_NOISE.sub("", header.strip().lower())


def mapping_guess(header: list[str]) -> list[dict]:
    """A mapping for `header`: a contact field where a column's name is one of its known names
    (each field taken by its first such column), a custom field of the column's name otherwise,
    or skip where that name cannot be one."""
    by_key = {
        key: field
        for field, spec in IMPORT_FIELDS.items()
        for key in (_header_key(field), *(_header_key(h) for h in spec.headers))
    }
    taken: set[str] = set()
    mapping = []
    for column in header:
        field = by_key.get(_header_key(column))
        if _header_key(column) in SKIPPED_HEADERS:
            mapping.append({"to": SKIP, "name": ""})
        elif field and field not in taken:
            taken.add(field)
            mapping.append({"to": field, "name": ""})
        elif name := contact_attribute_name(column):
            mapping.append({"to": CUSTOM, "name": name})
        else:
            mapping.append({"to": SKIP, "name": ""})
    return mapping


def mapping_check(mapping: list[dict], header: list[str]) -> list[str]:
    """What is wrong with `mapping` (plain sentences; empty when it can be imported)."""
    problems = []
    filled: dict[str, str] = {}
    for column, entry in zip(header, mapping, strict=True):
        target = entry["to"]
        if target == SKIP:
            continue
        if target == CUSTOM:
            name = contact_attribute_name(entry.get("name") or "")
            if name is None or name in IMPORT_FIELDS:
                problems.append(
                    f"The column “{column}”: a custom field's name must start with a letter "
                    "and not be a contact field's."
                )
                continue
            target = name
        elif target not in IMPORT_FIELDS:
            problems.append(f"The column “{column}”: choose what it fills.")
            continue
        if target in filled:
            problems.append(
                f"The columns “{filled[target]}” and “{column}” would both fill “{target}”: "
                "skip one of them."
            )
        filled.setdefault(target, column)
    if "email" not in filled:
        problems.append("Choose which column holds the email address.")
    return problems


def custom_field_value_check(name: str, value: str, declared: dict[str, CustomField]):
    """A custom field's value as stored, or ValidationError with the reason: a declared
    field's typed rule (campaigns.audiences), else the rule for any text."""
    if name in declared:
        return custom_field_value(declared[name], value)
    return contact_text_check(value, label=f"custom field “{name}”")


# -- rows as contacts -------------------------------------------------------------------------


@dataclass
class Parsed:
    line: int
    email: str
    fields: dict[str, str]  # contact fields with a non-empty value in the file
    attributes: dict[str, str]


def _row_parse(row: Row, mapping: list[dict], declared: dict[str, CustomField]) -> Parsed | str:
    """The row as a contact, or the reasons it is refused (one sentence each)."""
    if row.problem:
        return row.problem[0].upper() + row.problem[1:] + "."
    reasons = []
    email = ""
    fields: dict[str, str] = {}
    attributes: dict[str, str] = {}
    for entry, cell in zip(mapping, row.cells, strict=False):
        target = entry["to"]
        if target == SKIP:
            continue
        # Names and values are kept as typed (an export imports back unchanged); a cell of
        # spaces only is empty.
        value = cell if cell.strip() else ""
        try:
            if target == "email":
                email = contact_normalize_email(cell)
            elif not value:
                continue  # an empty cell never erases what is stored
            elif target == CUSTOM:
                name = contact_attribute_name(entry["name"])
                attributes[name] = custom_field_value_check(name, value, declared)
            elif target == "time_zone":
                fields[target] = contact_time_zone_check(value)
            else:
                max_length = Contact._meta.get_field(target).max_length
                label = IMPORT_FIELDS[target].label.lower()
                fields[target] = contact_text_check(value, label=label, max_length=max_length)
        except ValidationError as err:
            reasons.append(" ".join(err.messages))
    if reasons:
        return " ".join(reasons)
    return Parsed(row.line, email, fields, attributes)


@dataclass
class _Refused:
    line: int
    reason: str
    cells: list[str]
    is_duplicate: bool = False


def _job_contacts(job: ImportJob) -> Iterator[Parsed | _Refused]:
    """Every row of the job's file, in order: a contact to write, or a refused row. The first
    line of an address wins; a later one is refused as its repeat."""
    header, rows = file_rows(_job_text(job), job.delimiter)
    first_line: dict[str, int] = {}
    declared = {field.name: field for field in custom_fields()}
    for row in rows:
        parsed = _row_parse(row, job.mapping, declared)
        if isinstance(parsed, str):
            yield _Refused(row.line, parsed, row.cells)
            continue
        first = first_line.setdefault(parsed.email, row.line)
        if first != row.line:
            yield _Refused(
                row.line,
                f"Line {row.line} repeats the address of line {first}: line {first} is "
                "imported, this line is not.",
                row.cells,
                is_duplicate=True,
            )
            continue
        yield parsed


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- the job's life cycle ---------------------------------------------------------------------


def import_job_create(
    *, user_id: int, file_name: str, data: bytes, delimiter: str = ""
) -> ImportJob:
    """A job for an uploaded file, or ImportFileError saying why it cannot be imported."""
    if b"\x00" in data[:8192] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFileError(
            "This is not a CSV file (it holds binary data: a spreadsheet such as .xlsx?). "
            "Save it as “CSV UTF-8” and upload that."
        )
    text, encoding = file_decode(data)
    if "\x00" in text:
        raise ImportFileError("This is not a CSV file (it holds binary data).")
    delimiter = delimiter or file_delimiter(text)
    header, rows = file_rows(text, delimiter)
    if next(rows, None) is None:
        raise ImportFileError("The file has no rows below its first line: nothing to import.")
    return ImportJob.objects.create(
        created_by_id=user_id,
        file_name=file_name[:255],
        data=data,
        encoding=encoding,
        delimiter=delimiter,
        mapping=mapping_guess(header),
    )


def import_job_header(job: ImportJob) -> tuple[list[str], list[list[str]]]:
    """(column names, up to SAMPLES sample values per column) for the mapping page."""
    header, rows = file_rows(_job_text(job), job.delimiter)
    samples: list[list[str]] = [[] for _ in header]
    for row in rows:
        for i, cell in enumerate(row.cells[: len(header)]):
            if cell.strip() and len(samples[i]) < SAMPLES:
                samples[i].append(cell.strip()[:80])
        if all(len(s) == SAMPLES for s in samples):
            break
    return header, samples


def import_job_map(
    *,
    job: ImportJob,
    mapping: list[dict],
    contact_list: ContactList | None,
    new_list_name: str = "",
    update_existing: bool,
) -> None:
    """Record the mapping and choices and start the check in the background. The mapping must
    pass mapping_check; a new list is created now (its name unique, checked by the form)."""
    with transaction.atomic():
        if new_list_name:
            contact_list = ContactList.objects.create(name=new_list_name)
        updated = ImportJob.objects.filter(pk=job.pk, status__in=(S.MAPPING, S.CHECKED)).update(
            mapping=mapping,
            contact_list=contact_list,
            update_existing=update_existing,
            status=S.CHECKING,
            status_reason="",
            leased_until=timezone.now() + QUEUE_WAIT,
            processed_rows=0,
            total_rows=0,
        )
        if updated:
            task_enqueue_on_commit(CHECK_TASK, (job.pk,))


def _claim(job_id: int, status: str) -> ImportJob | None:
    """The job if it is in `status`, now leased to this worker."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().filter(pk=job_id, status=status).first()
        if job is None:
            return None
        job.leased_until = timezone.now() + LEASE
        job.save(update_fields=["leased_until"])
    return job


def import_job_check(*, job_id: int) -> None:
    """The dry run: count what the import would do and store each refused row. Writes no
    contact."""
    job = _claim(job_id, S.CHECKING)
    if job is None:
        return
    counts = {"total": 0, "new": 0, "updated": 0, "unchanged": 0, "errors": 0, "dups": 0}
    ImportRowError.objects.filter(job=job).delete()
    refused: list[ImportRowError] = []
    try:
        for chunk in _chunks(_job_contacts(job), CHUNK):
            parsed = [item for item in chunk if isinstance(item, Parsed)]
            stored = {
                row["email"]: row
                for row in Contact.objects.filter(email__in=[p.email for p in parsed]).values(
                    "email", *STORED
                )
            }
            for item in chunk:
                counts["total"] += 1
                if isinstance(item, _Refused):
                    counts["dups" if item.is_duplicate else "errors"] += 1
                    if counts["errors"] + counts["dups"] <= ERRORS_KEPT:
                        refused.append(
                            ImportRowError(
                                job=job,
                                line=item.line,
                                reason=item.reason[:1000],
                                cells=item.cells,
                                is_duplicate=item.is_duplicate,
                            )
                        )
                elif item.email not in stored:
                    counts["new"] += 1
                elif job.update_existing and contact_would_change(item, stored[item.email]):
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
            ImportRowError.objects.bulk_create(refused, batch_size=CHUNK)
            refused = []
            ImportJob.objects.filter(pk=job.pk, status=S.CHECKING).update(
                processed_rows=counts["total"], leased_until=timezone.now() + LEASE
            )
    except ImportFileError as err:  # the file changed under us? it cannot: bytes are stored
        _fail(job.pk, S.CHECKING, str(err))
        return
    ImportJob.objects.filter(pk=job.pk, status=S.CHECKING).update(
        status=S.CHECKED,
        leased_until=None,
        total_rows=counts["total"],
        processed_rows=counts["total"],
        new_count=counts["new"],
        updated_count=counts["updated"],
        unchanged_count=counts["unchanged"],
        error_count=counts["errors"],
        duplicate_count=counts["dups"],
    )
    logger.info("contact import %s checked: %s rows", job.pk, counts["total"])


def import_job_start(*, job: ImportJob) -> bool:
    """Go ahead with a checked job, or restart a stopped one: checked again if it stopped
    during its check, resumed after its last written chunk if it stopped importing."""
    if job.status == S.CHECKED:
        status, task = S.IMPORTING, RUN_TASK
        reset = RUN_RESET
    elif job.status == S.FAILED:
        # total_rows is 0 until the check finishes (import_job_map, import_job_check).
        status, task, reset = (
            (S.IMPORTING, RUN_TASK, {}) if job.total_rows else (S.CHECKING, CHECK_TASK, {})
        )
    else:
        return False
    with transaction.atomic():
        updated = ImportJob.objects.filter(pk=job.pk, status=job.status).update(
            status=status, status_reason="", leased_until=timezone.now() + QUEUE_WAIT, **reset
        )
        if updated:
            task_enqueue_on_commit(task, (job.pk,))
    return bool(updated)


def _write_chunk(job: ImportJob, parsed: list[Parsed]) -> tuple[int, int]:
    """Upsert one chunk and add it to the job's list (campaigns.contact_upsert); (new, updated)."""
    done = contacts_upsert(
        contacts=parsed,
        update_existing=job.update_existing,
        list_ids=[job.contact_list_id] if job.contact_list_id else [],
    )
    return done.new, done.updated


def import_job_run(*, job_id: int) -> None:
    """Write the job's valid rows, a chunk per transaction with its counts and checkpoint:
    a run that stops resumes after its last committed chunk (rows written twice are upserts
    of the same values)."""
    job = _claim(job_id, S.IMPORTING)
    if job is None:
        return
    position = 0  # rows (valid or refused) before the chunk, as processed_rows counts them
    for chunk in _chunks(_job_contacts(job), CHUNK):
        end = position + len(chunk)
        if end <= job.processed_rows:
            position = end
            continue  # committed by an earlier run
        unwritten = chunk[max(0, job.processed_rows - position) :]
        parsed = [item for item in unwritten if isinstance(item, Parsed)]
        with transaction.atomic():
            new, updated = _write_chunk(job, parsed) if parsed else (0, 0)
            still = ImportJob.objects.filter(pk=job.pk, status=S.IMPORTING).update(
                processed_rows=end,
                new_count=F("new_count") + new,
                updated_count=F("updated_count") + updated,
                unchanged_count=F("unchanged_count") + len(parsed) - new - updated,
                leased_until=timezone.now() + LEASE,
            )
            if not still:  # marked stopped meanwhile (lease lost): leave it to the restart
                transaction.set_rollback(True)
                return
        position = end
    with transaction.atomic():
        done = ImportJob.objects.filter(pk=job.pk, status=S.IMPORTING).update(
            status=S.DONE, leased_until=None, finished_at=timezone.now()
        )
        # (No user left to name: the admin log needs one; the job keeps its counts.)
        if done and job.created_by_id is not None:
            # The counts this run added to (not the file: it may be 20 MB).
            job.refresh_from_db(fields=["new_count", "updated_count", "unchanged_count"])
            LogEntry.objects.create(
                user_id=job.created_by_id,
                content_type=ContentType.objects.get_for_model(ImportJob),
                object_id=str(job.pk),
                object_repr=str(job),
                action_flag=ADDITION,
                change_message=(
                    f"Imported contacts: {job.new_count} new, {job.updated_count} updated, "
                    f"{job.unchanged_count} unchanged, {job.error_count + job.duplicate_count} "
                    "refused"
                    + (f"; added to list #{job.contact_list_id}." if job.contact_list_id else ".")
                ),
            )
    logger.info("contact import %s done", job.pk)


def _fail(job_id: int, status: str, reason: str) -> bool:
    return bool(
        ImportJob.objects.filter(pk=job_id, status=status).update(
            status=S.FAILED, status_reason=reason[:500], leased_until=None
        )
    )


def import_job_fail_if_stale(*, job: ImportJob) -> bool:
    """Mark a checking or importing job whose lease ran out as stopped, with the reason: its
    worker died or never started it. It can be restarted (import_job_start)."""
    if job.status not in (S.CHECKING, S.IMPORTING) or job.leased_until is None:
        return False
    if job.leased_until > timezone.now():
        return False
    stopped = _fail(
        job.pk,
        job.status,
        "The background worker stopped working on this import (it was restarted or no "
        "worker is running). Rows already imported stay; Restart continues from there.",
    )
    if stopped:
        logger.warning("contact import %s stopped: lease ran out", job.pk)
        job.refresh_from_db()
    return stopped


def import_jobs_fail_stale() -> int:
    """For the periodic sweep: stop every job whose lease ran out (how many), so a job no
    worker holds is reported even if nobody opens its page."""
    stale = ImportJob.objects.filter(
        status__in=(S.CHECKING, S.IMPORTING), leased_until__lt=timezone.now()
    ).only("pk", "status", "leased_until")
    return sum(import_job_fail_if_stale(job=job) for job in stale)


def import_error_rows(*, job: ImportJob) -> Iterator[list[str]]:
    """The error file: each refused row's line, reason and cells as read."""
    header, _ = file_rows(_job_text(job), job.delimiter)
    yield ["Line", "Reason", *header]
    for error in ImportRowError.objects.filter(job=job).order_by("line").iterator(CHUNK):
        yield [str(error.line), error.reason, *error.cells]

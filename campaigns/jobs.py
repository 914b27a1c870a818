"""Bulk jobs (POST /api/v1/jobs): a template and up to JOB_MAX_ROWS rows, sent as a campaign.

A job is a Campaign of kind `job`: no list, its key's mode (test_mode), the bulk send path, and
the template's source frozen when the job is accepted. Its life is a campaign's (scheduled →
sending → sent / cancelled / failed, through services.campaign_transition), sent by the
campaign engine's start, freeze and fan-out (campaigns.services), so the batches, the rate
limit, the counters and the sweeper treat it as they treat a campaign. The steps:

1. job_rows_check: every row checked (the address rule, the personalisation rule, an address
   given twice) before anything is written; the errors carry their row number.
2. job_create, in the caller's transaction: the campaign (scheduled), its JobRequest and the
   accepted rows staged as JobRow (COPY). The API answers 202 only once that commits, so an
   accepted job's rows are durable; its start is enqueued on commit (beat starts a job whose
   send_at is to come, as it starts a scheduled campaign).
3. The freeze (services.campaign_freeze) takes the staged rows JOB_CHUNK row numbers at a
   time, each chunk one transaction (job_rows_freeze): contacts upserted by address, ledger
   rows and their MessageRequests inserted (INSERT … SELECT, ON CONFLICT DO NOTHING), the
   checkpoint moved, the chunk's batches enqueued on commit. A freeze killed part-way is run
   again by the sweeper's stalled-freeze check and goes on after the checkpoint; a chunk
   written twice adds nothing (the ledger's unique (campaign, contact, repeat_key)).
4. Once every row has its ledger row (frozen_at), the staged rows are deleted.
"""

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import psycopg
from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from campaigns.addresses import InvalidAddress, address_normalize
from campaigns.erased import new_contact_status_sql, new_contact_statuses
from campaigns.models import (
    ApiKey,
    Campaign,
    Contact,
    JobRequest,
    JobRow,
    MessageRequest,
    Notification,
)
from campaigns.personalisation import PersonalisationInvalid, personalisation_check
from campaigns.problems import problem
from infra.tasks import task_enqueue_on_commit
from templates_app.models import Template
from templates_app.services import template_compile, template_snapshot

logger = logging.getLogger(__name__)

JOB_MAX_ROWS = 100_000
# Row errors an answer (the 422, or a job's skipped rows) lists; the count is always exact.
ROW_ERRORS_SHOWN = 1_000
# Staged rows per transaction when creating the ledger: each chunk's batches start sending
# while the next is written, and a crash redoes at most one chunk (cost: docs/PERFORMANCE.md).
JOB_CHUNK = 10_000
REFERENCE_MAX = 200
ROW_FIELDS = frozenset({"to", "personalisation", "reference"})

START_TASK = "campaigns.tasks.campaign_start"
# What a reference may not hold: control characters (NUL, which PostgreSQL cannot store in
# text, among them: it would be a 500 at the COPY, not a refusal).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class JobRefused(Exception):
    """The request cannot become a job: `errors` in the API's one shape (a 4xx)."""

    def __init__(self, errors: list[dict], *, status: int = 422, error_count: int = 0) -> None:
        super().__init__(errors[0]["message"] if errors else "refused")
        self.errors, self.status = errors, status
        self.error_count = error_count or len(errors)


@dataclass(frozen=True)
class UnreadableRow:
    """A row of an uploaded file that could not be read as one (wrong width, broken quoting)."""

    reason: str
    line: int | None = None  # the file line it starts on


class FileRow(dict):
    """A row of an uploaded file as a row object ({to, reference, personalisation}), knowing
    the file line it starts on: its errors name that line too, since blank lines and quoted
    line breaks make row numbers and line numbers differ."""

    def __init__(self, fields: dict, *, line: int) -> None:
        super().__init__(fields)
        self.line = line


@dataclass(frozen=True)
class StagedRow:
    row: int
    email: str
    reference: str
    personalisation: dict


@dataclass
class CheckedRows:
    valid: list[StagedRow]
    errors: list[dict]  # the first ROW_ERRORS_SHOWN
    error_count: int  # every error (a row may have several)
    refused_rows: int  # rows with at least one


def job_rows_check(rows: Iterable[dict | UnreadableRow]) -> CheckedRows:
    """Every row checked, numbered from 1 in the request's order: the address (the one address
    rule, campaigns.addresses), the personalisation (campaigns.personalisation), the
    reference, no field but those three, and no address twice (the first row of an address
    is kept, a later one refused as its repeat)."""
    valid: list[StagedRow] = []
    errors: list[dict] = []
    error_count = refused = 0
    first_row: dict[str, int] = {}
    for number, item in enumerate(rows, start=1):
        problems = _row_problems(number, item, first_row)
        if isinstance(problems, StagedRow):
            valid.append(problems)
            continue
        line = getattr(item, "line", None)
        if line is not None:
            problems = [{**found, "line": line} for found in problems]
        refused += 1
        error_count += len(problems)
        errors.extend(problems[: max(0, ROW_ERRORS_SHOWN - len(errors))])
    return CheckedRows(valid, errors, error_count, refused)


def _row_problems(number: int, item, first_row: dict[str, int]) -> StagedRow | list[dict]:
    if isinstance(item, UnreadableRow):
        return [problem("unreadable_row", item.reason, "", number)]
    if not isinstance(item, dict):
        return [
            problem("invalid", "A row is an object (to, personalisation, reference).", "", number)
        ]
    problems = [
        problem("unknown_field", "Unknown field.", name, number)
        for name in sorted(set(item) - ROW_FIELDS, key=str)
    ]
    email = ""
    if "to" not in item:
        problems.append(problem("required", "Give the address (to).", "to", number))
    else:
        try:
            email = address_normalize(item["to"])
        except InvalidAddress as err:
            problems.append(problem("invalid_address", " ".join(err.messages), "to", number))
    personalisation = item.get("personalisation", {})
    try:
        personalisation = personalisation_check(personalisation)
    except PersonalisationInvalid as err:
        problems.append(problem(err.code, err.message, "personalisation", number))
    reference = item.get("reference", "")
    if reference is None:
        reference = ""
    if not isinstance(reference, str):
        problems.append(problem("invalid", "A reference is text.", "reference", number))
    elif _CONTROL.search(reference):
        problems.append(
            problem("invalid", "A reference may not hold control characters.", "reference", number)
        )
    elif len(reference) > REFERENCE_MAX:
        problems.append(
            problem("too_long", f"At most {REFERENCE_MAX} characters.", "reference", number)
        )
    if problems:
        return problems
    first = first_row.setdefault(email, number)
    if first != number:
        return [
            problem(
                "duplicate_address",
                f"Row {number} repeats the address of row {first}: a job sends one message "
                "per address.",
                "to",
                number,
            )
        ]
    return StagedRow(number, email, reference, personalisation)


def job_create(
    *,
    api_key: ApiKey | None,
    template: Template,
    checked: CheckedRows,
    send_at: datetime | None = None,
) -> Campaign:
    """Write the job (its campaign, scheduled; its request; its rows, staged) in the caller's
    transaction, and enqueue its start once that commits if it is due. The rows must have
    passed job_rows_check (the invalid ones are recorded as skipped). JobRefused if the
    template cannot be sent or no row is left to send."""
    if not checked.valid:
        raise JobRefused([problem("no_valid_rows", "No row of this job can be sent.", "rows")])
    snapshot = template_snapshot(template=template)
    try:
        template_compile(template=snapshot, tracking_base_url=settings.TRACKING_BASE_URL)
    except Exception as err:  # noqa: BLE001 (any reason it cannot compile is the client's answer)
        raise JobRefused(
            [problem("template_invalid", f"The template cannot be sent: {err}", "template")]
        ) from None
    now = timezone.now()
    test_mode = bool(api_key and api_key.test)
    job = Campaign.objects.create(
        kind=Campaign.Kind.JOB,
        name=f"{template.name} (API job{', test' if test_mode else ''})"[:200],
        template=template,
        status=Campaign.Status.SCHEDULED,
        scheduled_at=max(send_at, now) if send_at else now,
        # Frozen now: the job sends what was accepted, whatever happens to the template later.
        template_snapshot=snapshot,
        send_path=Campaign.SendPath.BULK,
        test_mode=test_mode,
        api_key=api_key,
    )
    JobRequest.objects.create(
        campaign=job,
        total_rows=len(checked.valid),
        invalid_count=checked.refused_rows,
        invalid_rows=checked.errors,
    )
    _stage(job.pk, checked.valid)
    if job.scheduled_at <= now:
        task_enqueue_on_commit(START_TASK, (job.pk,))
    logger.info(
        "job %s accepted rows=%s skipped=%s", job.pk, len(checked.valid), checked.refused_rows
    )
    return job


def _stage(job_id: int, rows: list[StagedRow]) -> None:
    """The accepted rows into JobRow: COPY on PostgreSQL (a 100,000-row job in well under a
    second), bulk_create elsewhere (the demo's SQLite)."""
    if connection.vendor != "postgresql":
        _stage_portable(job_id, rows)
        return
    connection.ensure_connection()
    table = JobRow._meta.db_table
    sql = f"COPY {table} (job_id, row, email, reference, personalisation) FROM STDIN"
    with (
        connection.wrap_database_errors,
        psycopg.Cursor(connection.connection) as cursor,
        cursor.copy(sql) as copy,
    ):
        for r in rows:
            copy.write_row(
                (job_id, r.row, r.email, r.reference, orjson.dumps(r.personalisation).decode())
            )


def _stage_portable(job_id: int, rows: list[StagedRow]) -> None:
    """The same rows through the ORM, for the demo's SQLite."""
    JobRow.objects.bulk_create(
        [
            JobRow(
                job_id=job_id,
                row=r.row,
                email=r.email,
                reference=r.reference,
                personalisation=r.personalisation,
            )
            for r in rows
        ],
        batch_size=2_000,
    )


# -- creating the ledger (called by services.campaign_freeze) ---------------------------------


def job_creation_lease_seconds() -> float:
    """How long a creator's lease lasts from its last renewal (before each chunk): longer
    than a chunk takes (~0.5 s for JOB_CHUNK rows; seconds under load), short enough that a
    killed creation is resumed within seconds (the sweeper runs every 10 s)."""
    return float(getattr(settings, "JOB_CREATION_LEASE_SECONDS", 20))


def job_creation_lease_take(*, job_id: int, holder: str) -> bool:
    """Take or renew the job's creation lease for `holder` (one freeze run's token), in one
    guarded UPDATE, committed at once; False if another creator's lease is alive (that
    creator is at work: this one must not double it).

    A creator whose chunk outlasts its lease may meet a second one, which the sweeper
    started: harmless (a chunk written twice adds nothing, the ledger's unique constraint),
    and the first stops at its next renewal, which fails."""
    now = timezone.now()
    taken = (
        JobRequest.objects.filter(campaign_id=job_id)
        .filter(Q(creator_until__isnull=True) | Q(creator_until__lt=now) | Q(creator=holder))
        .update(creator=holder, creator_until=now + timedelta(seconds=job_creation_lease_seconds()))
    )
    return bool(taken)


def job_creation_lease_drop(*, job_id: int, expired_at: datetime | None = None) -> bool:
    """No creator (the creation is done; or, given `expired_at`, the sweeper hands a lease
    run out by then to a new creator: not one a creator has renewed since). True if dropped."""
    rows = JobRequest.objects.filter(campaign_id=job_id)
    if expired_at is not None:
        rows = rows.filter(creator_until__lt=expired_at)
    return bool(rows.update(creator="", creator_until=None))


def jobs_creation_dead(*, now: datetime) -> list[int]:
    """Jobs whose creator's lease has run out before their ledger was complete: it died
    (SIGKILL, a lost machine) mid-creation."""
    return list(
        JobRequest.objects.filter(
            creator_until__lt=now,
            campaign__frozen_at__isnull=True,
            campaign__status__in=[Campaign.Status.SENDING, Campaign.Status.PAUSED],
        ).values_list("campaign_id", flat=True)
    )


def job_chunks(*, job_id: int) -> Iterator[tuple[int, int]]:
    """The row-number ranges (first, last) still to freeze, JOB_CHUNK at a time, from the
    checkpoint on (read once: a chunk redone is harmless)."""
    request = JobRequest.objects.values("rows_done_through", "total_rows", "invalid_count").get(
        campaign_id=job_id
    )
    last_row = JobRow.objects.filter(job_id=job_id).order_by("-row").values_list("row", flat=True)
    end = last_row.first() or 0
    first = request["rows_done_through"] + 1
    while first <= end:
        yield first, min(first + JOB_CHUNK - 1, end)
        first += JOB_CHUNK


# Contacts of the chunk's addresses, made where there are none (new contacts are active, or
# keep an erased address's status: campaigns.erased; an existing contact is left as it is,
# its status included). In address order, so two jobs naming the same new addresses lock
# them in the same order.
_CONTACTS_SQL = """
INSERT INTO {contact} (email, first_name, last_name, time_zone, attributes, status,
                       created_at, updated_at)
SELECT s.email, '', '', '', '{{}}'::jsonb, {new_status}, %(now)s, %(now)s
FROM {row} s WHERE s.job_id = %(job)s AND s.row BETWEEN %(first)s AND %(last)s
ORDER BY s.email
ON CONFLICT (email) DO NOTHING
"""
# The chunk's ledger rows (created, in row order) and, in the same statement, each one's
# MessageRequest: a row is never claimable without its personalisation. Rows already made
# (a chunk redone after a crash) are left as they are, and so are their requests.
#
# Each lookup (a staged row's contact by address, a new ledger row's staged row by its
# contact's address) is a LATERAL subquery that OFFSET 0 keeps apart, so it is one index
# lookup per row whatever the planner believes of tables written a moment ago (as
# infra.db.pg_lookup does): joined, the job's rows just copied were estimated at one, and
# each new ledger row scanned the whole chunk for its staged row (17 s for 10,000 rows
# instead of 0.5 s).
_LEDGER_SQL = """
WITH made AS (
    INSERT INTO {ledger} (campaign_id, contact_id, status, reason, repeat_key,
                          created_at, updated_at)
    SELECT %(job)s, c.id, %(created)s, '', 0, %(now)s, %(now)s
    FROM {row} s
    CROSS JOIN LATERAL (SELECT id FROM {contact} WHERE email = s.email OFFSET 0) c
    WHERE s.job_id = %(job)s AND s.row BETWEEN %(first)s AND %(last)s
    ORDER BY s.row
    ON CONFLICT DO NOTHING
    RETURNING id, contact_id
)
INSERT INTO {request} (notification_id, api_key_id, reference, personalisation, send_at)
SELECT made.id, %(key)s, s.reference, s.personalisation, NULL
FROM made
CROSS JOIN LATERAL (SELECT email FROM {contact} WHERE id = made.contact_id OFFSET 0) c
CROSS JOIN LATERAL (
    SELECT reference, personalisation FROM {row}
    WHERE job_id = %(job)s AND email = c.email OFFSET 0
) s
RETURNING notification_id
"""


def job_rows_freeze(*, job_id: int, first_row: int, last_row: int) -> list[int]:
    """Create the ledger rows of the staged rows numbered first_row..last_row (contacts,
    ledger rows, their MessageRequests) and move the checkpoint, in the caller's transaction.
    Returns the new ledger ids, in order (none for a chunk already written)."""
    key_id = Campaign.objects.values_list("api_key_id", flat=True).get(pk=job_id)
    if connection.vendor != "postgresql":
        ids = _freeze_portable(job_id, first_row, last_row, key_id)
    else:
        names = {
            "contact": Contact._meta.db_table,
            "row": JobRow._meta.db_table,
            "ledger": Notification._meta.db_table,
            "request": MessageRequest._meta.db_table,
            "new_status": new_contact_status_sql("s.email"),
        }
        params = {
            "job": job_id,
            "first": first_row,
            "last": last_row,
            "now": timezone.now(),
            "active": Contact.Status.ACTIVE,
            "created": Notification.Status.CREATED,
            "key": key_id,
        }
        with connection.cursor() as cursor:
            cursor.execute(_CONTACTS_SQL.format(**names), params)
            cursor.execute(_LEDGER_SQL.format(**names), params)
            ids = sorted(row[0] for row in cursor.fetchall())
    JobRequest.objects.filter(campaign_id=job_id, rows_done_through__lt=last_row).update(
        rows_done_through=last_row
    )
    return ids


def _freeze_portable(job_id: int, first_row: int, last_row: int, key_id: int | None) -> list[int]:
    """The same writes through the ORM, for the demo's SQLite."""
    staged = list(JobRow.objects.filter(job_id=job_id, row__range=(first_row, last_row)))
    emails = [r.email for r in staged]
    statuses = new_contact_statuses(emails)
    Contact.objects.bulk_create(
        [
            Contact(email=email, status=statuses.get(email, Contact.Status.ACTIVE))
            for email in sorted(set(emails))
        ],
        ignore_conflicts=True,
    )
    contact_of = dict(Contact.objects.filter(email__in=emails).values_list("email", "pk"))
    done = set(
        Notification.objects.filter(
            campaign_id=job_id, contact_id__in=contact_of.values(), repeat_key=0
        ).values_list("contact_id", flat=True)
    )
    fresh = [r for r in staged if contact_of[r.email] not in done]
    Notification.objects.bulk_create(
        [Notification(campaign_id=job_id, contact_id=contact_of[r.email]) for r in fresh]
    )
    made = dict(
        Notification.objects.filter(
            campaign_id=job_id, contact_id__in=[contact_of[r.email] for r in fresh], repeat_key=0
        ).values_list("contact_id", "pk")
    )
    MessageRequest.objects.bulk_create(
        [
            MessageRequest(
                notification_id=made[contact_of[r.email]],
                api_key_id=key_id,
                reference=r.reference,
                personalisation=r.personalisation,
            )
            for r in fresh
        ]
    )
    return sorted(made.values())


def job_rows_forget(*, job_id: int) -> int:
    """Delete the job's staged rows (its ledger is complete, or it was cancelled): how many."""
    deleted, _ = JobRow.objects.filter(job_id=job_id).delete()
    return deleted

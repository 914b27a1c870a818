"""Bulk jobs over the API (docs/API.md#bulk-jobs): POST /api/v1/jobs (JSON rows or a CSV
file), GET /api/v1/jobs and /api/v1/jobs/{id}, POST /api/v1/jobs/{id}/cancel.

The views read the request (JSON, a multipart upload or a text/csv body) into rows, and
campaigns.jobs checks and writes them; the answer is 202 only once the job and its rows have
committed. A job's counts come from its campaign's counters, never from counting its ledger.
"""

import hashlib

import orjson
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.response import Response

from campaigns import jobs
from campaigns.api.base import MAX_ID, ApiView
from campaigns.api.errors import error, error_response
from campaigns.api.idempotency import idempotent_response
from campaigns.api.pagination import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, CursorPage
from campaigns.api.schema import errors
from campaigns.api.serializers import StrictSerializer, TemplateRef
from campaigns.api.views import template_lookup
from campaigns.counters import HANDED_OFF, CounterName
from campaigns.imports import ImportFileError, file_decode, file_delimiter, file_rows
from campaigns.models import ApiKey, Campaign, CampaignCounter, JobRequest
from campaigns.services import (
    CampaignError,
    campaign_cancel,
    campaign_resume,
    contact_attribute_name,
)

# A job's request body at most (a JSON body of JOB_MAX_ROWS typical rows is ~20 MB; the
# site's own cap, MAX_REQUEST_BYTES, is checked before this).
JOB_MAX_BODY_BYTES = 50 * 1024 * 1024
# The CSV columns that are the address and the reference (compared lower-case, without
# spaces, dashes or underscores); every other column is a personalisation field.
ADDRESS_COLUMNS = {"email", "to", "emailaddress"}
REFERENCE_COLUMN = "reference"


class JobJsonParser(parsers.BaseParser):
    """A JSON body read from the request's stream, up to JOB_MAX_BODY_BYTES (checked before).

    DRF's JSONParser reads request.body, which Django caps at DATA_UPLOAD_MAX_MEMORY_SIZE
    (2.5 MB, right for every other body); a job of 100,000 rows is several times that. orjson
    reads it in a fraction of the json module's time."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return orjson.loads(stream.read() if stream is not None else b"")
        except orjson.JSONDecodeError:
            raise exceptions.ParseError(
                "The body is not valid JSON.", code="invalid_json"
            ) from None


class CsvParser(parsers.BaseParser):
    """A text/csv body, kept as bytes: its encoding and delimiter are detected as the contact
    import detects them (campaigns.imports)."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None):
        return {"file": stream.read() if stream is not None else b""}


class RowsField(serializers.Field):
    """The JSON rows as given: each is checked by campaigns.jobs (a serializer per row would
    cost more than the rest of the request)."""

    def to_internal_value(self, data):
        return data


class JobCreateSerializer(StrictSerializer):
    template = TemplateRef()
    rows = RowsField(required=False)  # JSON: checked row by row (campaigns.jobs)
    file = serializers.FileField(required=False, allow_empty_file=True)  # multipart upload
    send_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    skip_invalid_rows = serializers.BooleanField(required=False, default=False)

    def validate_rows(self, value):
        if not isinstance(value, list):
            raise serializers.ValidationError("Give the rows as a list.", code="invalid")
        if not value:
            raise serializers.ValidationError("Give at least one row.", code="no_rows")
        if len(value) > jobs.JOB_MAX_ROWS:
            raise serializers.ValidationError(
                f"At most {jobs.JOB_MAX_ROWS:,} rows a job.", code="too_many_rows"
            )
        return value


class JobProgressSerializer(serializers.Serializer):
    rows_created = serializers.IntegerField()
    rows_total = serializers.IntegerField()
    sent = serializers.IntegerField()
    answered = serializers.IntegerField()
    total = serializers.IntegerField()


class JobCountsSerializer(serializers.Serializer):
    pending = serializers.IntegerField()
    sent = serializers.IntegerField()
    failed = serializers.IntegerField()
    unknown = serializers.IntegerField()
    skipped = serializers.IntegerField()
    delivered = serializers.IntegerField()
    bounced = serializers.IntegerField()
    complained = serializers.IntegerField()
    rejected = serializers.IntegerField()


class JobSummarySerializer(serializers.Serializer):
    """What job_summary answers, for the schema (docs/API.md#bulk-jobs)."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Campaign.Status.choices)
    status_reason = serializers.CharField()
    template = serializers.IntegerField(allow_null=True)
    test = serializers.BooleanField()
    rows = serializers.IntegerField()
    invalid_count = serializers.IntegerField()
    progress = JobProgressSerializer()
    counts = JobCountsSerializer()
    send_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    frozen_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


def _refused(refused: jobs.JobRefused) -> Response:
    response = error_response(refused.status, refused.errors)
    if any("row" in e for e in refused.errors):
        response.data["error_count"] = refused.error_count  # the errors listed are the first
    return response


def _idempotent(request, work, *, fingerprint: bytes | None) -> Response:
    """`work()` in one transaction, its answer returned once that has committed, at most once
    per Idempotency-Key (campaigns.api.idempotency; a CSV upload's fingerprint is a digest of
    its bytes and fields, a JSON body's the body itself)."""
    return idempotent_response(request, work, fingerprint=fingerprint)


class JobListCreate(ApiView):
    scopes = {"POST": "jobs:send", "GET": "jobs:read"}
    parser_classes = [JobJsonParser, parsers.MultiPartParser, CsvParser]

    @property
    def max_body_bytes(self) -> int:  # ApiView refuses a larger body (413) before reading it
        return JOB_MAX_BODY_BYTES

    def post(self, request):
        data, csv_body, fingerprint = _request_fields(request)
        serializer = JobCreateSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        if csv_body is not None:
            fields["file"] = csv_body
        # 202 only once the job and its staged rows have committed (_idempotent's commit).
        return _idempotent(request, lambda: self._create(request, fields), fingerprint=fingerprint)

    def _create(self, request, fields: dict) -> Response:
        template = template_lookup(fields["template"])
        if template is None:
            return error_response(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                [error("template_not_found", "No template has this id or slug.", "template")],
            )
        try:
            rows = _rows_of(fields)
            checked = jobs.job_rows_check(rows)
            if checked.errors and not fields["skip_invalid_rows"]:
                raise jobs.JobRefused(checked.errors, error_count=checked.error_count)
            key = request.auth if isinstance(request.auth, ApiKey) else None
            job = jobs.job_create(
                api_key=key, template=template, checked=checked, send_at=fields["send_at"]
            )
        except jobs.JobRefused as refused:
            return _refused(refused)
        answer = {
            "id": job.pk,
            "status": job.status,
            "rows": len(checked.valid),
            "invalid_count": checked.refused_rows,
            "invalid_rows": checked.errors,
        }
        return Response(answer, status=status.HTTP_202_ACCEPTED)

    def get(self, request):
        query = JobListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = CursorPage(request, size=query.validated_data["limit"])
        jobs_ = page.rows(_jobs_for(request))
        ids = [job.pk for job in jobs_]
        requests = JobRequest.objects.in_bulk(ids)
        counters: dict[int, dict[str, int]] = {job_id: {} for job_id in ids}
        for job_id, name, value in CampaignCounter.objects.filter(
            campaign_id__in=ids, name__in=SUMMARY_COUNTERS
        ).values_list("campaign_id", "name", "value"):
            counters[job_id][name] = value
        # The messages list's shape and cursor (campaigns.api.pagination).
        return Response(
            {
                "results": [
                    job_summary(job, requests.get(job.pk), counters[job.pk]) for job in jobs_
                ],
                "next": page.next_link(jobs_),
            }
        )


class JobListQuerySerializer(serializers.Serializer):
    """GET /api/v1/jobs's query parameters."""

    limit = serializers.IntegerField(
        min_value=1, max_value=PAGE_SIZE_MAX, required=False, default=PAGE_SIZE_DEFAULT
    )
    cursor = serializers.CharField(max_length=100, required=False)  # read by CursorPage
    format = serializers.CharField(required=False)  # DRF's ?format=json|api


class JobDetail(ApiView):
    scopes = {"GET": "jobs:read"}

    def get(self, request, pk: int):
        job = _job_or_404(request, pk)
        request_row = JobRequest.objects.filter(pk=job.pk).first()
        answer = job_summary(job, request_row)
        answer["invalid_rows"] = request_row.invalid_rows if request_row else []
        return Response(answer)


class JobCancel(ApiView):
    scopes = {"POST": "jobs:send"}

    def post(self, request, pk: int):
        job = _job_or_404(request, pk)
        try:
            campaign_cancel(campaign=job)
        except CampaignError:
            return error_response(
                status.HTTP_409_CONFLICT,
                [error("not_cancellable", f"A {job.status} job cannot be cancelled.")],
            )
        job.refresh_from_db()
        return Response(job_summary(job, JobRequest.objects.filter(pk=job.pk).first()))


class JobResume(ApiView):
    """A job the bounce and complaint circuit breaker paused (campaigns.breaker), sent on:
    the admin's resume (services.campaign_resume), after the client has looked at why."""

    scopes = {"POST": "jobs:send"}

    @extend_schema(
        operation_id="jobs_resume",
        request=None,
        responses={200: JobSummarySerializer, **errors(404, 409)},
        description="Resume a job paused by the circuit breaker (its `status_reason` says "
        "why). 409 `not_paused` for a job that is not paused.",
    )
    def post(self, request, pk: int):
        job = _job_or_404(request, pk)
        try:
            campaign_resume(campaign=job)
        except CampaignError:
            return error_response(
                status.HTTP_409_CONFLICT,
                [error("not_paused", f"A {job.status} job cannot be resumed: only a paused one.")],
            )
        job.refresh_from_db()
        return Response(job_summary(job, JobRequest.objects.filter(pk=job.pk).first()))


def _job_or_404(request, pk: int) -> Campaign:
    if pk > MAX_ID:
        raise Http404
    return get_object_or_404(_jobs_for(request), pk=pk)


def _jobs_for(request):
    """The jobs a caller sees: a key those of its own mode (a test key its test jobs, a live
    key its live ones, as Stripe's test mode keeps them apart); a staff session all."""
    jobs_ = Campaign.objects.filter(kind=Campaign.Kind.JOB).defer("template_snapshot")
    if isinstance(request.auth, ApiKey):
        jobs_ = jobs_.filter(test_mode=request.auth.test)
    return jobs_


def _request_fields(request) -> tuple[dict, bytes | None, bytes | None]:
    """(the request's fields as one dict: a JSON object, a multipart form, or the query
    string of a text/csv body; that body; what stands for the request's body in an
    idempotency check, None for a JSON body, which stands for itself)."""
    media = request.content_type.split(";")[0].strip().lower()
    if media == CsvParser.media_type:
        data = request.query_params.dict()
        body = request.data.get("file", b"")
        return data, body, _digest({**data, "file": body})
    data = request.data
    if not hasattr(data, "getlist"):  # JSON
        return data, None, None
    fields = {name: data.get(name) for name in data}  # a multipart form: one value each
    return fields, None, _digest(fields)


def _digest(fields: dict) -> bytes:
    """The request's fields and file as bytes to hash, the file by its content."""
    parts = []
    for name in sorted(fields):
        value = fields[name]
        if hasattr(value, "chunks"):
            value.seek(0)
            value = b"".join(value.chunks())
            fields[name].seek(0)
        parts.append(name.encode() + b"=" + hashlib.sha256(_bytes(value)).digest())
    return b"&".join(parts)


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _rows_of(fields: dict) -> list:
    """The rows to check: the JSON rows, or the CSV file's rows as row objects."""
    if fields.get("rows") is not None:
        if fields.get("file") is not None:
            raise jobs.JobRefused(
                [error("rows_or_file", "Give the rows as JSON or as a CSV file, not both.")]
            )
        return fields["rows"]
    upload = fields.get("file")
    if upload is None:
        raise jobs.JobRefused([error("required", "Give the rows (JSON) or a CSV file.", "rows")])
    data = upload if isinstance(upload, bytes) else b"".join(upload.chunks())
    return csv_rows(data)


def csv_rows(data: bytes) -> list:
    """A CSV file's rows as row objects ({to, reference, personalisation}), or UnreadableRow
    for one that cannot be read. The encoding and delimiter are detected as the contact
    import detects them; the header names the columns: an address column (email or to), an
    optional `reference`, and personalisation fields, named as templates name fields
    ("First Name" is first_name). An empty cell is left out of the row's personalisation (the
    contact's own value, if any, fills that field)."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise jobs.JobRefused(
            [error("invalid_file", "This is not a CSV file (it holds binary data).", "file")]
        )
    try:
        text, _ = file_decode(data)
        header, rows = file_rows(text, file_delimiter(text))
    except ImportFileError as err:
        raise jobs.JobRefused([error("invalid_file", str(err), "file")]) from None
    columns = _csv_columns(header)
    found = []
    for row in rows:
        if len(found) == jobs.JOB_MAX_ROWS:
            raise jobs.JobRefused(
                [error("too_many_rows", f"At most {jobs.JOB_MAX_ROWS:,} rows a job.", "file")],
                status=status.HTTP_400_BAD_REQUEST,  # as for JSON rows (the serializer)
            )
        if row.problem:
            found.append(jobs.UnreadableRow(f"Line {row.line}: {row.problem}.", row.line))
            continue
        item: dict = {"personalisation": {}}
        for (target, name), cell in zip(columns, row.cells, strict=True):
            if target == "to" or target == REFERENCE_COLUMN:
                item[target] = cell
            elif cell.strip():
                item["personalisation"][name] = cell
        found.append(jobs.FileRow(item, line=row.line))
    if not found:
        raise jobs.JobRefused(
            [error("no_rows", "The file has no rows below its first line.", "file")]
        )
    return found


def _csv_columns(header: list[str]) -> list[tuple[str, str]]:
    """What each column fills: ("to", ""), ("reference", "") or ("personalisation", name)."""
    columns, taken = [], {}
    for column in header:
        key = column.strip().lower().replace(" ", "").replace("-", "").replace("_", "")
        if key in ADDRESS_COLUMNS:
            target, name = "to", "to"
        elif key == REFERENCE_COLUMN:
            target, name = REFERENCE_COLUMN, REFERENCE_COLUMN
        else:
            target, name = "personalisation", contact_attribute_name(column)
            if name is None:
                raise jobs.JobRefused(
                    [
                        error(
                            "invalid_column",
                            f"The column “{column[:80]}” cannot name a template field: "
                            "a field's name starts with a letter.",
                            "file",
                        )
                    ]
                )
        if name in taken:
            raise jobs.JobRefused(
                [
                    error(
                        "duplicate_column",
                        f"The columns “{taken[name][:80]}” and “{column[:80]}” would both "
                        f"fill {name}: remove one.",
                        "file",
                    )
                ]
            )
        taken[name] = column
        columns.append((target, name))
    if "to" not in taken:
        raise jobs.JobRefused(
            [error("no_address_column", "Name the address column email (or to).", "file")]
        )
    return columns


# The counters a job's summary reads.
SUMMARY_COUNTERS = (
    *HANDED_OFF,
    CounterName.DELIVERED,
    CounterName.BOUNCED_HARD,
    CounterName.COMPLAINED,
    CounterName.REJECTED,
)


def job_summary(
    job: Campaign, request_row: JobRequest | None, counters: dict[str, int] | None = None
) -> dict:
    """A job as GET answers it: its status, counts by message status (its counters: one
    indexed read, whatever its size; the list reads a page's at once), progress and times."""
    if counters is None:
        counters = dict(
            CampaignCounter.objects.filter(
                campaign_id=job.pk, name__in=SUMMARY_COUNTERS
            ).values_list("name", "value")
        )
    total = request_row.total_rows if request_row else job.recipient_count
    created = total if job.frozen_at else min(job.recipient_count, total)
    answered = sum(counters.get(name, 0) for name in HANDED_OFF)
    sent = counters.get(CounterName.SENT, 0)
    field = serializers.DateTimeField()

    def when(value):
        return field.to_representation(value) if value else None

    return {
        "id": job.pk,
        "status": job.status,
        "status_reason": job.status_reason,
        "template": job.template_id,
        "test": job.test_mode,
        "rows": total,
        "invalid_count": request_row.invalid_count if request_row else 0,
        "progress": {
            "rows_created": created,
            "rows_total": total,
            "sent": sent,
            "answered": answered,
            "total": total,
        },
        "counts": {
            # Not handed to SES yet (including rows not created yet).
            "pending": max(total - answered, 0),
            "sent": sent,
            "failed": counters.get(CounterName.FAILED, 0),
            "unknown": counters.get(CounterName.UNKNOWN, 0),
            "skipped": counters.get(CounterName.SKIPPED, 0),
            # What SES reported since (each also counted in `sent`).
            "delivered": counters.get(CounterName.DELIVERED, 0),
            "bounced": counters.get(CounterName.BOUNCED_HARD, 0),
            "complained": counters.get(CounterName.COMPLAINED, 0),
            "rejected": counters.get(CounterName.REJECTED, 0),
        },
        "send_at": when(job.scheduled_at),
        "created_at": when(job.created_at),
        "started_at": when(job.started_at),
        "frozen_at": when(job.frozen_at),
        "finished_at": when(job.finished_at),
    }

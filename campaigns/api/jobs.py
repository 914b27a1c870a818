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
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.response import Response

from campaigns import jobs
from campaigns.api.base import MAX_ID, ApiView
from campaigns.api.errors import error_response
from campaigns.api.idempotency import idempotent_response
from campaigns.api.pagination import CursorPage, PageQuery
from campaigns.api.schema import ErrorSerializer, JobErrorsSerializer, errors, paginated
from campaigns.api.serializers import (
    AddressField,
    PersonalisationField,
    StrictQuery,
    StrictSerializer,
    TemplateRef,
    TextField,
)
from campaigns.api.views import template_lookup
from campaigns.counters import HANDED_OFF, CounterName
from campaigns.imports import ImportFileError, file_decode, file_delimiter, file_rows
from campaigns.models import ApiKey, Campaign, CampaignCounter, JobRequest
from campaigns.problems import problem
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


class JobListQuerySerializer(PageQuery, StrictQuery):
    """GET /api/v1/jobs's query parameters (an unknown one is refused)."""


# What the schema (/api/schema/) says a job request and answer are. A request is read without
# its serializers (rows are checked by campaigns.jobs): they describe it. An answer is made by
# its serializer (job_summary).


class JobRowSerializer(serializers.Serializer):
    to = AddressField()
    personalisation = PersonalisationField(required=False)
    reference = TextField(
        max_length=jobs.REFERENCE_MAX, required=False, allow_null=True, allow_blank=True
    )


class JobCreateJsonSerializer(serializers.Serializer):
    """A job as JSON: the rows in the body."""

    template = TemplateRef()
    rows = serializers.ListField(
        child=JobRowSerializer(), min_length=1, max_length=jobs.JOB_MAX_ROWS
    )
    send_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Not before this time; a time past means now."
    )
    skip_invalid_rows = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Send the valid rows and list the refused ones, rather than refuse the job.",
    )


@extend_schema_field(OpenApiTypes.BINARY)
class _UploadField(serializers.FileField):
    """A file in a multipart form: its bytes (spectacular's FileField is a URL, as answered)."""


class JobCreateUploadSerializer(serializers.Serializer):
    """A job as a CSV file uploaded in a form (multipart)."""

    template = TextField(help_text="The template's id or slug.")
    file = _UploadField(
        help_text="CSV: the first line names the columns: email (or to), reference, and "
        "personalisation fields (docs/API.md#bulk-jobs)."
    )
    send_at = serializers.DateTimeField(required=False, allow_null=True)
    skip_invalid_rows = serializers.BooleanField(required=False, default=False)


# The JSON example's rows as a CSV file (an empty cell: no reference).
_EXAMPLE_CSV = (
    "email,reference,first_name,month\n"
    "ada@example.com,acct-17,Ada,May\n"
    "grace@example.com,,Grace,May\n"
)
# A text/csv body's other fields, in the query string.
_CSV_QUERY = [
    OpenApiParameter(
        "template",
        str,
        description="For a text/csv body only (JSON and forms carry it in the body): the "
        "template's id or slug.",
        examples=[OpenApiExample("A slug", value="statement")],
    ),
    OpenApiParameter("send_at", OpenApiTypes.DATETIME, description="For a text/csv body only."),
    OpenApiParameter("skip_invalid_rows", bool, description="For a text/csv body only."),
]


class JobProgressSerializer(serializers.Serializer):
    rows_created = serializers.IntegerField(help_text="Rows with their message created.")
    rows_total = serializers.IntegerField()
    sent = serializers.IntegerField(help_text="Messages SES accepted.")
    answered = serializers.IntegerField(
        help_text="Messages with their outcome (sent, failed, unknown or skipped)."
    )
    total = serializers.IntegerField()


class JobCountsSerializer(serializers.Serializer):
    pending = serializers.IntegerField(help_text="Not handed to SES yet (rows not created too).")
    sent = serializers.IntegerField()
    failed = serializers.IntegerField()
    unknown = serializers.IntegerField(help_text="SES may have sent it: never sent again.")
    skipped = serializers.IntegerField()
    delivered = serializers.IntegerField()
    bounced = serializers.IntegerField()
    complained = serializers.IntegerField()
    rejected = serializers.IntegerField()


class JobSerializer(serializers.Serializer):
    """A job as GET answers it (job_summary)."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Campaign.Status.choices)
    status_reason = serializers.CharField()
    template = serializers.IntegerField(source="template_id")
    test = serializers.BooleanField(
        source="test_mode", help_text="Made with a test key (never handed to SES)."
    )
    # A job's numbers, from its counters and its request row (job_summary reads them).
    rows = serializers.IntegerField(source="figures.rows_total")
    invalid_count = serializers.IntegerField(source="figures.invalid_count")
    progress = JobProgressSerializer(source="figures")
    counts = JobCountsSerializer(source="figures")
    send_at = serializers.DateTimeField(source="scheduled_at", allow_null=True)
    created_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    frozen_at = serializers.DateTimeField(
        allow_null=True, help_text="When every row had its message created."
    )
    finished_at = serializers.DateTimeField(allow_null=True)


class _StoredErrors(serializers.ListSerializer):
    """Errors as stored (in the one error shape, made by campaigns.jobs), answered as they are."""

    def to_representation(self, data) -> list:
        return list(data)


class JobDetailSerializer(JobSerializer):
    invalid_rows = _StoredErrors(
        child=ErrorSerializer(),
        source="figures.invalid_rows",
        help_text="The refused rows' errors (the first).",
    )


class JobAcceptedSerializer(serializers.Serializer):
    """POST /api/v1/jobs's 202: the job and its rows are stored."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Campaign.Status.choices)
    rows = serializers.IntegerField(help_text="The rows accepted.")
    invalid_count = serializers.IntegerField(help_text="The rows refused (skip_invalid_rows).")
    invalid_rows = ErrorSerializer(many=True, help_text="The refused rows' errors (the first).")


_JOB = {
    "id": 812,
    "status": "sending",
    "status_reason": "",
    "template": 31,
    "test": False,
    "rows": 20000,
    "invalid_count": 0,
    "progress": {
        "rows_created": 20000,
        "rows_total": 20000,
        "sent": 12500,
        "answered": 12520,
        "total": 20000,
    },
    "counts": {
        "pending": 7480,
        "sent": 12500,
        "failed": 3,
        "unknown": 0,
        "skipped": 17,
        "delivered": 11800,
        "bounced": 40,
        "complained": 1,
        "rejected": 0,
    },
    "send_at": None,
    "created_at": "2026-12-05T10:00:00.120000Z",
    "started_at": "2026-12-05T10:00:01.020000Z",
    "frozen_at": "2026-12-05T10:00:09.400000Z",
    "finished_at": None,
}
# _JOB cancelled: its 7,480 messages not yet handed to SES end skipped (17 were already).
_JOB_CANCELLED = {
    **_JOB,
    "status": "cancelled",
    "progress": {**_JOB["progress"], "answered": 20000},
    "counts": {**_JOB["counts"], "pending": 0, "skipped": 7497},
    "finished_at": "2026-12-05T10:02:30.500000Z",
}
_ROWS_REFUSED = OpenApiResponse(
    JobErrorsSerializer,
    description="Rows refused (each error with its `row`, and `line` for a CSV file), a file "
    "that cannot be read, or a template that does not exist or cannot be sent.",
)


class JobListCreate(ApiView):
    scopes = {"POST": "jobs:send", "GET": "jobs:read"}
    idempotent = True  # its POST takes an Idempotency-Key (the schema says so)
    parser_classes = [JobJsonParser, parsers.MultiPartParser, CsvParser]

    @property
    def max_body_bytes(self) -> int:  # ApiView refuses a larger body (413) before reading it
        return JOB_MAX_BODY_BYTES

    @extend_schema(
        operation_id="jobs_create",
        summary="Create a job",
        description="Send one template to up to 100,000 recipients, each row with its own "
        "personalisation: the rows as JSON, or a CSV file uploaded (multipart, field `file`) "
        "or sent as the body (text/csv, the other fields in the query string). Every row is "
        "checked before anything is stored; 202 once the job and its rows are committed.",
        request={
            "application/json": JobCreateJsonSerializer,
            "multipart/form-data": JobCreateUploadSerializer,
            "text/csv": {"type": "string", "format": "binary"},
        },
        parameters=_CSV_QUERY,
        responses={
            202: JobAcceptedSerializer,
            400: OpenApiResponse(
                JobErrorsSerializer, description="Malformed: bad JSON, no rows, too many rows…"
            ),
            422: _ROWS_REFUSED,
        },
        examples=[
            OpenApiExample(
                "Two rows",
                request_only=True,
                media_type="application/json",
                value={
                    "template": "statement",
                    "rows": [
                        {
                            "to": "ada@example.com",
                            "personalisation": {"first_name": "Ada", "month": "May"},
                            "reference": "acct-17",
                        },
                        {
                            "to": "grace@example.com",
                            "personalisation": {"first_name": "Grace", "month": "May"},
                        },
                    ],
                },
            ),
            OpenApiExample(
                "Two rows in a CSV body",
                request_only=True,
                media_type="text/csv",
                value=_EXAMPLE_CSV,
            ),
            OpenApiExample(
                "Two rows in an uploaded CSV file",
                request_only=True,
                media_type="multipart/form-data",
                value={"template": "statement", "file": _EXAMPLE_CSV},
            ),
            OpenApiExample(
                "Accepted",
                response_only=True,
                status_codes=["202"],
                value={
                    "id": 812,
                    "status": "scheduled",
                    "rows": 2,
                    "invalid_count": 0,
                    "invalid_rows": [],
                },
            ),
            OpenApiExample(
                "Rows refused",
                response_only=True,
                status_codes=["422"],
                value={
                    "errors": [
                        {
                            "code": "invalid_address",
                            "field": "to",
                            "row": 2,
                            "message": "The email address is not valid.",
                        }
                    ],
                    "error_count": 1,
                },
            ),
        ],
    )
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
                [problem("template_not_found", "No template has this id or slug.", "template")],
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
        return Response(JobAcceptedSerializer(answer).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="jobs_list",
        summary="List jobs",
        description="The key's mode's jobs, newest first, a page at a time.",
        parameters=[JobListQuerySerializer],
        responses={200: paginated(JobSerializer)},
        examples=[
            OpenApiExample("A page", response_only=True, value={"results": [_JOB], "next": None})
        ],
    )
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
        return page.answer(
            [job_summary(job, requests.get(job.pk), counters[job.pk]) for job in jobs_], jobs_
        )


class JobDetail(ApiView):
    scopes = {"GET": "jobs:read"}

    @extend_schema(
        operation_id="jobs_retrieve",
        summary="Read a job",
        description="A job's status, progress and counts, and its refused rows.",
        responses={200: JobDetailSerializer},
        examples=[
            OpenApiExample("Sending", response_only=True, value={**_JOB, "invalid_rows": []})
        ],
    )
    def get(self, request, pk: int):
        job = _job_or_404(request, pk)
        request_row = JobRequest.objects.filter(pk=job.pk).first()
        return Response(job_summary(job, request_row, detail=True))


class JobCancel(ApiView):
    scopes = {"POST": "jobs:send"}

    @extend_schema(
        operation_id="jobs_cancel",
        summary="Cancel a job",
        description="Messages not yet handed to SES end skipped; rows not yet created never "
        "will be. The answer is the job as GET shows it.",
        request=None,
        responses={200: JobSerializer, **errors(409)},
        examples=[OpenApiExample("Cancelled", response_only=True, value=_JOB_CANCELLED)],
    )
    def post(self, request, pk: int):
        job = _job_or_404(request, pk)
        try:
            campaign_cancel(campaign=job)
        except CampaignError:
            return error_response(
                status.HTTP_409_CONFLICT,
                [problem("not_cancellable", f"A {job.status} job cannot be cancelled.")],
            )
        job.refresh_from_db()
        return Response(job_summary(job, JobRequest.objects.filter(pk=job.pk).first()))


class JobResume(ApiView):
    """A job the bounce and complaint circuit breaker paused (campaigns.breaker), sent on:
    the admin's resume (services.campaign_resume), after the client has looked at why."""

    scopes = {"POST": "jobs:send"}

    @extend_schema(
        operation_id="jobs_resume",
        summary="Resume a paused job",
        request=None,
        responses={200: JobSerializer, **errors(409)},
        examples=[OpenApiExample("Sending again", response_only=True, value=_JOB)],
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
                [
                    problem(
                        "not_paused", f"A {job.status} job cannot be resumed: only a paused one."
                    )
                ],
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
                [problem("rows_or_file", "Give the rows as JSON or as a CSV file, not both.")]
            )
        return fields["rows"]
    upload = fields.get("file")
    if upload is None:
        raise jobs.JobRefused([problem("required", "Give the rows (JSON) or a CSV file.", "rows")])
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
            [problem("invalid_file", "This is not a CSV file (it holds binary data).", "file")]
        )
    try:
        text, _ = file_decode(data)
        header, rows = file_rows(text, file_delimiter(text))
    except ImportFileError as err:
        raise jobs.JobRefused([problem("invalid_file", str(err), "file")]) from None
    columns = _csv_columns(header)
    found = []
    for row in rows:
        if len(found) == jobs.JOB_MAX_ROWS:
            raise jobs.JobRefused(
                [problem("too_many_rows", f"At most {jobs.JOB_MAX_ROWS:,} rows a job.", "file")],
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
            [problem("no_rows", "The file has no rows below its first line.", "file")]
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
                        problem(
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
                    problem(
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
            [problem("no_address_column", "Name the address column email (or to).", "file")]
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
    job: Campaign,
    request_row: JobRequest | None,
    counters: dict[str, int] | None = None,
    *,
    detail: bool = False,
) -> dict:
    """A job as GET answers it (JobSerializer; `detail`: JobDetailSerializer, with its refused
    rows), its numbers read by job_figures."""
    job.figures = job_figures(job, request_row, counters)
    return _SUMMARY[detail].to_representation(job)


# The serializers of job_summary, made once: one made per call copies its fields (~0.6 ms a
# call against ~0.07 ms; the admin's job list asks for two summaries a row).
_SUMMARY = {False: JobSerializer(), True: JobDetailSerializer()}


def job_figures(
    job: Campaign, request_row: JobRequest | None, counters: dict[str, int] | None = None
) -> dict:
    """A job's numbers, as JobSerializer reads them: counts by message status (its counters:
    one indexed read, whatever its size; the list reads a page's at once) and progress."""
    if counters is None:
        counters = dict(
            CampaignCounter.objects.filter(
                campaign_id=job.pk, name__in=SUMMARY_COUNTERS
            ).values_list("name", "value")
        )
    total = request_row.total_rows if request_row else job.recipient_count
    answered = sum(counters.get(name, 0) for name in HANDED_OFF)
    return {
        "rows_total": total,
        "total": total,
        "rows_created": total if job.frozen_at else min(job.recipient_count, total),
        "answered": answered,
        "invalid_count": request_row.invalid_count if request_row else 0,
        "invalid_rows": request_row.invalid_rows if request_row else [],
        # Not handed to SES yet (including rows not created yet).
        "pending": max(total - answered, 0),
        "sent": counters.get(CounterName.SENT, 0),
        "failed": counters.get(CounterName.FAILED, 0),
        "unknown": counters.get(CounterName.UNKNOWN, 0),
        "skipped": counters.get(CounterName.SKIPPED, 0),
        # What SES reported since (each also counted in `sent`).
        "delivered": counters.get(CounterName.DELIVERED, 0),
        "bounced": counters.get(CounterName.BOUNCED_HARD, 0),
        "complained": counters.get(CounterName.COMPLAINED, 0),
        "rejected": counters.get(CounterName.REJECTED, 0),
    }

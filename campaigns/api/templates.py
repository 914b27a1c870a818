"""Templates over the API (docs/API.md#templates): list, read, create, change, delete, and a
preview rendered for given personalisation.

The rules are the admin's: every write goes through templates_app.forms.TemplateForm, the
admin's form, so a template the admin refuses is refused here for the same reason (a part
that does not compile: 422 with the part as `field` and its `line`)."""

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, ProtectedError, QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from campaigns.api.base import MAX_ID, ApiView
from campaigns.api.errors import ApiError, error_response
from campaigns.api.forms import form_errors
from campaigns.api.idempotency import idempotent_response
from campaigns.api.pagination import CursorPage, PageQuery
from campaigns.api.schema import answer_example, errors, paginated
from campaigns.api.serializers import StrictQuery, StrictSerializer, form_text
from campaigns.messages import message_preview
from campaigns.models import Campaign
from campaigns.personalisation import PersonalisationInvalid, personalisation_check
from campaigns.problems import problem
from templates_app.forms import TemplateForm
from templates_app.language import PARTS, TemplateSyntaxError
from templates_app.models import Template

# A template's two bodies are at most 200 kB each (templates_app.language.MAX_BODY_BYTES);
# JSON's escapes can make that up to ~3 times as many bytes. Django reads at most
# DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) of a JSON body anyway.
TEMPLATE_MAX_BODY_BYTES = 2 * 1024 * 1024
WRITABLE = ("name", "slug", "subject", "html", "text")


class TemplateSerializer(serializers.Serializer):
    """A template as the API answers it."""

    id = serializers.IntegerField(source="pk")
    name = serializers.CharField()
    slug = serializers.CharField(allow_null=True, help_text="How messages and jobs may name it.")
    subject = serializers.CharField()
    html = serializers.CharField()
    text = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


_text = form_text


class TemplateWriteSerializer(StrictSerializer):
    """POST's and PATCH's fields (PATCH: only those given change)."""

    name = _text()
    slug = _text(allow_null=True, help_text="Letters, digits, - and _; empty or null: none.")
    subject = _text()
    html = _text()
    text = _text()


class TemplateListQuery(PageQuery, StrictQuery):
    """GET /api/v1/templates's filters (and-ed), as the contacts' and campaigns' lists have
    theirs."""

    slug = serializers.CharField(
        max_length=100, required=False, help_text="The template with this slug."
    )
    name = serializers.CharField(
        max_length=200,
        required=False,
        help_text="Templates whose name contains this text, whatever its case (as the "
        "admin's search).",
    )
    updated_since = serializers.DateTimeField(
        required=False, help_text="Changed at or after this time (ISO 8601)."
    )
    # allow_null: absent is "either" (DRF reads a missing boolean of a query string as false).
    in_use = serializers.BooleanField(
        required=False,
        allow_null=True,
        help_text="true: only templates a campaign, job or message stream uses (those that "
        "cannot be deleted); false: only the others.",
    )


def templates_filtered(filters: dict) -> QuerySet[Template]:
    """The templates GET /api/v1/templates lists for these filters."""
    templates = Template.objects.all()
    if filters.get("slug"):
        templates = templates.filter(slug=filters["slug"])
    if filters.get("name"):
        templates = templates.filter(name__icontains=filters["name"])
    if "updated_since" in filters:
        templates = templates.filter(updated_at__gte=filters["updated_since"])
    if filters.get("in_use") is not None:
        # What refuses a delete (Campaign.template is PROTECT): any campaign of any kind.
        used = Exists(Campaign.objects.filter(template_id=OuterRef("pk")))
        templates = templates.filter(used if filters["in_use"] else ~used)
    return templates


class PreviewRequestSerializer(StrictSerializer):
    personalisation = serializers.DictField(
        required=False,
        default=dict,
        help_text="The template's fields: a flat object of text, numbers, true/false or null "
        "(as a message's personalisation).",
    )

    def validate_personalisation(self, value):
        try:
            return personalisation_check(value)
        except PersonalisationInvalid as err:
            raise serializers.ValidationError(err.message, code=err.code) from None


class PreviewSerializer(serializers.Serializer):
    subject = serializers.CharField()
    html = serializers.CharField()
    text = serializers.CharField()


_EXAMPLE_TEMPLATE = {
    "name": "Password reset",
    "slug": "password-reset",
    "subject": 'Reset your password, {{ first_name | default: "there" }}',
    "html": '<p>Hi {{ first_name | default: "there" }},</p><p><a href="{{ link }}">Reset</a></p>',
    "text": 'Hi {{ first_name | default: "there" }}, reset: {{ link }}',
}
# The example template as the API answers it (every answer below shows it).
_TEMPLATE = {
    "id": 7,
    **_EXAMPLE_TEMPLATE,
    "created_at": "2026-11-20T14:02:11Z",
    "updated_at": "2026-11-20T14:02:11Z",
}
# PATCH's example: a new subject, the rest as it was.
_NEW_SUBJECT = 'Your password reset link, {{ first_name | default: "there" }}'


_EXAMPLE_COMPILE_ERROR = OpenApiExample(
    "A part that does not compile",
    status_codes=["422"],
    response_only=True,
    value={
        "errors": [
            {
                "code": "template_syntax",
                "field": "html",
                "line": 3,
                "message": "Line 3: This does not parse: {% if vip %} is never closed: "
                "add {% endif %}",
            }
        ]
    },
)


def template_compile_errors(form: TemplateForm) -> list[dict]:
    """The form's errors, a part's compile error with its line (the admin's message says it
    first; `line` says it to a program)."""
    found = form_errors(form)
    lines = {part: err.line for part, err in getattr(form, "compile_errors", {}).items()}
    for item in found:
        if item["field"] in lines and item["code"] in ("template_syntax", "template_limit"):
            item["line"] = lines[item["field"]]
    return found


def _saved(form: TemplateForm, *, created: bool) -> Response:
    """The form's template saved (in the caller's transaction), or the refusal: 422 with the
    form's errors, or 409 when another request took the name or slug since the form checked."""
    if not form.is_valid():
        return error_response(status.HTTP_422_UNPROCESSABLE_ENTITY, template_compile_errors(form))
    try:
        with transaction.atomic():
            template = form.save()
    except IntegrityError:
        return error_response(
            status.HTTP_409_CONFLICT,
            [problem("unique", "Another template took this name or slug meanwhile.", "name")],
        )
    code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return Response(TemplateSerializer(template).data, status=code)


def _template(pk: int, *, lock: bool = False) -> Template:
    rows = Template.objects.select_for_update() if lock else Template.objects
    found = rows.filter(pk=pk).first() if pk <= MAX_ID else None
    if found is None:
        raise ApiError(status.HTTP_404_NOT_FOUND, "not_found", "No template has this id.")
    return found


class TemplateListCreate(ApiView):
    scopes = {"GET": "templates:read", "POST": "templates:write"}
    idempotent = True  # its POST takes an Idempotency-Key (the schema says so)
    max_body_bytes = TEMPLATE_MAX_BODY_BYTES

    @extend_schema(
        operation_id="templates_list",
        summary="List templates",
        parameters=[TemplateListQuery],
        responses={200: paginated(TemplateSerializer)},
        examples=[answer_example("A page", {"results": [_TEMPLATE], "next": None})],
    )
    def get(self, request):
        query = TemplateListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        page = CursorPage(request, size=filters["limit"])
        rows = page.rows(templates_filtered(filters))
        return page.answer(TemplateSerializer(rows, many=True).data, rows)

    @extend_schema(
        operation_id="templates_create",
        summary="Create a template",
        request=TemplateWriteSerializer,
        responses={201: TemplateSerializer, **errors(409, 422)},
        examples=[
            OpenApiExample("A template", value=_EXAMPLE_TEMPLATE, request_only=True),
            answer_example("Created", _TEMPLATE, "201"),
            _EXAMPLE_COMPILE_ERROR,
        ],
    )
    def post(self, request):
        return idempotent_response(request, lambda: self._create(request))

    def _create(self, request) -> Response:
        given = TemplateWriteSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        return _saved(TemplateForm(data=dict(given.validated_data)), created=True)


class TemplateDetail(ApiView):
    scopes = {
        "GET": "templates:read",
        "PATCH": "templates:write",
        "DELETE": "templates:write",
    }
    max_body_bytes = TEMPLATE_MAX_BODY_BYTES

    @extend_schema(
        operation_id="templates_read",
        summary="Read a template",
        responses={200: TemplateSerializer, **errors(404)},
        examples=[answer_example("A template", _TEMPLATE)],
    )
    def get(self, request, pk: int):
        return Response(TemplateSerializer(_template(pk)).data)

    @extend_schema(
        operation_id="templates_update",
        summary="Change a template",
        description="Only the fields given change; the whole template is checked again, as "
        "the admin checks it. Campaigns that have started keep the content they started with.",
        request=TemplateWriteSerializer,
        responses={200: TemplateSerializer, **errors(404, 409, 422)},
        examples=[
            OpenApiExample("A new subject", value={"subject": _NEW_SUBJECT}, request_only=True),
            answer_example(
                "Changed",
                {**_TEMPLATE, "subject": _NEW_SUBJECT, "updated_at": "2026-12-01T09:15:40Z"},
            ),
            _EXAMPLE_COMPILE_ERROR,
        ],
    )
    def patch(self, request, pk: int):
        given = TemplateWriteSerializer(data=request.data, partial=True)
        given.is_valid(raise_exception=True)
        with transaction.atomic():
            template = _template(pk, lock=True)
            current = {name: getattr(template, name) for name in WRITABLE}
            form = TemplateForm(data={**current, **given.validated_data}, instance=template)
            response = _saved(form, created=False)
            if not status.is_success(response.status_code):
                transaction.set_rollback(True)
            return response

    @extend_schema(
        operation_id="templates_delete",
        summary="Delete a template",
        description="Refused (409 template_in_use) while a campaign, job or message stream "
        "uses it, as in the admin.",
        responses={204: None, **errors(404, 409)},
    )
    def delete(self, request, pk: int):
        template = _template(pk)
        try:
            with transaction.atomic():
                template.delete()
        except ProtectedError as err:
            raise ApiError(
                status.HTTP_409_CONFLICT,
                "template_in_use",
                f"This template is used by {len(err.protected_objects):,} campaign(s), jobs "
                "or message streams: it cannot be deleted.",
            ) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplatePreview(ApiView):
    scopes = {"POST": "templates:read"}

    @extend_schema(
        operation_id="templates_preview",
        summary="Render a template for given personalisation",
        description="The subject, HTML and text as the sender renders them for these fields "
        "(values made text as sent; a field without a value is empty, so fallbacks show). "
        "Links are shown as written: a sent message's go through click tracking. Nothing is "
        "sent or stored.",
        request=PreviewRequestSerializer,
        responses={200: PreviewSerializer, **errors(404, 422)},
        examples=[
            OpenApiExample(
                "Personalisation",
                value={"personalisation": {"first_name": "Ada", "link": "https://example.com/r"}},
                request_only=True,
            ),
            # (What message_preview renders of the example template for these fields.)
            answer_example(
                "Rendered",
                {
                    "subject": "Reset your password, Ada",
                    "html": '<p>Hi Ada,</p><p><a href="https://example.com/r">Reset</a></p>',
                    "text": "Hi Ada, reset: https://example.com/r",
                },
            ),
        ],
    )
    def post(self, request, pk: int):
        given = PreviewRequestSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        template = _template(pk)
        try:
            message = message_preview(
                template=template, values=given.validated_data["personalisation"]
            )
        except TemplateSyntaxError as err:
            # Saved before a rule it now breaks (the language's limits came later).
            part = err.part if err.part in PARTS else "html"
            return error_response(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                [problem("template_invalid", str(err), part, line=err.line)],
            )
        return Response(PreviewSerializer(message).data)

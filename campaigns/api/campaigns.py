"""Campaigns over the API (docs/API.md#campaigns): list, read, create, change while a draft,
the controls (schedule, send now, pause, resume, cancel, unschedule) and the report.

Everything a marketer does on the campaign page, by the same rules: fields through the admin's
form (campaigns.forms.CampaignForm), every move through campaigns.services' guarded functions.
A move the state machine refuses is a 409 `invalid_transition` naming the status; a campaign
that cannot be sent as it stands (an empty list, a template that does not compile, a time that
has passed) a 422 `campaign_not_sendable` with the service's reason. Only campaigns (kind
`campaign`): the API's transactional streams and bulk jobs are not campaigns here.
"""

import zoneinfo
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from campaigns import services
from campaigns.api.base import MAX_ID, ApiView
from campaigns.api.errors import ApiError, error_response
from campaigns.api.forms import form_errors
from campaigns.api.idempotency import idempotent_response
from campaigns.api.pagination import CursorPage, PageQuery
from campaigns.api.schema import answer_example, errors, paginated
from campaigns.api.serializers import (
    StrictQuery,
    StrictSerializer,
    TemplateRef,
    TextField,
    form_text,
)
from campaigns.api.views import template_lookup
from campaigns.forms import CampaignForm
from campaigns.models import ApiKey, Campaign
from campaigns.preferences import time_zone_check
from campaigns.problems import problem
from campaigns.selectors import campaign_status_label
from tracking.reports.report import CampaignReport, Rate, campaign_report

C = Campaign.Status
# The form's field names as the API names them.
FIELD_NAMES = {"contact_list": "list"}
FIELD_NAMES_BACK = {api: form for form, api in FIELD_NAMES.items()}
FORM_FIELDS = ("name", "template", "contact_list", "from_email", "send_path")


def api_campaigns(request) -> QuerySet[Campaign]:
    """The campaigns this caller sees: kind `campaign` only; a key those of its own mode (a
    test key the campaigns it made, which are simulated and never reach SES; a live key the
    others), as for jobs; a staff session all."""
    campaigns = Campaign.objects.filter(kind=Campaign.Kind.CAMPAIGN).defer("template_snapshot")
    if isinstance(request.auth, ApiKey):
        campaigns = campaigns.filter(test_mode=request.auth.test)
    return campaigns


def _campaign(request, pk: int, *, lock: bool = False) -> Campaign:
    rows = api_campaigns(request)
    if lock:
        rows = rows.select_for_update()
    found = rows.filter(pk=pk).first() if pk <= MAX_ID else None
    if found is None:
        raise ApiError(status.HTTP_404_NOT_FOUND, "not_found", "No campaign has this id.")
    return found


class CampaignSerializer(serializers.Serializer):
    """A campaign as the API answers it."""

    id = serializers.IntegerField(source="pk")
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=C.choices)
    status_label = serializers.SerializerMethodField(help_text="As the admin shows it.")
    status_reason = serializers.CharField(help_text="Why it failed, or what it waits for.")
    template = serializers.IntegerField(source="template_id")
    list = serializers.IntegerField(source="contact_list_id")
    from_email = serializers.CharField(help_text='"" for the default sender.')
    send_path = serializers.ChoiceField(choices=Campaign.SendPath.choices)
    test = serializers.BooleanField(source="test_mode")
    send_at = serializers.DateTimeField(source="scheduled_at", allow_null=True)
    local_time = serializers.CharField(
        source="local_send_time",
        help_text="The wall-clock time each contact gets it at in their own zone; "
        '"" for one moment for all.',
    )
    local_time_zone = serializers.CharField(
        source="local_fallback_zone", help_text="The zone of contacts without one."
    )
    recipients = serializers.IntegerField(source="recipient_count")
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_status_label(self, campaign: Campaign) -> str:
        return campaign_status_label(status=campaign.status, scheduled_at=campaign.scheduled_at)


# The schema's example of a campaign (every answer below is one, in its status).
_CAMPAIGN = {
    "id": 42,
    "name": "December news",
    "status": "sent",
    "status_label": "Sent",
    "status_reason": "",
    "template": 7,
    "list": 3,
    "from_email": "News <news@example.com>",
    "send_path": "bulk",
    "test": False,
    "send_at": "2026-12-01T09:00:00Z",
    "local_time": "",
    "local_time_zone": "",
    "recipients": 1000,
    "started_at": "2026-12-01T09:00:02Z",
    "finished_at": "2026-12-01T09:04:41Z",
    "created_at": "2026-11-28T15:12:09Z",
    "updated_at": "2026-12-01T09:04:41Z",
}
# A draft: what create and update answer.
_DRAFT = {
    **_CAMPAIGN,
    "status": "draft",
    "status_label": "Draft",
    "send_at": None,
    "recipients": 0,
    "started_at": None,
    "finished_at": None,
    "updated_at": "2026-11-28T15:12:09Z",
}


def _answer(campaign_id: int, code: int = status.HTTP_200_OK) -> Response:
    campaign = Campaign.objects.defer("template_snapshot").get(pk=campaign_id)
    return Response(CampaignSerializer(campaign).data, status=code)


# Types only: the values' rules (required, lengths, the sender's address) are the admin
# form's, answered 422.
_text = form_text


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}]})
class TemplateIdOrSlug(TemplateRef):
    """TemplateRef, described to the schema: an id (integer) or a slug (string)."""


class CampaignWriteSerializer(StrictSerializer):
    name = _text()
    template = TemplateIdOrSlug(required=False, help_text="The template's id or slug.")
    list = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False)
    from_email = _text(help_text='"News <news@example.com>"; empty for the default sender.')
    send_path = _text(help_text="bulk (default) or rendered.")


class CampaignListQuery(PageQuery, StrictQuery):
    status = serializers.ChoiceField(choices=C.choices, required=False)


def _form_data(given: dict) -> dict | Response:
    """The request's fields as the form's data (the template named by id or slug), or the
    422 for a template that none names."""
    data = {FIELD_NAMES_BACK.get(name, name): value for name, value in given.items()}
    if "template" in data:
        template = template_lookup(data["template"])
        if template is None:
            return error_response(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                [problem("template_not_found", "No template has this id or slug.", "template")],
            )
        data["template"] = template.pk
    return data


def _refused_form(form: CampaignForm) -> Response:
    return error_response(
        status.HTTP_422_UNPROCESSABLE_ENTITY, form_errors(form, fields=FIELD_NAMES)
    )


class CampaignListCreate(ApiView):
    scopes = {"GET": "campaigns:read", "POST": "campaigns:write"}
    idempotent = True  # its POST takes an Idempotency-Key (the schema says so)

    @extend_schema(
        operation_id="campaigns_list",
        summary="List campaigns",
        parameters=[CampaignListQuery],
        responses={200: paginated(CampaignSerializer)},
        examples=[answer_example("A page", {"results": [_CAMPAIGN], "next": None})],
    )
    def get(self, request):
        query = CampaignListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        campaigns = api_campaigns(request)
        if filters.get("status"):
            campaigns = campaigns.filter(status=filters["status"])
        page = CursorPage(request, size=filters["limit"])
        rows = page.rows(campaigns)
        return page.answer(CampaignSerializer(rows, many=True).data, rows)

    @extend_schema(
        operation_id="campaigns_create",
        summary="Create a campaign (a draft)",
        request=CampaignWriteSerializer,
        responses={201: CampaignSerializer, **errors(422)},
        examples=[
            OpenApiExample(
                "A campaign",
                value={
                    "name": "December news",
                    "template": "december-news",
                    "list": 3,
                    "from_email": "News <news@example.com>",
                },
                request_only=True,
            ),
            answer_example("A draft", _DRAFT, "201"),
        ],
    )
    def post(self, request):
        return idempotent_response(request, lambda: self._create(request))

    def _create(self, request) -> Response:
        given = CampaignWriteSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = _form_data(dict(given.validated_data))
        if isinstance(data, Response):
            return data
        form = CampaignForm(data={"send_path": Campaign.SendPath.BULK, **data})
        if not form.is_valid():
            return _refused_form(form)
        campaign = form.save(commit=False)
        # A test key's campaign is simulated: every step runs, SES is never called.
        campaign.test_mode = isinstance(request.auth, ApiKey) and request.auth.test
        campaign.save()
        return _answer(campaign.pk, status.HTTP_201_CREATED)


class CampaignDetail(ApiView):
    scopes = {"GET": "campaigns:read", "PATCH": "campaigns:write"}

    @extend_schema(
        operation_id="campaigns_read",
        summary="Read a campaign",
        responses={200: CampaignSerializer, **errors(404)},
        examples=[answer_example("Sent", _CAMPAIGN)],
    )
    def get(self, request, pk: int):
        return Response(CampaignSerializer(_campaign(request, pk)).data)

    @extend_schema(
        operation_id="campaigns_update",
        summary="Change a draft",
        description="Only the fields given change, checked as the admin's form checks them. "
        "A campaign that is no longer a draft is not changed (409 not_draft), as in the admin.",
        request=CampaignWriteSerializer,
        responses={200: CampaignSerializer, **errors(404, 409, 422)},
        examples=[
            OpenApiExample(
                "Another template and sender",
                value={"template": "december-news-b", "from_email": "Ada <ada@example.com>"},
                request_only=True,
            ),
            answer_example(
                "The changed draft",
                {
                    **_DRAFT,
                    "template": 8,
                    "from_email": "Ada <ada@example.com>",
                    "updated_at": "2026-11-29T08:30:00Z",
                },
            ),
        ],
    )
    def patch(self, request, pk: int):
        given = CampaignWriteSerializer(data=request.data, partial=True)
        given.is_valid(raise_exception=True)
        data = _form_data(dict(given.validated_data))
        if isinstance(data, Response):
            return data
        with transaction.atomic():
            # Locked: a schedule or send committed meanwhile cannot slip between the check
            # and the write (its guarded UPDATE waits for this transaction).
            campaign = _campaign(request, pk, lock=True)
            if campaign.status != C.DRAFT:
                raise ApiError(
                    status.HTTP_409_CONFLICT,
                    "not_draft",
                    f"Only a draft can be changed; this campaign is {campaign.status}.",
                )
            current = {
                "name": campaign.name,
                "template": campaign.template_id,
                "contact_list": campaign.contact_list_id,
                "from_email": campaign.from_email,
                "send_path": campaign.send_path,
            }
            form = CampaignForm(data={**current, **data}, instance=campaign)
            if not form.is_valid():
                return _refused_form(form)
            # The form's fields only: the status is campaign_transition's to write.
            form.save(commit=False).save(update_fields=[*FORM_FIELDS, "updated_at"])
        return _answer(pk)


# -- the controls ------------------------------------------------------------------------------


class NoBody(StrictSerializer):
    """An action without fields: an empty body, or {}."""


def _expected_recipients() -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_ID,
        help_text="The audience's size you confirmed (as the admin's review asks): if the "
        "campaign's list has another number of recipients now, 409 audience_changed naming "
        "it, and nothing changes. Absent: no check.",
    )


class SendSerializer(StrictSerializer):
    """Send now's one optional field (an empty body or {} sends without the check)."""

    expected_recipients = _expected_recipients()


class ScheduleSerializer(StrictSerializer):
    send_at = serializers.DateTimeField(
        required=False,
        help_text="When to send, ISO 8601 with an offset (without one: UTC). Give this or "
        "local_time.",
    )
    local_time = TextField(
        required=False,
        max_length=32,
        help_text="A wall-clock time without an offset (2030-01-31T09:00): each contact gets "
        "it at this time in their own time zone, in waves. Give this or send_at.",
    )
    time_zone = TextField(
        required=False,
        max_length=64,
        help_text="With local_time: the IANA zone of contacts without one (default: the "
        "site's TIME_ZONE).",
    )
    expected_recipients = _expected_recipients()

    def validate_local_time(self, value: str) -> datetime:
        try:
            wall = datetime.fromisoformat(value)
        except ValueError:
            wall = None
        if wall is None or wall.tzinfo is not None:
            raise serializers.ValidationError(
                "A wall-clock time without an offset, e.g. 2030-01-31T09:00.", code="invalid"
            )
        return wall.replace(second=0, microsecond=0)

    def validate_time_zone(self, value: str) -> str:
        return time_zone_valid(value)

    def validate(self, attrs):
        if ("send_at" in attrs) == ("local_time" in attrs):
            raise serializers.ValidationError(
                {"send_at": [serializers.ErrorDetail("Give send_at or local_time.", "required")]}
            )
        if "time_zone" in attrs and "local_time" not in attrs:
            raise serializers.ValidationError(
                {
                    "time_zone": [
                        serializers.ErrorDetail(
                            "time_zone goes with local_time (send_at carries its offset).",
                            "invalid",
                        )
                    ]
                }
            )
        return attrs


def time_zone_valid(value: str) -> str:
    """An IANA time zone this machine knows (the admin's rule: preferences.time_zone_check)."""
    try:
        return time_zone_check(value)
    except DjangoValidationError as err:
        raise serializers.ValidationError(err.messages[0], code="invalid_time_zone") from None


def _act(request, pk: int, action, **kwargs) -> Response:
    """`action(campaign=…, **kwargs)`, a guarded service, on the caller's campaign: its new
    state, 409 for a move the state machine refuses, 422 for a campaign it cannot send."""
    campaign = _campaign(request, pk)
    try:
        action(campaign=campaign, **kwargs)
    except services.CampaignAudienceChanged as err:
        return error_response(
            status.HTTP_409_CONFLICT,
            [
                problem(
                    "audience_changed",
                    f"The campaign's list has {err.recipients:,} recipients now, not "
                    f"{err.expected:,}: nothing was changed. Check it, and send again with "
                    "expected_recipients set to the new count.",
                    "expected_recipients",
                    recipients=err.recipients,
                )
            ],
        )
    except services.CampaignStateError as err:
        raise ApiError(status.HTTP_409_CONFLICT, "invalid_transition", str(err)) from None
    except services.CampaignError as err:
        raise ApiError(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "campaign_not_sendable", str(err)
        ) from None
    except OverflowError:
        # A wall-clock time whose moment in some zone no calendar holds (year 1 in Tokyo is
        # in year 0 in UTC): a time like any other to the parser, a 422 here, not a 500.
        raise ApiError(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            "invalid_time",
            "This time cannot be sent at in every time zone: pick a nearer one.",
            "local_time",
        ) from None
    return _answer(pk)


_MOVES = {
    "send": (services.campaign_send_now, "Send now", "draft → scheduled, started at once"),
    "pause": (services.campaign_pause, "Pause", "sending → paused; claimed messages finish"),
    "resume": (services.campaign_resume, "Resume", "paused → sending"),
    "cancel": (
        services.campaign_cancel,
        "Cancel",
        "draft, scheduled, sending or paused → cancelled; recipients not yet sent to are skipped",
    ),
    "unschedule": (services.campaign_unschedule, "Unschedule", "scheduled → draft"),
}
# What each control answers (for the schema): the campaign in its new status.
_SENDING = {**_CAMPAIGN, "status": "sending", "status_label": "Sending", "finished_at": None}
_MOVED = {
    "send": {
        **_DRAFT,
        # Due at once: "Starting" until the start enqueued for it runs.
        "status": "scheduled",
        "status_label": "Starting",
        "send_at": "2026-12-01T09:00:00Z",
        "updated_at": "2026-12-01T09:00:00Z",
    },
    "pause": {**_SENDING, "status": "paused", "status_label": "Paused"},
    "resume": _SENDING,
    "cancel": {**_SENDING, "status": "cancelled", "status_label": "Cancelled"},
    "unschedule": _DRAFT,
}


def _move_view(name: str) -> type[ApiView]:
    """The view of one control (POST /api/v1/campaigns/{id}/<name>): no fields, but for send's
    optional expected_recipients."""
    service, label, moves = _MOVES[name]
    body = SendSerializer if name == "send" else NoBody
    examples = [answer_example(f"{label}: its new status", _MOVED[name])]
    if body is SendSerializer:
        examples.insert(
            0,
            OpenApiExample(
                "Send to the audience confirmed",
                value={"expected_recipients": 1200},
                request_only=True,
            ),
        )

    class Move(ApiView):
        scopes = {"POST": "campaigns:write"}

        @extend_schema(
            operation_id=f"campaigns_{name}",
            summary=label,
            description=f"{moves}, through the same guarded state machine as the admin. A "
            "campaign in another status: 409 invalid_transition, naming its status."
            + (
                " With expected_recipients, only if the audience has that many recipients "
                "now (else 409 audience_changed, with the count), as the admin's review asks."
                if body is SendSerializer
                else ""
            ),
            request=body,
            responses={200: CampaignSerializer, **errors(404, 409, 422)},
            examples=examples,
        )
        def post(self, request, pk: int):
            given = body(data=request.data)
            given.is_valid(raise_exception=True)
            return _act(request, pk, service, **given.validated_data)

    Move.__name__ = Move.__qualname__ = f"Campaign{name.title()}"
    return Move


CampaignSend = _move_view("send")
CampaignPause = _move_view("pause")
CampaignResume = _move_view("resume")
CampaignCancel = _move_view("cancel")
CampaignUnschedule = _move_view("unschedule")


class CampaignSchedule(ApiView):
    scopes = {"POST": "campaigns:write"}

    @extend_schema(
        operation_id="campaigns_schedule",
        summary="Schedule a draft",
        description="At one moment (send_at), or at a wall-clock time in each contact's own "
        "time zone (local_time, as the admin's option). The time must be to come (in every "
        "zone, for local_time). A campaign that is not a draft: 409 invalid_transition. With "
        "expected_recipients, only if the audience has that many recipients now (else 409 "
        "audience_changed, with the count), as the admin's review asks.",
        request=ScheduleSerializer,
        responses={200: CampaignSerializer, **errors(404, 409, 422)},
        examples=[
            OpenApiExample(
                "One moment", value={"send_at": "2030-01-31T09:00:00+01:00"}, request_only=True
            ),
            OpenApiExample(
                "One moment, for the audience confirmed",
                value={"send_at": "2030-01-31T09:00:00+01:00", "expected_recipients": 1200},
                request_only=True,
            ),
            OpenApiExample(
                "Each contact's local time",
                value={"local_time": "2030-01-31T09:00", "time_zone": "Europe/Paris"},
                request_only=True,
            ),
            answer_example(
                "Scheduled for one moment",
                {
                    **_DRAFT,
                    "status": "scheduled",
                    "status_label": "Scheduled",
                    "send_at": "2030-01-31T08:00:00Z",
                    "updated_at": "2026-11-29T08:40:00Z",
                },
            ),
        ],
    )
    def post(self, request, pk: int):
        given = ScheduleSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        fields = given.validated_data
        expected = {"expected_recipients": fields.get("expected_recipients")}
        if "local_time" in fields:
            return _act(
                request,
                pk,
                services.campaign_schedule_local,
                wall=fields["local_time"],
                fallback_zone=fields.get("time_zone") or settings.TIME_ZONE,
                **expected,
            )
        return _act(request, pk, services.campaign_schedule, send_at=fields["send_at"], **expected)


# -- the report -------------------------------------------------------------------------------


class _CappedPart(serializers.IntegerField):
    """A rate's part, never above its whole (tracking.reports.report.Rate says why)."""

    def get_attribute(self, rate: Rate) -> int:
        return min(rate.part, rate.whole)


class RateSerializer(serializers.Serializer):
    percent = serializers.FloatField(allow_null=True, help_text="null when the whole is 0.")
    part = _CappedPart()
    whole = serializers.IntegerField()


class AllHumanSerializer(serializers.Serializer):
    all = serializers.IntegerField()
    human = serializers.IntegerField(help_text="Judged a person's, not a proxy's or scanner's.")


class RateAllHumanSerializer(serializers.Serializer):
    all = RateSerializer()
    human = RateSerializer(allow_null=True)


class LinkClicksSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    url = serializers.CharField()
    clicks = serializers.IntegerField()
    unique_clicks = serializers.IntegerField()
    human_clicks = serializers.IntegerField()


def _series(name: str) -> serializers.ListField:
    return serializers.ListField(child=serializers.IntegerField(), source=f"series.{name}")


class TimelineSerializer(serializers.Serializer):
    # (In the order the answer has always listed them: the series, then the zone.)
    unit = serializers.ChoiceField(choices=["hour", "day"])
    labels = serializers.ListField(child=serializers.CharField())
    opens = _series("opens")
    clicks = _series("clicks")
    human_opens = _series("human_opens")
    human_clicks = _series("human_clicks")
    time_zone = serializers.CharField()


class _Named(serializers.DictField):
    """An object of some of the report's own values, by name (a DictField of `child` in the
    schema): `names` maps each name to its attribute, or to an (all, human) pair of them
    for an AllHuman child (None: no human count of that kind)."""

    def __init__(self, names: dict[str, str | tuple[str, str | None]], **kwargs) -> None:
        self.names = names
        super().__init__(source="*", **kwargs)

    def to_representation(self, report: CampaignReport) -> dict:
        values = {}
        for name, attribute in self.names.items():
            if isinstance(attribute, tuple):
                everyone, human = attribute
                value = {
                    "all": getattr(report, everyone),
                    "human": getattr(report, human) if human else None,
                }
            else:
                value = getattr(report, attribute)
            values[name] = self.child.to_representation(value)
        return values


def _pairs(*names: str, human: bool = True) -> dict[str, tuple[str, str | None]]:
    return {name: (name, f"human_{name}" if human else None) for name in names}


_DELIVERY = (
    "sent", "failed", "unknown", "skipped", "delivered", "bounced_hard", "bounced_soft",
    "complained", "rejected", "delayed", "rendering_failed",
)  # fmt: skip


# A campaign's report as the API answers it: the admin page's object
# (tracking.reports.report.CampaignReport), numbers only: counts, all vs human, rates, links
# and the timeline. (A comment: a docstring would be the schema's description.)
class ReportSerializer(serializers.Serializer):
    campaign = serializers.IntegerField(source="campaign_id")
    status = serializers.ChoiceField(choices=C.choices)
    status_label = serializers.CharField()
    final = serializers.BooleanField(help_text="Its delivery numbers will not change.")
    summary = serializers.CharField()
    recipients = serializers.IntegerField()
    pending = serializers.IntegerField()
    progress_percent = serializers.IntegerField()
    delivery = _Named({name: name for name in _DELIVERY}, child=serializers.IntegerField())
    engagement = _Named(
        {
            "opens": ("opens", "human_opens"),
            "unique_opens": ("unique_opens", "unique_human_opens"),
            "clicks": ("clicks", "human_clicks"),
            "unique_clicks": ("unique_clicks", "unique_human_clicks"),
        },
        child=AllHumanSerializer(),
    )
    unsubscribed = serializers.IntegerField()
    rate_basis = serializers.ChoiceField(choices=["delivered", "sent"])
    rates = _Named(
        {
            **_pairs("open_rate", "click_through_rate", "click_to_open_rate"),
            **_pairs("unsubscribe_rate", "bounce_rate", "complaint_rate", human=False),
        },
        child=RateAllHumanSerializer(),
    )
    links = LinkClicksSerializer(many=True)
    timeline = TimelineSerializer()


def _rate_example(part: int, whole: int) -> dict:
    return {"percent": round(100 * part / whole, 1), "part": part, "whole": whole}


# The schema's example report: a finished campaign of 1,000, its rates out of the 990
# delivered (click-to-open out of the openers, bounces out of the 998 sent).
_REPORT = {
    "campaign": 42,
    "status": "sent",
    "status_label": "Sent",
    "final": True,
    "summary": "Finished: 998 of 1,000 sent, 2 not sent",
    "recipients": 1000,
    "pending": 0,
    "progress_percent": 100,
    "delivery": {
        "sent": 998,
        "failed": 0,
        "unknown": 0,
        "skipped": 2,
        "delivered": 990,
        "bounced_hard": 5,
        "bounced_soft": 3,
        "complained": 1,
        "rejected": 0,
        "delayed": 0,
        "rendering_failed": 0,
    },
    "engagement": {
        "opens": {"all": 620, "human": 410},
        "unique_opens": {"all": 480, "human": 350},
        "clicks": {"all": 150, "human": 96},
        "unique_clicks": {"all": 120, "human": 80},
    },
    "unsubscribed": 4,
    "rate_basis": "delivered",
    "rates": {
        "open_rate": {"all": _rate_example(480, 990), "human": _rate_example(350, 990)},
        "click_through_rate": {"all": _rate_example(120, 990), "human": _rate_example(80, 990)},
        "click_to_open_rate": {"all": _rate_example(120, 480), "human": _rate_example(80, 350)},
        "unsubscribe_rate": {"all": _rate_example(4, 990), "human": None},
        "bounce_rate": {"all": _rate_example(8, 998), "human": None},
        "complaint_rate": {"all": _rate_example(1, 990), "human": None},
    },
    "links": [
        {
            "index": 0,
            "url": "https://example.com/december",
            "clicks": 110,
            "unique_clicks": 90,
            "human_clicks": 70,
        },
        {
            "index": 1,
            "url": "https://example.com/shop",
            "clicks": 40,
            "unique_clicks": 30,
            "human_clicks": 26,
        },
    ],
    "timeline": {
        "unit": "hour",
        "time_zone": "Europe/Paris",
        "labels": ["2026-12-01 10:00", "2026-12-01 11:00", "2026-12-01 12:00"],
        "opens": [310, 190, 120],
        "clicks": [80, 45, 25],
        "human_opens": [200, 130, 80],
        "human_clicks": [52, 28, 16],
    },
}


class ReportQuery(StrictQuery):
    time_zone = serializers.CharField(
        required=False, max_length=64, help_text="The IANA zone of the timeline's hours (UTC)."
    )
    format = serializers.CharField(required=False)  # DRF's ?format=json|api

    def validate_time_zone(self, value: str) -> str:
        return time_zone_valid(value)


class CampaignReportView(ApiView):
    scopes = {"GET": "campaigns:read"}

    @extend_schema(
        operation_id="campaigns_report",
        summary="A campaign's report",
        description="The admin's report as JSON, from the same counters: delivery counts, "
        "opens and clicks all and human (mail privacy proxies and link scanners apart), "
        "rates, clicks per link, and the timeline of opens and clicks.",
        parameters=[ReportQuery],
        responses={200: ReportSerializer, **errors(404)},
        examples=[
            OpenApiExample(
                "A sent campaign (?time_zone=Europe/Paris)", value=_REPORT, response_only=True
            )
        ],
    )
    def get(self, request, pk: int):
        query = ReportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        campaign = _campaign(request, pk)
        zone = zoneinfo.ZoneInfo(query.validated_data.get("time_zone") or "UTC")
        report = campaign_report(campaign_id=campaign.pk, time_zone=zone)
        return Response(ReportSerializer(report).data)

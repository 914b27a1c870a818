"""Callback endpoints over the API (docs/API.md#callbacks-webhooks-to-integrators):
/api/v1/webhooks (list, create), /api/v1/webhooks/{id} (get, update, delete),
/api/v1/webhooks/{id}/rotate-secret and /api/v1/webhooks/{id}/deliveries.

Thin: the checks and writes are tracking.callbacks' (the admin calls the same ones). An
endpoint's secret is in the answer of its creation and of a rotation only.
"""

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from campaigns.api.base import MAX_ID, ApiView
from campaigns.api.errors import ApiError
from campaigns.api.idempotency import idempotent_response
from campaigns.api.pagination import CursorPage, PageQuery
from campaigns.api.schema import answer_example, errors, paginated
from campaigns.api.serializers import StrictQuery, StrictSerializer, TextField
from campaigns.models import ApiKey
from tracking import callbacks
from tracking.models import CallbackDelivery, CallbackEndpoint

# An endpoint's body is a URL, a description and a list of types: a few kB at most.
WEBHOOK_MAX_BODY_BYTES = 64 * 1024


class EventTypesField(serializers.ListField):
    child = TextField(max_length=40)
    max_length = 20


class WebhookCreateSerializer(StrictSerializer):
    url = TextField(max_length=2000, help_text="https:// (or http://), public host.")
    event_types = EventTypesField(help_text='Event types wanted, e.g. ["message.bounced"].')
    description = TextField(max_length=200, required=False, default="", allow_blank=True)


class WebhookUpdateSerializer(StrictSerializer):
    url = TextField(max_length=2000, required=False)
    event_types = EventTypesField(required=False)
    description = TextField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(
        required=False, help_text="false disables it; true enables it again (after a failure)."
    )


class WebhookSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=callbacks.EVENT_TYPES), read_only=True
    )

    class Meta:
        model = CallbackEndpoint
        fields = [
            "id", "url", "description", "event_types", "enabled", "disabled_at",
            "disabled_reason", "failing_since", "previous_secret_expires_at", "created_at",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class WebhookWithSecretSerializer(WebhookSerializer):
    secret = serializers.CharField(help_text="Shown only in this answer: keep it.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class RotatedSerializer(serializers.Serializer):
    secret = serializers.CharField()
    previous_secret_expires_at = serializers.DateTimeField()


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = CallbackDelivery
        fields = [
            "id", "event_id", "event_type", "status", "attempts", "next_attempt_at",
            "last_attempt_at", "last_status", "last_error", "delivered_at", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class WebhookListQuery(PageQuery, StrictQuery):
    """GET /api/v1/webhooks's query parameters: a page's (an unknown one is refused)."""


class DeliveryQuerySerializer(PageQuery, StrictQuery):
    status = serializers.ChoiceField(choices=CallbackDelivery.Status.choices, required=False)


_LIST_PARAMETERS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="Page size, 1–100 (50)."),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="From the previous page's `next`."),
]
_ID = [OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH)]
_CREATE_EXAMPLE = OpenApiExample(
    "Bounces and complaints",
    value={
        "url": "https://crm.example.com/hooks/mailwright",
        "event_types": ["message.bounced", "message.complained"],
        "description": "CRM suppression sync",
    },
    request_only=True,
)

# The schema's example of an endpoint, as the API answers it (its secret only on creation).
_WEBHOOK = {
    "id": 5,
    "url": "https://crm.example.com/hooks/mailwright",
    "description": "CRM suppression sync",
    "event_types": ["message.bounced", "message.complained"],
    "enabled": True,
    "disabled_at": None,
    "disabled_reason": "",
    "failing_since": None,
    "previous_secret_expires_at": None,
    "created_at": "2026-11-30T16:20:00Z",
    "updated_at": "2026-11-30T16:20:00Z",
}
# A made-up secret in the shape tracking.callbacks.secret_new makes: never a real one.
_SECRET = "whsec_EXAMPLE-0nly-n0t-a-real-secret-f0r-the-docs"  # noqa: S105 (see above)
_DELIVERED = {
    "id": 3107,
    "event_id": "evt_90214",
    "event_type": "message.bounced",
    "status": "delivered",
    "attempts": 1,
    "next_attempt_at": "2026-12-05T10:00:04Z",
    "last_attempt_at": "2026-12-05T10:00:04.310000Z",
    "last_status": 200,
    "last_error": "",
    "delivered_at": "2026-12-05T10:00:04.310000Z",
    "created_at": "2026-12-05T10:00:04Z",
}


def _refused(err: callbacks.TargetRefused) -> ApiError:
    return ApiError(status.HTTP_422_UNPROCESSABLE_ENTITY, "url_refused", str(err), "url")


def _event_types(value: list[str]) -> list[str]:
    try:
        return callbacks.event_types_check(value)
    except ValueError as err:
        raise ApiError(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "invalid_event_types", str(err), "event_types"
        ) from None


def _endpoint_or_404(pk: int) -> CallbackEndpoint:
    found = CallbackEndpoint.objects.filter(pk=pk).first() if pk <= MAX_ID else None
    if found is None:
        raise ApiError(status.HTTP_404_NOT_FOUND, "not_found", "No webhook has this id.")
    return found


class WebhookListCreate(ApiView):
    scopes = {"GET": "webhooks:read", "POST": "webhooks:write"}
    idempotent = True  # its POST takes an Idempotency-Key (the schema says so)
    max_body_bytes = WEBHOOK_MAX_BODY_BYTES

    @extend_schema(
        operation_id="webhooks_list",
        parameters=_LIST_PARAMETERS,
        responses={200: paginated(WebhookSerializer)},
        examples=[answer_example("A page", {"results": [_WEBHOOK], "next": None})],
    )
    def get(self, request):
        query = WebhookListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = CursorPage(request, size=query.validated_data["limit"])
        rows = page.rows(CallbackEndpoint.objects.all())
        return page.answer(WebhookSerializer(rows, many=True).data, rows)

    @extend_schema(
        operation_id="webhooks_create",
        request=WebhookCreateSerializer,
        responses={201: WebhookWithSecretSerializer, **errors(422)},
        examples=[
            _CREATE_EXAMPLE,
            answer_example("Created, with its secret", {**_WEBHOOK, "secret": _SECRET}, "201"),
        ],
    )
    def post(self, request):
        return idempotent_response(request, lambda: self._create(request))

    def _create(self, request) -> Response:
        body = WebhookCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        key = request.auth if isinstance(request.auth, ApiKey) else None
        try:
            endpoint = callbacks.endpoint_create(
                url=data["url"],
                event_types=_event_types(data["event_types"]),
                description=data["description"],
                user=request.user if key is None else None,
                api_key_id=key.pk if key else None,
            )
        except callbacks.TargetRefused as err:
            raise _refused(err) from None
        return Response(WebhookWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookDetail(ApiView):
    scopes = {"GET": "webhooks:read", "PATCH": "webhooks:write", "DELETE": "webhooks:write"}
    max_body_bytes = WEBHOOK_MAX_BODY_BYTES

    @extend_schema(
        operation_id="webhooks_get",
        parameters=_ID,
        responses={200: WebhookSerializer, **errors(404)},
        examples=[answer_example("An endpoint", _WEBHOOK)],
    )
    def get(self, request, pk: int):
        return Response(WebhookSerializer(_endpoint_or_404(pk)).data)

    @extend_schema(
        operation_id="webhooks_update",
        parameters=_ID,
        request=WebhookUpdateSerializer,
        responses={200: WebhookSerializer, **errors(404, 422)},
        examples=[
            OpenApiExample(
                "Opens and clicks too",
                value={
                    "event_types": [
                        "message.bounced",
                        "message.complained",
                        "message.opened",
                        "message.clicked",
                    ],
                    "enabled": True,
                },
                request_only=True,
            ),
            answer_example(
                "Changed",
                {
                    **_WEBHOOK,
                    "event_types": [
                        "message.bounced",
                        "message.complained",
                        "message.opened",
                        "message.clicked",
                    ],
                    "updated_at": "2026-12-02T11:00:00Z",
                },
            ),
        ],
    )
    def patch(self, request, pk: int):
        endpoint = _endpoint_or_404(pk)
        body = WebhookUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with transaction.atomic():
            try:
                callbacks.endpoint_update(
                    endpoint,
                    url=data.get("url"),
                    event_types=_event_types(data["event_types"])
                    if "event_types" in data
                    else None,
                    description=data.get("description"),
                    enabled=data.get("enabled"),
                )
            except callbacks.TargetRefused as err:
                raise _refused(err) from None
        endpoint.refresh_from_db()
        return Response(WebhookSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhooks_delete", parameters=_ID, responses={204: None, **errors(404)}
    )
    def delete(self, request, pk: int):
        callbacks.endpoint_delete(_endpoint_or_404(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecret(ApiView):
    scopes = {"POST": "webhooks:write"}
    max_body_bytes = WEBHOOK_MAX_BODY_BYTES

    @extend_schema(
        operation_id="webhooks_rotate_secret",
        parameters=_ID,
        request=None,
        responses={200: RotatedSerializer, **errors(404)},
        examples=[
            # The old secret still signs for CALLBACK_SECRET_OVERLAP_HOURS (24 by default).
            answer_example(
                "A new secret",
                {"secret": _SECRET, "previous_secret_expires_at": "2026-12-06T11:00:00Z"},
            )
        ],
    )
    def post(self, request, pk: int):
        endpoint = _endpoint_or_404(pk)
        secret = callbacks.endpoint_rotate_secret(endpoint)
        return Response(
            RotatedSerializer(
                {
                    "secret": secret,
                    "previous_secret_expires_at": endpoint.previous_secret_expires_at,
                }
            ).data
        )


class WebhookDeliveries(ApiView):
    scopes = {"GET": "webhooks:read"}

    @extend_schema(
        operation_id="webhooks_deliveries",
        parameters=[
            *_ID,
            *_LIST_PARAMETERS,
            OpenApiParameter("status", OpenApiTypes.STR, enum=list(CallbackDelivery.Status.values)),
        ],
        responses={200: paginated(DeliverySerializer), **errors(404)},
        examples=[
            answer_example(
                "Delivered, and one waiting for a retry",
                {
                    "results": [
                        {
                            **_DELIVERED,
                            "id": 3112,
                            "event_id": "evt_90377",
                            "event_type": "message.complained",
                            "status": "pending",
                            "attempts": 2,
                            "next_attempt_at": "2026-12-05T10:31:12Z",
                            "last_attempt_at": "2026-12-05T10:01:12.800000Z",
                            "last_status": 500,
                            "last_error": "HTTP 500",
                            "delivered_at": None,
                            "created_at": "2026-12-05T10:00:41Z",
                        },
                        _DELIVERED,
                    ],
                    "next": None,
                },
            )
        ],
    )
    def get(self, request, pk: int):
        endpoint = _endpoint_or_404(pk)
        query = DeliveryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        deliveries = CallbackDelivery.objects.filter(endpoint=endpoint)
        if query.validated_data.get("status"):
            deliveries = deliveries.filter(status=query.validated_data["status"])
        page = CursorPage(request, size=query.validated_data["limit"])
        rows = page.rows(deliveries)
        return page.answer(DeliverySerializer(rows, many=True).data, rows)

"""The API's endpoints: thin (check, call a service, answer)."""

import re
import time

from django.conf import settings
from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.response import Response

from campaigns.api.base import MAX_ID, ApiView
from campaigns.api.errors import ApiError
from campaigns.api.idempotency import idempotent_response
from campaigns.api.pagination import CursorPage
from campaigns.api.schema import errors, paginated
from campaigns.api.serializers import (
    MessageAcceptedSerializer,
    MessageCreateSerializer,
    MessageDetailSerializer,
    MessageListQuerySerializer,
    MessageSerializer,
    message_create_validate,
)
from campaigns.models import ApiKey, Campaign, MessageRequest, Notification
from campaigns.transactional import AnswerRecord, MessageRefused, message_create
from templates_app.models import Template
from tracking.reports.journeys import notification_journey

# The messages the API shows: transactional messages and jobs' rows, never a campaign's.
API_KINDS = (Campaign.Kind.TRANSACTIONAL, Campaign.Kind.JOB)
# Message ids a page of GET /api/v1/messages?status= reads at most (a few milliseconds: the
# walk of 300,000 messages without an index took ~90 ms, docs/API.md#list).
STATUS_WINDOW = 20_000
# What a Template.slug can be (a SlugField): anything else names no template, and is never
# sent to the database (a NUL in a query parameter is an error there, not "not found").
_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}\Z")


def template_lookup(ref: int | str) -> Template | None:
    """The template an id or slug names, from this process's copy if it is at most
    API_TEMPLATE_CACHE_SECONDS old (docs/API.md#messages): every message reads its template, and the
    query was ~10% of the POST's CPU. A message is sent with the content of the copy it was
    accepted with (its stream is keyed by that content), so an edit reaches other processes'
    messages within that delay; this process's own saves and deletes forget the copy at once.
    Unknown ids and slugs are never kept (a template made since is found at once)."""
    if isinstance(ref, str) and ref.isascii() and ref.isdigit():
        if len(ref.lstrip("0")) > len(str(MAX_ID)):
            return None  # past any id, and int() refuses over 4,300 digits (a 500)
        ref = int(ref)
    if isinstance(ref, int):
        if not 0 < ref <= MAX_ID:
            return None
        cache_key, lookup = ("id", ref), {"pk": ref}
    elif _SLUG.match(ref):
        cache_key, lookup = ("slug", ref), {"slug": ref}
    else:
        return None
    ttl = float(getattr(settings, "API_TEMPLATE_CACHE_SECONDS", 0))
    now = time.monotonic()
    if ttl > 0:
        cached = _templates.get(cache_key)
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
    template = Template.objects.filter(**lookup).order_by().first()
    if template is not None and ttl > 0:
        if len(_templates) >= _TEMPLATES_MAX:
            _templates.clear()
        _templates[cache_key] = (now, template)
    return template


# ("id", pk) or ("slug", slug) -> (monotonic time read, template). Its templates are shared by
# the process's threads: read, never changed (campaigns.transactional keeps a digest on them).
_templates: dict[tuple[str, int | str], tuple[float, Template]] = {}
_TEMPLATES_MAX = 1_000  # beyond, the cache starts afresh


def template_cache_clear(**_kwargs) -> None:
    """Forget every kept template (a template saved or deleted in this process)."""
    _templates.clear()


post_save.connect(template_cache_clear, sender=Template, dispatch_uid="api-template-cache-save")
post_delete.connect(template_cache_clear, sender=Template, dispatch_uid="api-template-cache-del")


def api_messages(request) -> QuerySet[MessageRequest]:
    """The messages this caller may read, as their requests (every API message has one, and
    that table holds nothing else: walking it newest first never walks campaign rows).

    The rule (docs/API.md#messages): every message of the API kinds in this installation, of
    the key's mode: a live key reads live messages, a test key test ones; a staff session
    reads both."""
    requests = MessageRequest.objects.filter(notification__campaign__kind__in=API_KINDS)
    if isinstance(request.auth, ApiKey):
        requests = requests.filter(notification__campaign__test_mode=request.auth.test)
    return requests.select_related(
        "notification", "notification__campaign", "notification__contact"
    )


def _message(message_request: MessageRequest) -> Notification:
    message = message_request.notification
    message.request = message_request  # (the reverse side, already in hand: no query)
    return message


_MESSAGE = {
    "id": 4711,
    "status": "delivered",
    "reason": "",
    "reference": "order-17",
    "template": 3,
    "contact": 812,
    "test": False,
    "send_at": None,
    "created_at": "2026-12-05T10:00:00.120000Z",
    "updated_at": "2026-12-05T10:00:03.410000Z",
}


def message_post(request) -> Response:
    """POST /api/v1/messages once the caller may make it (key, scope, rate limit): the body
    checked, the message written, its answer. The one implementation, called by the view below
    and by the lean route that skips Django's and DRF's request machinery (campaigns.api.direct).

    A message's work is a few statements: redone by a repeat rather than paid for with a
    second write of the record on every request (campaigns.api.idempotency)."""
    return idempotent_response(
        request, lambda record: _message_create(request, record), one_statement=True
    )


# The 202's serializer, made once: a serializer made per request copies its fields (~0.11 ms
# a request, against ~6 µs for to_representation alone; the whole POST is ~2.5 ms).
_ACCEPTED = MessageAcceptedSerializer()


def _message_create(request, record: tuple | None) -> Response:
    """Writes in one statement (message_create), with the idempotency record when `record`
    (api key, key, request hash) is given; raising writes nothing."""
    data = message_create_validate(request.data)
    template = template_lookup(data["template"])
    if template is None:
        raise ApiError(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            "template_not_found",
            "No template has this id or slug.",
            "template",
        )
    # What the answer says besides the id (which the record's statement adds to it).
    answer = {"status": Notification.Status.CREATED}
    if record is not None:
        api_key, key, digest = record
        record = AnswerRecord(api_key.pk, key, digest, status.HTTP_202_ACCEPTED, answer)
    try:
        message = message_create(
            api_key=request.auth if isinstance(request.auth, ApiKey) else None,
            template=template,
            email=data.get("to"),
            contact_id=data.get("contact"),
            personalisation=data["personalisation"],
            reference=data["reference"],
            send_at=data["send_at"],
            record=record,
        )
    except MessageRefused as refused:
        raise ApiError(refused.status, refused.code, refused.message, refused.field) from None
    # Answered once the message's statement (or idempotent_response's transaction) has
    # committed: 202 means durable.
    return Response(
        _ACCEPTED.to_representation({"id": message.pk, **answer}), status=status.HTTP_202_ACCEPTED
    )


class MessageListCreate(ApiView):
    scopes = {"POST": "messages:send", "GET": "messages:read"}
    idempotent = True  # its POST takes an Idempotency-Key (the schema says so)

    @extend_schema(
        operation_id="messages_send",
        summary="Send a message",
        description="Accept one message to one recipient (an address or a contact), sent once "
        "with the template as it is now, at once or at `send_at`. 202 means it is stored: it "
        "will be sent, or end in a status that says why not (docs/API.md#messages).",
        request=MessageCreateSerializer,
        responses={202: MessageAcceptedSerializer, **errors(422)},
        examples=[
            OpenApiExample(
                "A receipt",
                request_only=True,
                value={
                    "template": "receipt",
                    "to": "ada@example.com",
                    "personalisation": {"first_name": "Ada", "order": "A-17"},
                    "reference": "order-17",
                },
            ),
            OpenApiExample(
                "Accepted",
                response_only=True,
                status_codes=["202"],
                value={"id": 4711, "status": "created"},
            ),
        ],
    )
    def post(self, request):
        return message_post(request)

    @extend_schema(
        operation_id="messages_list",
        summary="List messages",
        description="The API's messages (transactional and bulk jobs' rows) of the key's mode, "
        "newest first, filtered (filters are and-ed); follow `next` until it is null.",
        parameters=[MessageListQuerySerializer],
        responses={200: paginated(MessageSerializer)},
        examples=[
            OpenApiExample(
                "A page", response_only=True, value={"results": [_MESSAGE], "next": None}
            )
        ],
    )
    def get(self, request):
        query = MessageListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        requests = api_messages(request)
        if filters.get("reference"):
            requests = requests.filter(reference=filters["reference"])
        if filters.get("since"):
            requests = requests.filter(created_at__gte=filters["since"])
        if "campaign" in filters:
            requests = requests.filter(notification__campaign_id=filters["campaign"])
        if "contact" in filters:
            requests = requests.filter(notification__contact_id=filters["contact"])
        if "template" in filters:
            template = template_lookup(filters["template"])
            requests = (
                requests.filter(notification__campaign__template_id=template.pk)
                if template
                else requests.none()
            )
        # The ledger has no status index (by design): a status filter reads a bounded window
        # of ids a page, unless a filter with an index of its own narrows the rows first.
        narrowed = filters.get("reference") or "contact" in filters
        window = STATUS_WINDOW if filters.get("status") and not narrowed else None
        page = CursorPage(
            request, size=filters["limit"], window=window, newest=MessageRequest.objects.all()
        )
        if filters.get("status") and window is None:
            requests = requests.filter(notification__status=filters["status"])
        elif filters.get("status"):
            # The ledger's rows of that status in the page's window, read by their primary
            # key's range (the same bounds on the requests' side do not reach across the join).
            low, high = page.bounds()
            ledger = Notification.objects.filter(status=filters["status"], pk__gte=low, pk__lt=high)
            requests = requests.filter(notification_id__in=ledger.values("pk"))
        rows = page.rows(requests)
        return page.answer(MessageSerializer([_message(row) for row in rows], many=True).data, rows)


class MessageDetail(ApiView):
    scopes = {"GET": "messages:read"}

    @extend_schema(
        operation_id="messages_retrieve",
        summary="Read a message",
        description="A message, its address and its journey: every SES event, open and click, "
        "opens and clicks with the verdict on whether a person or software made them.",
        responses={200: MessageDetailSerializer},
        examples=[
            OpenApiExample(
                "Delivered, opened by a privacy proxy",
                response_only=True,
                value={
                    **_MESSAGE,
                    "to": "ada@example.com",
                    "timestamps": {
                        "created": "2026-12-05T10:00:00.120000Z",
                        "status_changed": "2026-12-05T10:00:03.410000Z",
                        "delivered": "2026-12-05T10:00:03Z",
                        "opened": "2026-12-05T10:04:12.500000Z",
                    },
                    "events": [
                        {
                            "id": 90210,
                            "at": "2026-12-05T10:00:03Z",
                            "type": "delivered",
                            "source": "ses",
                            "detail": "",
                            "verdict": "",
                            "verdict_reason": "",
                            "message": 4711,
                            "campaign": 52,
                            "contact": 812,
                        },
                        {
                            "id": 90214,
                            "at": "2026-12-05T10:04:12.500000Z",
                            "type": "opened",
                            "source": "tracking",
                            "detail": "",
                            "verdict": "machine",
                            "verdict_reason": "apple-mpp",
                            "message": 4711,
                            "campaign": 52,
                            "contact": 812,
                        },
                    ],
                    "events_not_shown": 0,
                },
            )
        ],
    )
    def get(self, request, pk: int):
        found = api_messages(request).filter(pk=pk).first() if pk <= MAX_ID else None
        if found is None:
            raise ApiError(status.HTTP_404_NOT_FOUND, "not_found", "No message has this id.")
        message = _message(found)
        journey = notification_journey(notification_id=message.pk)
        events = [step for step in journey.steps if step.source != "ledger"]
        firsts: dict[str, object] = {}
        for step in events:
            firsts.setdefault(step.what, step.at)
        # What MessageDetailSerializer reads besides the message's own fields.
        message.journey = {
            "timestamps": {
                "created": message.created_at,
                "status_changed": message.updated_at,
                **firsts,  # the first of each kind of event: "delivered", "opened"…
            },
            "events": events,
            "events_not_shown": journey.events_not_shown,
        }
        return Response(MessageDetailSerializer(message).data)

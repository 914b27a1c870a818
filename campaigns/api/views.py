"""The API's endpoints: thin (check, call a service, answer)."""

import re
import time

from django.conf import settings
from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save
from rest_framework import status
from rest_framework.response import Response

from campaigns.api.base import MAX_ID, ApiView
from campaigns.api.errors import ApiError
from campaigns.api.idempotency import idempotent_response
from campaigns.api.pagination import CursorPage
from campaigns.api.serializers import (
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


def message_post(request) -> Response:
    """POST /api/v1/messages once the caller may make it (key, scope, rate limit): the body
    checked, the message written, its answer. The one implementation, called by the view below
    and by the lean route that skips Django's and DRF's request machinery (campaigns.api.direct).

    A message's work is a few statements: redone by a repeat rather than paid for with a
    second write of the record on every request (campaigns.api.idempotency)."""
    return idempotent_response(
        request, lambda record: _message_create(request, record), one_statement=True
    )


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
    return Response({"id": message.pk, **answer}, status=status.HTTP_202_ACCEPTED)


class MessageListCreate(ApiView):
    scopes = {"POST": "messages:send", "GET": "messages:read"}

    def post(self, request):
        return message_post(request)

    def get(self, request):
        query = MessageListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        requests = api_messages(request)
        if filters.get("reference"):
            requests = requests.filter(reference=filters["reference"])
        if filters.get("status"):
            requests = requests.filter(notification__status=filters["status"])
        if filters.get("since"):
            requests = requests.filter(notification__created_at__gte=filters["since"])
        if "template" in filters:
            template = template_lookup(filters["template"])
            requests = (
                requests.filter(notification__campaign__template_id=template.pk)
                if template
                else requests.none()
            )
        page = CursorPage(request, size=filters["limit"])
        rows = page.rows(requests)
        return Response(
            {
                "results": [MessageSerializer(_message(row)).data for row in rows],
                "next": page.next_link(rows),
            }
        )


class MessageDetail(ApiView):
    scopes = {"GET": "messages:read"}

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
        answer = MessageSerializer(message).data
        answer["to"] = message.contact.email
        answer["timestamps"] = {
            "created": message.created_at,
            "status_changed": message.updated_at,
            **firsts,  # the first of each kind of event: "delivered", "opened"…
        }
        answer["events"] = [
            {
                "at": step.at,
                "type": step.what,
                "source": step.source,
                "detail": step.detail,
                "verdict": step.verdict,
                "verdict_reason": step.verdict_reason,
            }
            for step in events
        ]
        answer["events_not_shown"] = journey.events_not_shown
        return Response(answer)

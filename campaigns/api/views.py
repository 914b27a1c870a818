"""The API's endpoints: thin (check, call a service, answer)."""

import re

from django.shortcuts import get_object_or_404
from rest_framework import status
from rest_framework.response import Response

from campaigns.api.base import ApiView
from campaigns.api.errors import ApiError
from campaigns.api.idempotency import idempotent_response
from campaigns.api.serializers import MessageCreateSerializer, MessageSerializer
from campaigns.models import ApiKey, Campaign, Notification
from campaigns.transactional import MessageRefused, message_create
from templates_app.models import Template

API_KINDS = (Campaign.Kind.TRANSACTIONAL,)
# What a Template.slug can be (a SlugField): anything else names no template, and is never
# sent to the database (a NUL in a query parameter is an error there, not "not found").
_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}\Z")
_MAX_ID = 2**63 - 1


def template_lookup(ref: int | str) -> Template | None:
    if isinstance(ref, str) and ref.isascii() and ref.isdigit():
        ref = int(ref)
    if isinstance(ref, int):
        return Template.objects.filter(pk=ref).first() if 0 < ref <= _MAX_ID else None
    return Template.objects.filter(slug=ref).first() if _SLUG.match(ref) else None


class MessageListCreate(ApiView):
    scopes = {"POST": "messages:send", "GET": "messages:read"}

    def post(self, request):
        return idempotent_response(request, lambda: self.create(request))

    def create(self, request) -> Response:
        """Runs in idempotent_response's transaction: raising rolls everything back."""
        serializer = MessageCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        template = template_lookup(data["template"])
        if template is None:
            raise ApiError(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                "template_not_found",
                "No template has this id or slug.",
                "template",
            )
        try:
            message = message_create(
                api_key=request.auth if isinstance(request.auth, ApiKey) else None,
                template=template,
                email=data.get("to"),
                contact_id=data.get("contact"),
                personalisation=data["personalisation"],
                reference=data["reference"],
                send_at=data["send_at"],
            )
        except MessageRefused as refused:
            raise ApiError(refused.status, refused.code, refused.message, refused.field) from None
        # Answered once idempotent_response's transaction has committed: 202 means durable.
        return Response(
            {"id": message.pk, "status": message.status}, status=status.HTTP_202_ACCEPTED
        )


class MessageDetail(ApiView):
    scopes = {"GET": "messages:read"}

    def get(self, request, pk: int):
        message = get_object_or_404(
            Notification.objects.select_related("campaign", "request"),
            pk=min(pk, _MAX_ID),
            campaign__kind__in=API_KINDS,
        )
        return Response(MessageSerializer(message).data)

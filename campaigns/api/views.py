"""The API's endpoints: thin (check, call a service, answer)."""

from django.db import transaction
from django.shortcuts import get_object_or_404
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api.errors import error, error_response
from campaigns.api.serializers import MessageCreateSerializer, MessageSerializer
from campaigns.models import ApiKey, Campaign, Notification
from campaigns.transactional import MessageRefused, message_create
from templates_app.models import Template

API_KINDS = (Campaign.Kind.TRANSACTIONAL,)


def template_lookup(ref: int | str) -> Template | None:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return Template.objects.filter(pk=int(ref)).first()
    return Template.objects.filter(slug=ref).first()


class MessageListCreate(APIView):
    scopes = {"POST": "messages:send", "GET": "messages:read"}

    def post(self, request):
        serializer = MessageCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        template = template_lookup(data["template"])
        if template is None:
            return error_response(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                [error("template_not_found", "No template has this id or slug.", "template")],
            )
        key = request.auth if isinstance(request.auth, ApiKey) else None
        try:
            with transaction.atomic():
                message = message_create(
                    api_key=key,
                    template=template,
                    email=data.get("to"),
                    contact_id=data.get("contact"),
                    personalisation=data["personalisation"],
                    reference=data["reference"],
                    send_at=data["send_at"],
                )
        except MessageRefused as refused:
            return error_response(
                refused.status, [error(refused.code, refused.message, refused.field)]
            )
        # Only now: the transaction committed, so the message is durable.
        return Response(
            {"id": message.pk, "status": message.status}, status=status.HTTP_202_ACCEPTED
        )


class MessageDetail(APIView):
    scopes = {"GET": "messages:read"}

    def get(self, request, pk: int):
        message = get_object_or_404(
            Notification.objects.select_related("campaign", "request"),
            pk=pk,
            campaign__kind__in=API_KINDS,
        )
        return Response(MessageSerializer(message).data)

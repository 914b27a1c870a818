"""What the API accepts and answers, field by field (unknown fields are refused)."""

from rest_framework import serializers

from campaigns.models import Notification
from campaigns.personalisation import PersonalisationInvalid, personalisation_check


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know: a typo ("personalization") must not pass silently."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {
                        name: [serializers.ErrorDetail("Unknown field.", "unknown_field")]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)


class TemplateRef(serializers.Field):
    """A template's id (a number) or its slug (text)."""

    default_error_messages = {"invalid": "Give a template id (a number) or its slug (text)."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str) or data == "":
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class MessageCreateSerializer(StrictSerializer):
    template = TemplateRef()
    to = serializers.CharField(max_length=320, required=False, trim_whitespace=False)
    contact = serializers.IntegerField(min_value=1, required=False)
    personalisation = serializers.DictField(required=False, default=dict)
    reference = serializers.CharField(max_length=200, required=False, default="")
    send_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate_personalisation(self, value: dict) -> dict:
        try:
            return personalisation_check(value)
        except PersonalisationInvalid as err:
            raise serializers.ValidationError(err.message, code=err.code) from None

    def validate(self, attrs):
        if ("to" in attrs) == ("contact" in attrs):
            raise serializers.ValidationError(
                {
                    "to": [
                        serializers.ErrorDetail(
                            "Give either an address (to) or a contact id (contact).",
                            "recipient_required",
                        )
                    ]
                }
            )
        return attrs


class MessageSerializer(serializers.Serializer):
    """A message as GET answers it."""

    id = serializers.IntegerField(source="pk")
    status = serializers.CharField()
    reason = serializers.CharField()
    reference = serializers.SerializerMethodField()
    template = serializers.IntegerField(source="campaign.template_id")
    contact = serializers.IntegerField(source="contact_id")
    test = serializers.BooleanField(source="campaign.test_mode")
    send_at = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_reference(self, message: Notification) -> str:
        request = getattr(message, "request", None)
        return request.reference if request else ""

    def get_send_at(self, message: Notification):
        request = getattr(message, "request", None)
        if request is None or request.send_at is None:
            return None
        return serializers.DateTimeField().to_representation(request.send_at)

"""What the API accepts and answers, field by field (unknown fields are refused)."""

from rest_framework import serializers

from campaigns.api.base import MAX_ID
from campaigns.api.pagination import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from campaigns.models import Notification
from campaigns.personalisation import PersonalisationInvalid, personalisation_check


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know: a typo ("personalization") must not pass silently."""

    def run_validation(self, data=serializers.empty):
        # Before DRF's own checks, which answer `null` with "This field may not be null."
        if data is not serializers.empty:
            _object_check(data)
        return super().run_validation(data)

    def to_internal_value(self, data):
        _known_check(data, self.fields)
        return super().to_internal_value(data)


def _object_check(data) -> None:
    if not isinstance(data, dict):
        raise serializers.ValidationError(
            {"": [serializers.ErrorDetail("The body must be a JSON object.", "body_not_object")]}
        )


def _known_check(data: dict, known) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise serializers.ValidationError(
            {name: [serializers.ErrorDetail("Unknown field.", "unknown_field")] for name in unknown}
        )


class TemplateRef(serializers.Field):
    """A template's id (a number) or its slug (text). Which template it names, if any, is
    the view's question (an unknown one is a 422)."""

    default_error_messages = {"invalid": "Give a template id (a number) or its slug (text)."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str) or data == "":
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class AddressField(serializers.Field):
    """An address as text; whether it can be sent to is the address rule's to say
    (campaigns.addresses, through message_create): a 422 invalid_address, whatever is wrong."""

    default_error_messages = {"invalid": "An address is text."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


# POST /api/v1/messages's fields, in the order their errors are listed. DRF's own fields, made
# once and shared by every request (checking a value changes nothing in them), rather than a
# serializer per request: a serializer deep-copies its declared fields on each instance, and
# its machinery was ~a fifth of the POST's Python (docs/PERFORMANCE.md, Web path).
_MESSAGE_FIELDS: dict[str, serializers.Field] = {
    "template": TemplateRef(),
    "to": AddressField(required=False),
    "contact": serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False),
    "personalisation": serializers.DictField(required=False, default=dict),
    "reference": serializers.CharField(max_length=200, required=False, default=""),
    "send_at": serializers.DateTimeField(required=False, allow_null=True, default=None),
}


def message_create_validate(data) -> dict:
    """A message's request body as the fields above read it (an absent optional field without
    a default is left out), or a ValidationError in DRF's shape (campaigns.api.errors
    flattens it): every field's errors at once, then the recipient rule. What a serializer
    with these fields, StrictSerializer's checks and these rules answered."""
    _object_check(data)
    _known_check(data, _MESSAGE_FIELDS)
    values: dict = {}
    errors: dict = {}
    for name, field in _MESSAGE_FIELDS.items():
        try:
            value = field.run_validation(data.get(name, serializers.empty))
            if name == "personalisation":
                value = _personalisation_valid(value)
        except serializers.SkipField:  # absent, without a default
            continue
        except serializers.ValidationError as err:
            errors[name] = err.detail
            continue
        values[name] = value
    if errors:
        raise serializers.ValidationError(errors)
    if ("to" in values) == ("contact" in values):
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
    return values


def _personalisation_valid(value: dict) -> dict:
    try:
        return personalisation_check(value)
    except PersonalisationInvalid as err:
        raise serializers.ValidationError(err.message, code=err.code) from None


class MessageListQuerySerializer(StrictSerializer):
    """GET /api/v1/messages's query parameters (filters are and-ed)."""

    reference = serializers.CharField(max_length=200, required=False)
    status = serializers.ChoiceField(choices=Notification.Status.choices, required=False)
    since = serializers.DateTimeField(required=False)
    template = TemplateRef(required=False)
    limit = serializers.IntegerField(
        min_value=1, max_value=PAGE_SIZE_MAX, required=False, default=PAGE_SIZE_DEFAULT
    )
    cursor = serializers.CharField(max_length=100, required=False)  # read by CursorPage
    format = serializers.CharField(required=False)  # DRF's ?format=json|api


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

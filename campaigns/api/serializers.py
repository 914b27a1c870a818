"""What the API accepts and answers, field by field (unknown fields are refused)."""

import copy
import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from campaigns.api.base import MAX_ID
from campaigns.api.pagination import PageQuery
from campaigns.models import Notification
from campaigns.personalisation import (
    PERSONALISATION_MAX_BYTES,
    PERSONALISATION_MAX_KEYS,
    PersonalisationInvalid,
    personalisation_check,
)
from tracking.models import Event


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


class StrictQuery(StrictSerializer):
    """A query string's parameters: an unknown one is refused, as a body's unknown field is,
    and so is one given empty (`?status=`) or a whole number written otherwise (`?limit=5.0`).
    DRF reads an empty value as a parameter left out and takes "5.0" for 5, neither of which
    the schema says; either is more likely a client's slip than what it meant."""

    def to_internal_value(self, data):
        _known_check(data, self.fields)
        values = data.getlist if hasattr(data, "getlist") else lambda name: [data[name]]
        problems = {}
        for name in sorted(data):
            given = values(name)
            if "" in given:
                problems[name] = ("Give a value, or leave the parameter out.", "blank")
            elif isinstance(self.fields[name], serializers.IntegerField) and not all(
                isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value) for value in given
            ):
                problems[name] = ("A valid integer is required.", "invalid")
        if problems:
            raise serializers.ValidationError(
                {name: [serializers.ErrorDetail(*problem)] for name, problem in problems.items()}
            )
        return super().to_internal_value(data)


_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,20}")


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


class TextField(serializers.CharField):
    """Text, and only text: DRF's CharField takes a number as its digits (`{"name": 0}` would
    be saved as "0"), where the schema says a string. Every input field that holds text is one
    of these; its other arguments are CharField's (max_length, allow_blank, required…)."""

    default_error_messages = {"invalid": "Give text (a JSON string)."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def form_text(**kwargs) -> TextField:
    """A text field whose values' rules (required, length, trimming) are a Django form's (the
    admin's), answered 422 in the form's words: the field checks the type only, and trims
    nothing (the form trims as the admin does)."""
    return TextField(required=False, allow_blank=True, trim_whitespace=False, **kwargs)


@extend_schema_field(
    {
        "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "minLength": 1}],
        "description": "A template's id (a number) or its slug (text).",
        "example": "receipt",
    }
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


@extend_schema_field({"type": "string", "format": "email", "example": "ada@example.com"})
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


# What a personalisation holds (campaigns.personalisation: the rule itself, for the schema).
PERSONALISATION_SCHEMA = {
    "type": "object",
    "maxProperties": PERSONALISATION_MAX_KEYS,
    "additionalProperties": {
        "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}],
        "nullable": True,
    },
    "description": f"The template's data, over the contact's own fields: a flat object (at "
    f"most {PERSONALISATION_MAX_KEYS} fields, {PERSONALISATION_MAX_BYTES // 1024} kB) of text, "
    "numbers, true/false or null.",
    "example": {"first_name": "Ada", "order": "A-17"},
}


@extend_schema_field(PERSONALISATION_SCHEMA)
class PersonalisationField(serializers.DictField):
    """A DictField, described as what campaigns.personalisation accepts (which checks it)."""


# POST /api/v1/messages's fields, in the order their errors are listed. DRF's own fields, made
# once and shared by every request (checking a value changes nothing in them), rather than a
# serializer per request: a serializer deep-copies its declared fields on each instance, and
# its machinery was ~a fifth of the POST's Python (docs/PERFORMANCE.md, Web path).
_MESSAGE_FIELDS: dict[str, serializers.Field] = {
    "template": TemplateRef(),
    "to": AddressField(required=False),
    "contact": serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False),
    "personalisation": PersonalisationField(required=False, default=dict),
    "reference": TextField(max_length=200, required=False, default=""),
    "send_at": serializers.DateTimeField(required=False, allow_null=True, default=None),
}


class MessageCreateSerializer(serializers.Serializer):
    """POST /api/v1/messages's body, for the schema: the fields above (copies: a field
    belongs to one serializer), which message_create_validate reads without a serializer."""

    def get_fields(self):
        fields = copy.deepcopy(_MESSAGE_FIELDS)
        fields["to"].help_text = "The address; the contact with it is used, or made."
        fields["contact"].help_text = "A contact's id (instead of `to`)."
        fields["reference"].help_text = "Your own id for it, to find it again."
        fields[
            "send_at"
        ].help_text = (
            "Not before this time (ISO 8601; without an offset, UTC), at most 30 days ahead."
        )
        return fields


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


def _id_field(help_text: str) -> serializers.IntegerField:
    # An id beyond a bigint names nothing, and is refused before the database sees it.
    return serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, help_text=help_text
    )


class MessageListQuerySerializer(PageQuery, StrictQuery):
    """GET /api/v1/messages's query parameters (filters are and-ed)."""

    reference = serializers.CharField(
        max_length=200, required=False, help_text="Your reference, exactly."
    )
    status = serializers.ChoiceField(
        choices=Notification.Status.choices, required=False, help_text="The message's status."
    )
    since = serializers.DateTimeField(
        required=False, help_text="Created at or after this time (ISO 8601)."
    )
    template = TemplateRef(required=False, help_text="A template's id or slug.")
    campaign = _id_field("A transactional stream's or a bulk job's id.")
    contact = _id_field("A contact's id.")


@extend_schema_field(OpenApiTypes.STR)
class EventTypesField(serializers.Field):
    """One event type, or several separated by commas (`opened,clicked`)."""

    default_error_messages = {"invalid_choice": "Unknown event type: {value}."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", value="?")
        types = [part.strip() for part in data.split(",") if part.strip()]
        for value in types:
            if value not in Event.Type.values:
                self.fail("invalid_choice", value=value[:40])
        return types

    def to_representation(self, value):
        return ",".join(value)


class EventListQuerySerializer(PageQuery, StrictQuery):
    """GET /api/v1/events's query parameters (filters are and-ed)."""

    campaign = _id_field("A campaign's, transactional stream's or bulk job's id.")
    contact = _id_field("A contact's id.")
    message = _id_field("A message's id.")
    type = EventTypesField(
        required=False,
        help_text="An event type, or several separated by commas: "
        + ", ".join(f"`{value}`" for value in Event.Type.values)
        + ".",
    )
    since = serializers.DateTimeField(
        required=False, help_text="Occurred at or after this time (ISO 8601)."
    )


class EventSerializer(serializers.Serializer):
    """An event as the API answers it, in a message's journey (GET /api/v1/messages/{id}) and
    in the events list (GET /api/v1/events): one shape, from a journey's step
    (tracking.reports.journeys). No IP address or user agent: personal data stays here."""

    id = serializers.IntegerField(source="event_id")
    at = serializers.DateTimeField()
    type = serializers.ChoiceField(source="what", choices=Event.Type.choices)
    source = serializers.ChoiceField(choices=Event.Source.choices)
    detail = serializers.CharField(
        help_text="What SES said (a bounce's kind and diagnosis), or a click's link."
    )
    verdict = serializers.CharField(
        help_text="Opens and clicks: `human`, or `machine` (a privacy proxy, a link scanner); "
        '"" for other events.'
    )
    verdict_reason = serializers.CharField(help_text="The rule that gave the verdict.")
    message = serializers.IntegerField(source="notification_id")
    campaign = serializers.IntegerField(source="campaign_id")
    contact = serializers.IntegerField(source="contact_id")


class MessageSerializer(serializers.Serializer):
    """A message as GET answers it."""

    id = serializers.IntegerField(source="pk")
    status = serializers.ChoiceField(choices=Notification.Status.choices)
    reason = serializers.CharField(help_text="Why it ended so, for failed, unknown, skipped…")
    reference = serializers.SerializerMethodField(help_text="Your own id for it.")
    template = serializers.IntegerField(source="campaign.template_id")
    contact = serializers.IntegerField(source="contact_id")
    test = serializers.BooleanField(
        source="campaign.test_mode", help_text="Sent with a test key (never handed to SES)."
    )
    send_at = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_reference(self, message: Notification) -> str:
        request = getattr(message, "request", None)
        return request.reference if request else ""

    @extend_schema_field(
        serializers.DateTimeField(allow_null=True, help_text="Not sent before this time.")
    )
    def get_send_at(self, message: Notification):
        request = getattr(message, "request", None)
        if request is None or request.send_at is None:
            return None
        return serializers.DateTimeField().to_representation(request.send_at)


class MessageAcceptedSerializer(serializers.Serializer):
    """POST /api/v1/messages's 202: the message is stored and will be sent once."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Notification.Status.choices)


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "created": {"type": "string", "format": "date-time"},
            "status_changed": {"type": "string", "format": "date-time"},
        },
        "required": ["created", "status_changed"],
        "additionalProperties": {"type": "string", "format": "date-time"},
        "description": "When it was created, when its status last changed, and the first time "
        'of each kind of event ("delivered", "opened"…).',
    }
)
class TimestampsField(serializers.DictField):
    pass


class MessageDetailSerializer(MessageSerializer):
    """GET /api/v1/messages/{id}: the message, its address and its journey."""

    to = serializers.CharField(source="contact.email", help_text="The address it was sent to.")
    # (`journey`: what MessageDetail read of the message's events.)
    timestamps = TimestampsField(source="journey.timestamps")
    events = EventSerializer(
        many=True, source="journey.events", help_text="In time order, the first 200."
    )
    events_not_shown = serializers.IntegerField(
        source="journey.events_not_shown", help_text="The events after the first 200."
    )

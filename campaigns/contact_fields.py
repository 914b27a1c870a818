"""What a contact's fields may hold, checked at every entry (the admin's form, the CSV import,
the API) before anything is stored: the address by the one address rule
(campaigns.addresses, through services.contact_normalize_email), names and custom field
values without control characters. A line break in a name ends up in a merged subject or
header and breaks the send; it is refused where it is typed, with the reason."""

import re

from django.core.exceptions import ValidationError

from campaigns.preferences import time_zone_check

# C0 controls (NUL, tab, LF, CR, …), DEL, C1 controls and the Unicode line and paragraph
# separators: none belongs in a name or a custom field, and each can break a header line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def contact_text_check(value: str, *, label: str, max_length: int | None = None) -> str:
    """`value` unchanged, or ValidationError saying what is wrong with this `label`."""
    if _CONTROL.search(value):
        raise ValidationError(
            f"The {label} contains a control character (a line break or tab?).",
            code="control_character",
        )
    if max_length is not None and len(value) > max_length:
        raise ValidationError(
            f"The {label} has {len(value)} characters; at most {max_length} are allowed.",
            code="max_length",
        )
    return value


def contact_attributes_check(attributes: object) -> dict:
    """Custom fields as stored: a flat {name: text, number, true/false or null} object whose
    text holds no control characters."""
    if not isinstance(attributes, dict):
        raise ValidationError(
            'Custom fields must be an object such as {"city": "London"}.', code="invalid"
        )
    for name, value in attributes.items():
        if isinstance(value, dict | list):
            raise ValidationError(
                f"The custom field “{name}” must be text or a number, not a list or an object.",
                code="invalid",
            )
        contact_text_check(name, label="name of a custom field")
        if isinstance(value, str):
            contact_text_check(value, label=f"custom field “{name}”")
    return attributes


def contact_time_zone_check(value: str) -> str:
    """A contact's time zone as stored: blank (not known) or an IANA name such as Europe/Paris,
    else ValidationError with the reason (surrounding spaces are dropped)."""
    value = value.strip()
    if len(value) > 64:  # no zone name is this long; not echoed back whole
        raise ValidationError(
            f"“{value[:20]}…” is not a time zone name such as Europe/Paris.", code="invalid"
        )
    return time_zone_check(value) if value else ""

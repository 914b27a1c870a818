"""A contact as the API takes it: each field checked by the rule the admin's form and the CSV
import apply (campaigns.addresses, campaigns.contact_fields, campaigns.audiences' typed custom
fields), errors in the one shape ({"code", "field", "message"}, and "row" in a bulk request).

Checked by hand rather than by a serializer per contact: a bulk upsert checks 10,000 of them,
and a serializer's machinery would cost more than the rest of the request.
"""

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from campaigns.addresses import InvalidAddress, address_normalize
from campaigns.api.base import MAX_ID
from campaigns.audiences import custom_field_name_check, custom_field_value
from campaigns.contact_fields import contact_text_check, contact_time_zone_check
from campaigns.models import Contact, CustomField
from campaigns.problems import problem

# Lists one request may name, and custom fields one contact may carry: far above any honest
# use, and a bound on what one row can make the database do.
LISTS_MAX = 100
ATTRIBUTES_MAX = 100
EMAIL_MAX = Contact._meta.get_field("email").max_length
NAME_FIELDS = ("first_name", "last_name")
# A contact's fields as a request may give them; `lists` joins lists (create and upserts).
WRITABLE = frozenset({"email", *NAME_FIELDS, "time_zone", "attributes", "lists"})
PATCHABLE = frozenset({"email", *NAME_FIELDS, "time_zone", "attributes"})


@dataclass
class ContactIn:
    """A checked contact (campaigns.contact_upsert.ContactValues): only the fields given."""

    email: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)
    lists: list[int] = field(default_factory=list)


def contact_in_check(
    data: object,
    *,
    declared: dict[str, CustomField],
    allowed: frozenset = WRITABLE,
    email_required: bool = True,
    row: int | None = None,
    keep_empty: bool = False,
) -> ContactIn | list[dict]:
    """`data` (a contact's JSON object) checked: a ContactIn, or every problem found.

    `keep_empty` (a PATCH): an empty name or time zone is kept (it clears the field) and a
    null custom field stays null (it removes the field); otherwise (create, upserts) an empty
    value is left out, as the CSV import leaves an empty cell out: it never erases."""
    if not isinstance(data, dict):
        return [problem("invalid", "A contact is a JSON object.", "", row)]
    problems = [
        problem("unknown_field", "Unknown field.", str(name)[:100], row)
        for name in sorted(set(data) - allowed, key=str)
    ]
    checked = ContactIn()
    if "email" in data:
        try:
            checked.email = address_normalize(data["email"])
            if len(checked.email) > EMAIL_MAX:
                raise InvalidAddress(f"An address has at most {EMAIL_MAX} characters.")
        except InvalidAddress as err:
            problems.append(problem("invalid_address", " ".join(err.messages), "email", row))
    elif email_required:
        problems.append(problem("required", "Give the contact's address (email).", "email", row))
    for name in (*NAME_FIELDS, "time_zone"):
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(problem("invalid", "Give text.", name, row))
            continue
        try:
            if name == "time_zone":
                value = contact_time_zone_check(value)
            else:
                max_length = Contact._meta.get_field(name).max_length
                label = name.replace("_", " ")
                value = contact_text_check(value, label=label, max_length=max_length)
        except ValidationError as err:
            problems.append(problem(err.code or "invalid", " ".join(err.messages), name, row))
            continue
        if value.strip() or keep_empty:
            checked.fields[name] = value
    if "attributes" in data:
        problems += _attributes(data["attributes"], checked, declared, row, keep_empty)
    if "lists" in data:
        problems += _lists(data["lists"], checked, row)
    return problems or checked


def _attributes(
    value: object, checked: ContactIn, declared: dict[str, CustomField], row, keep_empty: bool
) -> list[dict]:
    if not isinstance(value, dict):
        return [problem("invalid", 'Give an object such as {"city": "London"}.', "attributes", row)]
    if len(value) > ATTRIBUTES_MAX:
        return [problem("too_many", f"At most {ATTRIBUTES_MAX} custom fields.", "attributes", row)]
    problems = []
    for name, raw in value.items():
        where = f"attributes.{name[:60]}"
        try:
            custom_field_name_check(name)
            if len(name) > CustomField._meta.get_field("name").max_length:
                raise ValidationError("A custom field's name has at most 60 characters.")
            # A field declared in the admin has its type; any other takes the rule of the
            # type its JSON value has (text, a number, yes/no), as if declared so.
            field_ = declared.get(name) or CustomField(name=name, type=_json_type(raw))
            typed = custom_field_value(field_, raw)
        except ValidationError as err:
            problems.append(problem(err.code or "invalid", " ".join(err.messages), where, row))
            continue
        if typed is not None or keep_empty:
            checked.attributes[name] = typed
    return problems


def _json_type(raw: object) -> str:
    if isinstance(raw, bool):
        return CustomField.Type.YES_NO
    if isinstance(raw, int | float):
        return CustomField.Type.NUMBER
    return CustomField.Type.TEXT  # text, and what is refused as not text (a list, an object)


def _lists(value: object, checked: ContactIn, row) -> list[dict]:
    if not isinstance(value, list) or len(value) > LISTS_MAX:
        return [problem("invalid", f"Give at most {LISTS_MAX} list ids.", "lists", row)]
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 < item <= MAX_ID:
            return [problem("invalid", "A list id is a positive whole number.", "lists", row)]
    checked.lists = sorted(set(value))
    return []

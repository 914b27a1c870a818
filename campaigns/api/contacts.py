"""Contacts and lists over the API (docs/API.md#contacts-and-lists), scopes contacts:read and
contacts:write.

Thin: the views check (campaigns.api.contact_rows, the admin's and the import's field rules)
and call the services the admin calls: the set-based upsert (campaigns.contact_upsert, the
import's), list add/remove, unsubscribe, suppress (campaigns.audiences, each leaving a
ContactStatusChange) and the erase (tracking.erase, the admin's delete too).
"""

import functools
import math
import operator

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Prefetch, Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from campaigns import audiences
from campaigns.addresses import InvalidAddress, address_normalize
from campaigns.api.base import MAX_ID, ApiView
from campaigns.api.contact_rows import (
    PATCHABLE,
    ContactIn,
    contact_in_check,
)
from campaigns.api.errors import ApiError, error_response
from campaigns.api.idempotency import idempotent_response
from campaigns.api.jobs import JobJsonParser
from campaigns.api.pagination import PAGE_SIZE_MAX, CursorPage, PageQuery
from campaigns.api.schema import answer_example, errors, paginated
from campaigns.api.serializers import StrictQuery, StrictSerializer, TextField
from campaigns.contact_upsert import contacts_upsert
from campaigns.erased import status_for_new_address
from campaigns.models import ApiKey, Contact, ContactList, CustomField, Membership
from campaigns.problems import problem
from tracking.erase import contact_erase

# Contacts one bulk upsert takes (the issue asks for at least 10,000), and its body at most.
BULK_MAX_ROWS = 10_000
BULK_MAX_BODY_BYTES = 20 * 1024 * 1024
# Row errors a refused bulk request lists (the count is always exact).
ROW_ERRORS_SHOWN = 1_000
# Attribute filters one list request may carry (?attr.city=Paris&attr.plan=pro).
ATTR_FILTERS_MAX = 10
ATTR_VALUE_MAX = 1_000

S = Contact.Status


# -- answers ----------------------------------------------------------------------------------


class MembershipOut(serializers.Serializer):
    list = serializers.IntegerField(source="contact_list_id")
    subscribed = serializers.SerializerMethodField()
    joined_at = serializers.DateTimeField(source="created_at")
    unsubscribed_at = serializers.DateTimeField(allow_null=True)

    def get_subscribed(self, membership: Membership) -> bool:
        return membership.unsubscribed_at is None


class ContactOut(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    email = serializers.EmailField()
    first_name = serializers.CharField()
    last_name = serializers.CharField()
    time_zone = serializers.CharField()
    status = serializers.ChoiceField(choices=S.choices)
    attributes = serializers.DictField()
    lists = MembershipOut(many=True, source="membership_set.all")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ContactBody(StrictSerializer):
    """A contact's fields (for the schema: the view checks them with contact_rows)."""

    email = serializers.EmailField()
    first_name = TextField(required=False, max_length=100)
    last_name = TextField(required=False, max_length=100)
    time_zone = TextField(required=False, help_text="An IANA name: Europe/Paris.")
    attributes = serializers.DictField(
        required=False, help_text="Custom fields: text, numbers, yes/no (true/false), dates."
    )
    lists = serializers.ListField(
        child=serializers.IntegerField(), required=False, help_text="List ids to join."
    )


class ContactPatch(StrictSerializer):
    email = serializers.EmailField(required=False)
    first_name = TextField(required=False, allow_blank=True)
    last_name = TextField(required=False, allow_blank=True)
    time_zone = TextField(required=False, allow_blank=True)
    attributes = serializers.DictField(
        required=False, help_text="Merged key by key; a null value removes the field."
    )


class BulkIn(StrictSerializer):
    contacts = ContactBody(many=True)
    lists = serializers.ListField(child=serializers.IntegerField(), required=False)
    update_existing = serializers.BooleanField(required=False, default=True)
    skip_invalid_rows = serializers.BooleanField(required=False, default=False)


class BulkOut(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    invalid_count = serializers.IntegerField()
    invalid_rows = serializers.ListField(child=serializers.DictField())


class UnsubscribeIn(StrictSerializer):
    list = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text="Omit: from all mail."
    )
    reason = TextField(required=False, allow_blank=True, max_length=1000)


class SuppressIn(StrictSerializer):
    status = serializers.ChoiceField(choices=[S.BOUNCED, S.COMPLAINED])
    reason = TextField(required=False, allow_blank=True, max_length=1000)


class ChangedOut(serializers.Serializer):
    changed = serializers.BooleanField()
    contact = ContactOut()


class ListsIn(StrictSerializer):
    lists = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), min_length=1, max_length=100
    )


# The schema's example of a contact (every answer below shows one).
_CONTACT = {
    "id": 1042,
    "email": "ada@example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "time_zone": "Europe/London",
    "status": "active",
    "attributes": {"city": "London", "plan": "pro"},
    "lists": [
        {
            "list": 1,
            "subscribed": True,
            "joined_at": "2026-11-02T10:15:00Z",
            "unsubscribed_at": None,
        }
    ],
    "created_at": "2026-11-02T10:15:00Z",
    "updated_at": "2026-12-01T08:00:00Z",
}


def contact_out(contact: Contact) -> dict:
    return ContactOut(contact).data


# -- reads ------------------------------------------------------------------------------------


def api_contacts() -> QuerySet[Contact]:
    """Every contact the API shows (an erased one is nobody's), with its memberships."""
    return Contact.objects.filter(erased_at__isnull=True).prefetch_related(
        Prefetch("membership_set", queryset=Membership.objects.order_by("contact_list_id"))
    )


def _contact_or_404(pk: int, *, lock: bool = False) -> Contact:
    found = None
    if pk <= MAX_ID:
        rows = api_contacts()
        found = (rows.select_for_update(of=("self",)) if lock else rows).filter(pk=pk).first()
    if found is None:
        raise ApiError(status.HTTP_404_NOT_FOUND, "not_found", "No contact has this id.")
    return found


def _lists_or_422(ids: list[int], field: str = "lists") -> list[ContactList]:
    found = list(ContactList.objects.filter(pk__in=ids))
    if len(found) != len(set(ids)):
        missing = sorted(set(ids) - {lst.pk for lst in found})
        raise ApiError(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            "list_not_found",
            f"No list has the id {missing[0]}.",
            field,
        )
    return found


def _declared() -> dict[str, CustomField]:
    return {f.name: f for f in CustomField.objects.all()}


def _by(request) -> dict:
    """Who a status change is recorded as made by: the key, or a staff session's user."""
    if isinstance(request.auth, ApiKey):
        return {"api_key": request.auth, "user": None}
    return {"api_key": None, "user": request.user}


class ContactListQuery(PageQuery, StrictQuery):
    """GET /api/v1/contacts's query parameters (filters are and-ed); `attr.<name>=value`
    filters by a custom field's value as text, besides these."""

    list = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False)
    status = serializers.ChoiceField(choices=S.choices, required=False)
    email = serializers.CharField(max_length=320, required=False)
    updated_since = serializers.DateTimeField(required=False)

    def to_internal_value(self, data):
        attrs = {k: v for k, v in data.items() if k.startswith("attr.")}
        values = super().to_internal_value({k: v for k, v in data.items() if k not in attrs})
        if len(attrs) > ATTR_FILTERS_MAX:
            raise serializers.ValidationError(
                {"attr": [f"At most {ATTR_FILTERS_MAX} attribute filters."]}
            )
        values["attrs"] = {}
        for key, value in attrs.items():
            name = key.removeprefix("attr.")
            try:
                audiences.custom_field_name_check(name)
            except ValidationError:
                raise serializers.ValidationError(
                    {key: ["Not a custom field's name."]}, code="invalid"
                ) from None
            if "\x00" in value or len(value) > ATTR_VALUE_MAX:
                raise serializers.ValidationError({key: ["Not a value a field holds."]})
            values["attrs"][name] = value
        return values


_LIST_PARAMETERS = [
    OpenApiParameter("list", int, description="Members of this list (subscribed or not)."),
    OpenApiParameter("status", str, enum=S.values),
    OpenApiParameter("email", str, description="The contact with this address."),
    OpenApiParameter("updated_since", OpenApiTypes.DATETIME, description="Changed at or after."),
    OpenApiParameter(
        "attr.<name>",
        str,
        description="A custom field's value, compared as text: attr.city=Paris, attr.vip=true.",
    ),
    OpenApiParameter("limit", int, description=f"At most {PAGE_SIZE_MAX}."),
    OpenApiParameter("cursor", str, description="From the previous page's `next`."),
]


def _filtered(filters: dict) -> QuerySet[Contact]:
    contacts = api_contacts()
    if "list" in filters:
        contacts = contacts.filter(
            pk__in=Membership.objects.filter(contact_list_id=filters["list"]).values("contact_id")
        )
    if "status" in filters:
        contacts = contacts.filter(status=filters["status"])
    if "email" in filters:
        try:
            email = address_normalize(filters["email"])
        except InvalidAddress:  # an address that cannot be stored names nobody
            return contacts.none()
        contacts = contacts.filter(email=email)
    if "updated_since" in filters:
        contacts = contacts.filter(updated_at__gte=filters["updated_since"])
    for name, value in filters["attrs"].items():
        contacts = contacts.filter(_attr_matches(name, value))
    return contacts


def _attr_matches(name: str, value: str) -> Q:
    """Contacts whose custom field `name` holds `value` as the API writes it: the text as is,
    or the number or yes/no it spells ("12" finds 12 and "12"; "true" finds true and "true").

    On PostgreSQL, a JSON containment per candidate (`attributes @> '{"city": "Paris"}'`), which
    the GIN index contact_attributes_gin serves: a filter on a rare value reads a few index
    pages, not every contact (docs/PERFORMANCE.md). SQLite (the demo) has no containment: the
    key is compared there, with the same candidates."""
    candidates: list = [value]
    if value in ("true", "false"):
        candidates.append(value == "true")
    else:
        number = _number(value)
        if number is not None:
            candidates.append(number)
    if connection.vendor == "postgresql":
        # Containment of a scalar is its equality (12 and 12.0 alike, as the key comparison).
        return functools.reduce(
            operator.or_, (Q(attributes__contains={name: c}) for c in candidates)
        )
    # The key as a KeyTransform, never spelled into a lookup (attributes__<name>): a field
    # named `isnull` or `contains` would be read as that lookup, not as the key.
    key = KeyTransform(name, "attributes")
    exact = key.get_lookup("exact")  # KeyTransformExact: JSON's own comparison per database
    return functools.reduce(operator.or_, (Q(exact(key, c)) for c in candidates))


def _number(value: str) -> int | float | None:
    try:
        number = float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        return None
    if isinstance(number, int) and abs(number) >= 10**15:
        return None  # no value the API stores (campaigns.audiences.NUMBER_MAX)
    # inf and nan are no JSON numbers: sent to the database, they would be an error there.
    return number if math.isfinite(number) else None


def _checked_one(data, **kwargs) -> ContactIn:
    checked = contact_in_check(data, declared=_declared(), **kwargs)
    if isinstance(checked, list):
        raise _Refused(checked)
    return checked


class _Refused(Exception):  # noqa: N818 (a refusal, answered: not an error of ours)
    """Every problem of one contact, answered at once in the one shape (a 422, as a bulk
    request's row errors are)."""

    def __init__(self, problems: list[dict]) -> None:
        super().__init__(problems[0]["message"])
        self.problems = problems


class ContactApiView(ApiView):
    def handle_exception(self, exc):
        # Raised under idempotent_response's transaction (which it rolls back), answered here.
        if isinstance(exc, _Refused):
            return error_response(status.HTTP_422_UNPROCESSABLE_ENTITY, exc.problems)
        return super().handle_exception(exc)


# -- contacts ---------------------------------------------------------------------------------


class ContactsView(ContactApiView):
    scopes = {"GET": "contacts:read", "POST": "contacts:write"}
    idempotent = True  # its POST takes an Idempotency-Key (the schema says so)

    @extend_schema(
        operation_id="contacts_list",
        parameters=_LIST_PARAMETERS,
        responses={200: paginated(ContactOut, "Contact"), **errors(400)},
        examples=[answer_example("A page", {"results": [_CONTACT], "next": None})],
    )
    def get(self, request):
        query = ContactListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = CursorPage(request, size=query.validated_data["limit"])
        rows = page.rows(_filtered(query.validated_data))
        # One serializer for the page: one a row copied its fields each time (a page of 100
        # contacts: 63 ms, 24 ms so).
        return page.answer(ContactOut(rows, many=True).data, rows)

    @extend_schema(
        operation_id="contacts_create",
        request=ContactBody,
        responses={201: ContactOut, **errors(400, 409, 422)},
        examples=[
            OpenApiExample(
                "A contact",
                value={
                    "email": "ada@example.com",
                    "first_name": "Ada",
                    "attributes": {"city": "London", "plan": "pro"},
                    "lists": [1],
                },
                request_only=True,
            ),
            answer_example(
                "Created",
                {
                    **_CONTACT,
                    "last_name": "",
                    "time_zone": "",
                    "updated_at": _CONTACT["created_at"],
                },
                "201",
            ),
        ],
    )
    def post(self, request):
        return idempotent_response(request, lambda: self._create(request), cheap_work=True)

    def _create(self, request) -> Response:
        checked = _checked_one(request.data)
        _lists_or_422(checked.lists)
        done = contacts_upsert(contacts=[checked], update_existing=False, list_ids=checked.lists)
        if not done.new:
            raise ApiError(
                status.HTTP_409_CONFLICT,
                "contact_exists",
                "A contact has this address: upsert it (POST /api/v1/contacts/upsert) or "
                "change it (PATCH).",
                "email",
            )
        contact = api_contacts().get(pk=done.ids[checked.email])
        return Response(contact_out(contact), status=status.HTTP_201_CREATED)


class ContactUpsert(ContactApiView):
    scopes = {"POST": "contacts:write"}
    idempotent = True  # its POST takes an Idempotency-Key (the schema says so)

    @extend_schema(
        operation_id="contacts_upsert",
        request=ContactBody,
        responses={200: ContactOut, 201: ContactOut, **errors(400, 422)},
        description="Create the contact of this address, or update it: the fields given "
        "replace the stored ones (an empty value never erases), custom fields are merged, "
        "lists are joined (a list the contact left stays left), the status never changes.",
        examples=[
            OpenApiExample(
                "A contact by address",
                value={"email": "ada@example.com", "attributes": {"plan": "pro"}},
                request_only=True,
            ),
            answer_example("Updated", _CONTACT),
            answer_example(
                "Created",
                {
                    **_CONTACT,
                    "first_name": "",
                    "last_name": "",
                    "time_zone": "",
                    "attributes": {"plan": "pro"},
                    "lists": [],
                    "created_at": _CONTACT["updated_at"],
                },
                "201",
            ),
        ],
    )
    def post(self, request):
        return idempotent_response(request, lambda: self._upsert(request), cheap_work=True)

    def _upsert(self, request) -> Response:
        checked = _checked_one(request.data)
        _lists_or_422(checked.lists)
        # INSERT … ON CONFLICT: however many upserts of one address run at once, one row.
        done = contacts_upsert(contacts=[checked], update_existing=True, list_ids=checked.lists)
        contact = api_contacts().get(email=checked.email)
        code = status.HTTP_201_CREATED if done.new else status.HTTP_200_OK
        return Response(contact_out(contact), status=code)


class ContactBulkUpsert(ApiView):
    scopes = {"POST": "contacts:write"}
    idempotent = True  # its POST takes an Idempotency-Key (the schema says so)
    parser_classes = [JobJsonParser]  # (DRF's caps a body at 2.5 MB: 10,000 contacts are more)
    max_body_bytes = BULK_MAX_BODY_BYTES

    @extend_schema(
        operation_id="contacts_bulk_upsert",
        request=BulkIn,
        responses={200: BulkOut, **errors(400, 413, 422)},
        description=f"Upsert up to {BULK_MAX_ROWS:,} contacts in one statement. A row's "
        "errors carry its `row` (from 1); with any, nothing is written unless "
        "`skip_invalid_rows` is true.",
        examples=[
            OpenApiExample(
                "Two contacts",
                value={
                    "contacts": [
                        {"email": "ada@example.com", "first_name": "Ada"},
                        {"email": "grace@example.com", "attributes": {"plan": "pro"}},
                    ],
                    "skip_invalid_rows": False,
                },
                request_only=True,
            ),
            OpenApiExample(
                "One new, one updated",
                value={
                    "created": 1,
                    "updated": 1,
                    "unchanged": 0,
                    "invalid_count": 0,
                    "invalid_rows": [],
                },
                response_only=True,
                status_codes=["200"],
            ),
        ],
    )
    def post(self, request):
        return idempotent_response(request, lambda: self._bulk(request))

    def _bulk(self, request) -> Response:
        data = request.data
        if not isinstance(data, dict):
            raise ApiError(400, "body_not_object", "The body must be a JSON object.")
        unknown = sorted(set(data) - {"contacts", "lists", "update_existing", "skip_invalid_rows"})
        if unknown:
            raise ApiError(400, "unknown_field", "Unknown field.", str(unknown[0])[:100])
        rows = data.get("contacts")
        if not isinstance(rows, list) or not rows:
            raise ApiError(400, "invalid", "Give the contacts as a non-empty list.", "contacts")
        if len(rows) > BULK_MAX_ROWS:
            raise ApiError(
                422, "too_many_rows", f"At most {BULK_MAX_ROWS:,} contacts a request.", "contacts"
            )
        flags = {}
        for name, default in (("update_existing", True), ("skip_invalid_rows", False)):
            flags[name] = data.get(name, default)
            if not isinstance(flags[name], bool):
                raise ApiError(400, "invalid", "Give true or false.", name)
        common = contact_in_check(
            {"lists": data.get("lists", [])}, declared={}, email_required=False
        )
        if isinstance(common, list):
            return error_response(400, common)
        declared = _declared()
        valid: list[ContactIn] = []
        problems: list[dict] = []
        refused = 0
        first_row: dict[str, int] = {}
        for number, item in enumerate(rows, start=1):
            checked = contact_in_check(item, declared=declared, row=number)
            if isinstance(checked, ContactIn) and checked.email in first_row:
                checked = [
                    problem(
                        "duplicate_address",
                        f"Row {number} repeats the address of row {first_row[checked.email]}.",
                        "email",
                        number,
                    )
                ]
            if isinstance(checked, list):
                refused += 1
                problems.extend(checked[: max(0, ROW_ERRORS_SHOWN - len(problems))])
                continue
            first_row[checked.email] = number
            valid.append(checked)
        if problems and not flags["skip_invalid_rows"]:
            response = error_response(422, problems)
            response.data["invalid_count"] = refused
            return response  # (a refusal: idempotent_response rolls back, nothing is written)
        list_ids = sorted({*common.lists, *(i for c in valid for i in c.lists)})
        _lists_or_422(list_ids)
        # Rows naming their own lists join them; the request's `lists` are every row's.
        by_lists: dict[tuple[int, ...], list[ContactIn]] = {}
        for c in valid:
            by_lists.setdefault(tuple(sorted({*common.lists, *c.lists})), []).append(c)
        new = updated = 0
        for lists, contacts in by_lists.items():
            done = contacts_upsert(
                contacts=contacts, update_existing=flags["update_existing"], list_ids=lists
            )
            new, updated = new + done.new, updated + done.updated
        answer = {
            "created": new,
            "updated": updated,
            "unchanged": len(valid) - new - updated,
            "invalid_count": refused,
            "invalid_rows": problems,
        }
        return Response(BulkOut(answer).data)


class ContactDetail(ContactApiView):
    scopes = {"GET": "contacts:read", "PATCH": "contacts:write", "DELETE": "contacts:write"}

    @extend_schema(
        operation_id="contacts_read",
        responses={200: ContactOut, **errors(404)},
        examples=[answer_example("A contact", _CONTACT)],
    )
    def get(self, request, pk: int):
        return Response(contact_out(_contact_or_404(pk)))

    @extend_schema(
        operation_id="contacts_update",
        request=ContactPatch,
        responses={200: ContactOut, **errors(400, 404, 409, 422)},
        examples=[
            OpenApiExample(
                "A new last name and a field removed",
                value={"last_name": "King", "attributes": {"plan": None}},
                request_only=True,
            ),
            answer_example(
                "Changed",
                {
                    **_CONTACT,
                    "last_name": "King",
                    "attributes": {"city": "London"},
                    "updated_at": "2026-12-02T09:30:00Z",
                },
            ),
        ],
    )
    def patch(self, request, pk: int):
        checked = _checked_one(
            request.data, allowed=PATCHABLE, email_required=False, keep_empty=True
        )
        try:
            with transaction.atomic():
                contact = _contact_or_404(pk, lock=True)
                changed = [*checked.fields, "attributes", "updated_at"]
                if checked.email and checked.email != contact.email:
                    contact.email = checked.email
                    # (An erased, suppressed address stays suppressed: campaigns.erased.)
                    contact.status = status_for_new_address(
                        status=contact.status, address=contact.email
                    )
                    changed += ["email", "status"]
                for name, value in checked.fields.items():
                    setattr(contact, name, value)
                attributes = {**contact.attributes, **checked.attributes}
                contact.attributes = {k: v for k, v in attributes.items() if v is not None}
                contact.save(update_fields=changed)  # (updated_at: auto_now)
        except IntegrityError:
            raise ApiError(
                status.HTTP_409_CONFLICT,
                "contact_exists",
                "Another contact has this address.",
                "email",
            ) from None
        return Response(contact_out(_contact_or_404(pk)))

    @extend_schema(operation_id="contacts_delete", responses={204: None, **errors(404)})
    def delete(self, request, pk: int):
        # Erased, not deleted, if it was mailed (tracking.erase): the admin's delete too.
        if pk > MAX_ID or not contact_erase(contact_id=pk):
            raise ApiError(status.HTTP_404_NOT_FOUND, "not_found", "No contact has this id.")
        return Response(status=status.HTTP_204_NO_CONTENT)


_JOINED = "2026-12-02T09:30:00Z"  # (the examples' time of a change)


class ContactLists(ApiView):
    scopes = {"POST": "contacts:write"}

    @extend_schema(
        operation_id="contacts_lists_add",
        request=ListsIn,
        responses={200: ContactOut, **errors(400, 404, 422)},
        examples=[
            OpenApiExample("Two lists", value={"lists": [2, 5]}, request_only=True),
            answer_example(
                "In three lists",
                {
                    **_CONTACT,
                    "lists": [
                        *_CONTACT["lists"],
                        *(
                            {**_CONTACT["lists"][0], "list": list_id, "joined_at": _JOINED}
                            for list_id in (2, 5)
                        ),
                    ],
                    "updated_at": _JOINED,
                },
            ),
        ],
        description="Join these lists. A list the contact unsubscribed from stays "
        "unsubscribed: joining is not consent.",
    )
    def post(self, request, pk: int):
        data = ListsIn(data=request.data)
        data.is_valid(raise_exception=True)
        contact = _contact_or_404(pk)
        for contact_list in _lists_or_422(data.validated_data["lists"]):
            audiences.contact_list_add_contacts(contact_list=contact_list, contact_ids=[pk])
        _touch(pk)
        return Response(contact_out(_contact_or_404(contact.pk)))


class ContactListMembership(ApiView):
    scopes = {"DELETE": "contacts:write"}

    @extend_schema(
        operation_id="contacts_lists_remove",
        responses={200: ContactOut, **errors(404)},
        examples=[
            answer_example("In no list now", {**_CONTACT, "lists": [], "updated_at": _JOINED})
        ],
        description="Leave the list. A membership the contact unsubscribed from is kept (so "
        "adding them again cannot subscribe them).",
    )
    def delete(self, request, pk: int, list_pk: int):
        contact = _contact_or_404(pk)
        contact_list = ContactList.objects.filter(pk=list_pk).first() if list_pk <= MAX_ID else None
        if contact_list is None:
            raise ApiError(status.HTTP_404_NOT_FOUND, "not_found", "No list has this id.")
        audiences.contact_list_remove_contacts(contact_list=contact_list, contact_ids=[pk])
        _touch(pk)
        return Response(contact_out(_contact_or_404(contact.pk)))


def _touch(pk: int) -> None:
    """A membership changed: the contact counts as changed for ?updated_since=."""
    Contact.objects.filter(pk=pk).update(updated_at=timezone.now())


class ContactUnsubscribe(ApiView):
    scopes = {"POST": "contacts:write"}

    @extend_schema(
        operation_id="contacts_unsubscribe",
        request=UnsubscribeIn,
        responses={200: ChangedOut, **errors(400, 404, 422)},
        examples=[
            OpenApiExample(
                "From one list",
                value={"list": 1, "reason": "Asked by phone"},
                request_only=True,
            ),
            answer_example(
                "Unsubscribed from the list",
                {
                    "changed": True,
                    "contact": {
                        **_CONTACT,
                        "lists": [
                            {
                                **_CONTACT["lists"][0],
                                "subscribed": False,
                                "unsubscribed_at": _JOINED,
                            }
                        ],
                    },
                },
            ),
        ],
        description="Unsubscribe from one list (`list`) or from all mail. Recorded with the "
        "key and the reason; undone only by a resubscribe with a reason, in the admin.",
    )
    def post(self, request, pk: int):
        data = UnsubscribeIn(data=request.data)
        data.is_valid(raise_exception=True)
        contact = _contact_or_404(pk)
        contact_list = None
        if "list" in data.validated_data:
            contact_list = _lists_or_422([data.validated_data["list"]], "list")[0]
        changed = audiences.contact_unsubscribe(
            contact=contact,
            contact_list=contact_list,
            reason=data.validated_data.get("reason", ""),
            **_by(request),
        )
        return Response(ChangedOut({"changed": changed, "contact": _contact_or_404(pk)}).data)


class ContactSuppress(ApiView):
    scopes = {"POST": "contacts:write"}

    @extend_schema(
        operation_id="contacts_suppress",
        request=SuppressIn,
        responses={200: ChangedOut, **errors(400, 404)},
        examples=[
            OpenApiExample(
                "A complaint",
                value={"status": "complained", "reason": "Reported to our support"},
                request_only=True,
            ),
            answer_example(
                "Suppressed", {"changed": True, "contact": {**_CONTACT, "status": "complained"}}
            ),
        ],
        description="Never mail this contact again: `bounced` (the address does not work) or "
        "`complained` (its owner reported spam).",
    )
    def post(self, request, pk: int):
        data = SuppressIn(data=request.data)
        data.is_valid(raise_exception=True)
        contact = _contact_or_404(pk)
        changed = audiences.contact_suppress(
            contact=contact,
            status=data.validated_data["status"],
            reason=data.validated_data.get("reason", ""),
            **_by(request),
        )
        return Response(ChangedOut({"changed": changed, "contact": _contact_or_404(pk)}).data)

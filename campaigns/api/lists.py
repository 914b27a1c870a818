"""Lists over the API (docs/API.md#lists): create, read with their counts (the admin's,
campaigns.audiences.list_counts), rename, delete; scopes contacts:read and contacts:write."""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from campaigns import audiences
from campaigns.api.base import MAX_ID, ApiView
from campaigns.api.errors import ApiError
from campaigns.api.idempotency import idempotent_response
from campaigns.api.pagination import CursorPage, PageQuery
from campaigns.api.schema import answer_example, errors, paginated
from campaigns.api.serializers import StrictQuery, StrictSerializer, TextField
from campaigns.contact_fields import contact_text_check
from campaigns.models import ContactList


class ListIn(StrictSerializer):
    name = TextField(max_length=200)
    description = TextField(required=False, allow_blank=True, max_length=10_000)

    def validate_name(self, value: str) -> str:
        return _text(value, "name")

    def validate_description(self, value: str) -> str:
        return _text(value, "description", lines=True)


def _text(value: str, label: str, *, lines: bool = False) -> str:
    checked = value.replace("\r\n", "\n").replace("\n", " ") if lines else value
    try:
        contact_text_check(checked, label=label)
    except ValidationError as err:
        raise serializers.ValidationError(
            " ".join(err.messages), code="control_character"
        ) from None
    return value.strip()


class ListPatch(ListIn):
    name = TextField(max_length=200, required=False)


class CountsOut(serializers.Serializer):
    subscribed = serializers.IntegerField()
    unsubscribed_list = serializers.IntegerField()
    unsubscribed_all = serializers.IntegerField()
    suppressed = serializers.IntegerField()
    total = serializers.IntegerField()


class ListOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.DateTimeField()
    counts = CountsOut(source="api_counts")  # (lists_out reads a page's counts at once)


# The schema's example of a list (every answer below shows one).
_LIST = {
    "id": 1,
    "name": "Newsletter",
    "description": "Monthly news",
    "created_at": "2026-10-01T08:00:00Z",
    "counts": {
        "subscribed": 1180,
        "unsubscribed_list": 42,
        "unsubscribed_all": 9,
        "suppressed": 6,
        "total": 1237,
    },
}


class ListQuery(PageQuery, StrictQuery):
    pass  # no filters of its own


def lists_out(lists: list[ContactList]) -> list[dict]:
    """Lists as the API answers them (ListOut), with the admin's counts, read for all of
    them in one go."""
    counts = audiences.list_counts(list_ids=[lst.pk for lst in lists])
    for lst in lists:
        lst.api_counts = counts[lst.pk]
    return ListOut(lists, many=True).data


def _list_or_404(pk: int) -> ContactList:
    found = ContactList.objects.filter(pk=pk).first() if pk <= MAX_ID else None
    if found is None:
        raise ApiError(status.HTTP_404_NOT_FOUND, "not_found", "No list has this id.")
    return found


def _list_save(contact_list: ContactList) -> ContactList:
    try:
        with transaction.atomic():
            contact_list.save()
    except IntegrityError:
        raise ApiError(
            status.HTTP_409_CONFLICT, "list_exists", "A list has this name.", "name"
        ) from None
    return contact_list


class ListsView(ApiView):
    scopes = {"GET": "contacts:read", "POST": "contacts:write"}
    idempotent = True  # its POST takes an Idempotency-Key (the schema says so)

    @extend_schema(
        operation_id="lists_list",
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("cursor", str)],
        responses={200: paginated(ListOut, "List"), **errors(400)},
        examples=[answer_example("A page", {"results": [_LIST], "next": None})],
    )
    def get(self, request):
        query = ListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = CursorPage(request, size=query.validated_data["limit"])
        rows = page.rows(ContactList.objects.all())
        return page.answer(lists_out(rows), rows)

    @extend_schema(
        operation_id="lists_create",
        request=ListIn,
        responses={201: ListOut, **errors(400, 409)},
        examples=[
            OpenApiExample(
                "A list",
                value={"name": "Newsletter", "description": "Monthly news"},
                request_only=True,
            ),
            answer_example(
                "Created, empty",
                {
                    **_LIST,
                    "created_at": "2026-12-05T10:00:00Z",
                    "counts": dict.fromkeys(_LIST["counts"], 0),
                },
                "201",
            ),
        ],
    )
    def post(self, request):
        return idempotent_response(request, lambda: self._create(request), cheap_work=True)

    def _create(self, request) -> Response:
        data = ListIn(data=request.data)
        data.is_valid(raise_exception=True)
        made = _list_save(ContactList(**data.validated_data))
        return Response(lists_out([made])[0], status=status.HTTP_201_CREATED)


class ListDetail(ApiView):
    scopes = {"GET": "contacts:read", "PATCH": "contacts:write", "DELETE": "contacts:write"}

    @extend_schema(
        operation_id="lists_read",
        responses={200: ListOut, **errors(404)},
        examples=[answer_example("A list", _LIST)],
    )
    def get(self, request, pk: int):
        return Response(lists_out([_list_or_404(pk)])[0])

    @extend_schema(
        operation_id="lists_update",
        request=ListPatch,
        responses={200: ListOut, **errors(400, 404, 409)},
        examples=[
            OpenApiExample(
                "A new name",
                value={"name": "Monthly newsletter"},
                request_only=True,
            ),
            answer_example("Renamed", {**_LIST, "name": "Monthly newsletter"}),
        ],
    )
    def patch(self, request, pk: int):
        contact_list = _list_or_404(pk)
        data = ListPatch(data=request.data)
        data.is_valid(raise_exception=True)
        for name, value in data.validated_data.items():
            setattr(contact_list, name, value)
        return Response(lists_out([_list_save(contact_list)])[0])

    @extend_schema(operation_id="lists_delete", responses={204: None, **errors(404, 409)})
    def delete(self, request, pk: int):
        contact_list = _list_or_404(pk)
        try:
            with transaction.atomic():
                contact_list.delete()  # its memberships go; its contacts stay
        except ProtectedError:
            raise ApiError(
                status.HTTP_409_CONFLICT,
                "list_in_use",
                "A campaign was sent, or is to be sent, to this list: it cannot be deleted.",
            ) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

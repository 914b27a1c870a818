"""Cursor pagination, newest first by id: `?cursor=` is opaque to clients (the last id of
the page before, encoded), `next` is the link to the following page or null. No count is
ever taken (a count of a large table is a walk of all of it): a page reads its size + 1 rows
to learn whether another follows."""

import base64
import binascii
import re

from django.db.models import QuerySet
from rest_framework import status
from rest_framework.request import Request

from campaigns.api.base import MAX_ID
from campaigns.api.errors import ApiError

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 100
_CURSOR = re.compile(r"id:([1-9][0-9]{0,18})\Z")


def cursor_encode(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> int:
    """The id a cursor stands for; 400 invalid_cursor for anything cursor_encode did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    match = _CURSOR.match(text)
    if match is None or int(match.group(1)) > MAX_ID:
        raise ApiError(
            status.HTTP_400_BAD_REQUEST,
            "invalid_cursor",
            "This cursor is not one this API gave: follow the `next` links as they are.",
            "cursor",
        )
    return int(match.group(1))


class CursorPage:
    """One page of a queryset ordered by a unique, increasing integer column, newest first."""

    def __init__(self, request: Request, *, size: int, key: str = "pk") -> None:
        self.request, self.size, self.key = request, size, key
        cursor = request.query_params.get("cursor")
        self.before = cursor_decode(cursor) if cursor else None
        self.more = False

    def rows(self, queryset: QuerySet) -> list:
        if self.before is not None:
            queryset = queryset.filter(**{f"{self.key}__lt": self.before})
        rows = list(queryset.order_by(f"-{self.key}")[: self.size + 1])
        self.more = len(rows) > self.size
        return rows[: self.size]

    def next_link(self, rows: list) -> str | None:
        if not self.more:
            return None
        params = self.request.query_params.copy()
        params["cursor"] = cursor_encode(getattr(rows[-1], self.key))
        return self.request.build_absolute_uri(f"{self.request.path}?{params.urlencode()}")

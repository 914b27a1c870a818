"""Cursor pagination, newest first by id: `?cursor=` is opaque to clients (the last id of
the page before, encoded), `next` is the link to the following page or null. No count is
ever taken (a count of a large table is a walk of all of it): a page reads its size + 1 rows
to learn whether another follows."""

import base64
import binascii
import re

from django.db.models import QuerySet
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.api.base import MAX_ID
from campaigns.api.errors import ApiError

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 100
_CURSOR = re.compile(r"id:([1-9][0-9]{0,18})\Z")


class PageQuery(serializers.Serializer):
    """The query parameters of every list: a list's own query serializer adds its filters."""

    limit = serializers.IntegerField(
        min_value=1,
        max_value=PAGE_SIZE_MAX,
        required=False,
        default=PAGE_SIZE_DEFAULT,
        help_text="Results a page.",
    )
    cursor = serializers.CharField(
        max_length=100, required=False, help_text="The `next` link's cursor: opaque."
    )  # read by CursorPage
    format = serializers.CharField(required=False)  # DRF's ?format=json|api


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
    """One page of a queryset ordered by a unique, increasing integer column, newest first.

    With a `window`, a page reads at most that many key values (ids) below its cursor, for
    a filter no index serves (a message's status: the ledger has no status index, by design,
    docs/decisions/0002-ledger-without-status-index.md): its cost is bounded however rare the
    matches are, and a page may hold fewer results than its size, even none, while `next`
    still leads on (as CloudWatch Logs' FilterLogEvents answers). Without one, a page walks
    until it is full or the table ends."""

    def __init__(
        self,
        request: Request,
        *,
        size: int,
        key: str = "pk",
        window: int | None = None,
        newest: QuerySet | None = None,
    ) -> None:
        self.request, self.size, self.key, self.window = request, size, key, window
        self.newest = newest  # where the first window starts: the newest key of these rows
        cursor = request.query_params.get("cursor")
        self.before = cursor_decode(cursor) if cursor else None
        self.more = False
        self.resume_at: int | None = None  # the next page's cursor, where the window ended
        self._bounds: tuple[int | None, int | None] | None = None
        self.oldest = 1

    def bounds(self) -> tuple[int | None, int | None]:
        """(the lowest key this page may read or None, the key it reads below or None): for
        a caller to bound a subquery on the other side of a join too (PostgreSQL carries an
        equality across a join, never a range)."""
        if self._bounds is None:
            before, floor = self.before, None
            if self.window is not None:
                assert self.newest is not None, "a window needs the rows it walks"
                keys = self.newest.order_by().values_list("pk", flat=True)
                # The oldest and newest keys (two reads of the primary key's ends): a window
                # never reads below the oldest, so the walk ends there.
                self.oldest = keys.order_by("pk").first() or 1
                if before is None:  # the first page: from the newest row
                    before = (keys.order_by("-pk").first() or 0) + 1
                floor = max(before - self.window, self.oldest)
            self._bounds = (floor, before)
        return self._bounds

    def rows(self, queryset: QuerySet) -> list:
        if self.window is not None and self.newest is None:
            self.newest = queryset.model._default_manager.all()
        floor, before = self.bounds()
        if floor is not None:
            queryset = queryset.filter(**{f"{self.key}__gte": floor})
        if before is not None:
            queryset = queryset.filter(**{f"{self.key}__lt": before})
        rows = list(queryset.order_by(f"-{self.key}")[: self.size + 1])
        self.more = len(rows) > self.size
        if not self.more and floor is not None and floor > self.oldest:
            # The window ended before the page filled: the next page reads on from there.
            self.more, self.resume_at = True, floor
        return rows[: self.size]

    def next_link(self, rows: list) -> str | None:
        if not self.more:
            return None
        params = self.request.query_params.copy()
        last = self.resume_at if self.resume_at is not None else getattr(rows[-1], self.key)
        params["cursor"] = cursor_encode(last)
        return self.request.build_absolute_uri(f"{self.request.path}?{params.urlencode()}")

    def answer(self, results: list, rows: list) -> Response:
        """Every list's answer, `{"results": …, "next": …}`: `results` are `rows` as the list's
        serializer answers them (the rows themselves give the next page's cursor)."""
        return Response({"results": results, "next": self.next_link(rows)})

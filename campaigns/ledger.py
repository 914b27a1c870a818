"""The notification ledger: every notification status change goes through this module.

Each write is guarded by the statuses it may move from, in the UPDATE's WHERE clause, so two
workers racing for a row cannot both win, and a late event cannot drag a row backwards.
"""

from collections.abc import Collection, Mapping

from django.db import connection
from django.db.models import Case, Value, When
from django.utils import timezone

from campaigns.models import Notification

S = Notification.Status

# How far along its journey each status is. An event moves a row only to a higher rank, so a
# late Delivery never overwrites a Bounce, and an `unknown` row is resolved by any SES event.
RANK = {
    S.CREATED: 0,
    S.SENDING: 1,
    S.SENT: 2,
    S.UNKNOWN: 2,
    S.DELIVERED: 3,
    S.REJECTED: 4,
    S.FAILED: 4,
    S.BOUNCED: 4,
    S.COMPLAINED: 5,
}


def statuses_before(status: str) -> set[str]:
    """The statuses an SES event may move a sent row from to reach `status` (forward only)."""
    return {s for s, rank in RANK.items() if RANK[S.SENT] <= rank < RANK[status]}


def ledger_claim(*, campaign_id: int, first_id: int, last_id: int) -> list[tuple[int, int]]:
    """Claim the `created` rows of an id range (created → sending); returns (id, contact_id).

    One statement, committed by the caller before any hand-off: a row is claimed by exactly one
    batch, and a claimed row is never handed to SES twice (at most once).
    """
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, updated_at = %s "  # noqa: S608 (table name is ours)
            "WHERE campaign_id = %s AND id BETWEEN %s AND %s AND status = %s "
            "RETURNING id, contact_id",
            [S.SENDING, timezone.now(), campaign_id, first_id, last_id, S.CREATED],
        )
        return sorted(cursor.fetchall())


def ledger_transition(
    *,
    ids: Collection[int],
    from_statuses: Collection[str],
    to: str,
    reason: str = "",
    message_ids: Mapping[int, str] | None = None,
) -> int:
    """Move the rows among `ids` that are in one of `from_statuses` to `to`; returns how many.

    `message_ids` ({id: SES MessageId}) is recorded with the move (a send's acceptance).
    """
    if not ids:
        return 0
    if message_ids and connection.vendor == "postgresql":
        return _transition_with_message_ids(message_ids, from_statuses, to)
    fields = {"status": to, "updated_at": timezone.now()}
    if reason:
        fields["reason"] = reason[:300]
    if message_ids:
        fields["message_id"] = Case(
            *(When(id=nid, then=Value(mid)) for nid, mid in message_ids.items()),
            default=None,
        )
    return Notification.objects.filter(id__in=list(ids), status__in=list(from_statuses)).update(
        **fields
    )


def _transition_with_message_ids(
    message_ids: Mapping[int, str], from_statuses: Collection[str], to: str
) -> int:
    """PostgreSQL: one UPDATE joined to unnest(ids, message ids). Measured 40x cheaper than the
    ORM's CASE WHEN for 50 rows (Django spends ~40 ms resolving a 50-branch CASE)."""
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS n SET status = %s, message_id = v.message_id, updated_at = %s "  # noqa: S608
            "FROM unnest(%s::bigint[], %s::text[]) AS v(id, message_id) "
            "WHERE n.id = v.id AND n.status = ANY(%s)",
            [to, timezone.now(), list(message_ids), list(message_ids.values()),
             list(from_statuses)],
        )  # fmt: skip
        return cursor.rowcount

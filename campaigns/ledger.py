"""The notification ledger: every notification status change goes through this module.

Each write is guarded by the statuses it may move from, in the UPDATE's WHERE clause, so two
workers racing for a row cannot both win, and a late event cannot drag a row backwards.
"""

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from campaigns.counters import counter_add_count_sql, counters_add
from campaigns.models import Contact, Membership, MessageOutcome, MessageRequest, Notification
from campaigns.outcomes import OUTCOME_STATUSES, outcomes_wanted
from infra.db import pg_execute, pg_rows

N = Notification.Status

# Why a contact who is not active is skipped at the claim, by their status: the reason says
# which (a message's reason is what GET /api/v1/messages/{id} and the ledger's page show).
# Keyed by the stored text: the claim looks up the status its query read.
INACTIVE_REASONS = {
    str(Contact.Status.BOUNCED): "suppressed: the address bounced",
    str(Contact.Status.COMPLAINED): "suppressed: the recipient marked a message as spam",
    str(Contact.Status.UNSUBSCRIBED): "unsubscribed from all mail",
}

# How far along its journey each status is. An event moves a row only to a higher rank, so a
# late Delivery never overwrites a Bounce, and an `unknown` row is resolved by any SES event.
RANK = {
    N.CREATED: 0,
    N.SENDING: 1,
    N.SENT: 2,
    N.UNKNOWN: 2,
    N.DELIVERED: 3,
    N.REJECTED: 4,
    N.FAILED: 4,
    N.BOUNCED: 4,
    N.COMPLAINED: 5,
}


def statuses_before(status: str) -> set[str]:
    """The statuses an SES event may move a sent row from to reach `status` (forward only)."""
    return {s for s, rank in RANK.items() if RANK[N.SENT] <= rank < RANK[status]}


class ClaimedRow(NamedTuple):
    """A claimed notification and what sending it needs from its contact. (A named tuple: a
    batch builds 500, and a frozen dataclass's __init__ costs several times more; cost:
    docs/PERFORMANCE.md.)"""

    id: int
    contact_id: int
    email: str
    first_name: str
    last_name: str
    attributes: dict[str, object]  # only the attributes asked for
    # Why it must not be sent after all ("" = send it): the contact's status is not active,
    # or they left the campaign's list after the audience was frozen.
    skip_reason: str


def ledger_pending_ids(
    *, campaign_id: int, first_id: int, last_id: int, ids: Sequence[int] | None = None
) -> list[int]:
    """The ids of an id range's `created` rows, in order: what a batch has left to send; with
    `ids`, only those of them (a batch of messages: campaigns.ready). Read through the primary
    key only (see claim_update)."""
    where, params = _id_filter(first_id, last_id, ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {Notification._meta.db_table} WHERE {where} "  # noqa: S608
            "AND campaign_id + 0 = %s AND status = %s ORDER BY id",
            [*params, campaign_id, N.CREATED],
        )
        return [nid for (nid,) in cursor.fetchall()]


def _id_filter(first_id: int, last_id: int, ids: Sequence[int] | None) -> tuple[str, list]:
    """The primary-key test of a batch's rows: its id range, or exactly `ids` (a batch of
    messages, whose range may hold other rows of the stream: scheduled ones, or another
    batch's). A call's ids are few (≤ 50 a claim): an IN list, the same on SQLite."""
    if ids is None:
        return "id BETWEEN %s AND %s", [first_id, last_id]
    return f"id IN ({', '.join(['%s'] * len(ids))})", list(ids)


def ledger_claim(
    *,
    campaign_id: int,
    contact_list_id: int | None,
    first_id: int,
    last_id: int,
    claimed_at: datetime,
    attributes: Sequence[str] = (),
    personalised: bool = False,
    ids: Sequence[int] | None = None,
) -> list[ClaimedRow]:
    """Claim the `created` rows of an id range, or of exactly `ids` within it (created →
    sending, stamped `claimed_at`), with their contacts.

    One statement, in autocommit: a row is claimed by exactly one caller, and a claimed row is
    never handed to SES twice (at most once). A batch claims one SES call's rows at a time
    (their ids from ledger_pending_ids), right before the call, so a crash can strand only the
    rows of calls in flight. The contact columns come back from the same statement (no second
    query with an IN list, no ORM row building: both weighed on the send worker, see
    docs/PERFORMANCE.md), and of `attributes` only the template's fields, each extracted by
    PostgreSQL (no JSON document parsed per contact). `personalised` (the API's kinds): each
    row's MessageRequest personalisation comes first, then the contact's fields and
    attributes. If the statement's outcome is unknown (the
    connection broke), `ledger_release_claim` with the same stamp gives back exactly the rows it
    took.
    """
    n, c, m = (
        Notification._meta.db_table,
        Contact._meta.db_table,
        Membership._meta.db_table,
    )
    joins = (
        f"JOIN {c} c ON c.id = claimed.contact_id "
        f"LEFT JOIN {m} m ON m.contact_id = c.id AND m.contact_list_id = %s"
    )
    if personalised:
        extract = "".join(
            ", COALESCE(r.personalisation -> %s, c.attributes -> %s)" for _ in attributes
        )
        names = "COALESCE(r.personalisation ->> 'first_name', c.first_name), " + (
            "COALESCE(r.personalisation ->> 'last_name', c.last_name)"
        )
        joins += f" LEFT JOIN {MessageRequest._meta.db_table} r ON r.notification_id = claimed.id"
        attribute_params = [name for name in attributes for _ in (1, 2)]
    else:
        extract = "".join(", c.attributes -> %s" for _ in attributes)
        names = "c.first_name, c.last_name"
        attribute_params = list(attributes)
    columns = f"c.id, c.email, {names}, c.status, m.unsubscribed_at IS NOT NULL{extract}"
    claim, claim_params = claim_update(
        campaign_id=campaign_id, first_id=first_id, last_id=last_id, claimed_at=claimed_at, ids=ids
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH claimed AS ({claim}) SELECT claimed.id, {columns} FROM claimed {joins} "  # noqa: S608 (table names are ours)
                "ORDER BY claimed.id",
                [*claim_params, *attribute_params, contact_list_id],
            )
            rows = cursor.fetchall()
        else:  # SQLite (the demo) has no UPDATE inside WITH: two statements, same answer
            cursor.execute(claim, claim_params)
            claimed = dict(cursor.fetchall())
            rows = []
            if claimed:
                cursor.execute(
                    f"SELECT claimed.id, {columns} FROM {n} claimed {joins} "  # noqa: S608
                    f"WHERE claimed.id IN ({', '.join(['%s'] * len(claimed))}) ORDER BY claimed.id",
                    [*attribute_params, contact_list_id, *claimed],
                )
                rows = cursor.fetchall()
    # Per row, only tuple work: no keyword arguments and no `Contact.Status.ACTIVE` (an enum
    # member) looked up per row; this loop runs for every recipient (cost: docs/PERFORMANCE.md).
    active, row, inactive = str(Contact.Status.ACTIVE), ClaimedRow._make, INACTIVE_REASONS
    return [
        row(
            (
                nid,
                contact_id,
                email,
                first_name,
                last_name,
                dict(zip(attributes, map(_json, values), strict=True)),
                inactive.get(status, "contact not active")
                if status != active
                else "unsubscribed from the list"
                if left_list
                else "",
            )
        )
        for nid, contact_id, email, first_name, last_name, status, left_list, *values in rows
    ]


def claim_update(
    *,
    campaign_id: int,
    first_id: int,
    last_id: int,
    claimed_at: datetime,
    ids: Sequence[int] | None = None,
) -> tuple[str, list]:
    """The claim's UPDATE (created → sending for one id range, or for exactly `ids`), with its
    parameters.

    It must read the range through the primary key and nothing else. `campaign_id + 0` keeps the
    planner off the (campaign, contact) index: for a campaign frozen since the last ANALYZE, the
    statistics promise ~1 row there, and the claim then walked every row of the campaign to find
    its own: quadratic in the campaign's size (docs/PERFORMANCE.md). The `status` test is what
    makes a claim exclusive: a concurrent claim of the same rows waits for the first and then
    finds them taken.
    """
    where, params = _id_filter(first_id, last_id, ids)
    sql = (
        f"UPDATE {Notification._meta.db_table} SET status = %s, updated_at = %s "  # noqa: S608
        f"WHERE {where} AND campaign_id + 0 = %s AND status = %s "
        "RETURNING id, contact_id"
    )
    stamp = connection.ops.adapt_datetimefield_value(claimed_at)  # as the ORM writes it
    return sql, [N.SENDING, stamp, *params, campaign_id, N.CREATED]


def ledger_release_claim(
    *,
    campaign_id: int,
    first_id: int,
    last_id: int,
    claimed_at: datetime,
    ids: Sequence[int] | None = None,
) -> int:
    """Give back (sending → created) the rows of an id range (or `ids`) that a claim stamped
    `claimed_at` moved, for a claim whose outcome is unknown; returns how many. Safe whether
    or not that claim took effect: no other claim carries the same stamp."""
    rows = {"id__in": list(ids)} if ids is not None else {"id__range": (first_id, last_id)}
    return Notification.objects.filter(
        **rows,
        campaign_id=campaign_id,
        status=N.SENDING,
        updated_at=claimed_at,
    ).update(status=N.CREATED, updated_at=timezone.now())


def _json(value: object) -> object:
    # Django has psycopg hand jsonb over as text (JSONField parses it): parse the one value.
    # Most are plain strings ("Leeds"): without a backslash, the text between the quotes is
    # the value (PostgreSQL writes jsonb strings with escapes only where JSON needs them).
    if not isinstance(value, str):
        return value
    if len(value) >= 2 and value[0] == '"' and "\\" not in value:
        return value[1:-1]
    return json.loads(value)


def ledger_transition(
    *,
    ids: Collection[int],
    from_statuses: Collection[str],
    to: str,
    reason: str = "",
    message_ids: Mapping[int, str] | None = None,
    counter: tuple[int, str] | None = None,
) -> int:
    """Move the rows among `ids` that are in one of `from_statuses` to `to`; returns how many.

    `message_ids` ({id: SES MessageId}) is recorded with the move (a send's acceptance).
    `counter` (campaign id, counter name): the report counter that the moved rows are added
    to, in the same transaction. A move to `sent`, `failed` or `unknown` also writes the rows
    it moved to the callbacks' outbox (MessageOutcome) in the same statement, but only while
    some endpoint wants that outcome (campaigns.outcomes): otherwise it costs nothing more.
    """
    if not ids:
        return 0
    outbox = to in OUTCOME_STATUSES and to in outcomes_wanted()
    if connection.vendor == "postgresql" and (message_ids or outbox):
        return _transition_sql(ids, from_statuses, to, reason, message_ids, counter, outbox)
    if counter or outbox:
        with transaction.atomic():
            if outbox:  # SQLite (the demo): the rows that will move, read under its write lock
                ids = list(
                    Notification.objects.filter(
                        id__in=list(ids), status__in=list(from_statuses)
                    ).values_list("id", flat=True)
                )
            moved = _transition_orm(ids, from_statuses, to, reason, message_ids)
            if outbox and moved:
                now = timezone.now()
                MessageOutcome.objects.bulk_create(
                    MessageOutcome(
                        notification_id=nid, status=to, reason=reason[:300], created_at=now
                    )
                    for nid in ids
                )
            if counter:
                counters_add(campaign_id=counter[0], deltas={counter[1]: moved})
        return moved
    return _transition_orm(ids, from_statuses, to, reason, message_ids)


def _transition_orm(
    ids: Collection[int],
    from_statuses: Collection[str],
    to: str,
    reason: str,
    message_ids: Mapping[int, str] | None,
) -> int:
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


def _transition_sql(
    ids: Collection[int],
    from_statuses: Collection[str],
    to: str,
    reason: str,
    message_ids: Mapping[int, str] | None,
    counter: tuple[int, str] | None,
    outbox: bool,
) -> int:
    """PostgreSQL: one UPDATE joined to unnest(ids[, message ids]), parameters bound by the
    server, instead of the ORM's CASE WHEN, whose 50 branches Django is slow to resolve. The ids
    and message ids go as comma-separated text that PostgreSQL splits, sparing psycopg's array
    dumpers; a message id with a comma in it (SES's never have one) goes as an array. With
    `counter`, the counter's upsert, and with `outbox`, the outbox's INSERT of the moved rows,
    are part of the same statement: one round trip per SES answer instead of four (begin,
    update, upsert, commit). (Costs: docs/PERFORMANCE.md.)"""
    if message_ids:
        ids = list(message_ids)
        mids = list(message_ids.values())
        if any("," in mid for mid in mids):
            mids_sql, mids_param = "%b::text[]", mids
        else:
            mids_sql, mids_param = "string_to_array(%b, ',')", ",".join(mids)
        source = f"unnest(string_to_array(%b, ',')::bigint[], {mids_sql}) AS v(id, message_id)"
        sources = [",".join(map(str, ids)), mids_param]
        sets, set_params = "message_id = v.message_id", []
    else:
        source = "unnest(string_to_array(%b, ',')::bigint[]) AS v(id)"
        sources = [",".join(map(str, ids))]
        sets, set_params = "reason = %b", [reason[:300]]
        if not reason:  # as the ORM path: no reason given leaves the stored one
            sets, set_params = "reason = n.reason", []
    now = timezone.now()
    update = (
        f"UPDATE {Notification._meta.db_table} AS n "  # noqa: S608
        f"SET status = %b, {sets}, updated_at = %b "
        f"FROM {source} WHERE n.id = v.id AND n.status = ANY(%b::text[])"
    )
    params = [to, *set_params, now, *sources, list(from_statuses)]
    if not counter and not outbox:
        return pg_execute(update, params)
    ctes, cte_params = [f"moved AS ({update} RETURNING n.id)"], params
    if outbox:
        ctes.append(
            f"outbox AS (INSERT INTO {MessageOutcome._meta.db_table} "  # noqa: S608
            "(notification_id, status, reason, created_at) SELECT id, %b, %b, %b FROM moved)"
        )
        cte_params = [*cte_params, to, reason[:300], now]
    if counter:
        ctes.append(f"counted AS ({counter_add_count_sql(rows='moved')})")
        cte_params = [*cte_params, *counter]
    [(moved,)] = pg_rows(
        f"WITH {', '.join(ctes)} SELECT count(*) FROM moved",  # noqa: S608 (our names)
        cte_params,
    )
    return moved

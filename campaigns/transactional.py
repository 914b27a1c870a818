"""Transactional messages (POST /api/v1/messages): one ledger row each, durable before the 202.

A message belongs to its template's *stream*: a campaign of kind `transactional`, one per
template content and mode (live or test), always `sending`. So a message goes out through
the campaign engine unchanged (the claim, the rate limit, the senders, the lease and the
sweeper's settling, campaigns.delivery), on the `transactional` queue, a drain's pop of a
stream's messages per batch (campaigns.ready); its events and clicks count on the stream like
a campaign's. Editing the template starts a new stream, so a message is always sent with the
content it was accepted with.

The ledger row and its request (personalisation, reference) are written in the caller's
transaction; once it commits its id goes onto the ready list a drain task takes it from
(campaigns.ready; without Redis, a task of its own), or, with a send_at to come, the message
sweeper enqueues it when its time comes. A commit whose hand-off is lost (the broker away, a
worker killed) is found by campaigns.message_sweeper and sent once.
"""

import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from campaigns.erased import new_contact_status, new_contact_status_sql
from campaigns.models import (
    ApiKey,
    Campaign,
    CampaignLink,
    Contact,
    IdempotencyRecord,
    MessageRequest,
    Notification,
)
from campaigns.personalisation import (  # noqa: F401 (the limits, where they were first kept)
    PERSONALISATION_MAX_BYTES,
    PERSONALISATION_MAX_KEYS,
)
from campaigns.ready import message_ready_on_commit, messages_ready
from campaigns.services import contact_normalize_email
from infra.group_commit import GroupCommit
from templates_app.models import Template
from templates_app.services import template_compile, template_snapshot

logger = logging.getLogger(__name__)

# send_at: a minute in the past is a client's clock running late (sent at once); further
# back is a mistake. Further ahead than SEND_AT_MAX_AHEAD is one too, and would keep a
# ledger row waiting for months.
SEND_AT_GRACE = timedelta(minutes=1)
SEND_AT_MAX_AHEAD = timedelta(days=30)
# No address is longer (RFC 5321's 254, with room for what normalizing trims): a longer text
# is refused before the address rule reads it.
ADDRESS_MAX_LENGTH = 320


class MessageRefused(Exception):
    """The request cannot become a message; `field` and `code` say why (an API 4xx)."""

    def __init__(self, code: str, message: str, *, field: str = "", status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.status = code, message, field, status


def stream_for(*, template: Template, test_mode: bool, api_key: ApiKey | None = None) -> int:
    """The id of the template's stream for its current content and this mode, made on first
    use (race-safe: the unique stream key). MessageRefused if the template cannot be sent."""
    snapshot = template_snapshot(template=template)
    digest = _content_digest(template, snapshot)
    key = f"{template.pk}:{'test' if test_mode else 'live'}:{digest}"
    return _stream_id(key) or _stream_create(
        key=key, template=template, snapshot=snapshot, test_mode=test_mode, api_key=api_key
    )


def _content_digest(template: Template, snapshot: dict) -> str:
    """The digest of the template's content, kept on the instance with the parts it was made
    of: the API keeps its templates for a few seconds (campaigns.api.views.template_lookup), and
    hashing a large body again for each request of them was a share of the POST's CPU. Parts
    are compared by identity, so an instance changed since (a new string) is hashed again."""
    kept = template.__dict__.get("_stream_digest")
    if kept is not None and all(
        part is kept_part for part, kept_part in zip(snapshot.values(), kept[0], strict=True)
    ):
        return kept[1]
    digest = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()[:24]
    template.__dict__["_stream_digest"] = (tuple(snapshot.values()), digest)
    return digest


@functools.lru_cache(maxsize=256)
def _stream_id_cached(key: str) -> int:
    return Campaign.objects.filter(kind=Campaign.Kind.TRANSACTIONAL, stream_key=key).values_list(
        "pk", flat=True
    )[0]


def _stream_id(key: str) -> int | None:
    try:
        return _stream_id_cached(key)
    except IndexError:  # (lru_cache keeps answers, never exceptions)
        return None


def _stream_create(
    *, key: str, template: Template, snapshot: dict, test_mode: bool, api_key: ApiKey | None
) -> int:
    try:
        compiled = template_compile(template=snapshot, tracking_base_url=settings.TRACKING_BASE_URL)
    except Exception as err:  # noqa: BLE001 (any reason it cannot compile is the client's answer)
        raise MessageRefused(
            "template_invalid", f"The template cannot be sent: {err}", field="template"
        ) from None
    now = timezone.now()
    try:
        with transaction.atomic():
            stream = Campaign.objects.create(
                kind=Campaign.Kind.TRANSACTIONAL,
                name=f"{template.name} (API{', test' if test_mode else ''})"[:200],
                template=template,
                status=Campaign.Status.SENDING,
                started_at=now,
                template_snapshot=snapshot,
                stream_key=key,
                send_path=Campaign.SendPath.RENDERED,
                test_mode=test_mode,
                api_key=api_key,
            )
            # The name keys the worker's compiled-template cache (campaigns.messages); the
            # rendered path never stores it at SES.
            stream.ses_template_name = compiled.ses_template_name(
                prefix=settings.SES_TEMPLATE_PREFIX, campaign_id=stream.pk
            )
            stream.save(update_fields=["ses_template_name"])
            CampaignLink.objects.bulk_create(
                [
                    CampaignLink(campaign_id=stream.pk, index=i, url=url)
                    for i, url in enumerate(compiled.links)
                ]
            )
    except IntegrityError:  # another request made it first
        stream_id = _stream_id(key)
        if stream_id is None:
            raise
        return stream_id
    logger.info("transactional stream %s made for template %s", stream.pk, template.pk)
    return stream.pk


@dataclass(frozen=True)
class AnswerRecord:
    """The API's idempotency record of the request that makes the message
    (campaigns.api.idempotency): written by the message's own statement, so it commits with
    the message or neither does. `response` is the answer without the message's id, which
    the statement adds under "id"."""

    api_key_id: int
    key: str
    request_hash: str
    status_code: int
    response: dict


def message_create(
    *,
    api_key: ApiKey | None,
    template: Template,
    email: str | None = None,
    contact_id: int | None = None,
    personalisation: dict | None = None,
    reference: str = "",
    send_at: datetime | None = None,
    record: AnswerRecord | None = None,
) -> Notification:
    """Write one transactional message (its ledger row and its request) and enqueue its
    delivery once the transaction commits. The recipient is a contact id, or an address:
    the contact with that address, made if there is none (so a bounce or a complaint
    suppresses them for every later message, as for campaigns).

    On PostgreSQL everything is one statement (the contact found or made, the ledger row, its
    request and `record`): atomic by itself, so a caller in autocommit pays no BEGIN and no
    COMMIT round trip. Elsewhere (SQLite, the demo) the ORM's statements, in the caller's
    transaction, and `record` is the caller's to write."""
    send_at_check(send_at)
    stream_id = stream_for(
        template=template, test_mode=bool(api_key and api_key.test), api_key=api_key
    )
    address = address_normalized(email or "") if contact_id is None else None
    handed_over = False
    if connection.vendor == "postgresql":
        message, handed_over = _message_write_pg(
            stream_id=stream_id,
            address=address,
            contact_id=contact_id,
            api_key=api_key,
            reference=reference,
            personalisation=personalisation or {},
            send_at=send_at,
            record=record,
        )
    else:
        if record is not None:
            raise ValueError("record: PostgreSQL only (the caller writes it elsewhere)")
        message = _message_write_orm(
            stream_id=stream_id,
            address=address,
            contact_id=contact_id,
            api_key=api_key,
            reference=reference,
            personalisation=personalisation or {},
            send_at=send_at,
        )
    if not handed_over and _due(send_at):
        message_ready_on_commit(stream_id=stream_id, message_id=message.pk)
    return message


def _due(send_at: datetime | None) -> bool:
    """Whether a message is sent now (else the message sweeper hands it over at send_at)."""
    return send_at is None or send_at <= timezone.now()


def _message_write_orm(
    *,
    stream_id: int,
    address: str | None,
    contact_id: int | None,
    api_key: ApiKey | None,
    reference: str,
    personalisation: dict,
    send_at: datetime | None,
) -> Notification:
    # No savepoint inside the caller's transaction (the API view's): a refusal or a failure
    # here rolls the whole request back anyway.
    with transaction.atomic(savepoint=False):
        if address is not None:
            contact_id = _contact_find_or_make_orm(address)
        elif not Contact.objects.filter(pk=contact_id, erased_at__isnull=True).exists():
            raise MessageRefused("contact_not_found", "No contact has this id.", field="contact")
        message = Notification.objects.create(
            campaign_id=stream_id, contact_id=contact_id, repeat_key=_repeat_key()
        )
        MessageRequest.objects.create(
            notification=message,
            api_key=api_key,
            reference=reference,
            personalisation=personalisation,
            send_at=send_at,
        )
    return message


def _repeat_key() -> int:
    return secrets.randbits(62) + 1


# A new contact's status: active, or an erased address's kept status (campaigns.erased).
_NEW_STATUS = new_contact_status_sql("%(address)s::text")
# The contact an address names, found or made: ON CONFLICT DO NOTHING never aborts the
# statement (a concurrent request making the same contact is waited for); the SELECT finds
# one that existed before the statement began.
#
# An existing contact is locked FOR KEY SHARE (the lock the ledger's foreign key takes anyway,
# but only at COMMIT: Django's foreign keys are DEFERRABLE INITIALLY DEFERRED), so an erase
# (tracking.erase, which locks the contact FOR UPDATE) is either done before it or waits for
# this message: an erase in progress is waited for, and the contact it deleted or emptied is
# no longer found (the row no longer has the address, or is gone). The statement then writes
# nothing and is run again: the address is a new contact (with its erased status kept). Without
# the lock, the message of a deleted contact failed at commit (a 500) and that of an emptied
# one was attached to the erased row.
_CONTACT_BY_ADDRESS = f"""
    made AS (
        INSERT INTO {Contact._meta.db_table}
            (email, first_name, last_name, attributes, status, time_zone, created_at, updated_at)
        VALUES (%(address)s, '', '', '{{}}'::jsonb, {_NEW_STATUS}, '', %(now)s, %(now)s)
        ON CONFLICT (email) DO NOTHING
        RETURNING id
    ),
    found AS (
        SELECT id FROM {Contact._meta.db_table} WHERE email = %(address)s FOR KEY SHARE
    ),
    contact AS (
        SELECT id FROM made
        UNION ALL
        SELECT id FROM found
        LIMIT 1
    )"""  # noqa: S608 (table names from the models, values as parameters)
# By id: an erased contact is nobody's (as for the contacts API), and the lock as above.
_CONTACT_BY_ID = f"""
    contact AS (
        SELECT id FROM {Contact._meta.db_table}
        WHERE id = %(contact_id)s AND erased_at IS NULL FOR KEY SHARE
    )"""  # noqa: S608
_MESSAGE = f"""
    message AS (
        INSERT INTO {Notification._meta.db_table}
            (campaign_id, contact_id, status, repeat_key, message_id, reason, created_at,
             updated_at)
        SELECT %(stream_id)s, id, %(created)s, %(repeat_key)s, NULL, '', %(now)s, %(now)s
        FROM contact
        RETURNING id, contact_id
    ),
    request AS (
        INSERT INTO {MessageRequest._meta.db_table}
            (notification_id, api_key_id, reference, personalisation, send_at, queued_at)
        SELECT id, %(api_key_id)s, %(reference)s, %(personalisation)s::jsonb, %(send_at)s, NULL
        FROM message
        RETURNING notification_id
    )"""  # noqa: S608
_RECORD = f"""
    record AS (
        INSERT INTO {IdempotencyRecord._meta.db_table}
            (api_key_id, key, request_hash, status_code, response, created_at)
        SELECT %(record_api_key_id)s, %(record_key)s, %(record_hash)s, %(record_status)s,
            %(record_response)s::jsonb || jsonb_build_object('id', notification_id), %(now)s
        FROM request
    )"""  # noqa: S608
_STATEMENTS = {
    (by_address, recorded): "WITH"
    + ",".join(
        [_CONTACT_BY_ADDRESS if by_address else _CONTACT_BY_ID, _MESSAGE]
        + ([_RECORD] if recorded else [])
    )
    + "\nSELECT id, contact_id FROM message"
    for by_address in (True, False)
    for recorded in (True, False)
}
# A statement that found no contact for a new address (a concurrent request made it after the
# statement's snapshot was taken, then committed; or an erase took the address's contact away
# while it waited) is run again; a few times at most.
_CONTACT_RACE_ATTEMPTS = 3


def _message_write_pg(
    *,
    stream_id: int,
    address: str | None,
    contact_id: int | None,
    api_key: ApiKey | None,
    reference: str,
    personalisation: dict,
    send_at: datetime | None,
    record: AnswerRecord | None,
) -> tuple[Notification, bool]:
    """The contact found or made, the ledger row, its request and the idempotency record in
    one statement (data-modifying CTEs): one round trip where the ORM took four or five and a
    transaction's BEGIN and COMMIT two more (docs/PERFORMANCE.md, Integrations API). In
    autocommit, with the messages other threads write at the same moment (group commit), whose
    statement also does their hand-off (the due ones pushed): the message and whether its
    hand-off was done there."""
    now = timezone.now()
    repeat_key = _repeat_key()
    params = {
        "address": address,
        "contact_id": contact_id,
        "now": now,
        "stream_id": stream_id,
        "created": Notification.Status.CREATED,
        "repeat_key": repeat_key,
        "api_key_id": api_key.pk if api_key is not None else None,
        "reference": reference,
        "personalisation": json.dumps(personalisation),
        "send_at": send_at,
    }
    if record is not None:
        params.update(
            record_api_key_id=record.api_key_id,
            record_key=record.key,
            record_hash=record.request_hash,
            record_status=record.status_code,
            record_response=json.dumps(record.response),
        )
    statement = _STATEMENTS[(address is not None, record is not None)]

    def alone() -> tuple[int, int, bool]:
        return (*_message_statement(statement, params), False)

    # In autocommit, with whatever other threads of this process write at the same moment
    # (group commit); in a caller's transaction (a test's), its statement there.
    row = alone() if connection.in_atomic_block else _MESSAGE_WRITES.write(params, alone)
    # The row as the ORM's create would have returned it (what the caller reads: id, status).
    message = Notification(
        pk=row[0],
        campaign_id=stream_id,
        contact_id=row[1],
        status=Notification.Status.CREATED,
        repeat_key=repeat_key,
        created_at=now,
        updated_at=now,
    )
    message._state.adding = False
    message._state.db = connection.alias
    return message, row[2]


def message_statement_answered_at(database) -> float | None:
    """When `database` (a thread's connection) last answered a message's statement (a
    time.monotonic()), or None: the lean route skips its health check shortly after
    (campaigns.api.direct)."""
    return getattr(database, "message_statement_answered_at", None)


def _answered() -> None:
    connection.message_statement_answered_at = time.monotonic()


def _message_statement(statement: str, params: dict) -> tuple[int, int]:
    """The message's statement: (its id, its contact's id)."""
    for _ in range(_CONTACT_RACE_ATTEMPTS):
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            row = cursor.fetchone()
        _answered()
        if row is not None:
            return row
        if params["address"] is None:
            raise MessageRefused("contact_not_found", "No contact has this id.", field="contact")
    raise RuntimeError("the contact of a new address kept being made by other requests")


# Several messages' statement (group commit, infra.group_commit): the same writes as one
# message's, for rows given as one JSON array (_BATCH_COLUMNS' names, ord their place from 1).
# A row whose contact it does not find (an unknown or erased contact id, a new address made by
# another transaction after its snapshot) is left out and written alone, where the rules for
# it are; a failure (a taken idempotency key, a deadlock on two batches' new addresses, a value
# PostgreSQL refuses) writes nothing, and every row is written alone.
_BATCH_COLUMNS = {
    "address": "text",
    "contact_id": "bigint",
    "now": "timestamptz",
    "stream_id": "bigint",
    "repeat_key": "bigint",
    "api_key_id": "bigint",
    "reference": "text",
    "personalisation": "text",
    "send_at": "timestamptz",
    "record_api_key_id": "bigint",
    "record_key": "text",
    "record_hash": "text",
    "record_status": "int",
    "record_response": "text",
}
_BATCH_RECORD = ", ".join(f"{name} {kind}" for name, kind in _BATCH_COLUMNS.items())
_BATCH = f"""
WITH
    input AS (
        SELECT * FROM ROWS FROM (json_to_recordset(%(rows)s::json) AS ({_BATCH_RECORD}))
            WITH ORDINALITY AS i({", ".join(_BATCH_COLUMNS)}, ord)
    ),
    made AS (
        INSERT INTO {Contact._meta.db_table}
            (email, first_name, last_name, attributes, status, time_zone, created_at, updated_at)
        SELECT address, '', '', '{{}}'::jsonb, {new_contact_status_sql("address")}, '',
            min(now), min(now)
        FROM input WHERE address IS NOT NULL
        GROUP BY address
        ORDER BY address
        ON CONFLICT (email) DO NOTHING
        RETURNING id, email
    ),
    found AS (
        SELECT id, email FROM {Contact._meta.db_table}
        WHERE email = ANY(%(address)s::text[])
        FOR KEY SHARE
    ),
    by_id AS (
        SELECT id FROM {Contact._meta.db_table}
        WHERE id = ANY(%(contact_id)s::bigint[]) AND erased_at IS NULL
        FOR KEY SHARE
    ),
    resolved AS (
        SELECT i.*, coalesce(made.id, found.id, by_id.id) AS contact,
            nextval(%(sequence)s::regclass) AS message_id
        FROM input i
        LEFT JOIN made ON made.email = i.address
        LEFT JOIN found ON found.email = i.address
        LEFT JOIN by_id ON by_id.id = i.contact_id
        WHERE coalesce(made.id, found.id, by_id.id) IS NOT NULL
    ),
    message AS (
        INSERT INTO {Notification._meta.db_table}
            (id, campaign_id, contact_id, status, repeat_key, message_id, reason, created_at,
             updated_at)
        SELECT message_id, stream_id, contact, %(created)s, repeat_key, NULL, '', now, now
        FROM resolved
        RETURNING id
    ),
    request AS (
        INSERT INTO {MessageRequest._meta.db_table}
            (notification_id, api_key_id, reference, personalisation, send_at, queued_at)
        SELECT r.message_id, r.api_key_id, r.reference, r.personalisation::jsonb, r.send_at,
            NULL
        FROM resolved r JOIN message ON message.id = r.message_id
        RETURNING notification_id
    ),
    record AS (
        INSERT INTO {IdempotencyRecord._meta.db_table}
            (api_key_id, key, request_hash, status_code, response, created_at)
        SELECT r.record_api_key_id, r.record_key, r.record_hash, r.record_status,
            r.record_response::jsonb || jsonb_build_object('id', r.message_id), r.now
        FROM resolved r JOIN request ON request.notification_id = r.message_id
        WHERE r.record_key IS NOT NULL
    )
SELECT r.ord, r.message_id, r.contact FROM resolved r JOIN message ON message.id = r.message_id
"""  # noqa: S608 (names from the models, values as parameters)


@functools.cache
def _message_id_sequence() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [Notification._meta.db_table])
        return cursor.fetchone()[0]


def _messages_write_batch(items: Sequence[dict]) -> list[tuple[int, int, bool] | None]:
    """Each message's (id, contact id, True: its hand-off done), or None for one left out:
    `_BATCH`, in one statement; then the due ones handed to the worker together (one push for
    the batch, where each message alone pushes its own; a scheduled one is the sweeper's)."""
    # The rows as one JSON parameter (json.dumps is C), not an array a column: psycopg quotes
    # each array element in Python (237 against 62 µs for 8 rows, docs/PERFORMANCE.md).
    # The two lookups' arrays stay arrays: the planner reads `= ANY(array)` as index scans.
    params = {
        "rows": json.dumps(items, default=datetime.isoformat),
        "address": [item["address"] for item in items],
        "contact_id": [item["contact_id"] for item in items],
        "created": Notification.Status.CREATED,
        "sequence": _message_id_sequence(),
    }
    rows: list[tuple[int, int, bool] | None] = [None] * len(items)
    with connection.cursor() as cursor:
        cursor.execute(_BATCH, params)
        written = cursor.fetchall()
    _answered()
    # Committed: from here nothing may raise (a batch that raises is written again, alone).
    due = [(items[ord_ - 1]["stream_id"], message_id) for ord_, message_id, _ in written
           if _due(items[ord_ - 1]["send_at"])]  # fmt: skip
    try:
        messages_ready(due)
    except Exception:  # noqa: BLE001 (committed: the message sweeper hands them over)
        logger.exception("batch of %d messages not handed over: left to the sweeper", len(due))
    for ord_, message_id, contact_id in written:  # (ord counts from 1)
        rows[ord_ - 1] = (message_id, contact_id, True)
    return rows


_MESSAGE_WRITES = GroupCommit(_messages_write_batch)


def send_at_check(send_at: datetime | None, *, now: datetime | None = None) -> None:
    """MessageRefused for a send_at too far in the past or the future (SEND_AT_GRACE,
    SEND_AT_MAX_AHEAD)."""
    if send_at is None:
        return
    now = now or timezone.now()
    if send_at < now - SEND_AT_GRACE:
        raise MessageRefused(
            "send_at_in_past", "send_at has passed: leave it out to send at once.", field="send_at"
        )
    if send_at > now + SEND_AT_MAX_AHEAD:
        raise MessageRefused(
            "send_at_too_far",
            f"send_at is at most {SEND_AT_MAX_AHEAD.days} days ahead.",
            field="send_at",
        )


def address_normalized(email: str) -> str:
    """The address as contacts keep it (normalized); MessageRefused for an address that
    cannot be sent to."""
    if len(email) > ADDRESS_MAX_LENGTH:
        raise MessageRefused("invalid_address", "This address is too long.", field="to")
    try:
        return contact_normalize_email(email)
    except Exception as err:  # noqa: BLE001 (InvalidAddress: the reason is the client's answer)
        reason = " ".join(getattr(err, "messages", [])) or "This address cannot be sent to."
        raise MessageRefused("invalid_address", reason, field="to") from None


def _contact_find_or_make_orm(address: str) -> int:
    found = Contact.objects.filter(email=address).values_list("pk", flat=True).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return Contact.objects.create(email=address, status=new_contact_status(address)).pk
    except IntegrityError:  # made meanwhile by a concurrent request
        return Contact.objects.values_list("pk", flat=True).get(email=address)

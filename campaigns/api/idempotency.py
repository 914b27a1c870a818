"""Idempotency keys, Stripe's semantics (docs/API.md#idempotency), for any POST that creates.

A view hands its work to `idempotent_response(request, work)`:

    def post(self, request):
        return idempotent_response(request, lambda: self.create(request))

`work()` runs in one transaction and returns the Response; raising (an ApiError, anything)
rolls it back. Without an `Idempotency-Key` header that is all. With one, the key's
IdempotencyRecord is written in the same transaction, so the record commits with whatever
`work()` wrote, or neither does; the unique constraint (api_key, key) decides which request
owns the key:

- same key, same request (method, path, canonical body), within IDEMPOTENCY_TTL: the first
  answer again (status and body), with `Idempotent-Replayed: true`; nothing it did is kept;
- same key, another request: 409 `idempotency_key_reused`;
- two requests at once with one key: the second's INSERT waits on the unique constraint
  until the first commits, then fails, its transaction rolls back, and it replays the first's
  answer (if the first rolled back instead, the second's INSERT simply goes through).

Where the record is written depends on what the work costs:

- by default (a job: staging 100,000 rows), first, with a placeholder answer, then updated
  with the real one: a repeat (a client's retry) waits or is answered before doing any work;
- with `cheap_work=True` (a message), last, with the answer: one write per request instead of
  two. A repeat does its work again before the constraint refuses it and rolls it back, which
  only a repeat pays; a repeat whose work is refused (a 4xx) or fails looks for the key's
  record before answering, so it still gets the first answer or the 409, not its own error.

Only a 2xx answer is kept: a refused request (4xx) or a crash (5xx) stores nothing, so the
client may fix the request and retry with the same key. Keys belong to the API key that sent
them; a staff session (the browsable API) cannot send one. Records older than the TTL count
for nothing and are deleted by `idempotency_records_expire` (beat).
"""

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils import encoders

from campaigns.api.errors import ApiError
from campaigns.models import ApiKey, IdempotencyRecord
from infra.db import delete_in_chunks

IDEMPOTENCY_TTL = timedelta(hours=24)
HEADER = "Idempotency-Key"
# Where WSGI puts it: read there, as request.headers would build a dict of every header first.
_META_KEY = "HTTP_" + HEADER.upper().replace("-", "_")
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MAX_LENGTH = 255
# A record taken, then found gone (its request rolled back) or expired, is tried again; a key
# that keeps changing hands this often is refused rather than looped on.
ATTEMPTS = 3
EXPIRE_CHUNK = 10_000


class _KeyTaken(Exception):
    """The record's INSERT met the unique constraint: another request has (or had) this key."""


def idempotent_response(
    request: Request,
    work: Callable[..., Response],
    *,
    fingerprint: bytes | None = None,
    cheap_work: bool = False,
    one_statement: bool = False,
) -> Response:
    """`work()`'s answer, run in one transaction and at most once per (API key, idempotency
    key) within IDEMPOTENCY_TTL. `fingerprint` stands for the body in "the same request" where
    the body is not JSON (a CSV upload: a digest of its bytes); by default the parsed JSON body,
    keys sorted, is hashed. `cheap_work`: the record is written last (the module's doc).

    `one_statement` (a message): `work(record)` writes all it writes in one statement, with
    the record when `record` (api_key, key, request hash) is given; on PostgreSQL it then runs
    in autocommit, that statement its own transaction (no BEGIN, no COMMIT: two round trips
    of the POST's few). Elsewhere work(None) runs in the transaction, and the record is
    written after it here, as with `cheap_work`."""
    key = _header_key(request)
    alone = one_statement and connection.vendor == "postgresql"
    if key is None:
        if alone:
            return _run_alone(lambda: work(None))
        return _run(lambda: work(None)) if one_statement else _run(work)
    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    if api_key is None:
        raise ApiError(
            status.HTTP_400_BAD_REQUEST,
            "idempotency_key_needs_api_key",
            "Idempotency keys belong to an API key: send one (Authorization: Bearer …).",
            HEADER,
        )
    digest = request_hash(request, fingerprint=fingerprint)
    cheap_work = cheap_work or one_statement
    for _ in range(ATTEMPTS):
        try:
            if alone:
                response = _run_alone(lambda: work((api_key, key, digest)))
            elif one_statement:
                response = _run(lambda: work(None), record=(api_key, key, digest), record_last=True)
            else:
                response = _run(work, record=(api_key, key, digest), record_last=cheap_work)
        except _KeyTaken:
            pass
        except Exception:
            # Refused or failed: with the record written last, the first answer (or the 409)
            # if the key was used before.
            found = _live_record(api_key, key) if cheap_work else None
            if found is None:
                raise
            return _answer_from(found, digest)
        else:
            if status.is_success(response.status_code) or not cheap_work:
                return response
            found = _live_record(api_key, key)
            return response if found is None else _answer_from(found, digest)
        found = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
        if found is None:
            continue  # its request rolled back meanwhile: the key is free again
        if found.created_at <= timezone.now() - IDEMPOTENCY_TTL:
            # Expired but not yet swept: it counts for nothing (guarded: a newer record made
            # meanwhile by another request stays).
            IdempotencyRecord.objects.filter(pk=found.pk, created_at=found.created_at).delete()
            continue
        return _answer_from(found, digest)
    raise ApiError(
        status.HTTP_409_CONFLICT,
        "idempotency_key_in_use",
        "Other requests with this Idempotency-Key keep running: try again shortly.",
        HEADER,
    )


def _answer_from(found: IdempotencyRecord, digest: str) -> Response:
    """A live record's answer to a request with its key: the first answer, or 409."""
    if found.request_hash != digest:
        raise ApiError(
            status.HTTP_409_CONFLICT,
            "idempotency_key_reused",
            "This Idempotency-Key was sent with another request in the last 24 hours: "
            "use a new key for a new request.",
            HEADER,
        )
    return Response(found.response, status=found.status_code, headers={REPLAYED_HEADER: "true"})


def _live_record(api_key: ApiKey, key: str) -> IdempotencyRecord | None:
    return IdempotencyRecord.objects.filter(
        api_key=api_key, key=key, created_at__gt=timezone.now() - IDEMPOTENCY_TTL
    ).first()


def _run(
    work: Callable[[], Response], *, record: tuple | None = None, record_last: bool = False
) -> Response:
    with transaction.atomic():
        made = None
        if record is not None and not record_last:
            api_key, key, digest = record
            try:
                # First in the transaction, so a failure here aborts nothing else; the
                # placeholder answer is never read (it commits only with the real one).
                made = IdempotencyRecord.objects.create(
                    api_key=api_key, key=key, request_hash=digest, status_code=0, response={}
                )
            except IntegrityError:
                raise _KeyTaken from None
        response = work()
        if not status.is_success(response.status_code):
            transaction.set_rollback(True)  # a refusal stores nothing, the record included
        elif made is not None:
            IdempotencyRecord.objects.filter(pk=made.pk).update(
                status_code=response.status_code, response=_as_json(response.data)
            )
        elif record is not None:
            api_key, key, digest = record
            try:
                # Last in the transaction: a failure here (the key is taken) rolls back all
                # the work did, as the atomic block exits with _KeyTaken.
                _record_insert(api_key, key, digest, response)
            except IntegrityError:
                raise _KeyTaken from None
    return response


def _run_alone(work: Callable[[], Response]) -> Response:
    """`work()`, whose writes are one statement, in autocommit: that statement commits by
    itself or writes nothing. Inside a caller's transaction (a test's) a savepoint stands
    for it, so a refused statement leaves that transaction usable, as a rollback would."""
    try:
        if connection.in_atomic_block:
            with transaction.atomic():
                return work()
        return work()
    except IntegrityError as err:
        if _constraint(err) == KEY_CONSTRAINT:
            raise _KeyTaken from None
        raise


KEY_CONSTRAINT = IdempotencyRecord._meta.constraints[0].name  # uniq_idempotency_key


def _constraint(err: IntegrityError) -> str | None:
    diag = getattr(err.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


def _record_insert(api_key: ApiKey, key: str, digest: str, response: Response) -> None:
    """The record with its answer. On PostgreSQL a plain INSERT (the ORM's costs ~0.3 ms more
    of the POST's CPU, and the answer is encoded once rather than encoded, decoded and encoded
    again); elsewhere (SQLite, the demo) the ORM's."""
    if connection.vendor != "postgresql":
        IdempotencyRecord.objects.create(
            api_key=api_key,
            key=key,
            request_hash=digest,
            status_code=response.status_code,
            response=_as_json(response.data),
        )
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {IdempotencyRecord._meta.db_table} "  # noqa: S608 (the model's table)
            "(api_key_id, key, request_hash, status_code, response, created_at) "
            "VALUES (%s, %s, %s, %s, %s::jsonb, %s)",
            [
                api_key.pk,
                key,
                digest,
                response.status_code,
                json.dumps(response.data, cls=encoders.JSONEncoder),
                timezone.now(),
            ],
        )


def _as_json(data: object) -> object:
    """The answer's data as the client read it (DRF's encoder: datetimes, decimals, UUIDs as
    text), so a replay is the same JSON, and a JSONField can store it."""
    return json.loads(json.dumps(data, cls=encoders.JSONEncoder))


def _header_key(request: Request) -> str | None:
    raw = request.META.get(_META_KEY)
    if raw is None:
        return None
    if not 0 < len(raw) <= KEY_MAX_LENGTH or not all(" " <= char <= "~" for char in raw):
        raise ApiError(
            status.HTTP_400_BAD_REQUEST,
            "invalid_idempotency_key",
            f"An Idempotency-Key is 1 to {KEY_MAX_LENGTH} printable ASCII characters "
            "(a UUID is a good one).",
            HEADER,
        )
    return raw


def request_hash(request: Request, *, fingerprint: bytes | None = None) -> str:
    """SHA-256 of the method, the path and the body: what "the same request" means."""
    if fingerprint is None:
        fingerprint = json.dumps(
            request.data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
        ).encode()
    digest = hashlib.sha256(f"{request.method}\n{request.path}\n".encode())
    digest.update(fingerprint)
    return digest.hexdigest()


def idempotency_records_expire(*, now: datetime | None = None) -> int:
    """Delete the records older than IDEMPOTENCY_TTL (beat); returns how many. In chunks, so
    a day of records at 1,000 requests/s (86 million) never makes one long transaction."""
    cutoff = (now or timezone.now()) - IDEMPOTENCY_TTL
    return delete_in_chunks(
        IdempotencyRecord.objects.filter(created_at__lt=cutoff), chunk=EXPIRE_CHUNK
    )

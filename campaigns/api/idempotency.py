"""Idempotency keys, Stripe's semantics (docs/API.md#idempotency), for any POST that creates.

A view hands its work to `idempotent_response(request, work)`:

    def post(self, request):
        return idempotent_response(request, lambda: self.create(request))

`work()` runs in one transaction and returns the Response; raising (an ApiError, anything)
rolls it back. Without an `Idempotency-Key` header that is all. With one, the transaction
first inserts the key's IdempotencyRecord, then runs `work()`, then writes the answer into
the record, so the record commits with whatever `work()` wrote, or neither does:

- same key, same request (method, path, canonical body), within IDEMPOTENCY_TTL: the first
  answer again (status and body), with `Idempotent-Replayed: true`; nothing runs;
- same key, another request: 409 `idempotency_key_reused`;
- two requests at once with one key: the second's INSERT waits on the unique constraint
  (api_key, key) until the first commits, then fails, and it replays the first's answer (if
  the first rolled back instead, the second's INSERT simply goes through and it runs).

Only a 2xx answer is kept: a refused request (4xx) or a crash (5xx) stores nothing, so the
client may fix the request and retry with the same key. Keys belong to the API key that sent
them; a staff session (the browsable API) cannot send one. Records older than the TTL count
for nothing and are deleted by `idempotency_records_expire` (beat).
"""

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
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
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MAX_LENGTH = 255
# A record taken, then found gone (its request rolled back) or expired, is tried again; a key
# that keeps changing hands this often is refused rather than looped on.
ATTEMPTS = 3
EXPIRE_CHUNK = 10_000


class _KeyTaken(Exception):
    """The record's INSERT met the unique constraint: another request has (or had) this key."""


def idempotent_response(
    request: Request, work: Callable[[], Response], *, fingerprint: bytes | None = None
) -> Response:
    """`work()`'s answer, run in one transaction and at most once per (API key, idempotency
    key) within IDEMPOTENCY_TTL. `fingerprint` stands for the body in "the same request" where
    the body is not JSON (a CSV upload: a digest of its bytes); by default the parsed JSON body,
    keys sorted, is hashed."""
    key = _header_key(request)
    if key is None:
        return _run(work)
    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    if api_key is None:
        raise ApiError(
            status.HTTP_400_BAD_REQUEST,
            "idempotency_key_needs_api_key",
            "Idempotency keys belong to an API key: send one (Authorization: Bearer …).",
            HEADER,
        )
    digest = request_hash(request, fingerprint=fingerprint)
    for _ in range(ATTEMPTS):
        try:
            return _run(work, record=(api_key, key, digest))
        except _KeyTaken:
            pass
        found = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
        if found is None:
            continue  # its request rolled back meanwhile: the key is free again
        if found.created_at <= timezone.now() - IDEMPOTENCY_TTL:
            # Expired but not yet swept: it counts for nothing (guarded: a newer record made
            # meanwhile by another request stays).
            IdempotencyRecord.objects.filter(pk=found.pk, created_at=found.created_at).delete()
            continue
        if found.request_hash != digest:
            raise ApiError(
                status.HTTP_409_CONFLICT,
                "idempotency_key_reused",
                "This Idempotency-Key was sent with another request in the last 24 hours: "
                "use a new key for a new request.",
                HEADER,
            )
        return Response(found.response, status=found.status_code, headers={REPLAYED_HEADER: "true"})
    raise ApiError(
        status.HTTP_409_CONFLICT,
        "idempotency_key_in_use",
        "Other requests with this Idempotency-Key keep running: try again shortly.",
        HEADER,
    )


def _run(work: Callable[[], Response], *, record: tuple | None = None) -> Response:
    with transaction.atomic():
        if record is not None:
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
        elif record is not None:
            IdempotencyRecord.objects.filter(pk=made.pk).update(
                status_code=response.status_code, response=_as_json(response.data)
            )
    return response


def _as_json(data: object) -> object:
    """The answer's data as the client read it (DRF's encoder: datetimes, decimals, UUIDs as
    text), so a replay is the same JSON, and a JSONField can store it."""
    return json.loads(json.dumps(data, cls=encoders.JSONEncoder))


def _header_key(request: Request) -> str | None:
    raw = request.headers.get(HEADER)
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

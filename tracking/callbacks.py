"""Outbound callbacks: signed POSTs to integrators' endpoints about what happened to messages,
jobs and campaigns (docs/API.md#callbacks, docs/DATAFLOW.md#callbacks).

Nothing here runs on a request or on the event intake path. Two steps, both from Celery:

1. `callbacks_fan_out` (beat, every CALLBACK_POLL_SECONDS) reads what is already stored past a
   high-water mark (tracking Events by id; campaigns and jobs by finish time) and inserts one
   CallbackDelivery row per subscribed endpoint, set-based, ON CONFLICT DO NOTHING on
   (endpoint, event id): reading something twice queues it once.
2. `callbacks_deliver` (a task per endpoint with due rows) claims due rows under a lease (the
   claim moves `next_attempt_at` past the lease), POSTs each with a pooled connection pinned to
   the address it checked, and records the answers. A worker killed mid-post leaves its rows
   due again when the lease ends: at least once; receivers dedupe on the event id.

Logs carry ids and counts, never an endpoint's URL, a payload or an address.
"""

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import re
import secrets
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignLink,
    Contact,
    MessageOutcome,
    MessageRequest,
    Notification,
)
from campaigns.outcomes import outcomes_wanted_set
from infra.addresses import host_addresses, host_public_addresses
from infra.http_answers import SocketReader, answer_head
from infra.redis_client import redis_client
from infra.tasks import task_enqueue_on_commit
from tracking.models import CallbackDelivery, CallbackEndpoint, CallbackMark, Event

logger = logging.getLogger(__name__)

D = CallbackDelivery.Status

# Tracking event type → the callback's type. SES's Rendering Failure is a failure to send.
MESSAGE_EVENT_TYPES = {
    Event.Type.SENT: "message.sent",
    Event.Type.DELIVERED: "message.delivered",
    Event.Type.BOUNCED: "message.bounced",
    Event.Type.COMPLAINED: "message.complained",
    Event.Type.REJECTED: "message.rejected",
    Event.Type.OPENED: "message.opened",
    Event.Type.CLICKED: "message.clicked",
    Event.Type.UNSUBSCRIBED: "message.unsubscribed",
    Event.Type.FAILED: "message.failed",
    Event.Type.RENDERING_FAILED: "message.failed",
}
EVENT_TYPES = (
    "message.sent",
    "message.delivered",
    "message.bounced",
    "message.complained",
    "message.rejected",
    "message.opened",
    "message.clicked",
    "message.unsubscribed",
    "message.failed",
    "message.unknown",
    "job.finished",
    "campaign.finished",
)
# The ledger's outcomes (campaigns.MessageOutcome, by ledger status) → the callback's type.
# `sent` and `failed` share their event id with SES's Send and Rendering Failure events
# (`msg_<message id>_sent` / `_failed`): one delivery per endpoint whichever is read first.
OUTCOME_TYPES = {
    str(Notification.Status.SENT): "message.sent",
    str(Notification.Status.FAILED): "message.failed",
    str(Notification.Status.UNKNOWN): "message.unknown",
}
# Outbox rows are kept this long past the callbacks' retry window (their payloads read them).
OUTCOME_KEEP_EXTRA = timedelta(days=1)
OUTCOME_PRUNE_CHUNK = 10_000
FINISHED = (Campaign.Status.SENT, Campaign.Status.CANCELLED, Campaign.Status.FAILED)

SIGNATURE_HEADER = "Mailwright-Signature"
EVENT_ID_HEADER = "Mailwright-Event-Id"
EVENT_TYPE_HEADER = "Mailwright-Event-Type"
USER_AGENT = "Mailwright-Callbacks/1"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)

DELIVER_TASK = "tracking.tasks.callbacks_deliver"
# Rows one claim takes; posted CALLBACK_CONCURRENCY at a time.
CLAIM_SIZE = 100
# Events (and outcomes) read per fan-out pass (more wait for the next pass, seconds later).
FAN_OUT_MAX_EVENTS = 50_000
# A delivery task keeps claiming for up to this long, then leaves the rest to the next one.
DELIVER_BUDGET_SECONDS = 20
# Past this many due rows, the dispatcher enqueues more than one task for an endpoint.
TASK_PARALLELISM = 4
# While an endpoint's tasks are queued or running, no more are enqueued for it, for at most
# this long (a killed task never drops its flag): under the lease, so a killed worker's rows,
# due again when the lease ends, find the dispatcher enqueuing.
DISPATCH_FLAG_SECONDS = 60


class TargetRefused(Exception):
    """The URL is not one callbacks may go to (scheme, credentials, a private address)."""


class HostUnresolved(TargetRefused):
    """The URL's host name does not resolve (now): refused by a delivery, not by a save."""

    def __init__(self, message: str, host: str) -> None:
        super().__init__(message)
        self.host = host


# --- endpoints: made, rotated, enabled (the admin and the API both call these) -------------


def secret_new() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def callback_url_check(url: str) -> str:
    """`url` if callbacks may go there, else TargetRefused with the reason (for people): http or
    https, a host, no credentials, and every address the host has public unless
    CALLBACK_ALLOW_PRIVATE_TARGETS. Checked when an endpoint is saved and again before each
    batch of posts (a name can resolve elsewhere later: DNS rebinding).

    A well-formed public host name that does not resolve when it is saved is accepted: an
    integrator may register the endpoint before its DNS is live, and a lookup may fail for a
    moment. Nothing is posted to it until it resolves to public addresses (each delivery checks
    and connects to the very address it checked; until then its deliveries are retried, the log
    saying why), so accepting the name gives a target nothing the check at delivery refuses."""
    try:
        _target_addresses(url)
    except HostUnresolved as unresolved:
        if not _public_host_name(unresolved.host):
            raise TargetRefused("The URL's host is not a valid public host name.") from None
    return url


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _public_host_name(host: str) -> bool:
    """A name DNS could answer for on the internet: labels of letters, digits and hyphens
    (after IDNA), at least two (one where private targets are allowed: a service's name on a
    shared network), the last not all digits (a mistyped address, 10.0.0.999, is no name),
    253 characters at most."""
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return False
    labels = ascii_host.split(".")
    return (
        len(ascii_host) <= 253
        and len(labels) >= (1 if settings.CALLBACKS_ALLOW_PRIVATE_TARGETS else 2)
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def _target_addresses(url: str) -> tuple[str, str, int, list[str]]:
    """(scheme, host, port, addresses to connect to), or TargetRefused."""
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise TargetRefused("The URL has spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("The URL cannot be read.") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("The URL must start with https:// (or http://).")
    if not parts.hostname:
        raise TargetRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("The URL must not carry a user name or password.")
    port = port or (443 if parts.scheme == "https" else 80)
    allow_private = settings.CALLBACKS_ALLOW_PRIVATE_TARGETS
    resolve = host_addresses if allow_private else host_public_addresses
    addresses = resolve(parts.hostname, port)
    if addresses is None:
        if not allow_private and host_addresses(parts.hostname, port):
            raise TargetRefused(
                "The host resolves to a private, loopback or link-local address: "
                "callbacks go to public addresses only."
            )
        raise HostUnresolved("The host does not resolve.", parts.hostname)
    return parts.scheme, parts.hostname, port, addresses


def endpoint_create(
    *,
    url: str,
    event_types: list[str],
    description: str = "",
    user=None,
    api_key_id: int | None = None,
) -> CallbackEndpoint:
    """A new endpoint with a new secret (`endpoint.secret`: show it once)."""
    callback_url_check(url)
    endpoint = CallbackEndpoint.objects.create(
        url=url,
        event_types=event_types_check(event_types),
        description=description,
        secret=secret_new(),
        created_by=user,
        created_by_key_id=api_key_id,
    )
    outcomes_sync()
    return endpoint


def endpoint_update(
    endpoint: CallbackEndpoint,
    *,
    url: str | None = None,
    event_types: list[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> None:
    """Change what is given (None: left as it is). Enabling a disabled endpoint is
    endpoint_enable; disabling by hand keeps its waiting deliveries for when it is enabled."""
    fields = []
    if url is not None:
        endpoint.url = callback_url_check(url)
        fields.append("url")
    if event_types is not None:
        endpoint.event_types = event_types_check(event_types)
        fields.append("event_types")
    if description is not None:
        endpoint.description = description
        fields.append("description")
    if fields:
        endpoint.save(update_fields=[*fields, "updated_at"])
    if enabled is True and not endpoint.enabled:
        endpoint_enable(endpoint)
    elif enabled is False and endpoint.enabled:
        endpoint_disable(endpoint, reason="Disabled by hand.")
    if event_types is not None:
        outcomes_sync()
    logger.info("callback endpoint %s updated", endpoint.pk)


def endpoint_delete(endpoint: CallbackEndpoint) -> None:
    """Delete it and its delivery log (waiting deliveries are never sent)."""
    pk = endpoint.pk
    endpoint.delete()
    outcomes_sync()
    logger.info("callback endpoint %s deleted", pk)


def event_types_check(event_types: list[str]) -> list[str]:
    unknown = [t for t in event_types if t not in EVENT_TYPES]
    if unknown or not event_types:
        raise ValueError(
            f"Unknown event types: {', '.join(unknown)}."
            if unknown
            else "Choose at least one event type."
        )
    return sorted(set(event_types), key=EVENT_TYPES.index)


def endpoint_rotate_secret(endpoint: CallbackEndpoint, *, overlap: timedelta | None = None) -> str:
    """A new secret for `endpoint`, returned (show it once); the old one keeps signing too for
    `overlap` (CALLBACK_SECRET_OVERLAP_HOURS), so the receiver can switch without a gap."""
    overlap = (
        overlap if overlap is not None else timedelta(hours=settings.CALLBACK_SECRET_OVERLAP_HOURS)
    )
    new = secret_new()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = timezone.now() + overlap
    endpoint.secret = new
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    logger.info("callback endpoint %s secret rotated", endpoint.pk)
    return new


def endpoint_enable(endpoint: CallbackEndpoint) -> None:
    """Enable again (after it was disabled for failing): its waiting deliveries are due now."""
    with transaction.atomic():
        endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason = True, None, ""
        endpoint.failing_since = None
        endpoint.save(update_fields=["enabled", "disabled_at", "disabled_reason", "failing_since"])
        CallbackDelivery.objects.filter(endpoint=endpoint, status=D.PENDING).update(
            next_attempt_at=timezone.now()
        )
        outcomes_sync()
    logger.info("callback endpoint %s enabled", endpoint.pk)


def endpoint_disable(endpoint: CallbackEndpoint, *, reason: str) -> None:
    CallbackEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
        enabled=False, disabled_at=timezone.now(), disabled_reason=reason[:500]
    )
    outcomes_sync()
    logger.warning("callback endpoint %s disabled", endpoint.pk)


def delivery_retry_now(delivery: CallbackDelivery) -> None:
    """Post it again now, whatever its status (a delivered one too: the receiver dedupes by
    its event id). A failed one gets one more try: past its 72 hours, a failure ends it again."""
    CallbackDelivery.objects.filter(pk=delivery.pk).update(
        status=D.PENDING, next_attempt_at=timezone.now()
    )
    task_enqueue_on_commit(DELIVER_TASK, (delivery.endpoint_id,))


# --- fan-out: stored events → delivery rows --------------------------------------------------


def callbacks_fan_out(*, now: datetime | None = None) -> int:
    """Queue the events stored since the last pass for every endpoint that wants them; the
    number of rows inserted. One pass at a time (the mark's row, SKIP LOCKED)."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.CALLBACK_FAN_OUT_GRACE_SECONDS)
    with transaction.atomic():
        CallbackMark.objects.get_or_create(pk=1)
        mark = CallbackMark.objects.select_for_update(skip_locked=True).filter(pk=1).first()
        if mark is None:
            return 0  # another pass holds it
        wanted = _wanted_types()
        inserted = 0
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT max(id), min(id) FILTER (WHERE created_at > %s) FROM (SELECT id, "  # noqa: S608
                f"created_at FROM {Event._meta.db_table} WHERE id > %s ORDER BY id LIMIT %s) s",
                [now - grace, mark.event_id, FAN_OUT_MAX_EVENTS],
            )
            upto, young = cursor.fetchone()
            if upto is not None:
                if wanted & set(MESSAGE_EVENT_TYPES.values()):
                    inserted += _fan_out_events(cursor, mark.event_id, upto, now)
                # Rows younger than the grace hold the mark: an id is taken before its
                # transaction commits, so one not yet visible may lie below a visible one.
                # Read again next pass; the unique (endpoint, event id) keeps them once.
                mark.event_id = young - 1 if young is not None else upto
            inserted += _fan_out_outcomes(cursor, mark, wanted, now, grace)
        since = (mark.finished_at or now) - grace
        if wanted & {"job.finished", "campaign.finished"}:
            inserted += _fan_out_finished(since, now)
        mark.finished_at = now
        mark.save(update_fields=["event_id", "outcome_id", "finished_at"])
        # Every pass, so the ledger's flag heals whatever changed endpoints without the
        # services (an UPDATE only when it differs).
        outcomes_sync(wanted)
    _outcomes_prune(now)
    if inserted:
        logger.info("callbacks queued %s deliveries", inserted)
    return inserted


def outcomes_sync(wanted: set[str] | None = None) -> None:
    """Tell the ledger which of its outcomes to write to the outbox (campaigns.outcomes):
    those some enabled endpoint wants."""
    wanted = _wanted_types() if wanted is None else wanted
    outcomes_wanted_set({status for status, t in OUTCOME_TYPES.items() if t in wanted})


def _wanted_types() -> set[str]:
    wanted: set[str] = set()
    for types in CallbackEndpoint.objects.filter(enabled=True).values_list(
        "event_types", flat=True
    ):
        wanted.update(types)
    return wanted


def _fan_out_events(cursor, after: int, upto: int, now: datetime) -> int:
    types = list(MESSAGE_EVENT_TYPES.items())
    values = ", ".join(["(%s, %s)"] * len(types))
    cursor.execute(
        f"INSERT INTO {CallbackDelivery._meta.db_table} (endpoint_id, event_id, event_type, "  # noqa: S608
        "tracking_event_id, campaign_id, status, attempts, next_attempt_at, last_error, "
        "created_at) "
        # message.sent / message.failed: one id per message, shared with the ledger's outcome.
        "SELECT ep.id, CASE WHEN t.callback_type IN ('message.sent', 'message.failed') "
        "AND e.notification_id IS NOT NULL THEN 'msg_' || e.notification_id || '_' || "
        "split_part(t.callback_type, '.', 2) ELSE 'evt_' || e.id END, "
        "t.callback_type, e.id, NULL, %s, 0, %s, '', %s "
        f"FROM {Event._meta.db_table} e "
        f"JOIN (VALUES {values}) t(event_type, callback_type) ON t.event_type = e.type "
        f"JOIN {CallbackEndpoint._meta.db_table} ep ON ep.enabled "
        "AND jsonb_exists(ep.event_types, t.callback_type) AND e.created_at >= ep.created_at "
        "WHERE e.id > %s AND e.id <= %s "
        "ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        [D.PENDING, now, now, *[str(v) for pair in types for v in pair], after, upto],
    )
    return cursor.rowcount


def _fan_out_outcomes(cursor, mark: CallbackMark, wanted: set[str], now, grace) -> int:
    """The ledger's outcomes (the outbox) past the mark, as _fan_out_events reads events:
    rows younger than the grace hold the mark, read again next pass, queued once."""
    table = MessageOutcome._meta.db_table
    cursor.execute(
        f"SELECT max(id), min(id) FILTER (WHERE created_at > %s) FROM (SELECT id, "  # noqa: S608
        f"created_at FROM {table} WHERE id > %s ORDER BY id LIMIT %s) s",
        [now - grace, mark.outcome_id, FAN_OUT_MAX_EVENTS],
    )
    upto, young = cursor.fetchone()
    if upto is None:
        return 0
    inserted = 0
    if wanted & set(OUTCOME_TYPES.values()):
        types = list(OUTCOME_TYPES.items())
        values = ", ".join(["(%s, %s)"] * len(types))
        cursor.execute(
            f"INSERT INTO {CallbackDelivery._meta.db_table} (endpoint_id, event_id, "  # noqa: S608
            "event_type, tracking_event_id, outcome_id, campaign_id, status, attempts, "
            "next_attempt_at, last_error, created_at) "
            "SELECT ep.id, 'msg_' || o.notification_id || '_' || o.status, t.callback_type, "
            "NULL, o.id, NULL, %s, 0, %s, '', %s "
            f"FROM {table} o "
            f"JOIN (VALUES {values}) t(status, callback_type) ON t.status = o.status "
            f"JOIN {CallbackEndpoint._meta.db_table} ep ON ep.enabled "
            "AND jsonb_exists(ep.event_types, t.callback_type) AND o.created_at >= ep.created_at "
            "WHERE o.id > %s AND o.id <= %s "
            "ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            [D.PENDING, now, now, *[v for pair in types for v in pair], mark.outcome_id, upto],
        )
        inserted = cursor.rowcount
    mark.outcome_id = young - 1 if young is not None else upto
    return inserted


def _outcomes_prune(now: datetime) -> None:
    """Delete outbox rows older than the callbacks' retry window (a delivery's payload reads
    its row until then), oldest first by the primary key, a chunk a pass: one indexed read of
    the oldest row when there is nothing to prune."""
    cutoff = now - timedelta(hours=settings.CALLBACK_MAX_AGE_HOURS) - OUTCOME_KEEP_EXTRA
    oldest = MessageOutcome.objects.order_by("id").values_list("created_at", flat=True).first()
    if oldest is None or oldest >= cutoff:
        return
    table = MessageOutcome._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT %s) "  # noqa: S608
            "AND created_at < %s",
            [OUTCOME_PRUNE_CHUNK, cutoff],
        )


def _fan_out_finished(since: datetime, now: datetime) -> int:
    """Campaigns and jobs that finished since `since` (a small table, read by time)."""
    finished = Campaign.objects.filter(
        kind__in=(Campaign.Kind.CAMPAIGN, Campaign.Kind.JOB),
        status__in=FINISHED,
        finished_at__gt=since,
    ).values_list("pk", "kind", "finished_at")
    endpoints = list(
        CallbackEndpoint.objects.filter(enabled=True).values_list("pk", "event_types", "created_at")
    )
    rows = []
    for campaign_id, kind, finished_at in finished:
        event_type = "job.finished" if kind == Campaign.Kind.JOB else "campaign.finished"
        prefix = "job" if kind == Campaign.Kind.JOB else "cmp"
        for endpoint_id, types, created_at in endpoints:
            if event_type in types and finished_at >= created_at:
                rows.append(
                    CallbackDelivery(
                        endpoint_id=endpoint_id,
                        event_id=f"{prefix}_{campaign_id}_finished",
                        event_type=event_type,
                        campaign_id=campaign_id,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
    created = CallbackDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    return len(created) if rows else 0


# --- dispatch: which endpoints have due rows -------------------------------------------------


def callbacks_dispatch() -> None:
    """Beat: fan out, then one delivery task per endpoint with due rows (more for a backlog)."""
    callbacks_fan_out()
    now = timezone.now()
    due = {}
    for endpoint_id in CallbackEndpoint.objects.filter(enabled=True).values_list("pk", flat=True):
        count = CallbackDelivery.objects.filter(
            endpoint_id=endpoint_id, status=D.PENDING, next_attempt_at__lte=now
        )[: CLAIM_SIZE * TASK_PARALLELISM].count()
        if count:
            due[endpoint_id] = count
    calls = [
        (endpoint_id,)
        for endpoint_id, count in due.items()
        if _dispatch_flag_take(endpoint_id)
        for _ in range(min(TASK_PARALLELISM, -(-count // CLAIM_SIZE)))
    ]
    if calls:
        task_enqueue_on_commit(DELIVER_TASK, *calls)


def _dispatch_flag_key(endpoint_id: int) -> str:
    return f"callbacks:dispatched:{endpoint_id}"


def _dispatch_flag_take(endpoint_id: int) -> bool:
    """Whether to enqueue tasks for the endpoint: not while those enqueued before are queued or
    running (a task drops the flag when it ends; it lives DISPATCH_FLAG_SECONDS at most). Without
    it a backlog would add TASK_PARALLELISM tasks every pass while each runs for 20 s. Without
    Redis (the demo), or with Redis away, always (a surplus task claims nothing)."""
    client = redis_client(timeout=1.0)
    if client is None:
        return True
    try:
        return bool(
            client.set(_dispatch_flag_key(endpoint_id), 1, nx=True, ex=DISPATCH_FLAG_SECONDS)
        )
    except redis.RedisError:
        return True


def _dispatch_flag_drop(endpoint_id: int) -> None:
    client = redis_client(timeout=1.0)
    if client is not None:
        with contextlib.suppress(redis.RedisError):
            client.delete(_dispatch_flag_key(endpoint_id))


# --- delivery: claim, post, record -----------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: str
    event_type: str
    tracking_event_id: int | None
    outcome_id: int | None
    campaign_id: int | None
    attempts: int
    created_at: datetime


def callbacks_deliver(*, endpoint_id: int, budget: float = DELIVER_BUDGET_SECONDS) -> int:
    """Post an endpoint's due deliveries, a claim at a time, for up to `budget` seconds; the
    number delivered."""
    try:
        return _deliver_for(endpoint_id, budget)
    finally:
        _dispatch_flag_drop(endpoint_id)  # the next dispatch may enqueue again


def _deliver_for(endpoint_id: int, budget: float) -> int:
    started = time.monotonic()
    delivered = 0
    # One pool of posting threads for the task (made per claim, it cost more than the posts).
    with ThreadPoolExecutor(max_workers=settings.CALLBACK_CONCURRENCY) as threads:
        while time.monotonic() - started < budget:
            endpoint = CallbackEndpoint.objects.filter(pk=endpoint_id, enabled=True).first()
            if endpoint is None:
                break
            rows = _claim(endpoint_id)
            if not rows:
                break
            delivered += _deliver_rows(endpoint, rows, threads)
    return delivered


def _claim(endpoint_id: int) -> list[Claimed]:
    now = timezone.now()
    lease = timedelta(seconds=settings.CALLBACK_LEASE_SECONDS)
    table = CallbackDelivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET next_attempt_at = %s, attempts = attempts + 1, "  # noqa: S608
            "last_attempt_at = %s "
            f"WHERE id IN (SELECT id FROM {table} WHERE endpoint_id = %s AND status = %s "
            "AND next_attempt_at <= %s ORDER BY next_attempt_at, id LIMIT %s "
            "FOR UPDATE SKIP LOCKED) "
            "RETURNING id, event_id, event_type, tracking_event_id, outcome_id, campaign_id, "
            "attempts, created_at",
            [now + lease, now, endpoint_id, D.PENDING, now, CLAIM_SIZE],
        )
        return sorted((Claimed(*row) for row in cursor.fetchall()), key=lambda c: c.id)


@dataclass
class Outcome:
    status: int | None  # HTTP status, None if no answer
    error: str  # "" for a 2xx


def _deliver_rows(
    endpoint: CallbackEndpoint, rows: list[Claimed], threads: ThreadPoolExecutor
) -> int:
    payloads = payloads_build(rows)
    try:
        scheme, host, port, addresses = _target_addresses(endpoint.url)
    except TargetRefused as refused:
        outcomes = {row.id: Outcome(None, f"refused: {refused}") for row in rows}
    else:
        pool = _pool(scheme, host, port, addresses[0])
        path = _path(endpoint.url)
        name = host.encode("idna").decode() if not host.isascii() else host
        host_header = name if port in (80, 443) else f"{name}:{port}"
        signing = _signing_secrets(endpoint)

        def post(row: Claimed) -> tuple[int, Outcome]:
            body = json.dumps(payloads[row.id], separators=(",", ":")).encode()
            head = _request_head(path, host_header, len(body), (
                ("Content-Type", "application/json"),
                ("User-Agent", USER_AGENT),
                (SIGNATURE_HEADER, signature_header(body, signing)),
                (EVENT_ID_HEADER, row.event_id),
                (EVENT_TYPE_HEADER, row.event_type),
            ))  # fmt: skip
            return row.id, _post(pool, head, body)

        def post_each(share: list[Claimed]) -> list[tuple[int, Outcome]]:
            return [post(row) for row in share]

        # Each thread posts its share in turn: one hand-off per thread, not per POST (a
        # future per POST cost ~60 µs of the ~400 µs a callback took).
        width = settings.CALLBACK_CONCURRENCY
        shares = [rows[i::width] for i in range(min(width, len(rows)))]
        outcomes = dict(pair for done in threads.map(post_each, shares) for pair in done)
    return _record(endpoint, rows, outcomes)


def _path(url: str) -> str:
    """The request target: the URL's path and query, anything outside ASCII percent-encoded
    as UTF-8 (what is already escaped, and the reserved characters, left as they are)."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return quote(target, safe="/?#[]@!$&'()*+,;=:%-._~")


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to an address already checked, verifying the certificate (and sending SNI) for the
    name the URL has, not for the address connected to."""

    def __init__(self, address: str, port: int, *, server_hostname: str, timeout: float):
        super().__init__(address, port, timeout=timeout, context=_tls_context())
        self._server_hostname = server_hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_hostname)


_tls = None


def _tls_context() -> ssl.SSLContext:
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context()
    return _tls


class _Pool:
    """Keep-alive connections to one checked address, each used by one thread at a time.

    The standard library's http.client, not urllib3 (installed, and first used here): on the
    benchmark's local receiver urllib3 cost 300 µs of CPU per POST, http.client 108 µs, and a
    callback is little else. What urllib3 would add is not wanted here: no redirects are
    followed, no retries are made within a claim (the outbox retries), and the address is
    pinned by us."""

    def __init__(self, scheme: str, host: str, port: int, address: str):
        self.scheme, self.host, self.port, self.address = scheme, host, port, address
        self.idle: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def get(self, *, fresh: bool = False) -> http.client.HTTPConnection:
        with self.lock:
            if self.idle and not fresh:
                return self.idle.pop()
        timeout = min(5.0, settings.CALLBACK_TIMEOUT_SECONDS)  # to connect
        if self.scheme == "https":
            return _PinnedHTTPSConnection(
                self.address, self.port, server_hostname=self.host, timeout=timeout
            )
        return http.client.HTTPConnection(self.address, self.port, timeout=timeout)

    def put(self, connection: http.client.HTTPConnection) -> None:
        with self.lock:
            if len(self.idle) < settings.CALLBACK_CONCURRENCY:
                self.idle.append(connection)
                return
        connection.close()


_pools: dict[tuple, _Pool] = {}
_pools_lock = threading.Lock()


def _pool(scheme: str, host: str, port: int, address: str) -> _Pool:
    key = (scheme, host, port, address)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            if len(_pools) >= 200:
                _pools.clear()
            pool = _pools[key] = _Pool(scheme, host, port, address)
        return pool


def _post(pool: _Pool, head: bytes, body: bytes) -> Outcome:
    outcome, reused = _post_once(pool, pool.get(), head, body)
    if reused and outcome.status is None and outcome.error != "timed out":
        # A kept connection the receiver had closed meanwhile: once more on a new one (posting
        # twice is allowed: receivers dedupe on the event id).
        outcome, _ = _post_once(pool, pool.get(fresh=True), head, body)
    return outcome


# An answer's body is read (so the connection can be kept) only if its Content-Length is at
# most this; a longer one, or one without a length, is not read: the connection is closed.
_ANSWER_MAX = 65536


def _post_once(
    pool: _Pool, connection: http.client.HTTPConnection, head: bytes, body: bytes
) -> tuple[Outcome, bool]:
    """One POST on `connection` (connected here if new: http.client's connect, so TLS and the
    pinned address stay its), written and read by hand: the request in one send, the answer's
    head by infra.http_answers. http.client's header checks and its email-package answer
    parser cost ~60 µs of CPU per POST, more than the rest of a callback's POST; what is sent
    is ours (headers built from checked values), and what is read is only a status and
    whether the connection can be kept."""
    reused = connection.sock is not None
    try:
        if not reused:
            connection.connect()
        sock = connection.sock
        sock.settimeout(settings.CALLBACK_TIMEOUT_SECONDS)
        sock.sendall(head + body)
        status, keep = _answer_read(SocketReader(sock))
    except TimeoutError:
        connection.close()
        return Outcome(None, "timed out"), reused
    except (OSError, http.client.HTTPException, ValueError) as err:
        # The exception's text may name the address: the class is enough.
        connection.close()
        return Outcome(None, f"no answer: {type(err).__name__}"), reused
    if keep:
        pool.put(connection)
    else:
        connection.close()
    if 200 <= status < 300:
        return Outcome(status, ""), reused
    if 300 <= status < 400:
        return Outcome(status, f"HTTP {status}: redirects are not followed"), reused
    return Outcome(status, f"HTTP {status}"), reused


def _answer_read(reader) -> tuple[int, bool]:
    """(status, whether the connection may be kept) of the answer: kept only for HTTP/1.1 with
    a Content-Length body (read whole, at most _ANSWER_MAX) and no `Connection: close`."""
    version, status, headers = answer_head(reader)
    length = headers.get("content-length", "")
    if (
        version != b"HTTP/1.1"
        or "close" in headers.get("connection", "").lower()
        or "transfer-encoding" in headers
        or not length.isdigit()
        or int(length) > _ANSWER_MAX
    ):
        return status, False  # the body is not needed: the connection is closed instead
    return status, len(reader.read(int(length))) == int(length)


def _request_head(path: str, host: str, length: int, headers: tuple[tuple[str, str], ...]) -> bytes:
    """A POST's request line and headers. Every value is ours or checked: the path and host by
    _target_addresses (no spaces or control characters), ids and types generated here."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity",
             f"Content-Length: {length}"]  # fmt: skip
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _signing_secrets(endpoint: CallbackEndpoint) -> list[str]:
    keys = [endpoint.secret]
    if endpoint.previous_secret and (
        endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > timezone.now()
    ):
        keys.append(endpoint.previous_secret)
    return keys


def signature_header(body: bytes, keys: list[str], *, timestamp: int | None = None) -> str:
    """`t=<unix seconds>,v1=<hex>[,v1=<hex>]`: HMAC-SHA256 of `<t>.<body>` with each secret
    (two during a rotation's overlap)."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + body
    parts = [f"t={t}"] + [
        "v1=" + hmac.new(key.encode(), signed, hashlib.sha256).hexdigest() for key in keys
    ]
    return ",".join(parts)


def _record(endpoint: CallbackEndpoint, rows: list[Claimed], outcomes: dict[int, Outcome]) -> int:
    """Store each row's answer (guarded by its attempt: a late answer from a worker whose lease
    ran out moves nothing), give up on rows past CALLBACK_MAX_AGE_HOURS, and keep the endpoint's
    health: failing for CALLBACK_DISABLE_AFTER_HOURS disables it.

    The claim's delivered rows (nearly all, most of the time) are one UPDATE of three integer
    arrays passed as text (psycopg's dumping of seven typed lists, timestamps among them, cost
    more than the statement); the others one more, with their own columns. Delivered only, on
    a healthy endpoint: that one statement in autocommit, no BEGIN/COMMIT."""
    now = timezone.now()
    max_age = timedelta(hours=settings.CALLBACK_MAX_AGE_HOURS)
    table = CallbackDelivery._meta.db_table
    done, updates = [], []
    for row in rows:
        outcome = outcomes[row.id]
        if not outcome.error:
            done.append((row.id, row.attempts, outcome.status))
        elif now - row.created_at >= max_age:
            updates.append(
                (row.id, row.attempts, D.FAILED, now, outcome.status, outcome.error, None)
            )
        else:
            retry_at = now + backoff(row.attempts)
            updates.append(
                (row.id, row.attempts, D.PENDING, retry_at, outcome.status, outcome.error, None)
            )
    delivered, failed = len(done), len(updates)
    # The endpoint as this claim read it (just before the claim): a success ends a failing
    # streak, a claim that is all failures starts or continues one.
    health = bool(delivered and endpoint.failing_since is not None) or bool(failed and not done)
    with (
        transaction.atomic() if failed or health else contextlib.nullcontext(),
        connection.cursor() as cursor,
    ):
        if done:
            ids, attempts, statuses = zip(*done, strict=True)
            cursor.execute(
                f"UPDATE {table} d SET status = %s, next_attempt_at = %s, "  # noqa: S608
                "last_status = v.http, last_error = '', delivered_at = %s "
                "FROM unnest(%s::bigint[], %s::integer[], %s::integer[]) AS v(id, attempts, http) "
                "WHERE d.id = v.id AND d.attempts = v.attempts AND d.status = %s",
                [D.DELIVERED, now, now, _int_array(ids), _int_array(attempts),
                 _int_array(statuses), D.PENDING],
            )  # fmt: skip
        if updates:
            # The rest of the claim's answers: one statement, each column one array.
            columns = list(zip(*updates, strict=True))
            cursor.execute(
                f"UPDATE {table} d SET status = v.status, next_attempt_at = v.next_at, "  # noqa: S608
                "last_status = v.http, last_error = v.error, delivered_at = v.delivered_at "
                "FROM unnest(%s::bigint[], %s::integer[], %s::text[], %s::timestamptz[], "
                "%s::integer[], %s::text[], %s::timestamptz[]) "
                "AS v(id, attempts, status, next_at, http, error, delivered_at) "
                "WHERE d.id = v.id AND d.attempts = v.attempts AND d.status = %s",
                [*[list(column) for column in columns], D.PENDING],
            )
        if delivered and endpoint.failing_since is not None:
            CallbackEndpoint.objects.filter(pk=endpoint.pk).exclude(failing_since=None).update(
                failing_since=None
            )
        elif failed and not delivered:
            CallbackEndpoint.objects.filter(pk=endpoint.pk, failing_since=None).update(
                failing_since=now
            )
            since = (
                CallbackEndpoint.objects.filter(pk=endpoint.pk)
                .values_list("failing_since", flat=True)
                .first()
            )
            limit = timedelta(hours=settings.CALLBACK_DISABLE_AFTER_HOURS)
            if since is not None and now - since >= limit:
                last = next(o.error for o in outcomes.values() if o.error)
                endpoint_disable(
                    endpoint,
                    reason=(
                        f"Every delivery failed since {since:%Y-%m-%d %H:%M} UTC "
                        f"(over {settings.CALLBACK_DISABLE_AFTER_HOURS} hours); last: {last}"
                    ),
                )
    logger.info(
        "callback endpoint %s: %s delivered, %s failed of %s",
        endpoint.pk, delivered, failed, len(rows),
    )  # fmt: skip
    return delivered


def _int_array(values) -> str:
    """A PostgreSQL array literal of integers (None → NULL), for a `%s::integer[]` parameter:
    a string, which psycopg passes as it is."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def backoff(attempts: int) -> timedelta:
    """After the n-th failed attempt: CALLBACK_RETRY_BASE_SECONDS doubled each time, at most an
    hour apart (so ~9 tries in the first hour and a half, then hourly to 72 hours)."""
    base = settings.CALLBACK_RETRY_BASE_SECONDS
    return timedelta(seconds=min(3600, base * 2 ** min(attempts - 1, 20)))


# --- payloads ---------------------------------------------------------------------------------


def payloads_build(rows: list[Claimed]) -> dict[int, dict]:
    """Each claimed row's JSON payload, built from what is stored now: one query for a claim's
    message events (ids as one array parameter: an IN list of hundreds cost more to build than
    to run) and one for its campaigns' finishes. Never a message's body or personalisation."""
    event_ids = [row.tracking_event_id for row in rows if row.tracking_event_id]
    events = {}
    if event_ids:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT e.id, e.type, e.occurred_at, e.verdict, e.verdict_reason, "  # noqa: S608
                "e.bounce_type, e.description, n.id, n.contact_id, n.message_id, c.id, "
                "c.kind, c.test_mode, c.template_id, ct.email, r.reference, l.url "
                f"FROM {Event._meta.db_table} e "
                f"JOIN {Notification._meta.db_table} n ON n.id = e.notification_id "
                f"JOIN {Campaign._meta.db_table} c ON c.id = n.campaign_id "
                f"JOIN {Contact._meta.db_table} ct ON ct.id = n.contact_id "
                f"LEFT JOIN {MessageRequest._meta.db_table} r ON r.notification_id = n.id "
                f"LEFT JOIN {CampaignLink._meta.db_table} l ON l.id = e.link_id "
                "WHERE e.id = ANY(%s)",
                [event_ids],
            )
            events = {row[0]: row for row in cursor.fetchall()}
    outcomes = _outcome_rows([row.outcome_id for row in rows if row.outcome_id])
    campaign_ids = [row.campaign_id for row in rows if row.campaign_id]
    campaigns = (
        {
            c["id"]: c
            for c in Campaign.objects.filter(pk__in=campaign_ids).values(
                "id",
                "kind",
                "name",
                "status",
                "status_reason",
                "test_mode",
                "finished_at",
                "recipient_count",
            )  # fmt: skip
        }
        if campaign_ids
        else {}
    )
    payloads = {}
    for row in rows:
        if row.tracking_event_id:
            event = events.get(row.tracking_event_id)
            data, test = _message_data(event) if event else ({}, False)
        elif row.outcome_id:
            outcome = outcomes.get(row.outcome_id)
            data, test = _outcome_data(outcome) if outcome else ({}, False)
        else:
            campaign = campaigns.get(row.campaign_id) or {}
            data, test = _finished_data(campaign), bool(campaign.get("test_mode"))
        payloads[row.id] = {
            "id": row.event_id,
            "type": row.event_type,
            "created": row.created_at.isoformat(),
            "test": test,
            "data": data,
        }
    return payloads


_REASON_TYPES = frozenset(
    {
        Event.Type.BOUNCED,
        Event.Type.COMPLAINED,
        Event.Type.REJECTED,
        Event.Type.FAILED,
        Event.Type.RENDERING_FAILED,
        Event.Type.UNSUBSCRIBED,
    }
)


def _message_data(event: tuple) -> tuple[dict, bool]:
    (
        _id, type_, occurred_at, verdict, verdict_reason, bounce_type, description,
        message_id, contact_id, ses_message_id, campaign_id, kind, test_mode, template_id,
        email, reference, url,
    ) = event  # fmt: skip
    data = _message_payload(
        occurred_at, message_id, email, contact_id, campaign_id, kind, template_id, reference,
        ses_message_id,
    )  # fmt: skip
    if type_ in (Event.Type.OPENED, Event.Type.CLICKED):
        data["verdict"] = verdict or None  # "human" / "machine"
        data["verdict_reason"] = verdict_reason or None
    if type_ == Event.Type.CLICKED:
        data["url"] = url
    if type_ == Event.Type.BOUNCED:
        data["bounce_type"] = bounce_type or None  # "hard" / "soft"
    if type_ in _REASON_TYPES:
        data["reason"] = description or None
    return data, test_mode


def _message_payload(
    occurred_at, message_id, email, contact_id, campaign_id, kind, template_id, reference,
    ses_message_id,
) -> dict:  # fmt: skip
    """What every message.* payload (an event's and a ledger outcome's) starts with: when, and
    the `message` object."""
    message = {
        "id": message_id,
        "to": email,
        "contact_id": contact_id,
        "campaign_id": campaign_id if kind == Campaign.Kind.CAMPAIGN else None,
        "job_id": campaign_id if kind == Campaign.Kind.JOB else None,
        "template_id": template_id,
        "reference": reference,
        "ses_message_id": ses_message_id,
    }
    return {"occurred_at": occurred_at.isoformat(), "message": message}


def _outcome_rows(outcome_ids: list[int]) -> dict[int, tuple]:
    """The ledger outcomes' rows with their messages (one query, as the events')."""
    if not outcome_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT o.id, o.status, o.reason, o.created_at, n.id, n.contact_id, "  # noqa: S608
            "n.message_id, c.id, c.kind, c.test_mode, c.template_id, ct.email, r.reference "
            f"FROM {MessageOutcome._meta.db_table} o "
            f"JOIN {Notification._meta.db_table} n ON n.id = o.notification_id "
            f"JOIN {Campaign._meta.db_table} c ON c.id = n.campaign_id "
            f"JOIN {Contact._meta.db_table} ct ON ct.id = n.contact_id "
            f"LEFT JOIN {MessageRequest._meta.db_table} r ON r.notification_id = n.id "
            "WHERE o.id = ANY(%s)",
            [outcome_ids],
        )
        return {row[0]: row for row in cursor.fetchall()}


def _outcome_data(outcome: tuple) -> tuple[dict, bool]:
    """A ledger outcome's payload: the message as an event's, the SES message id for `sent`,
    the reason for `failed` and `unknown` (docs/API.md#callbacks)."""
    (
        _id, status, reason, occurred_at, message_id, contact_id, ses_message_id, campaign_id,
        kind, test_mode, template_id, email, reference,
    ) = outcome  # fmt: skip
    data = _message_payload(
        occurred_at, message_id, email, contact_id, campaign_id, kind, template_id, reference,
        ses_message_id,
    )  # fmt: skip
    if status != Notification.Status.SENT:
        data["reason"] = reason or None
    return data, test_mode


def _finished_data(campaign: dict) -> dict:
    if not campaign:
        return {}
    what = "job" if campaign["kind"] == Campaign.Kind.JOB else "campaign"
    return {
        what: {
            "id": campaign["id"],
            **({"name": campaign["name"]} if what == "campaign" else {}),
            "status": campaign["status"],
            "reason": campaign["status_reason"] or None,
            "finished_at": campaign["finished_at"].isoformat() if campaign["finished_at"] else None,
            "recipients": campaign["recipient_count"],
        }
    }

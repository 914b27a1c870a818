"""A leased queue in Redis: producers append records, flushers claim them in batches and
acknowledge each batch once its records are committed elsewhere. Both buffers use it (the
tracking hits, tracking.hits.buffer; the SES events, tracking.ses_events.buffer).

Claiming is what makes it safe: a batch is moved atomically (one Lua script) from the queue to a
key of its own, listed in a sorted set by claim time, and deleted only after its transaction
committed. So a flusher that dies mid-batch leaves it in Redis, taken over by the next flush
once its lease (LEASE_SECONDS) has passed; one that dies after the commit but before the
acknowledgement has it recorded again, which the records' unique ids make harmless.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

import redis
from django.conf import settings
from redis.commands.core import Script

from infra.redis_client import redis_client, redis_thread_client, redis_thread_client_drop

logger = logging.getLogger(__name__)

# ~2,000 records is ~0.4 MB and one multi-row INSERT: large enough that per-batch costs (a
# transaction, the counter upserts) vanish, small enough to stay well under a second.
BATCH_SIZE = 2000
# A batch is recorded in well under a second; one still claimed after 60 s belongs to a
# flusher that died, and another may take it over (recording twice is harmless).
LEASE_SECONDS = 60.0


# Push ARGV[3…] onto KEYS[1] unless the queue and its claimed batches (KEYS[2], ARGV[2] records
# each at most) would then hold more than ARGV[1]; 1 if pushed, 0 if full.
_PUSH_BOUNDED = Script(
    None,
    b"""
local held = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) * tonumber(ARGV[2])
if held + #ARGV - 2 > tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
return 1
""",
)

# Atomically move up to ARGV[1] records from the queue to a new batch key and list the batch.
_CLAIM_LUA = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items == 0 then return {} end
redis.call('LTRIM', KEYS[1], #items, -1)
for i = 1, #items, 500 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 499, #items)))
end
redis.call('ZADD', KEYS[3], ARGV[2], KEYS[2])
return items
"""
# Take over batches whose lease has expired (their claim time is re-set to now), at most
# ARGV[3] of them, so two flushers do not both take the same one.
_TAKE_OVER_LUA = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, key in ipairs(keys) do
  redis.call('ZADD', KEYS[1], ARGV[2], key)
end
return keys
"""

# After a failed push, pushes are skipped (straight to the database) for this long: a hung
# Redis would otherwise cost every request the 0.5 s timeout.
RETRY_AFTER_SECONDS = 5.0

_down_until = 0.0  # monotonic time before which this process does not try Redis again


# A view must not hang on a sick Redis: past this, it records another way.
REDIS_TIMEOUT_SECONDS = 0.5


def buffer_client() -> redis.Redis | None:
    """The queues' Redis client (short timeouts), None without Redis. Called on every push:
    a constant timeout, not a settings lookup (docs/PERFORMANCE.md)."""
    return redis_client(timeout=REDIS_TIMEOUT_SECONDS)


def buffer_is_down() -> bool:
    """A push failed less than RETRY_AFTER_SECONDS ago: producers record another way."""
    return time.monotonic() < _down_until


def buffer_mark_down(err: Exception, *, queue: str) -> None:
    """A push to `queue` failed: reconnect next time, and skip Redis for RETRY_AFTER_SECONDS."""
    global _down_until
    redis_thread_client_drop()
    _down_until = time.monotonic() + RETRY_AFTER_SECONDS
    logger.warning(
        "buffer push failed queue=%s (%s): recording directly for %.0f s",
        queue,
        type(err).__name__,
        RETRY_AFTER_SECONDS,
    )


def buffer_keys(queue: str) -> tuple[str, str]:
    """(sorted set of claimed batches, batch key prefix) of `queue`. A queue Q's keys: Q (list of
    records), "Q:batch:<uuid>" (a claimed batch), "Q:batches" (batch key → claim time)."""
    return f"{queue}:batches", f"{queue}:batch:"


def buffer_push(
    *,
    record: str | None = None,
    records: list[str] | None = None,
    queue: str,
    max_records: int | None = None,
) -> bool:
    """Append one record (or several, in one call) to `queue`; False if it could not be (no
    Redis, Redis failed, or failed less than RETRY_AFTER_SECONDS ago, or the queue and its
    claimed batches already hold `max_records`): the caller records them another way."""
    values = [record] if record is not None else list(records or ())
    client = buffer_client()
    if client is None or buffer_is_down():
        return False
    if not values:
        return True
    try:
        push = redis_thread_client(client)
        if max_records is None:
            push.rpush(queue, *values)
        else:
            batches, _ = buffer_keys(queue)
            room = (max_records, BATCH_SIZE)
            if not _PUSH_BOUNDED(keys=[queue, batches], args=[*room, *values], client=push):
                return False  # full: recorded the other way, and Redis is not "down"
    except redis.RedisError as err:
        buffer_mark_down(err, queue=queue)
        return False
    return True


def buffer_claim(*, size: int = BATCH_SIZE, queue: str) -> tuple[str, list[bytes]] | None:
    """Claim up to `size` records of `queue` as a new batch: (batch key, records), or None
    if it is empty."""
    client = buffer_client()
    if client is None:
        return None
    batches, prefix = buffer_keys(queue)
    key = f"{prefix}{uuid.uuid4().hex}"
    items = client.eval(_CLAIM_LUA, 3, queue, key, batches, size, time.time())
    if not items:
        return None
    return key, items


def buffer_take_over(
    *, lease_seconds: float = LEASE_SECONDS, limit: int = 10, queue: str
) -> list[str]:
    """Batches of `queue` whose flusher died (claimed more than `lease_seconds` ago), now ours."""
    client = buffer_client()
    if client is None:
        return []
    now = time.time()
    batches = buffer_keys(queue)[0]
    keys = client.eval(_TAKE_OVER_LUA, 1, batches, now - lease_seconds, now, limit)
    return [key.decode() if isinstance(key, bytes) else key for key in keys]


def buffer_batch(*, key: str) -> list[bytes]:
    """The records of a claimed batch."""
    client = buffer_client()
    return client.lrange(key, 0, -1) if client is not None else []


def buffer_ack(*, key: str, queue: str) -> None:
    """Forget a batch (of `queue`) whose records are committed to the database."""
    client = buffer_client()
    if client is None:
        return
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.zrem(buffer_keys(queue)[0], key)
        pipe.execute()


def buffer_oldest(*, queue: str) -> bytes | None:
    """The oldest queued record, or a record of a batch whose lease has run out (a flusher
    died with it), or None."""
    client = buffer_client()
    if client is None:
        return None
    batches = buffer_keys(queue)[0]
    stale = client.zrangebyscore(batches, "-inf", time.time() - LEASE_SECONDS, start=0, num=1)
    if stale:
        return client.lindex(stale[0], 0)
    return client.lindex(queue, 0)


def buffer_backlog(*, queue: str) -> dict[str, int]:
    """What is waiting: {"queued": records not claimed, "claimed": batches not acknowledged}."""
    client = buffer_client()
    if client is None:
        return {"queued": 0, "claimed": 0}
    with client.pipeline(transaction=False) as pipe:
        pipe.llen(queue)
        pipe.zcard(buffer_keys(queue)[0])
        queued, claimed = pipe.execute()
    return {"queued": int(queued), "claimed": int(claimed)}


def buffer_drain(
    *,
    queue: str,
    flush_batch: Callable[[str, list[bytes]], int],
    max_batches: int,
    lease_seconds: float | None = None,
) -> int:
    """Flush `queue` batch by batch with `flush_batch(key, records)`, which records a batch and
    acknowledges it: first the batches of flushers that died (claimed more than
    `lease_seconds` ago), then up to `max_batches` new ones. Returns the sum of what
    `flush_batch` returned. Safe to run in several processes at once."""
    lease = LEASE_SECONDS if lease_seconds is None else lease_seconds
    total = 0
    for key in buffer_take_over(lease_seconds=lease, queue=queue):
        items = buffer_batch(key=key)
        logger.warning(
            "batch taken over from a dead flusher queue=%s batch=%s records=%d",
            queue,
            key,
            len(items),
        )
        total += flush_batch(key, items)
    for _ in range(max_batches):
        claimed = buffer_claim(queue=queue)
        if claimed is None:
            break
        total += flush_batch(*claimed)
    return total


def buffer_flush_forever(flush: Callable[[], int], *, name: str) -> None:
    """A dedicated flusher's loop: `flush()`, then sleep TRACKING_FLUSH_INTERVAL_MS, forever.
    The sleep lets each batch fill: at 3,000 hits/s and 0.5 s, ~1,500 records a transaction,
    where a loop without pause would write a few at a time and spend its time on per-batch
    statements. A failure (database or Redis down) is logged and retried after 5 s."""
    from django.db import close_old_connections

    interval = getattr(settings, "TRACKING_FLUSH_INTERVAL_MS", 500) / 1000
    logger.info("%s flusher started pid=%s interval=%.2fs", name, os.getpid(), interval)
    while True:
        try:
            close_old_connections()
            flush()
        except Exception:  # noqa: BLE001 (the loop must outlive a database or Redis outage)
            logger.exception("%s flusher failed: retrying in 5 s", name)
            close_old_connections()
            time.sleep(5)
        time.sleep(interval)


# The web processes' safety net: a thread in each checks a buffer every WEB_CHECK_SECONDS and
# flushes only records that waited more than WEB_FLUSH_AFTER_SECONDS, i.e. when no dedicated
# flusher is running (or it is far behind). Not the main flusher: in a web process its Python
# work holds the GIL against the request threads (docs/PERFORMANCE.md).
WEB_CHECK_SECONDS = 5.0
WEB_FLUSH_AFTER_SECONDS = 10.0

_web_flushers: dict[str, int] = {}  # buffer name → pid of the process whose thread runs
_web_flushers_lock = threading.Lock()


def buffer_web_flusher_ensure(*, name: str, flush_if_late: Callable[[], object]) -> None:
    """Start this process's safety-net thread for the buffer `name` (at its first push), which
    calls `flush_if_late` every WEB_CHECK_SECONDS, unless TRACKING_FLUSH_IN_WEB is off."""
    pid = os.getpid()
    if _web_flushers.get(name) == pid:
        return
    with _web_flushers_lock:
        if _web_flushers.get(name) == pid:
            return
        _web_flushers[name] = pid  # once per process (a forked child has another pid)
        if getattr(settings, "TRACKING_FLUSH_IN_WEB", True):
            thread = threading.Thread(
                target=_web_flusher_loop, args=(name, flush_if_late), daemon=True
            )
            thread.name = f"web-flusher:{name}"
            thread.start()


def _web_flusher_loop(name: str, flush_if_late: Callable[[], object]) -> None:
    from django.db import connections

    while True:
        time.sleep(WEB_CHECK_SECONDS)
        try:
            flush_if_late()
        except Exception:  # noqa: BLE001 (a thread that dies stops flushing for good)
            logger.exception("%s web flusher failed", name)
        finally:
            # Closed, not kept: this thread writes only when the flusher is late (rarely),
            # and an idle session per web process would hold a connection slot.
            connections.close_all()

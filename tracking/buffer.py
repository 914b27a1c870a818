"""The Redis buffer between the tracking views and the database.

A view appends one compact record (RPUSH, ~50 µs) and answers; a flusher drains the list in
batches of up to BATCH_SIZE and records them with a handful of statements per batch
(tracking.services.tracking_buffer_flush). Per request that replaces ~8 statements and a
commit with one Redis call.

The flusher is its own process: `python -m tracking.buffer` (one is enough; more are safe).
The web processes only step in for hits that waited over 10 s (TRACKING_FLUSH_IN_WEB).

Claiming is what makes it safe: a batch is moved atomically (one Lua script) from the queue
to a key of its own, listed in a sorted set by claim time, and deleted only after its
transaction committed. So:

* the flusher dies mid-batch (process killed, database down): the batch stays in Redis and
  is taken over by the next flush once its lease (LEASE_SECONDS) has passed; a flusher that
  stays dead leaves hits queued (none lost), and the web processes flush them after 10 s;
* it dies after the commit but before the delete: the batch is recorded again, and every
  record carries a unique id (stored as the Event's esp_event_id), so the second time writes
  nothing and counts nothing;
* Redis is unreachable when a view (or its process's pusher, see lingering below) pushes:
  the hits are recorded straight to the database instead (tracking.services), slower but
  nothing is lost; after a failure Redis is not tried again for RETRY_AFTER_SECONDS;
* a web process is killed hard: the hits it had not pushed yet are lost, at most the last
  TRACKING_BUFFER_LINGER_MS (5 ms) of them; a normal stop pushes them first;
* Redis itself dies: what it held and had not been flushed is lost unless Redis persists
  (run it with appendonly yes / appendfsync everysec: at most ~1 s of hits). The queue is
  normally drained within a second, so that is about what is at risk.

Bounded (the same Redis is Celery's broker): a hit is pushed only if its repeat key
(tracking.hits.repeats) has had fewer than the cap this window and the buffer holds fewer than
TRACKING_BUFFER_MAX_HITS (its queue, plus BATCH_SIZE per claimed batch: an upper bound in
O(1), which batches a flusher cannot record fill too); otherwise it is dropped and counted in
DROPPED. One Lua script per push decides, so it costs no extra round trip. A window's repeat
counts are one hash of at most TRACKING_BUFFER_MAX_HITS keys, expiring two windows later.

Keys: QUEUE (list of records), "tracking:batch:<uuid>" (a claimed batch), BATCHES (sorted
set: batch key → claim time), "tracking:repeats:<window>" (hash: repeat key → hits), DROPPED
(hash: "repeat", "full" → hits dropped by every process). The push, claim, take-over and ack
functions take a `queue` (QUEUE by default): tracking.esp_events buffers SES events in
"esp:events" with the same machinery ("esp:events:batches", "esp:events:batch:<uuid>"),
flushed by a thread of the same `python -m tracking.buffer` process.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

import redis
from django.conf import settings
from redis.commands.core import Script

from campaigns.ratelimit import redis_url
from tracking.hits.repeats import (
    FULL,
    REPEAT,
    repeat_allowed,
    repeat_cap,
    repeat_max_keys,
    repeat_window,
    repeat_window_seconds,
    repeats_dropped,
)

logger = logging.getLogger(__name__)

QUEUE = "tracking:hits"
BATCHES = "tracking:batches"
BATCH_PREFIX = "tracking:batch:"
# ~2,000 records is ~0.4 MB and one multi-row INSERT of a few ms: large enough that per-batch
# costs (a transaction, the counter upserts) vanish, small enough to stay well under a second.
BATCH_SIZE = 2000
# A batch is recorded in well under a second; one still claimed after 60 s belongs to a
# flusher that died, and another may take it over (recording twice is harmless).
LEASE_SECONDS = 60.0

REPEATS_PREFIX = "tracking:repeats:"
DROPPED = "tracking:dropped"

# Push the records of (repeat key, record) pairs (ARGV[6], ARGV[7], …) whose key has had fewer
# than ARGV[3] hits this window (KEYS[3]), while the buffer holds fewer than ARGV[1] (its queue,
# KEYS[1], plus ARGV[2] per claimed batch in KEYS[2]) and the window counts fewer than ARGV[4]
# keys (a key already counted is still counted); count the others in KEYS[4]. The window's
# counts expire ARGV[5] s after its last push. Returns {pushed, dropped: repeat, dropped: full}.
_PUSH_HITS_LUA = b"""
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
  - redis.call('ZCARD', KEYS[2]) * tonumber(ARGV[2])
local cap, max_keys = tonumber(ARGV[3]), tonumber(ARGV[4])
local keys = redis.call('HLEN', KEYS[3])
local keep, repeats, full = {}, 0, 0
for i = 6, #ARGV, 2 do
  if #keep >= room then
    full = full + 1
  elseif keys >= max_keys and redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0 then
    full = full + 1
  else
    local seen = redis.call('HINCRBY', KEYS[3], ARGV[i], 1)
    if seen == 1 then keys = keys + 1 end
    if seen > cap then repeats = repeats + 1 else keep[#keep + 1] = ARGV[i + 1] end
  end
end
for i = 1, #keep, 500 do
  redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 499, #keep)))
end
if keys > 0 then redis.call('EXPIRE', KEYS[3], ARGV[5]) end
if repeats > 0 then redis.call('HINCRBY', KEYS[4], 'repeat', repeats) end
if full > 0 then redis.call('HINCRBY', KEYS[4], 'full', full) end
return {#keep, repeats, full}
"""
_PUSH_HITS = Script(None, _PUSH_HITS_LUA)  # EVALSHA, loaded on first use (or after a restart)
# Pairs per script call at most: while it runs, Redis (the broker too) answers no one else, so
# a large push (a process's pending hits after an outage) goes in calls of a few ms each.
_PUSH_CHUNK = 500

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

_clients: dict[str, redis.Redis] = {}
_down_until = 0.0  # monotonic time before which this process does not try Redis again


def buffer_enabled() -> bool:
    """Buffered recording is on (TRACKING_BUFFER) and there is a Redis to buffer in."""
    return bool(getattr(settings, "TRACKING_BUFFER", False)) and redis_url() is not None


def _client() -> redis.Redis | None:
    url = redis_url()
    if url is None:
        return None
    client = _clients.get(url)
    if client is None:
        # Short timeouts: a view must not hang on a sick Redis; it falls back to the database.
        # (redis-py rebuilds its pool after a fork, so a client made before one is safe.)
        timeout = float(getattr(settings, "TRACKING_REDIS_TIMEOUT_SECONDS", 0.5))
        client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        _clients[url] = client
    return client


_thread_clients = threading.local()


def _push_client(shared: redis.Redis) -> redis.Redis:
    """This thread's own connection to `shared`'s Redis, for pushes. A client on the shared
    pool checks each pooled connection for stray data before every command (three more system
    calls): an RPUSH cost 77 µs of CPU that way and 49 µs on a connection of its own
    (measured), and the SES webhook does one per request. Its threads are few and long-lived
    (the web server's), so one connection each is cheap."""
    kwargs = shared.connection_pool.connection_kwargs
    key = (os.getpid(), id(shared))  # a fork's child must not share its parent's socket
    if getattr(_thread_clients, "key", None) != key:
        _thread_clients.client = redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=shared.connection_pool.connection_class, **kwargs
            ),
            single_connection_client=True,
        )
        _thread_clients.key = key
    return _thread_clients.client


def _keys(queue: str) -> tuple[str, str]:
    """(sorted set of claimed batches, batch key prefix) of `queue`: the tracking hits keep
    their historical names; another queue (tracking.esp_events' "esp:events") gets
    "<queue>:batches" and "<queue>:batch:<uuid>"."""
    if queue == QUEUE:
        return BATCHES, BATCH_PREFIX
    return f"{queue}:batches", f"{queue}:batch:"


def buffer_push(
    *,
    record: str | None = None,
    records: list[str] | None = None,
    queue: str = QUEUE,
    max_records: int | None = None,
) -> bool:
    """Append one record (or several, in one call) to `queue`; False if it could not be (no
    Redis, Redis failed, or failed less than RETRY_AFTER_SECONDS ago, or the queue and its
    claimed batches already hold `max_records`): the caller records them another way."""
    global _down_until
    values = [record] if record is not None else list(records or ())
    client = _client()
    if client is None or time.monotonic() < _down_until:
        return False
    if not values:
        return True
    try:
        push = _push_client(client)
        if max_records is None:
            push.rpush(queue, *values)
        else:
            batches, _ = _keys(queue)
            room = (max_records, BATCH_SIZE)
            if not _PUSH_BOUNDED(keys=[queue, batches], args=[*room, *values], client=push):
                return False  # full: recorded the other way, and Redis is not "down"
    except redis.RedisError as err:
        _thread_clients.__dict__.clear()  # reconnect next time
        _down_until = time.monotonic() + RETRY_AFTER_SECONDS
        logger.warning(
            "buffer push failed queue=%s (%s): recording directly for %.0f s",
            queue,
            type(err).__name__,
            RETRY_AFTER_SECONDS,
        )
        return False
    return True


def buffer_push_hits(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Push tracking hits, given as (repeat key, record) pairs, to QUEUE: each unless its key
    already had its cap this window or the buffer is full (dropped, and counted here and in
    DROPPED). Returns the pairs Redis did not take (from the script call that failed on; all
    of them if Redis failed less than RETRY_AFTER_SECONDS ago): the caller records those
    another way (a call whose answer was lost may be recorded twice: the hit ids make that
    harmless)."""
    global _down_until
    client = _client()
    if client is None or time.monotonic() < _down_until:
        return pairs
    window = repeat_window()
    keys = (QUEUE, BATCHES, f"{REPEATS_PREFIX}{window}", DROPPED)
    limits = (settings.TRACKING_BUFFER_MAX_HITS, BATCH_SIZE, repeat_cap(), repeat_max_keys(),
              2 * repeat_window_seconds())  # fmt: skip
    repeats = full = 0
    try:
        for start in range(0, len(pairs), _PUSH_CHUNK):
            chunk = pairs[start : start + _PUSH_CHUNK]
            args = [*limits, *(value for pair in chunk for value in pair)]
            _, dropped_repeat, dropped_full = _PUSH_HITS(keys, args, client=_push_client(client))
            repeats += dropped_repeat
            full += dropped_full
    except redis.RedisError as err:
        _thread_clients.__dict__.clear()  # reconnect next time
        _down_until = time.monotonic() + RETRY_AFTER_SECONDS
        logger.warning(
            "tracking buffer push failed (%s): recording directly for %.0f s",
            type(err).__name__,
            RETRY_AFTER_SECONDS,
        )
        return pairs[start:]
    finally:
        repeats_dropped(repeat=repeats, full=full)
    return []


def buffer_dropped() -> dict[str, int]:
    """Hits the buffer dropped, every process together: {"repeat": n, "full": n}."""
    client = _client()
    counts = client.hgetall(DROPPED) if client is not None else {}
    return {name: int(counts.get(name.encode(), 0)) for name in (REPEAT, FULL)}


# --- lingering: one RPUSH for many requests -------------------------------------------------
# With TRACKING_BUFFER_LINGER_MS > 0 (5 by default) a view only appends its record to a list in
# its own process, and a thread pushes what gathered every LINGER ms in one RPUSH. A Redis round
# trip costs a request ~120 µs of CPU on the benchmark machine, and its wait holds a sync worker;
# shared by a few dozen requests it is nearly free (measured: requests/s doubled). The price: a
# record is in Redis only LINGER ms after its answer was sent, so a web process killed hard
# (SIGKILL, out of memory) loses what it held, at most LINGER ms of its hits. A normal stop
# (SIGTERM, a restart, max_requests) pushes them on exit. 0 pushes each one before the answer.

_pending: list[tuple[str, str]] = []  # (repeat key, record)
# A process holds at most this many hits waiting for their push (~200 bytes each): more only
# gather when Redis is down and the database takes them slower than they come. Beyond: dropped.
PENDING_MAX = 10_000
_pending_lock = threading.Lock()
_pending_ready = threading.Event()
_pusher: threading.Thread | None = None
_fallback: Callable[[list[str]], None] | None = None


def buffer_linger() -> float:
    """TRACKING_BUFFER_LINGER_MS, in seconds."""
    return max(0, getattr(settings, "TRACKING_BUFFER_LINGER_MS", 0)) / 1000


def buffer_push_later(
    *, record: str, repeat_key: str, fallback: Callable[[list[str]], None]
) -> None:
    """Append `record` (of `repeat_key`) to this process's pending list, pushed within
    buffer_linger() seconds by a thread (started here) with buffer_push_hits; if Redis fails,
    `fallback(records)` records them another way, repeats beyond the cap left out."""
    global _pusher, _fallback
    _fallback = fallback
    with _pending_lock:
        full = len(_pending) >= PENDING_MAX
        if not full:
            _pending.append((repeat_key, record))
        if _pusher is None:
            _pusher = threading.Thread(target=_pusher_loop, name="tracking-pusher", daemon=True)
            _pusher.start()
    _pending_ready.set()
    if full:
        repeats_dropped(full=1)


def _pusher_loop() -> None:
    from django.db import connections

    while True:
        _pending_ready.wait()
        time.sleep(buffer_linger())  # let the records of the next few ms join this push
        buffer_push_pending()
        # This thread's own connection, if the fallback opened one: closed, not kept for
        # CONN_MAX_AGE, since the fallback is rare (Redis down) and an idle session per web
        # process would hold a database connection slot (and blocks dropping the database).
        connections.close_all()


def buffer_push_pending() -> int:
    """Push this process's pending records now (buffer_push_hits: one script call), or hand
    those Redis did not take to the fallback, less the repeats this process counts over the
    cap (tracking.hits.repeats); returns how many there were."""
    with _pending_lock:
        pairs = _pending[:]
        _pending.clear()
        _pending_ready.clear()
    if not pairs:
        return 0
    left = buffer_push_hits(pairs)
    records = [record for key, record in left if repeat_allowed(key)]
    if not records:
        return len(pairs)
    try:
        if _fallback is None:
            raise RuntimeError("no fallback")
        _fallback(records)
    except Exception:
        logger.exception("tracking hits lost: %d could not be recorded", len(records))
    return len(pairs)


def _forget_pending_in_child() -> None:
    # A forked child (a web server worker forked after the app was loaded) starts empty: its
    # parent's pending records are the parent's to push, and threads do not survive a fork.
    global _pusher, _pending_lock
    _pusher = None
    _pending.clear()
    _pending_lock = threading.Lock()
    _pending_ready.clear()


atexit.register(buffer_push_pending)  # a normal stop pushes what is pending
os.register_at_fork(after_in_child=_forget_pending_in_child)


# --- the flusher's side ----------------------------------------------------------------------


def buffer_claim(*, size: int = BATCH_SIZE, queue: str = QUEUE) -> tuple[str, list[bytes]] | None:
    """Claim up to `size` records of `queue` as a new batch: (batch key, records), or None
    if it is empty."""
    client = _client()
    if client is None:
        return None
    batches, prefix = _keys(queue)
    key = f"{prefix}{uuid.uuid4().hex}"
    items = client.eval(_CLAIM_LUA, 3, queue, key, batches, size, time.time())
    if not items:
        return None
    return key, items


def buffer_take_over(
    *, lease_seconds: float = LEASE_SECONDS, limit: int = 10, queue: str = QUEUE
) -> list[str]:
    """Batches of `queue` whose flusher died (claimed more than `lease_seconds` ago), now ours."""
    client = _client()
    if client is None:
        return []
    now = time.time()
    batches = _keys(queue)[0]
    keys = client.eval(_TAKE_OVER_LUA, 1, batches, now - lease_seconds, now, limit)
    return [key.decode() if isinstance(key, bytes) else key for key in keys]


def buffer_batch(*, key: str) -> list[bytes]:
    """The records of a claimed batch."""
    client = _client()
    return client.lrange(key, 0, -1) if client is not None else []


def buffer_ack(*, key: str, queue: str = QUEUE) -> None:
    """Forget a batch (of `queue`) whose records are committed to the database."""
    client = _client()
    if client is None:
        return
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.zrem(_keys(queue)[0], key)
        pipe.execute()


def buffer_oldest(*, queue: str = QUEUE) -> bytes | None:
    """The oldest queued record, or a record of a batch whose lease has run out (a flusher
    died with it), or None."""
    client = _client()
    if client is None:
        return None
    batches = _keys(queue)[0]
    stale = client.zrangebyscore(batches, "-inf", time.time() - LEASE_SECONDS, start=0, num=1)
    if stale:
        return client.lindex(stale[0], 0)
    return client.lindex(queue, 0)


def buffer_backlog(*, queue: str = QUEUE) -> dict[str, int]:
    """What is waiting: {"queued": records not claimed, "claimed": batches not acknowledged}."""
    client = _client()
    if client is None:
        return {"queued": 0, "claimed": 0}
    with client.pipeline(transaction=False) as pipe:
        pipe.llen(queue)
        pipe.zcard(_keys(queue)[0])
        queued, claimed = pipe.execute()
    return {"queued": int(queued), "claimed": int(claimed)}


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


if __name__ == "__main__":
    # `python -m tracking.buffer`: the dedicated flusher process (see tracking.services).
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

    django.setup()
    from tracking.esp_events import esp_events_flusher_start
    from tracking.services import tracking_buffer_flush

    if settings.TRACKING_FLUSHER_NICE:  # requests first (config/settings/tracking.py)
        logger.info("flusher priority lowered to nice %d", os.nice(settings.TRACKING_FLUSHER_NICE))

    # SES events (ESP_EVENTS_BUFFER) are flushed by a thread of this same process: one
    # process to run and watch; each flusher has its own database connection.
    esp_events_flusher_start()
    buffer_flush_forever(tracking_buffer_flush, name="tracking")

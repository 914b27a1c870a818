"""The tracking hits' buffer: a view appends one compact record to a Redis queue (infra.queue)
and answers; a flusher records them in batches (tracking_buffer_flush, in the `flush_buffers`
command's process; the web processes step in for hits that waited over 10 s).

Redis unreachable: hits are recorded straight to the database. Bounded, since the same Redis
is Celery's broker: one Lua script per push drops (and counts) hits over their repeat cap or
past TRACKING_BUFFER_MAX_HITS. Every failure path: docs/DATAFLOW.md (Tracking).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import DatabaseError, OperationalError, connections
from redis.commands.core import Script

from infra import queue
from infra.queue import (
    BATCH_SIZE,
    buffer_client,
    buffer_is_down,
    buffer_keys,
    buffer_mark_down,
)
from infra.redis_client import redis_thread_client, redis_url
from tracking.hits.record import Hit, tracking_hits_record
from tracking.hits.repeats import (
    FULL,
    REPEAT,
    repeat_allowed,
    repeat_cap,
    repeat_key,
    repeat_max_keys,
    repeat_window,
    repeat_window_seconds,
    repeats_dropped,
)

logger = logging.getLogger(__name__)

QUEUE = "tracking:hits"
BATCHES = buffer_keys(QUEUE)[0]
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


def buffer_enabled() -> bool:
    """Buffered recording is on (TRACKING_BUFFER) and there is a Redis to buffer in."""
    return bool(getattr(settings, "TRACKING_BUFFER", False)) and redis_url() is not None


def buffer_push_hits(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Push tracking hits, given as (repeat key, record) pairs, to QUEUE: each unless its key
    already had its cap this window or the buffer is full (dropped, and counted here and in
    DROPPED). Returns the pairs Redis did not take (from the script call that failed on; all
    of them if Redis failed less than RETRY_AFTER_SECONDS ago): the caller records those
    another way (a call whose answer was lost may be recorded twice: the hit ids make that
    harmless)."""
    client = buffer_client()
    if client is None or buffer_is_down():
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
            _, dropped_repeat, dropped_full = _PUSH_HITS(
                keys, args, client=redis_thread_client(client)
            )
            repeats += dropped_repeat
            full += dropped_full
    except redis.RedisError as err:
        buffer_mark_down(err, queue=QUEUE)
        return pairs[start:]
    finally:
        repeats_dropped(repeat=repeats, full=full)
    return []


def buffer_dropped() -> dict[str, int]:
    """Hits the buffer dropped, every process together: {"repeat": n, "full": n}."""
    client = buffer_client()
    counts = client.hgetall(DROPPED) if client is not None else {}
    return {name: int(counts.get(name.encode(), 0)) for name in (REPEAT, FULL)}


# --- lingering: one RPUSH for many requests -------------------------------------------------
# With TRACKING_BUFFER_LINGER_MS > 0 (5 by default) a view only appends its record to a list in
# its own process, and a thread pushes what gathered every LINGER ms in one RPUSH. A Redis round
# trip per request is a large share of a hit's CPU, and its wait holds a sync worker; shared by
# a few dozen requests it is nearly free (docs/PERFORMANCE.md). The price: a
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


# --- the entry point of the views -------------------------------------------------------------


def tracking_hit_record(*, hit: Hit) -> None:
    """Record one hit: into the buffer if it is on and Redis answers, else straight to the
    database (so a Redis outage slows tracking down but loses nothing). Either way a hit whose
    repeat key already had its cap this window is dropped and counted (tracking.hits.repeats)."""
    key = repeat_key(hit)
    if buffer_enabled():
        if buffer_linger() > 0:
            buffer_push_later(record=hit.dumps(), repeat_key=key, fallback=_record_records)
            tracking_flusher_ensure()
            return
        if not buffer_push_hits([(key, hit.dumps())]):
            tracking_flusher_ensure()
            return
    if repeat_allowed(key):
        tracking_hits_record(hits=[hit])


def _record_records(records: list[str]) -> None:
    """The lingering pusher's fallback when Redis fails: straight to the database."""
    tracking_hits_record(hits=[Hit.loads(record) for record in records])


# --- the flusher ------------------------------------------------------------------------------

DEAD_LETTERS = "tracking:dead"  # records that cannot be recorded: kept for a person to look at


def tracking_buffer_flush(*, max_batches: int = 50, lease_seconds: float | None = None) -> int:
    """Record what the buffer holds, batch by batch (up to `max_batches` × BATCH_SIZE hits);
    returns how many Events were written. Safe to run in several processes at once.

    Batches left claimed by a flusher that died are taken over first. A batch whose
    transaction fails stays claimed, and is retried once its lease has passed; if the
    database is reachable but the batch still fails, its hits are retried one by one and
    those that fail alone are kept in the DEAD_LETTERS list (logged with their ids)."""
    return queue.buffer_drain(
        queue=QUEUE, flush_batch=_flush_batch, max_batches=max_batches, lease_seconds=lease_seconds
    )


def _flush_batch(key: str, items: list[bytes]) -> int:
    hits = []
    for raw in items:
        try:
            hits.append(Hit.loads(raw))
        except ValueError as err:
            logger.error("tracking record unreadable, kept aside batch=%s: %s", key, err)
            _dead_letter(raw)
    try:
        written = tracking_hits_record(hits=hits)
    except OperationalError:
        raise  # the database is unreachable: the batch stays claimed and is retried
    except DatabaseError:
        logger.exception("tracking batch failed batch=%s hits=%d: one by one", key, len(hits))
        written = 0
        for hit in hits:
            try:
                written += tracking_hits_record(hits=[hit])
            except OperationalError:
                raise
            except DatabaseError:
                logger.exception(
                    "tracking hit kept aside notification=%s hit=%s", hit.notification_id, hit.id
                )
                _dead_letter(hit.dumps())
    queue.buffer_ack(key=key, queue=QUEUE)
    return written


def _dead_letter(raw: bytes | str) -> None:
    client = queue.buffer_client()
    if client is not None:
        client.rpush(DEAD_LETTERS, raw)


def tracking_flusher_ensure() -> None:
    """Start this process's safety-net flusher of the hits (infra.queue)."""
    queue.buffer_web_flusher_ensure(name="tracking hits", flush_if_late=tracking_flush_if_late)


def tracking_flush_if_late(*, after_seconds: float = queue.WEB_FLUSH_AFTER_SECONDS) -> int | None:
    """Flush if the oldest waiting hit waited more than `after_seconds` (how many Events were
    written), else None."""
    waited = buffer_oldest_wait()
    if waited is None or waited <= after_seconds:
        return None
    logger.warning(
        "tracking hits waited %.0f s: flushing from the web process pid=%s "
        "(is `manage.py flush_buffers` running?)",
        waited,
        os.getpid(),
    )
    return tracking_buffer_flush()


def buffer_oldest_wait() -> float | None:
    """Seconds the oldest buffered hit has waited (queued, or in a batch whose lease ran out),
    None if nothing waits."""
    oldest = queue.buffer_oldest(queue=QUEUE)
    if oldest is None:
        return None
    try:
        return max(0.0, time.time() - Hit.loads(oldest).at)
    except ValueError:
        return float("inf")  # an unreadable record: the flush sets it aside

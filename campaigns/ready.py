"""The ready list: how a committed transactional message reaches the transactional worker,
many messages per task.

Without it each message was one Celery task (~3.7 ms of Celery in the worker) running a
batch of one row (campaign read, lease, claim, record: ~2.8 ms): docs/PERFORMANCE.md. Now,
once its transaction commits, the web RPUSHes "stream:message" onto a Redis list and enqueues
a drain task only when the drain flag is absent (SET NX PX, DRAIN_FLAG_MS); a drain task
(campaigns.tasks.deliver_ready) pops up to DRAIN_POP at a time, groups them by stream and
sends each group as one batch of exactly those ids (campaigns.delivery.deliver_batch with
`ids`), until the list is empty; then it clears the flag and looks once more, so a message
pushed as it leaves is never stranded. A drain that keeps up (its pop took less than
DRAIN_POP) sets the flag again for DRAIN_FLAG_MS at each pop, so no other drain is enqueued
beside it: drains that split one flow pop smaller batches, and a batch's fixed cost is most
of a message's (docs/PERFORMANCE.md, Integrations API). One that falls behind (a full pop) or
takes longer than DRAIN_FLAG_MS over a batch lets it lapse, and the next push enqueues
another: drains grow with the load (at most one new task per DRAIN_FLAG_MS), and each ends
when the list is empty.

Nothing here is durable, and need not be: the ledger row is, and campaigns.message_sweeper
finds every due `created` message no live lease covers, counting this list's length as it
counts the transactional queue's (a message may be waiting here), and enqueues it again
(one task each: recovery is rare). Redis down at the push, a drain task lost, a drain killed
after its pop: the message is found after the grace. The sweeper also starts a drain when
the list holds messages and no flag is set (a drain task lost with the broker).

Without Redis (the demo's SQLite and file-system broker) each message is its own task, as
before.
"""

import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import redis
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerUnavailable
from redis.commands.core import Script

from infra.redis_client import (
    redis_client,
    redis_thread_client,
    redis_thread_client_drop,
    script_run,
)
from infra.tasks import task_enqueue_on_commit, task_named

logger = logging.getLogger(__name__)

READY_KEY = "messages:ready"
DRAIN_FLAG_KEY = "messages:drain"
DELIVER_MESSAGE = "campaigns.tasks.deliver_message"
DELIVER_READY = "campaigns.tasks.deliver_ready"
# A drain enqueued is trusted this long to see what is pushed meanwhile; past it, the next
# push enqueues another (a drain falling behind gets help; a lost one is replaced). A drain
# that keeps up sets it again at each pop.
DRAIN_FLAG_MS = 1000
# Messages popped at once: a few SES calls' worth of each stream, so one pop's batch pays
# the campaign read and the lease once for many messages.
DRAIN_POP = 200
# After a pop of fewer than DRAIN_FILL messages a drain waits this long before the next, so
# that more arrive meanwhile: each batch's fixed cost (campaign read, lease, claim, record,
# a call to SES) is then shared by more messages. A drain faster than the web otherwise pops
# one or two at a time. The first pop does not wait: an idle stream's message goes at once.
DRAIN_LINGER_SECONDS = 0.05
DRAIN_FILL = 50
# A drain hands its loop to a new task after this long, far inside the task's time limit.
DRAIN_MAX_SECONDS = 60.0
# Redis answers in µs: this only bounds a hung server (the push then gives up: the sweeper
# sends the message after the grace).
REDIS_TIMEOUT_SECONDS = 2.0


def _client() -> redis.Redis | None:
    return redis_client(timeout=REDIS_TIMEOUT_SECONDS)


def message_ready_on_commit(*, stream_id: int, message_id: int) -> None:
    """Hand a message to the worker once the current transaction commits (at once outside
    one): onto the ready list with Redis, else as a task of its own."""
    transaction.on_commit(lambda: messages_ready([(stream_id, message_id)]))


def messages_ready(messages: list[tuple[int, int]]) -> None:
    """Hand (stream id, message id) pairs already committed to the worker: onto the ready
    list in one push with Redis, else as a task each."""
    if _client() is None:
        for message in messages:
            task_enqueue_on_commit(DELIVER_MESSAGE, message)
        return
    messages_push(messages)


# RPUSH, then SET the drain flag NX PX (after the push: see messages_drain); 1 if it was set.
# One EVALSHA on the thread's own connection, packed without redis-py's command machinery
# (infra.redis_client.script_run): a pipeline of the two commands on the shared pool, then
# redis-py's own EVALSHA, cost the web more (docs/PERFORMANCE.md, Integrations API).
_PUSH_LUA = b"""
redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
if redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""
_PUSH = Script(None, _PUSH_LUA)  # loaded on first use (or after a restart)
_PUSH_KEYS = [READY_KEY, DRAIN_FLAG_KEY]
# Items per script call at most (Lua's unpack has a stack limit).
_PUSH_CHUNK = 1000


def messages_push(messages: Iterable[tuple[int, int]]) -> bool:
    """RPUSH (stream id, message id) pairs and enqueue a drain unless one was enqueued within
    DRAIN_FLAG_MS; False (logged, ids only) if Redis could not take them: the committed
    messages are then the sweeper's, and the caller carries on (a 5xx after the commit would
    have its client send them again)."""
    items = [f"{stream_id}:{message_id}" for stream_id, message_id in messages]
    try:
        flagged = False
        for start in range(0, len(items), _PUSH_CHUNK):
            flagged |= bool(_push([DRAIN_FLAG_MS, *items[start : start + _PUSH_CHUNK]]))
    except redis.RedisError as err:
        redis_thread_client_drop()
        logger.error(
            "messages not pushed to the ready list (%s): %s left to the sweeper, first %s",
            type(err).__name__, len(items), items[0],
        )  # fmt: skip
        return False
    if flagged:
        _drain_enqueue()
    return True


def _push(args: list):
    """_PUSH on this thread's connection; once more on a new one if that one was dropped
    (Redis restarted, or closed it idle): the thread's connection is only replaced after an
    error, and without this its first push after a restart failed and left the message to the
    sweeper's grace. A push that Redis took before the connection dropped is pushed twice,
    which sends nothing twice: a drain claims a message's ledger row once."""
    try:
        return script_run(redis_thread_client(_client()), _PUSH, _PUSH_KEYS, args)
    except redis.ConnectionError:
        redis_thread_client_drop()
    return script_run(redis_thread_client(_client()), _PUSH, _PUSH_KEYS, args)


def _drain_enqueue() -> None:
    try:
        task_named(DELIVER_READY).delay()
    except BrokerUnavailable as err:
        # The flag would hold back the next push's drain for DRAIN_FLAG_MS: let it go.
        logger.error("drain task not enqueued (%s)", type(err).__name__)
        with contextlib.suppress(redis.RedisError):  # else it expires by itself
            _client().delete(DRAIN_FLAG_KEY)


def ready_length() -> int | None:
    """Messages waiting on the ready list; 0 without Redis, None if Redis cannot tell."""
    client = _client()
    if client is None:
        return 0
    try:
        return client.llen(READY_KEY)
    except redis.RedisError as err:
        logger.info("ready list length unknown: %s", type(err).__name__)
        return None


def drain_kick() -> bool:
    """Enqueue a drain if the list holds messages and none was enqueued within DRAIN_FLAG_MS
    (the message sweeper: a drain task lost with the broker); True if it did."""
    client = _client()
    if client is None:
        return False
    try:
        if not client.llen(READY_KEY) or not client.set(
            DRAIN_FLAG_KEY, 1, nx=True, px=DRAIN_FLAG_MS
        ):
            return False
    except redis.RedisError:
        return False
    _drain_enqueue()
    return True


def messages_drain(
    *,
    deliver: Callable[[int, list[int]], None],
    defer: Callable[[int, list[int]], None],
) -> int:
    """Pop the ready list DRAIN_POP at a time and call deliver(stream id, sorted ids) for each
    stream's group, until the list is empty; returns how many messages it popped. Past
    DRAIN_MAX_SECONDS the rest of its pop goes to defer (a task each) and a new drain takes
    over, so a drain ends far inside its time limit (a limit met would kill it mid-hand-off).
    Ids popped and not yet claimed when the process dies stay `created`: the sweeper's
    (module docstring)."""
    client = _client()
    if client is None:
        return 0
    started = time.monotonic()
    popped = 0
    items = None
    while True:
        if items is not None and len(items) < DRAIN_FILL:
            time.sleep(DRAIN_LINGER_SECONDS)
        items = client.lpop(READY_KEY, DRAIN_POP)
        if not items:
            # The web pushes, then sets the flag: a push after this delete sets it and
            # enqueues a drain; one before it is seen by the second look, which keeps this
            # drain going only if no other was enqueued meanwhile.
            client.delete(DRAIN_FLAG_KEY)
            if client.llen(READY_KEY) and client.set(DRAIN_FLAG_KEY, 1, nx=True, px=DRAIN_FLAG_MS):
                continue
            return popped
        popped += len(items)
        if len(items) < DRAIN_POP:  # keeping up: no second drain to split the flow (above)
            client.set(DRAIN_FLAG_KEY, 1, px=DRAIN_FLAG_MS)
        groups: dict[int, list[int]] = {}
        for item in items:
            stream_id, message_id = item.split(b":")
            groups.setdefault(int(stream_id), []).append(int(message_id))
        for stream_id, ids in groups.items():
            if time.monotonic() - started > DRAIN_MAX_SECONDS:
                defer(stream_id, sorted(ids))
                continue
            try:
                deliver(stream_id, sorted(ids))
            except Exception:  # noqa: BLE001 (one stream's fault must not hold the others')
                # Its rows are as a killed batch leaves them: the sweeper's.
                logger.exception("drain: stream %s batch of %s failed", stream_id, len(ids))
        if time.monotonic() - started > DRAIN_MAX_SECONDS:
            _drain_enqueue()
            return popped

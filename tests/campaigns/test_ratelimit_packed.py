"""A limiter on a thread's own Redis connection (the API's) sends its EVALSHA packed once
(infra.redis_client.ScriptCall): the same answers as redis-py's own call, and what that call
does on the way: the script loaded again after Redis lost it, a dropped connection raised."""

import os
import uuid

import pytest
import redis

from campaigns.ratelimit import RateLimiter
from infra.redis_client import ScriptCall, redis_thread_client

REDIS_URL = os.environ.get("REDIS_URL", "")
pytestmark = pytest.mark.skipif(
    not REDIS_URL, reason="REDIS_URL is unset: run under scripts/with-services.sh (make test)"
)


@pytest.fixture
def shared() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


@pytest.fixture
def own(shared) -> redis.Redis:
    return redis_thread_client(shared)


def limiter(client: redis.Redis, name: str) -> RateLimiter:
    return RateLimiter(client, name=name, rate=1, burst=3)


def answers(limit: RateLimiter) -> list[bool]:
    return [limit.try_reserve(1) == 0.0 for _ in range(5)]


def test_a_thread_connection_answers_as_the_pool_does(shared, own):
    packed, pooled = limiter(own, f"p-{uuid.uuid4()}"), limiter(shared, f"q-{uuid.uuid4()}")
    assert answers(packed) == answers(pooled) == [True, True, True, False, False]
    assert isinstance(packed._packed, ScriptCall)  # the packed call answered those
    assert pooled._packed is None
    # A refusal says how long until a token: as the pool's.
    assert 0.5 < packed.try_reserve(1) <= 1.0


def test_the_script_is_loaded_again_after_redis_lost_it(shared, own):
    limit = limiter(own, f"p-{uuid.uuid4()}")
    assert limit.try_reserve(1) == 0.0
    shared.script_flush()
    assert limit.try_reserve(1) == 0.0  # NOSCRIPT: loaded, then answered
    assert shared.script_exists(limit._script.sha) == [True]


def test_a_dropped_connection_is_the_callers_error_and_the_next_call_reconnects(shared, own):
    """As redis-py's own call on these clients (no retry): the API's throttle then drops the
    thread's connections and lets requests through for a while (campaigns.api.throttling)."""
    limit = limiter(own, f"p-{uuid.uuid4()}")
    assert limit.try_reserve(1) == 0.0
    mine = own.client_id()
    shared.client_kill_filter(_id=mine)
    with pytest.raises(redis.ConnectionError):
        limit.try_reserve(1)
    assert limit.try_reserve(1) == 0.0  # connected again
    assert own.client_id() != mine

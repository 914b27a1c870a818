"""The API's rate limit: each key (or staff user's session) may make API_RATE_LIMIT_PER_SECOND
requests a second, API_RATE_LIMIT_BURST of them at once after a quiet spell; beyond, 429 with
Retry-After in the one error shape.

The count is shared by every web process through Redis: the send-rate limiter's GCRA
(campaigns.ratelimit), one EVALSHA a request on Redis's clock, under `ratelimit:api:<who>`.
The limit protects the service, it is not a promise to anyone: when Redis cannot be reached
the request goes through (a warning, ids only) rather than fail, and this process leaves
Redis alone for REDIS_RETRY_SECONDS, so a Redis that hangs costs one request in that spell its
timeout, not every request. Without Redis (the demo) there is no limit.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions, throttling

from campaigns.models import ApiKey
from campaigns.ratelimit import RateLimiter
from infra.redis_client import redis_client, redis_thread_client, redis_thread_client_drop

logger = logging.getLogger(__name__)

# Redis answers in well under a millisecond; a request waits at most this for a sick one.
REDIS_TIMEOUT_SECONDS = 0.25
# After a failure, this process lets requests through without asking Redis for this long.
REDIS_RETRY_SECONDS = 5.0

_lock = threading.Lock()
_redis_skip_until = 0.0  # time.monotonic()


class ApiRateThrottle(throttling.BaseThrottle):
    """DRF runs it after authentication and permissions: only a caller who may make the
    request counts against its limit (a refused key is answered before, for free)."""

    def allow_request(self, request, view) -> bool:
        who = _caller(request)
        if who is None:
            return True
        wait = api_rate_limit_take(who=who)
        if wait > 0:
            # Raised here rather than returned as False: DRF's own Throttled has another code.
            raise exceptions.Throttled(
                wait=max(1, math.ceil(wait)),  # Retry-After: whole seconds, never 0
                detail="Too many requests for this API key.",
                code="rate_limited",
            )
        return True


def _caller(request) -> str | None:
    if isinstance(request.auth, ApiKey):
        return f"key:{request.auth.pk}"
    user = request.user
    if user is not None and user.is_authenticated and user.pk is not None:
        return f"user:{user.pk}"
    return None


def api_rate_limit_take(*, who: str) -> float:
    """Count one request of `who`: 0.0 if it may go now, else the seconds until one may."""
    global _redis_skip_until
    rate, burst = _rate()
    if rate is None:
        return 0.0
    shared = redis_client(timeout=REDIS_TIMEOUT_SECONDS)
    if shared is None or time.monotonic() < _redis_skip_until:
        return 0.0
    try:
        return _limiter(redis_thread_client(shared), who, rate, burst).try_reserve(1)
    except redis.RedisError as err:
        redis_thread_client_drop()
        _limiters.__dict__.clear()  # bound to the dropped connection
        with _lock:
            _redis_skip_until = time.monotonic() + REDIS_RETRY_SECONDS
        # The class only: a message could carry the server's address.
        logger.warning(
            "api rate limit unavailable (%s): %s let through, no limit for %s s",
            type(err).__name__, who, REDIS_RETRY_SECONDS,
        )  # fmt: skip
        return 0.0


def _limiter(client: redis.Redis, who: str, rate: float, burst: float) -> RateLimiter:
    """This thread's limiter for `who` on its own connection (redis_thread_client: the shared
    pool's checks before each command cost a request more); made once, not per request."""
    limiters = _limiters.__dict__.setdefault("limiters", {})
    key = (id(client), who, rate, burst)
    limiter = limiters.get(key)
    if limiter is None:
        if len(limiters) >= _LIMITERS_MAX:
            limiters.clear()
        limiter = limiters[key] = RateLimiter(client, name=f"api:{who}", rate=rate, burst=burst)
    return limiter


_limiters = threading.local()
_LIMITERS_MAX = 1_000  # callers (keys, staff users) per thread; beyond, it starts afresh


def api_rate_limit_reset() -> None:
    """Ask Redis again from the next request on (tests that restart Redis)."""
    global _redis_skip_until
    with _lock:
        _redis_skip_until = 0.0


def _rate() -> tuple[float | None, float]:
    """(requests a second or None for no limit, burst) from the settings."""
    rate = float(getattr(settings, "API_RATE_LIMIT_PER_SECOND", 0) or 0)
    burst = float(getattr(settings, "API_RATE_LIMIT_BURST", 0) or 0)
    if rate < 0 or burst < 0:
        raise ImproperlyConfigured("API_RATE_LIMIT_PER_SECOND and _BURST must be >= 0.")
    if rate == 0:
        return None, 0.0
    return rate, burst or max(rate, 1.0)

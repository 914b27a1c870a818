"""One global send-rate limit for SES, shared by every worker process through Redis.

SES's MaxSendRate is per account and workers on several machines send, so each SES call first
reserves its recipients here (GCRA, on Redis's clock), then sleeps until its slot. Without
Redis (the demo) `ses_rate_limiter()` returns a per-process `LocalRateLimiter`: N worker
processes may then together send N times the rate.

Two lanes draw from that one limit: bulk (campaigns, jobs) and transactional (the API's
messages). Transactional mail is never starved by bulk: bulk books only slots close at hand
(BOOKING_HORIZON_SECONDS ahead), so the queue of promised slots stays short, and a
transactional call within its share (TRANSACTIONAL_RATE_SHARE of the rate) books past
that queue's end at once instead of waiting for a near slot. Both lanes book on the same
key, so every second stays within MaxSendRate exactly as with one lane (send_plan).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from infra.redis_client import ScriptCall, redis_client, redis_clients_reset, redis_url

logger = logging.getLogger(__name__)

# The fewest SES calls a second at full rate: a call carries at most 1/20 s of MaxSendRate.
CALLS_PER_SECOND_MIN = 20
# A limiter made without a burst tolerates 0.1 s of its rate at once (at least one token).
DEFAULT_BURST_SECONDS = 0.1
# SendBulkEmail takes up to 50 destinations: the most recipients one call carries.
SES_BULK_MAX_RECIPIENTS = 50
# A slot used more than this late is given up for a fresh one (at most LATE_RETRIES times):
# calls reach SES at their slot times, not bunched after a scheduling delay.
LATE_TOLERANCE_SECONDS = 0.05
LATE_RETRIES = 3
# Used when GetAccount fails: 1/s is the SES sandbox's rate, the lowest any account has.
FALLBACK_MAX_SEND_RATE = 1.0
# GetAccount's answer is shared through Redis for 5 minutes (quota raises are rare and take
# effect within that); a failure is remembered for 30 s so the workers' calls never hammer it.
RATE_CACHE_SECONDS = 300
RATE_FAILURE_CACHE_SECONDS = 30
# Each process re-reads the rate (one Redis GET) at most every 30 s, so the per-call cost
# stays at the one EVALSHA.
RATE_REFRESH_SECONDS = 30.0
# Campaigns pace at 95% of MaxSendRate; the other 5% is the headroom that bursts come out of
# (see ses_send_plan), so no second ever carries more than MaxSendRate recipients. Django's own
# mail on the same account and network jitter that bunches calls on the way to SES fit there
# too. A throttled call costs a short wait and a retry; 5% headroom costs 5% of throughput.
DEFAULT_SEND_RATE_FRACTION = 0.95
# Lanes: who sends (campaigns.delivery picks one by the campaign's kind).
BULK, TRANSACTIONAL = "bulk", "transactional"
# The farthest ahead a caller without priority books a slot: one whose slot would come later
# takes nothing and asks again when it is this close (a poll, not a queue). So the slots
# promised ahead of a priority caller never exceed this much of the rate, whatever the number
# of bulk workers. Long enough that callers woken a little late still keep the pace full.
BOOKING_HORIZON_SECONDS = 0.25
# The shortest sleep between two such asks.
BOOKING_POLL_MIN_SECONDS = 0.01
# The transactional lane's priority share of the rate when the setting is absent.
DEFAULT_TRANSACTIONAL_RATE_SHARE = 0.2
# While a wait for a slot lasts, the caller's `on_wait` runs at least this often (a running
# batch keeps its lease alive meanwhile).
ON_WAIT_INTERVAL_SECONDS = 1.0

# GCRA (the generic cell rate algorithm: a token bucket written as one timestamp). The state is
# one number, the theoretical arrival time (TAT): the instant at which every reservation made so
# far is paid for at `rate`. Reserving n tokens at `now`:
#     tat     = max(TAT, now) + n / rate        (stored)
#     send at = tat - burst / rate              (wait = max(0, send at - now))
# A TAT ahead of `now` is the queue of promised slots, handed out in order; the recipients sent
# in any window [a, a + w] never exceed rate * w + max(burst, n); n may exceed burst (the caller
# waits longer), and an idle key equals a missing one. Why GCRA: docs/ARCHITECTURE.md.
# Time is Redis's (TIME inside the script), so the workers' clocks do not matter. Needs
# Redis >= 5 (scripts replicate their effects; 3.2-4.x are asked to). Waits are timed and slept
# on a `Clock`; tests give a fake one, which is then also handed to the script in place of TIME.
#
# KEYS[1]: TAT in µs of Redis server time. ARGV: n, rate (tokens/s), burst (tokens), max wait
# (µs; negative: no limit), now (µs; from tests only, in place of Redis's TIME; "" otherwise),
# horizon (µs; negative: none), share rate (tokens/s; 0: no priority), share burst (tokens).
# Returns {granted 1/0, wait µs, later 1/0}; a refused reservation writes nothing.
# Priority: a caller with a share also keeps KEYS[2], the TAT of a GCRA at the share's rate.
# A reservation that this share key admits at once (within its burst) is a priority one: it
# books on KEYS[1] however many slots are promised ahead of it. Any other finds at most
# `horizon` of them, or is refused with later = 1 and, in place of the wait, the time promised
# ahead (the caller asks again once it is near); so no more than the horizon's worth of slots
# (plus one call) is ever promised ahead of a priority caller. Every grant books on KEYS[1]
# alike: the window bound below holds for the lanes together.
# µs since 1970 (~1.8e15) stay exact in Lua's doubles (2^53 ~ 9e15); costs round up, so
# rounding never lets a reservation in early. A key lives until its TAT passes, plus 1 s.
_GCRA_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local n, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_wait, horizon = tonumber(ARGV[4]), tonumber(ARGV[6]) or -1
local share_rate, share_burst = tonumber(ARGV[7]) or 0, tonumber(ARGV[8]) or 0
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local ahead = tat - now
tat = tat + math.ceil(n * 1000000 / rate)
local wait = math.ceil(tat - now - burst * 1000000 / rate)
if wait < 0 then wait = 0 end
if max_wait >= 0 and wait > max_wait then return {0, wait, 0} end
local share_tat = nil
if share_rate > 0 then
  share_tat = tonumber(redis.call('GET', KEYS[2])) or now
  if share_tat < now then share_tat = now end
  share_tat = share_tat + math.ceil(n * 1000000 / share_rate)
  if share_tat - now - math.ceil(share_burst * 1000000 / share_rate) > 0 then share_tat = nil end
end
if horizon >= 0 and not share_tat and ahead > horizon then return {0, ahead, 1} end
local ttl_ms = math.ceil((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl_ms))
if share_tat then
  ttl_ms = math.ceil((share_tat - now) / 1000) + 1000
  redis.call('SET', KEYS[2], string.format('%.0f', share_tat), 'PX', string.format('%.0f', ttl_ms))
end
return {1, wait, 0}
"""


class RateLimitUnavailable(Exception):
    """The shared limiter's Redis cannot be reached: no slot was taken."""


class Clock(Protocol):
    """Where a limiter reads the time and sleeps: seconds that only ever go forward."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The process's own clock (time.monotonic, time.sleep)."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


MONOTONIC_CLOCK = MonotonicClock()


class BaseRateLimiter:
    """Reservations of tokens (here: recipients) at `rate` per second with `burst` tolerance.

    `horizon` (seconds; None: none): a reservation that finds slots promised further ahead
    than that takes nothing and is asked again once they end that near, unless `share` (a
    fraction of the rate) makes it a priority one: within a GCRA of its own at share × rate
    (burst share × burst, at least one token), it books at once, past the slots already
    promised (module docstring).
    Limiters of one name with different horizons and shares draw from the same limit.
    """

    def __init__(
        self,
        *,
        name: str,
        rate: float,
        burst: float | None = None,
        clock: Clock = MONOTONIC_CLOCK,
        horizon: float | None = None,
        share: float = 0.0,
    ) -> None:
        self.name = name
        self.clock = clock
        if horizon is not None and horizon < 0:
            raise ValueError(f"horizon must be >= 0, not {horizon!r}")
        if not 0 <= share <= 1:
            raise ValueError(f"share must be in [0, 1], not {share!r}")
        self.horizon = horizon
        self.share = float(share)
        self.configure(rate=rate, burst=burst)

    def configure(self, *, rate: float, burst: float | None = None) -> None:
        """Change the rate; slots already handed out stay as they are."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0, not {rate!r}")
        burst = max(rate * DEFAULT_BURST_SECONDS, 1.0) if burst is None else burst
        if not burst > 0:
            raise ValueError(f"burst must be > 0, not {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.share_rate = self.rate * self.share
        self.share_burst = max(1.0, self.burst * self.share) if self.share else 0.0

    def reserve(self, n: int) -> float:
        """Take n tokens now; the seconds to wait before using them (0.0: use them now).

        Always granted: a large n, or many callers ahead, just means a longer wait (the
        horizon is acquire's: this books however far ahead the slots reach).
        """
        _, wait, _ = self._reserve(_check(n), max_wait=None, horizon=None)
        return wait

    def try_reserve(self, n: int) -> float:
        """Take n tokens if they may be used now (0.0); else take nothing and return the
        seconds until they could be. For callers that refuse rather than wait (the API's
        429). The Redis limiter lets redis.RedisError through: the caller decides."""
        granted, wait, _ = self._reserve(_check(n), max_wait=0.0, horizon=None)
        return 0.0 if granted else max(wait, 1e-6)

    def acquire(
        self, n: int, *, timeout: float | None = None, on_wait: Callable[[], object] | None = None
    ) -> bool:
        """Reserve n tokens and sleep until they may be used. False, having taken nothing, if
        the wait would exceed `timeout` seconds (None: wait as long as it takes). `on_wait` is
        called at least every ON_WAIT_INTERVAL_SECONDS while the wait lasts.

        A timeout below (n - burst) / rate can never succeed: keep burst >= n.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0, not {timeout!r}")
        clock = self.clock
        deadline = None if timeout is None else clock.now() + timeout
        for _ in range(LATE_RETRIES + 1):
            while True:
                started = clock.now()
                max_wait = None if deadline is None else max(0.0, deadline - started)
                granted, wait, later = self._reserve(
                    _check(n), max_wait=max_wait, horizon=self.horizon
                )
                if not later:
                    break
                # Slots promised beyond the horizon: ask again once they end that near.
                ahead = wait
                _sleep(max(ahead - self.horizon, BOOKING_POLL_MIN_SECONDS), on_wait,
                       clock=clock)  # fmt: skip
            if not granted:
                return False
            _sleep(wait, on_wait, clock=clock)
            # Woken (or answered) much later than the slot: the process was not scheduled in
            # time. Sent now, this call would bunch with the next slots' calls (seen on a loaded
            # machine: docs/PERFORMANCE.md), so the stale slot is left unused and a fresh one
            # taken.
            if clock.now() - (started + wait) <= LATE_TOLERANCE_SECONDS:
                return True
        return True  # still late after a few tries: send rather than starve

    def _reserve(
        self, n: int, *, max_wait: float | None, horizon: float | None
    ) -> tuple[bool, float, bool]:
        """(granted, wait in seconds, later). Later: refused, the slots promised ahead reaching
        beyond `horizon` (and n not within the share); the second value is then how far
        ahead they reach."""
        raise NotImplementedError


def _sleep(seconds: float, on_wait: Callable[[], object] | None, *, clock: Clock) -> None:
    if on_wait is None:
        if seconds > 0:
            clock.sleep(seconds)
        return
    end = clock.now() + seconds
    while (left := end - clock.now()) > 0:
        clock.sleep(min(left, ON_WAIT_INTERVAL_SECONDS))
        if end - clock.now() > 0:
            on_wait()


def _check(n: int) -> int:
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n!r}")
    return n


class RateLimiter(BaseRateLimiter):
    """The limit shared by every process using the same Redis and name (key `ratelimit:<name>`).

    One round-trip per call (EVALSHA; redis-py loads the script on NOSCRIPT and retries).
    Slots are timed by Redis's clock, the one all machines share; a `clock` (tests only)
    replaces it, as well as the process's clock for the waits.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        name: str,
        rate: float,
        burst: float | None = None,
        clock: Clock | None = None,
        horizon: float | None = None,
        share: float = 0.0,
    ) -> None:
        super().__init__(
            name=name,
            rate=rate,
            burst=burst,
            clock=MONOTONIC_CLOCK if clock is None else clock,
            horizon=horizon,
            share=share,
        )
        self.key = f"ratelimit:{name}"
        self.share_key = f"ratelimit:{name}:priority"
        self._script = redis_client.register_script(_GCRA_LUA)
        self._script_clock = clock
        self._packed: ScriptCall | None = None

    def acquire(
        self, n: int, *, timeout: float | None = None, on_wait: Callable[[], object] | None = None
    ) -> bool:
        """As `BaseRateLimiter.acquire`; RateLimitUnavailable, having taken nothing, when
        Redis cannot be reached (the caller waits for it rather than send unpaced)."""
        try:
            return super().acquire(n, timeout=timeout, on_wait=on_wait)
        except redis.RedisError as err:
            # The class only: a message could carry the server's address.
            logger.warning("ratelimit %s unavailable: %s", self.name, type(err).__name__)
            raise RateLimitUnavailable(type(err).__name__) from None

    def _reserve(
        self, n: int, *, max_wait: float | None, horizon: float | None
    ) -> tuple[bool, float, bool]:
        if n == 0:
            return True, 0.0, False
        max_wait_us = -1 if max_wait is None else math.floor(max_wait * 1e6)
        now = "" if self._script_clock is None else round(self._script_clock.now() * 1e6)
        horizon_us = -1 if horizon is None else math.floor(horizon * 1e6)
        args = [n, self.rate, self.burst, max_wait_us, now, horizon_us]
        args += [self.share_rate, self.share_burst]
        granted, wait_us, later = self._call(args)
        return bool(granted), wait_us / 1e6, bool(later)

    def _call(self, args: list):
        """The script with `args`; on a thread's own connection, a call like the last one (the
        API's: one token, now or never) is sent as packed then (infra.redis_client.ScriptCall)."""
        keys = [self.key, self.share_key]
        client = self._script.registered_client
        if client.connection is None:  # a pool's client
            return self._script(keys=keys, args=args)
        if self._packed is None or self._packed.args != args:
            self._packed = ScriptCall(client, self._script, keys, args)
        return self._packed()


class LocalState:
    """A LocalRateLimiter's state, which limiters of one process may share (the two lanes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tat = 0.0  # seconds of the limiters' clock
        self.share_tat = 0.0


class LocalRateLimiter(BaseRateLimiter):
    """The same contract within one process (threads), for setups without Redis; limiters
    given one `state` draw from one limit, as RateLimiters of one name do."""

    def __init__(
        self,
        *,
        name: str,
        rate: float,
        burst: float | None = None,
        clock: Clock = MONOTONIC_CLOCK,
        horizon: float | None = None,
        share: float = 0.0,
        state: LocalState | None = None,
    ) -> None:
        super().__init__(
            name=name, rate=rate, burst=burst, clock=clock, horizon=horizon, share=share
        )
        self.state = LocalState() if state is None else state

    def _reserve(
        self, n: int, *, max_wait: float | None, horizon: float | None
    ) -> tuple[bool, float, bool]:
        state = self.state
        with state.lock:
            now = self.clock.now()
            start = max(state.tat, now)
            tat = start + n / self.rate
            # tat - now - burst / rate, summed so that an idle limiter's n <= burst waits
            # exactly 0 (the other order leaves ~1e-13 s, which a timeout of 0 refuses).
            wait = max(0.0, (start - now) + (n - self.burst) / self.rate)
            if max_wait is not None and wait > max_wait:
                return False, wait, False
            share_tat = None
            if self.share_rate > 0:
                share_start = max(state.share_tat, now)
                if (share_start - now) + (n - self.share_burst) / self.share_rate <= 0:
                    share_tat = share_start + n / self.share_rate
            if horizon is not None and share_tat is None and start - now > horizon:
                return False, start - now, True
            state.tat = tat
            if share_tat is not None:
                state.share_tat = share_tat
            return True, wait, False


# --- the SES limiter --------------------------------------------------------------------------


# Redis answers in µs: this only bounds a hung server (acquire then says False).
REDIS_TIMEOUT_SECONDS = 5.0


def _redis_client() -> redis.Redis | None:
    return redis_client(timeout=REDIS_TIMEOUT_SECONDS)


def _send_rate_fraction() -> float:
    fraction = float(getattr(settings, "SES_SEND_RATE_FRACTION", DEFAULT_SEND_RATE_FRACTION))
    if not 0 < fraction <= 1:
        raise ImproperlyConfigured(f"SES_SEND_RATE_FRACTION must be in (0, 1], not {fraction}.")
    return fraction


_local_rate: tuple[float, float] | None = None  # (MaxSendRate, monotonic expiry), no Redis


def ses_max_send_rate() -> float:
    """The account's MaxSendRate: the SES_MAX_SEND_RATE setting if > 0, else GetAccount's,
    shared through Redis for RATE_CACHE_SECONDS; FALLBACK_MAX_SEND_RATE if GetAccount fails."""
    global _local_rate
    override = float(getattr(settings, "SES_MAX_SEND_RATE", 0) or 0)
    if override > 0:
        return override
    client = _redis_client()
    key = f"ratelimit:ses-max-send-rate:{settings.AWS_SES_REGION}"
    if client is None:
        if _local_rate is not None and time.monotonic() < _local_rate[1]:
            return _local_rate[0]
    else:
        try:
            cached = client.get(key)
        except redis.RedisError:
            cached = None  # the limiter itself will report Redis; still answer a rate
        if cached is not None:
            return float(cached)

    rate, ttl = _get_account_max_send_rate()
    if client is None:
        _local_rate = (rate, time.monotonic() + ttl)
    else:
        with contextlib.suppress(redis.RedisError):  # uncached: asked again next time
            client.set(key, repr(rate), ex=ttl)
    return rate


def _get_account_max_send_rate() -> tuple[float, int]:
    """(MaxSendRate, seconds to cache it) from SES GetAccount, or the fallback. The reading is
    campaigns.quota's, shared with the pages that show the quota."""
    from campaigns.quota import ses_send_quota_read
    from campaigns.ses import SesError

    try:
        rate = ses_send_quota_read().max_send_rate
    except SesError as err:
        # The error code only: messages can carry the account id and the IAM principal.
        reason = err.code or type(err).__name__
        rate = 0.0
    else:
        reason = "no SendQuota.MaxSendRate"
    if rate > 0:
        logger.info("ses max send rate %s/s from GetAccount", rate)
        return rate, RATE_CACHE_SECONDS
    logger.warning(
        "ses GetAccount failed (%s): pacing at %s/s for %s s; set SES_MAX_SEND_RATE to skip it",
        reason, FALLBACK_MAX_SEND_RATE, RATE_FAILURE_CACHE_SECONDS,
    )  # fmt: skip
    return FALLBACK_MAX_SEND_RATE, RATE_FAILURE_CACHE_SECONDS


@dataclass(frozen=True)
class SendPlan:
    """How campaign sends are paced for one MaxSendRate (recipients per second)."""

    max_rate: float  # SES's MaxSendRate: no second may carry more
    rate: float  # the sustained pace
    burst: float  # recipients that may go at once after an idle spell
    group_size: int  # recipients per SES call (≤ 50)


def send_plan(*, max_rate: float, fraction: float) -> SendPlan:
    """The pace, burst and call size that keep every second within `max_rate`.

    GCRA lets `rate × w + burst` recipients through in any window of w seconds, so the burst
    comes out of the headroom `max_rate × (1 - fraction)` rather than on top of the pace (on
    top, the first second after an idle spell would carry more than max_rate), and where the
    headroom is smaller than one call, the pace gives way. A call carries at most 1/20 s of
    MaxSendRate (all 50 recipients from 1,000/s up; one below 40/s), so at the usual 95% one
    call fits in the headroom and the pace keeps its full share.
    """
    if not max_rate > 0:
        raise ValueError(f"max_rate must be > 0, not {max_rate!r}")
    group_size = max(1, min(SES_BULK_MAX_RECIPIENTS, math.floor(max_rate / CALLS_PER_SECOND_MIN)))
    burst = max(float(group_size), max_rate * (1 - fraction))
    rate = min(max_rate * fraction, max_rate - burst)
    if rate < max_rate / 2:  # below 2/s: one call every 1 / rate seconds at most
        rate = max_rate / 2
    return SendPlan(max_rate=max_rate, rate=rate, burst=burst, group_size=group_size)


def _transactional_share() -> float:
    share = float(getattr(settings, "TRANSACTIONAL_RATE_SHARE", DEFAULT_TRANSACTIONAL_RATE_SHARE))
    if not 0 <= share <= 1:
        raise ImproperlyConfigured(f"TRANSACTIONAL_RATE_SHARE must be in [0, 1], not {share}.")
    return share


def ses_send_plan() -> SendPlan:
    """The send plan for the account's MaxSendRate and SES_SEND_RATE_FRACTION."""
    return send_plan(max_rate=ses_max_send_rate(), fraction=_send_rate_fraction())


_lock = threading.Lock()
_limiters: dict[str, BaseRateLimiter] = {}
_limiter_url: str | None = None
_limiter_plan: SendPlan | None = None
_limiter_checked = 0.0


def ses_rate_limiter(lane: str = BULK) -> tuple[BaseRateLimiter, SendPlan]:
    """The process's limiter for one lane's SES sends (BULK or TRANSACTIONAL; both draw from
    one limit per Redis URL and region) and the plan they pace by, re-read every
    RATE_REFRESH_SECONDS. Shared through Redis when there is one, else per process."""
    global _limiter_url, _limiter_plan, _limiter_checked
    limiter, plan, now = _limiters.get(lane), _limiter_plan, time.monotonic()
    if limiter is not None and plan is not None and now - _limiter_checked < RATE_REFRESH_SECONDS:
        return limiter, plan
    if lane not in (BULK, TRANSACTIONAL):
        raise ValueError(f"unknown lane {lane!r}")
    with _lock:
        url = redis_url()
        plan = ses_send_plan()
        share = _transactional_share()
        if not _limiters or url != _limiter_url:
            # Per region: SES quotas are per account and region.
            name = f"ses-send:{settings.AWS_SES_REGION}"
            client = _redis_client()
            lanes = {BULK: 0.0, TRANSACTIONAL: share}
            if client is None:
                state = LocalState()
                made = {
                    lane: LocalRateLimiter(
                        name=name, rate=plan.rate, burst=plan.burst, state=state,
                        horizon=BOOKING_HORIZON_SECONDS, share=lane_share,
                    )
                    for lane, lane_share in lanes.items()
                }  # fmt: skip
            else:
                made = {
                    lane: RateLimiter(
                        client, name=name, rate=plan.rate, burst=plan.burst,
                        horizon=BOOKING_HORIZON_SECONDS, share=lane_share,
                    )
                    for lane, lane_share in lanes.items()
                }  # fmt: skip
            _limiters.clear()
            _limiters.update(made)
            _limiter_url = url
        else:
            for each in _limiters.values():
                each.configure(rate=plan.rate, burst=plan.burst)
        _limiter_plan, _limiter_checked = plan, now
        return _limiters[lane], plan


def ses_rate_limiter_reset() -> None:
    """Forget the process's limiter, clients and cached rate, and the GetAccount reading it
    came from (tests, changed settings)."""
    from campaigns.quota import ses_send_quota_forget

    global _limiter_url, _limiter_plan, _local_rate
    with _lock:
        _limiters.clear()
        _limiter_url, _limiter_plan, _local_rate = None, None, None
        redis_clients_reset()
    ses_send_quota_forget()

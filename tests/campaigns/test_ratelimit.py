"""The global SES rate limit: its maths on a fake clock (through real Redis and in process),
one real-time test of processes sharing a Redis limiter, and the rate read from SES."""

import bisect
import heapq
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
import uuid

import pytest
import redis

from campaigns import ratelimit
from campaigns.ratelimit import (
    LATE_RETRIES,
    ON_WAIT_INTERVAL_SECONDS,
    LocalRateLimiter,
    RateLimiter,
    RateLimitUnavailable,
    send_plan,
    ses_max_send_rate,
    ses_rate_limiter,
    ses_send_plan,
)

REDIS_URL = os.environ.get("REDIS_URL", "")
needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="REDIS_URL is unset: run under scripts/with-services.sh (make test)"
)
START = 1000.0  # the fake clock's first reading
US = 1e-6  # Redis's limiter counts in whole µs


class FakeClock:
    """A clock that moves only when slept on: waits cost no real time. `overruns` are added
    to the next sleeps (a process woken late)."""

    def __init__(self) -> None:
        self.time = START
        self.slept: list[float] = []
        self.overruns: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += seconds + (self.overruns.pop(0) if self.overruns else 0.0)


@pytest.fixture
def client():
    if not REDIS_URL:
        pytest.skip("REDIS_URL is unset: run under scripts/with-services.sh (make test)")
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def name(client):
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    client.delete(f"ratelimit:{name}")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(params=["redis", "local"])
def make_limiter(request, clock):
    """Both limiters on the fake clock: the Lua script and the Python code do the same maths."""
    if request.param == "local":
        return lambda **kwargs: LocalRateLimiter(name="local", clock=clock, **kwargs)
    client, name = request.getfixturevalue("client"), request.getfixturevalue("name")
    return lambda **kwargs: RateLimiter(client, name=name, clock=clock, **kwargs)


@pytest.fixture
def fresh_state(settings):
    """No limiter, client or rate cached from another test, before or after this one."""
    settings.SES_SEND_RATE_FRACTION = 1.0
    ratelimit.ses_rate_limiter_reset()
    if REDIS_URL:
        redis.Redis.from_url(REDIS_URL).delete(_rate_cache_key(settings))
    yield
    ratelimit.ses_rate_limiter_reset()
    if REDIS_URL:
        redis.Redis.from_url(REDIS_URL).delete(_rate_cache_key(settings))


def _rate_cache_key(settings) -> str:
    return f"ratelimit:ses-max-send-rate:{settings.AWS_SES_REGION}"


def _max_in_window(stamps: list[float], window: float = 1.0) -> int:
    """The most sends in any [t, t + window) starting at a send (where maxima start)."""
    stamps = sorted(stamps)
    return max(bisect.bisect_left(stamps, t + window) - i for i, t in enumerate(stamps))


def _assert_paced(stamps, *, n, rate, burst, duration):
    sent = len(stamps) * n
    peak = _max_in_window(stamps) * n
    assert peak <= rate + burst, f"{peak} recipients in one second (rate {rate}, burst {burst})"
    assert sent >= 0.8 * rate * duration, f"starved: {sent} in {duration} s at {rate}/s"


# --- several processes, real time -----------------------------------------------------------


def _hammer(url, name, rate, burst, n, duration, barrier, results):
    """One worker process: acquire n, note the time (the send), again, for `duration`."""
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(client, name=f"warm-{name}", rate=1e9)
    limiter.reserve(1)  # connection and script loaded before the start
    client.delete(limiter.key)
    limiter = RateLimiter(client, name=name, rate=rate, burst=burst)
    barrier.wait()
    stamps, end = [], time.monotonic() + duration
    while limiter.acquire(n):
        now = time.monotonic()  # system-wide clock: comparable across processes
        if now >= end:
            break
        stamps.append(now)
    results.put(stamps)


@needs_redis
@pytest.mark.slow
def test_processes_share_one_rate(client, name):
    """The one test on real time: 4 processes, each with its own Redis connection, together
    stay within one rate (the maths themselves are tested on the fake clock below)."""
    rate, burst, n, duration, workers = 2000.0, 200.0, 50, 2.0, 4
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with Django and threads
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    processes = [
        ctx.Process(
            target=_hammer, args=(REDIS_URL, name, rate, burst, n, duration, barrier, results)
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    per_worker = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    assert all(per_worker), "every process got slots"
    _assert_paced(sum(per_worker, []), n=n, rate=rate, burst=burst, duration=duration)


def test_unreachable_redis_takes_nothing_and_says_so(caplog):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = redis.Redis(port=port, socket_connect_timeout=1, retry=None)
    limiter = RateLimiter(client, name="nowhere", rate=10)
    with (
        caplog.at_level(logging.WARNING, logger="campaigns.ratelimit"),
        pytest.raises(RateLimitUnavailable),
    ):
        limiter.acquire(5, timeout=1)
    assert "ratelimit nowhere unavailable: ConnectionError" in caplog.text
    with pytest.raises(redis.ConnectionError):
        limiter.reserve(5)


# --- the maths, on a fake clock (both limiters) ---------------------------------------------


def _saturate(limiter, clock, *, n, callers, duration) -> list[list[float]]:
    """Callers that each reserve again the moment their last slot comes (what acquire does
    when woken on time), for `duration` seconds of the fake clock: each caller's send times."""
    due = [(START, caller) for caller in range(callers)]
    stamps: list[list[float]] = [[] for _ in range(callers)]
    while due:
        clock.time, caller = heapq.heappop(due)  # the earliest first: time only goes forward
        slot = clock.time + limiter.reserve(n)
        if slot < START + duration:
            stamps[caller].append(slot)
            heapq.heappush(due, (slot, caller))
    return stamps


def test_callers_share_one_rate_over_many_calls(make_limiter, clock):
    rate, burst, n, duration, callers = 2000.0, 200.0, 50, 10.0, 4
    limiter = make_limiter(rate=rate, burst=burst)
    per_caller = _saturate(limiter, clock, n=n, callers=callers, duration=duration)
    assert all(per_caller), "every caller got slots"
    stamps = sum(per_caller, [])
    _assert_paced(stamps, n=n, rate=rate, burst=burst, duration=duration)
    # On the fake clock, never starved: the rate throughout, plus the burst.
    assert rate * duration <= len(stamps) * n <= rate * duration + burst


def test_reservations_queue_in_order_and_n_may_exceed_burst(make_limiter):
    limiter = make_limiter(rate=100, burst=10)
    # 50 > burst 10: the first waits (50 - 10) / 100 = 0.4 s, the next one 0.5 s more.
    first, second = limiter.reserve(50), limiter.reserve(50)
    assert first == pytest.approx(0.4, abs=US)
    assert second == pytest.approx(0.9, abs=US)


def test_idle_redis_keys_expire(client, name, clock):
    limiter = RateLimiter(client, name=name, rate=100, burst=10, clock=clock)
    limiter.reserve(50)
    limiter.reserve(50)
    # Idle keys go: the TAT (1 s ahead of the last reservation) + 1 s, less Redis's own time.
    assert 1500 < client.pttl(limiter.key) <= 2000


def test_acquire_beyond_timeout_takes_nothing(make_limiter, clock):
    limiter = make_limiter(rate=100, burst=10)
    limiter.reserve(60)  # the next slot is 0.5 s away
    assert limiter.acquire(50, timeout=0.5) is False  # needs 1.0 s
    assert clock.slept == [], "a refusal does not sleep"
    # Had the refused 50 been taken, this would wait 0.51 + 0.5 s.
    assert limiter.reserve(1) == pytest.approx(0.51, abs=US)


def test_acquire_sleeps_until_the_slot(make_limiter, clock):
    limiter = make_limiter(rate=100, burst=10)
    assert limiter.acquire(10, timeout=0) is True  # within the burst: now
    assert clock.slept == []
    assert limiter.acquire(5, timeout=1) is True
    assert clock.slept == [pytest.approx(0.05, abs=US)]  # 5 / 100 s
    assert limiter.reserve(0) == 0.0


def test_on_wait_runs_every_interval_while_the_wait_lasts(make_limiter, clock):
    """A running batch keeps its lease alive through a long wait for its slot."""
    limiter = make_limiter(rate=4, burst=1)
    calls = []
    assert limiter.acquire(11, on_wait=lambda: calls.append(clock.now()))  # (11 - 1) / 4 s
    assert ON_WAIT_INTERVAL_SECONDS == 1.0
    assert clock.slept == [1.0, 1.0, 0.5]
    assert calls == [START + 1.0, START + 2.0], "none once the slot has come"
    calls.clear()
    assert limiter.acquire(3, on_wait=lambda: calls.append(clock.now()))
    assert clock.slept[3:] == [0.75] and calls == [], "a short wait: one sleep, no call"


def test_rate_change_applies_to_the_next_reservation(make_limiter):
    limiter = make_limiter(rate=100, burst=10)
    limiter.reserve(10)
    limiter.configure(rate=10, burst=1)
    # 10 @100/s + 1 @10/s - 1 @10/s
    assert limiter.reserve(1) == pytest.approx(0.1, abs=US)


def test_a_slot_used_late_is_given_up_for_a_fresh_one(make_limiter, clock):
    """Woken long after its slot (the process was not scheduled), a caller takes a new slot
    instead of sending late and bunching with the next callers' slots."""
    limiter = make_limiter(rate=10, burst=1)
    assert limiter.acquire(1)  # within the burst: no wait
    clock.overruns.append(0.3)  # the next wait overruns its slot by 0.3 s
    assert limiter.acquire(1)  # slot at +0.1 s, woken at +0.4 s: stale, re-reserved
    assert clock.now() == pytest.approx(START + 0.4)
    # A fresh slot was taken when it woke (its 0.1 s paid from +0.4 s on): the limiter's
    # clock is at +0.5 s. Used late, the stale slot would have left it at +0.2 s, and the
    # next callers' slots right behind a call that went out 0.3 s late (this would be 0).
    assert limiter.reserve(1) == pytest.approx(0.1, abs=US)


def test_a_caller_late_every_time_sends_rather_than_starves(make_limiter, clock):
    limiter = make_limiter(rate=10, burst=1)
    clock.overruns.extend([0.3] * (LATE_RETRIES + 1))
    assert limiter.acquire(2) is True  # each slot 0.1 s away, each woken 0.3 s late
    assert clock.slept == [pytest.approx(0.1, abs=US)] * (LATE_RETRIES + 1)


def test_a_timeout_passed_while_oversleeping_takes_no_fresh_slot(make_limiter, clock):
    limiter = make_limiter(rate=10, burst=1)
    clock.overruns.append(0.3)
    # The slot (0.1 s) fits the timeout; woken at +0.4 s, past it, no fresh one is taken.
    assert limiter.acquire(2, timeout=0.15) is False
    assert clock.slept == [pytest.approx(0.1, abs=US)]
    # Nothing more was taken: a fresh slot (0.2 s from +0.4 s on) would make this wait 0.2 s.
    assert limiter.reserve(1) == pytest.approx(0.0, abs=US)


# --- the in-process limiter ---------------------------------------------------------------


def test_local_limiter_hands_out_each_slot_once_across_threads(clock):
    """Threads racing for slots (the clock stands still): none lost, none given twice."""
    rate, threads, per_thread = 1000.0, 4, 2000
    limiter = LocalRateLimiter(name="local", rate=rate, burst=1, clock=clock)
    waits, lock, start = [], threading.Lock(), threading.Barrier(threads)

    def worker():
        start.wait()
        mine = [limiter.reserve(1) for _ in range(per_thread)]
        with lock:
            waits.extend(mine)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch mid-reservation, as they may under load
    try:
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(timeout=10)
    finally:
        sys.setswitchinterval(interval)
    expected = [k / rate for k in range(threads * per_thread)]  # the k-th slot, less the burst
    assert sorted(waits) == pytest.approx(expected, abs=US)


# --- the rate and the accessor ------------------------------------------------------------


def test_send_rate_override_skips_get_account(ses, settings, fresh_state):
    settings.SES_MAX_SEND_RATE = 500
    settings.SES_SEND_RATE_FRACTION = 0.9
    plan = ses_send_plan()
    assert (plan.max_rate, plan.rate, plan.group_size) == (500, pytest.approx(450), 25)
    assert "GetAccount" not in ses.stats()["calls"]


@needs_redis
def test_send_rate_from_get_account_cached_in_redis(ses, settings, fresh_state, client):
    settings.SES_MAX_SEND_RATE = 0
    assert ses_max_send_rate() == 1000.0  # seslocal's default MaxSendRate
    assert ses_max_send_rate() == 1000.0
    assert ses.stats()["calls"]["GetAccount"] == 1, "the second answer came from Redis"
    key = _rate_cache_key(settings)
    assert 0 < client.ttl(key) <= ratelimit.RATE_CACHE_SECONDS
    client.set(key, "700.0")  # what another process cached
    settings.SES_SEND_RATE_FRACTION = 0.5
    assert ses_send_plan().rate == 350.0  # the fraction applies on top of the cached quota


@needs_redis
def test_send_rate_falls_back_when_get_account_fails(
    settings, fresh_state, client, ses_unreachable, caplog
):
    settings.SES_MAX_SEND_RATE = 0
    with caplog.at_level(logging.WARNING, logger="campaigns.ratelimit"):
        assert ses_max_send_rate() == ratelimit.FALLBACK_MAX_SEND_RATE
    assert "ses GetAccount failed (EndpointConnectionError)" in caplog.text
    assert "127.0.0.1" not in caplog.text
    # Remembered briefly, so the failure is retried soon but not on every send.
    assert 0 < client.ttl(_rate_cache_key(settings)) <= ratelimit.RATE_FAILURE_CACHE_SECONDS


@needs_redis
def test_accessor_shares_redis_and_falls_back_to_process_memory(settings, fresh_state):
    settings.SES_MAX_SEND_RATE = 400
    settings.REDIS_URL = REDIS_URL
    limiter, plan = ses_rate_limiter()
    assert isinstance(limiter, RateLimiter)
    assert limiter.key == f"ratelimit:ses-send:{settings.AWS_SES_REGION}"
    # fresh_state's fraction is 1: the burst (one call of 20) comes off the pace.
    assert (limiter.rate, limiter.burst, plan.group_size) == (380, 20, 20)
    assert ses_rate_limiter()[0] is limiter

    ratelimit.ses_rate_limiter_reset()
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = "filesystem://"  # the demo
    local, plan = ses_rate_limiter()
    assert isinstance(local, LocalRateLimiter)
    assert local.acquire(plan.group_size, timeout=0) is True


# --- the send plan ----------------------------------------------------------------------


def _peak_of_a_saturated_send(plan, seconds: float = 6.0) -> tuple[int, float]:
    """Callers that always want the next call, through the limiter on a fake clock: the
    most recipients in any closed 1-second window, and the average rate."""
    clock = FakeClock()
    limiter = LocalRateLimiter(name="plan", rate=plan.rate, burst=plan.burst, clock=clock)
    stamps = []
    while clock.now() < START + seconds:
        assert limiter.acquire(plan.group_size)
        stamps.append(clock.now())
    peak, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamps[start] < stamp - 1.0 - 1e-9:
            start += 1
        peak = max(peak, (end - start + 1) * plan.group_size)
    return peak, len(stamps) * plan.group_size / seconds


@pytest.mark.parametrize("fraction", [0.95, 1.0, 0.5])
@pytest.mark.parametrize("max_rate", [1, 2, 14, 50, 100, 200, 999, 1000, 3000, 10000, 50000])
def test_no_second_ever_carries_more_than_max_send_rate(max_rate, fraction):
    """The burst comes out of the headroom, not on top of the pace (at 3,000/s the first
    second carried 3,150 recipients): in any window of a second, at most MaxSendRate."""
    plan = send_plan(max_rate=max_rate, fraction=fraction)
    peak, average = _peak_of_a_saturated_send(plan)
    assert peak <= max_rate
    assert 1 <= plan.group_size <= 50 and plan.burst >= plan.group_size
    assert average >= min(fraction, 0.9) * max_rate * 0.5  # (tiny rates give half at worst)
    if max_rate >= 1000 and fraction == 0.95:
        assert plan.group_size == 50 and plan.rate == pytest.approx(0.95 * max_rate)

"""The two lanes of the one SES limit (campaigns.ratelimit): bulk books only slots close at
hand, transactional within its share books past them; together still within MaxSendRate.

The maths on the fake clock of test_ratelimit (through real Redis and in process), and
the accessor the delivery code uses."""

import heapq
import uuid

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from campaigns import ratelimit
from campaigns.ratelimit import (
    BOOKING_HORIZON_SECONDS,
    BULK,
    TRANSACTIONAL,
    LocalRateLimiter,
    LocalState,
    RateLimiter,
    send_plan,
    ses_rate_limiter,
)
from tests.campaigns.test_ratelimit import REDIS_URL, START, US, FakeClock, _max_in_window

H = BOOKING_HORIZON_SECONDS


def _book(limiter, n: int) -> float | None:
    """What acquire asks of the limit: the wait, or None if told to ask again later."""
    granted, wait, later = limiter._reserve(n, max_wait=None, horizon=limiter.horizon)
    assert granted or later
    return None if later else wait


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(params=["redis", "local"])
def lanes(request, clock):
    """make(rate=, burst=, share=) → (bulk, transactional): two limiters of one limit, on
    the fake clock."""
    if request.param == "local":
        state = LocalState()

        def make(**kwargs):
            share = kwargs.pop("share", 0.2)
            return tuple(
                LocalRateLimiter(name="local", clock=clock, state=state, horizon=H,
                                 share=lane_share, **kwargs)
                for lane_share in (0.0, share)
            )  # fmt: skip

        return make
    if not REDIS_URL:
        pytest.skip("REDIS_URL is unset: run under scripts/with-services.sh (make test)")
    client, name = redis.Redis.from_url(REDIS_URL), f"test-{uuid.uuid4().hex[:12]}"
    yield_keys = [f"ratelimit:{name}", f"ratelimit:{name}:priority"]

    def make(**kwargs):
        share = kwargs.pop("share", 0.2)
        return tuple(
            RateLimiter(client, name=name, clock=clock, horizon=H, share=lane_share, **kwargs)
            for lane_share in (0.0, share)
        )

    request.addfinalizer(lambda: (client.delete(*yield_keys), client.close()))
    return make


def test_bulk_books_no_further_ahead_than_the_horizon(lanes):
    bulk, _ = lanes(rate=100, burst=10)
    waits = []
    while (wait := _book(bulk, 10)) is not None:
        waits.append(wait)
    # Each call costs 0.1 s; the first 10 are within the burst. Booked while what was promised
    # ahead reached no further than 0.25 s: 0.1, 0.2 ahead, then refused at 0.3.
    assert waits == [pytest.approx(w, abs=US) for w in (0.0, 0.1, 0.2)]
    # Refused: nothing taken, so the same answer again.
    assert _book(bulk, 10) is None
    granted, ahead, later = bulk._reserve(10, max_wait=None, horizon=H)
    assert (granted, later) == (False, True) and ahead == pytest.approx(0.3, abs=US)


def test_transactional_within_its_share_books_past_the_bulk_queue(lanes, clock):
    bulk, transactional = lanes(rate=100, burst=10, share=0.2)
    while _book(bulk, 10) is not None:
        pass
    # Promised ahead: 0.3 s. A transactional message books at once, right after them.
    wait = _book(transactional, 1)
    assert wait == pytest.approx(0.3 + 0.01 - 0.1, abs=US)  # ahead + its cost - the burst
    # Its share (20/s, burst 2): the second one at once too, the third is beyond it and
    # waits for the bulk queue to come near, as bulk does.
    assert _book(transactional, 1) is not None
    assert _book(transactional, 1) is None
    clock.time += 1 / 20  # the share's next token
    assert _book(transactional, 1) is not None


def test_acquire_polls_until_the_queue_is_near_and_then_takes_its_slot(lanes, clock):
    bulk, _ = lanes(rate=100, burst=10)
    while _book(bulk, 10) is not None:
        pass
    assert bulk.acquire(10, timeout=5)
    # Asked again when the 0.3 s ahead had come down to the horizon (0.05 s later), then
    # slept to its slot: sent at 0.3 s from the start, the rate's exact pace.
    assert clock.slept[0] == pytest.approx(0.3 - H, abs=US)
    assert clock.now() == pytest.approx(START + 0.3, abs=US)


def test_a_caller_beyond_the_timeout_is_refused_without_polling(lanes, clock):
    bulk, _ = lanes(rate=100, burst=10)
    while _book(bulk, 10) is not None:
        pass
    assert bulk.acquire(10, timeout=0.2) is False  # its slot is 0.3 s away
    assert clock.slept == []


def _run(bulk, transactional, *, plan, bulk_callers, message_every, duration):
    """Bulk callers that always want the next call, and one transactional message every
    `message_every` seconds (each its own caller), on the fake clock: what acquire does,
    event by event. Returns (bulk send times, [(arrival, send time)] of the messages)."""
    clock = bulk.clock
    due = [(START, "b", i) for i in range(bulk_callers)]
    if message_every:
        due += [
            (START + 0.5 + k * message_every, "t", k) for k in range(int(duration / message_every))
        ]
    heapq.heapify(due)
    arrivals = {}
    bulk_sends, messages = [], []
    while due:
        now, kind, caller = heapq.heappop(due)
        if now >= START + duration:
            continue
        clock.time = now
        limiter, n = (bulk, plan.group_size) if kind == "b" else (transactional, 1)
        arrivals.setdefault((kind, caller), now)
        granted, wait, later = limiter._reserve(n, max_wait=None, horizon=H)
        if later:
            heapq.heappush(due, (now + max(wait - H, 0.01), kind, caller))
            continue
        assert granted
        if kind == "b":
            bulk_sends.append(now + wait)
            heapq.heappush(due, (now + wait, kind, caller))  # wants the next call at once
        else:
            messages.append((arrivals[(kind, caller)], now + wait))
    return bulk_sends, messages


@pytest.mark.parametrize("max_rate", [14, 300, 1000])
def test_messages_keep_their_share_and_every_second_stays_within_max_send_rate(lanes, max_rate):
    """8 bulk workers saturate the limit; messages arrive at 90% of the transactional share.
    Each message is sent within the horizon plus one bulk call of arriving; bulk keeps the
    rest; no window of a second carries more than MaxSendRate."""
    plan = send_plan(max_rate=max_rate, fraction=0.95)
    share = 0.2
    bulk, transactional = lanes(rate=plan.rate, burst=plan.burst, share=share)
    duration = 8.0
    bulk_sends, messages = _run(
        bulk, transactional, plan=plan, bulk_callers=8,
        message_every=1 / (0.9 * share * plan.rate), duration=duration,
    )  # fmt: skip
    assert messages, "messages were sent"
    latency = max(sent - arrived for arrived, sent in messages)
    bound = H + plan.group_size / plan.rate + 2 / (share * plan.rate) + 1e-3
    assert latency <= bound, f"a message waited {latency:.3f} s (bound {bound:.3f})"
    recipients = sorted([*(t for t in bulk_sends for _ in range(plan.group_size)),
                         *(sent for _, sent in messages)])  # fmt: skip
    assert _max_in_window(recipients) <= max_rate
    bulk_rate = len(bulk_sends) * plan.group_size / duration
    assert bulk_rate >= (1 - share) * plan.rate * 0.85, f"bulk starved: {bulk_rate:.1f}/s"


@pytest.mark.parametrize("max_rate", [14, 200])
def test_without_bulk_messages_take_the_whole_rate(lanes, max_rate):
    plan = send_plan(max_rate=max_rate, fraction=0.95)
    bulk, transactional = lanes(rate=plan.rate, burst=plan.burst, share=0.2)
    duration = 5.0
    # A flood: more than the whole rate asks.
    _, messages = _run(
        bulk, transactional, plan=plan, bulk_callers=0,
        message_every=1 / (1.2 * plan.rate), duration=duration,
    )  # fmt: skip
    sent = [t for _, t in messages if t < START + duration]
    assert len(sent) / (duration - 0.5) >= 0.9 * plan.rate
    assert _max_in_window(sorted(t for _, t in messages)) <= max_rate


def test_fifo_without_the_share_makes_a_message_wait_behind_every_bulk_call(clock):
    """What the share is for: one limit without a horizon, 32 bulk workers at 300/s, a
    message waits behind the calls they all booked (here 32 × 15 / 285 ≈ 1.7 s)."""
    plan = send_plan(max_rate=300, fraction=0.95)
    fifo = LocalRateLimiter(name="fifo", rate=plan.rate, burst=plan.burst, clock=clock)
    for _ in range(32):
        fifo.reserve(plan.group_size)
    assert fifo.reserve(1) > 1.5
    state = LocalState()
    bulk, transactional = (
        LocalRateLimiter(name="lanes", rate=plan.rate, burst=plan.burst, clock=clock,
                         state=state, horizon=H, share=share)
        for share in (0.0, 0.2)
    )  # fmt: skip
    for _ in range(32):
        _book(bulk, plan.group_size)
    assert _book(transactional, 1) <= H + plan.group_size / plan.rate


def test_the_accessor_gives_each_lane_its_limiter_of_one_limit(settings):
    settings.SES_MAX_SEND_RATE = 100
    settings.TRANSACTIONAL_RATE_SHARE = 0.3
    ratelimit.ses_rate_limiter_reset()
    try:
        bulk, plan = ses_rate_limiter(BULK)
        transactional, same_plan = ses_rate_limiter(TRANSACTIONAL)
        assert plan == same_plan
        assert bulk.name == transactional.name
        assert (bulk.share, transactional.share) == (0.0, 0.3)
        assert bulk.horizon == transactional.horizon == H
        assert ses_rate_limiter()[0] is bulk
        settings.TRANSACTIONAL_RATE_SHARE = 1.5
        ratelimit.ses_rate_limiter_reset()
        with pytest.raises(ImproperlyConfigured):
            ses_rate_limiter(TRANSACTIONAL)
    finally:
        ratelimit.ses_rate_limiter_reset()

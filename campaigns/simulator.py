"""Test keys (`mw_test_…`): their messages go through every step but the call to SES.

A test key's messages belong to streams and jobs with `Campaign.test_mode` set. They are
checked, written to the ledger, claimed and rendered as live ones; then the simulated sender
(campaigns.senders.SimulatedSender) accepts each with a `simulated-<uuid>` id, without a
network call and without taking any of the shared SES rate (simulated_rate_limiter); and once
the batch has recorded them `sent`, tracking records the SES events SES's mailbox simulator
would have sent (tracking.ses_events.simulated, enqueued here by name: campaigns does not
import tracking). So a test message ends `delivered`, or, for the documented addresses:

- bounce@simulator.amazonses.com → `bounced` (a hard bounce),
- complaint@simulator.amazonses.com → `complained` (delivered, then a complaint),

(a `+label` before the @ is allowed, as SES allows it). Simulated events change nothing but
their own messages and their stream's counters: no contact is suppressed and no circuit
breaker pauses anything (docs/API.md, "Test keys").
"""

import secrets
import uuid
from datetime import UTC, datetime, timedelta

from campaigns.ratelimit import BaseRateLimiter, SendPlan
from infra.tasks import task_enqueue_on_commit

SIMULATED_PREFIX = "simulated-"
SIMULATED_EVENTS_TASK = "tracking.tasks.simulated_events_record"
SIMULATOR_DOMAIN = "simulator.amazonses.com"
# What a message to each documented address ends as; any other address: delivered.
DELIVERED, BOUNCED, COMPLAINED = "delivered", "bounced", "complained"
SIMULATED_OUTCOMES = {"bounce": BOUNCED, "complaint": COMPLAINED}
# Test messages take none of SES's rate: a call carries as many as a bulk call at most.
SIMULATED_PLAN = SendPlan(max_rate=1e6, rate=1e6, burst=1e6, group_size=50)


def simulated_message_id() -> str:
    """The id a simulated hand-off answers with (a valid SES message id, never SES's): a
    time-based UUID (its node random, not the machine's), so the events made for it later
    carry the moment it was accepted, the same every time they are made."""
    return f"{SIMULATED_PREFIX}{uuid.uuid1(node=secrets.randbits(48) | 1 << 40)}"


_UUID_EPOCH = datetime(1582, 10, 15, tzinfo=UTC)


def simulated_accepted_at(message_id: str) -> datetime | None:
    """When the simulator accepted the message with this id; None if it is not one of its."""
    if not message_id.startswith(SIMULATED_PREFIX):
        return None
    try:
        stamp = uuid.UUID(message_id.removeprefix(SIMULATED_PREFIX)).time
    except ValueError:
        return None
    return _UUID_EPOCH + timedelta(microseconds=stamp // 10)


def simulated_outcome(email: str) -> str:
    """How a test message to `email` ends: DELIVERED, BOUNCED or COMPLAINED."""
    local, _, domain = email.strip().lower().rpartition("@")
    if domain != SIMULATOR_DOMAIN:
        return DELIVERED
    return SIMULATED_OUTCOMES.get(local.partition("+")[0], DELIVERED)


class _Unlimited(BaseRateLimiter):
    """Every reservation granted at once: nothing is sent."""

    def _reserve(
        self, n: int, *, max_wait: float | None, horizon: float | None
    ) -> tuple[bool, float, bool]:
        return True, 0.0, False


_UNLIMITED = _Unlimited(name="simulated", rate=SIMULATED_PLAN.rate)


def simulated_rate_limiter() -> tuple[BaseRateLimiter, SendPlan]:
    """The limiter and plan a test-mode batch paces by: none (no SES rate read or taken)."""
    return _UNLIMITED, SIMULATED_PLAN


def simulated_events_enqueue(*, notification_ids: list[int]) -> None:
    """Have tracking record the simulated SES events of these messages, once the transaction
    that recorded them `sent` commits (at once outside one)."""
    if notification_ids:
        task_enqueue_on_commit(SIMULATED_EVENTS_TASK, (sorted(notification_ids),))

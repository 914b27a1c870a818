"""Which ledger outcomes the callbacks want recorded (campaigns.models.MessageOutcome).

tracking.callbacks writes the set (campaigns may not import tracking); the ledger asks for it
on every move to `sent`, `failed` or `unknown`, so the answer is cached per process for
OUTCOMES_CACHE_SECONDS: a send worker reads the row at most that often, and an endpoint made
or changed takes effect within that time (plus a fan-out pass).
"""

import threading
import time

from campaigns.models import Notification, OutcomeSubscription

N = Notification.Status

# The ledger statuses that are outcomes a callback reports (message.sent/failed/unknown).
OUTCOME_STATUSES = frozenset({str(N.SENT), str(N.FAILED), str(N.UNKNOWN)})
OUTCOMES_CACHE_SECONDS = 2.0

_lock = threading.Lock()
_cached: tuple[float, frozenset[str]] | None = None


def outcomes_wanted() -> frozenset[str]:
    """The outcome statuses some enabled endpoint wants (cached for OUTCOMES_CACHE_SECONDS)."""
    global _cached
    cached = _cached
    now = time.monotonic()
    if cached is not None and now - cached[0] < OUTCOMES_CACHE_SECONDS:
        return cached[1]
    statuses = (
        OutcomeSubscription.objects.filter(pk=1).values_list("statuses", flat=True).first() or []
    )
    wanted = frozenset(statuses) & OUTCOME_STATUSES
    with _lock:
        _cached = (now, wanted)
    return wanted


def outcomes_wanted_set(statuses: set[str]) -> None:
    """Store which outcomes are wanted (only if it changed: the fan-out calls it every pass),
    and forget this process's cached answer."""
    global _cached
    wanted = sorted(set(statuses) & OUTCOME_STATUSES)
    updated = (
        OutcomeSubscription.objects.filter(pk=1).exclude(statuses=wanted).update(statuses=wanted)
    )
    if not updated:
        OutcomeSubscription.objects.get_or_create(pk=1, defaults={"statuses": wanted})
    with _lock:
        _cached = None

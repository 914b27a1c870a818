"""The repeat cap: how often one message's pixel or link is recorded.

At most TRACKING_REPEAT_CAP hits per window are recorded per repeat key (`repeat_key`); the
rest are dropped and counted, and answered alike. The first hits of each window are always
kept, so unique counts and verdicts stay exact (why these keys: docs/REPORTS.md, Repeats).
Buffered, it is counted in Redis as hits are pushed (tracking.hits.buffer), shared by every
web process; direct, in this process's memory.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from django.conf import settings

from tracking.hits.classify import MACHINE, classify_hit

if TYPE_CHECKING:
    from tracking.hits.record import Hit

logger = logging.getLogger(__name__)

REPEAT = "repeat"  # over the cap of its key
FULL = "full"  # over a limit of the buffer (its length, its keys per window)


def repeat_cap() -> int:
    return max(1, settings.TRACKING_REPEAT_CAP)


def repeat_window_seconds() -> int:
    return max(1, settings.TRACKING_REPEAT_WINDOW_SECONDS)


def repeat_max_keys() -> int:
    """Distinct repeat keys counted per window (in Redis, or in a process's memory); a hit of
    a new key beyond them is dropped (FULL), so a flood of many tokens is bounded too."""
    return max(1, settings.TRACKING_BUFFER_MAX_HITS)


def repeat_window(at: float | None = None) -> int:
    """The number of the window `at` (Unix time, default now) falls in."""
    return int((time.time() if at is None else at) // repeat_window_seconds())


def repeat_key(hit: Hit) -> str:
    """The hit's repeat key: `<notification>:<o, or c and the link index>:<m or h>`, m when
    the request alone shows a machine (classify_hit without the send time). A scanner that
    looks like a browser shares the person's allowance: it would have to hit one link more than
    the cap within the window the person clicks it for the person's click to be dropped."""
    verdict = classify_hit(
        kind=hit.kind, method=hit.method, user_agent=hit.user_agent, ip=hit.ip,
        honeypot=hit.honeypot,
    )  # fmt: skip
    what = "o" if hit.index is None else f"c{hit.index}"
    return f"{hit.notification_id}:{what}:{'m' if verdict.verdict == MACHINE else 'h'}"


# --- the direct path's count, in this process ------------------------------------------------

_lock = threading.Lock()
_window = -1
_counts: dict[str, int] = {}


def repeat_allowed(key: str, *, at: float | None = None) -> bool:
    """Count a hit of `key` in this process; False (and counted as dropped) if its key already
    has the cap in this window, or the window already counts repeat_max_keys() keys."""
    global _window
    window = repeat_window(at)
    with _lock:
        if window != _window:
            _window = window
            _counts.clear()
        seen = _counts.get(key, 0)
        if seen >= repeat_cap():
            dropped = REPEAT
        elif not seen and len(_counts) >= repeat_max_keys():
            dropped = FULL
        else:
            _counts[key] = seen + 1
            return True
    repeats_dropped(**{dropped: 1})
    return False


# --- what was dropped ------------------------------------------------------------------------

_dropped = {REPEAT: 0, FULL: 0}
_logged_window = -1


def repeats_dropped(*, repeat: int = 0, full: int = 0) -> None:
    """Count hits dropped by this process (or by Redis for its pushes), and say so in the log
    at most once per window: a flood must not flood the log too."""
    global _logged_window
    if not (repeat or full):
        return
    window = repeat_window()
    with _lock:
        _dropped[REPEAT] += repeat
        _dropped[FULL] += full
        totals = dict(_dropped)
        log = window != _logged_window
        _logged_window = window
    if log:
        logger.warning(
            "tracking hits dropped: over the repeat cap (%d per %d s) or the buffer's limit; "
            "this process so far repeat=%d full=%d",
            repeat_cap(),
            repeat_window_seconds(),
            totals[REPEAT],
            totals[FULL],
        )


def repeats_dropped_counts() -> dict[str, int]:
    """Hits this process dropped since it started: {"repeat": n, "full": n}."""
    with _lock:
        return dict(_dropped)

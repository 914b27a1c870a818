"""The repeat cap: how often one message's pixel or link is recorded.

A pixel or link fetched over and over (an image proxy looping, a script: 2,859 opens of one
message within seconds were seen) is recorded at most TRACKING_REPEAT_CAP times per window of
TRACKING_REPEAT_WINDOW_SECONDS, per **repeat key**: the notification, what was hit (the pixel,
or link N), and whether the request alone already says machine (tracking.hits.classify without the
send time). Beyond the cap a hit is dropped and counted; the recipient gets the same pixel or
redirect either way.

Why these three:
- the notification: a flood of one token costs at most the cap in rows per window;
- each link apart: a scanner walking every link has each link's first click stored, which the
  all-links rule and the unique clicks per link need;
- machine or not: a prefetch (Apple Mail Privacy Protection, Safe Links, a HEAD probe) never
  uses up the allowance of the person's own open or click in the same window. A scanner that
  looks like a browser does share it: it would have to hit one link more than the cap within
  the minute the person clicks it for the person's click to be dropped.

The first hits of each key in each window are always stored, so unique counts, first
engagements and verdicts are exact; totals (opens, clicks) count at most the cap per key and
window. Where it is counted: buffered (TRACKING_BUFFER), in Redis as the hits are pushed
(tracking.hits.buffer), shared by every web process; direct, in this process's memory (each process
stores at most the cap). Drops are counted per process (`repeats_dropped_counts`, logged at
most once per window) and, buffered, for all processes in Redis (tracking.hits.buffer.DROPPED).
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
    the request alone shows a machine."""
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

"""The SES account's send quota, as GetAccount reports it, for the pages that show it (the
pre-send review, the dashboard)."""

from __future__ import annotations

import logging
import threading
import time

from campaigns.ses import SesError, ses_client
from campaigns.ses.calls import SendQuota

logger = logging.getLogger(__name__)

# A page shows the quota; SES counts SentLast24Hours as it sends, so a reading a few seconds old
# is as good as a new one, and two pages opened together make one call.
QUOTA_CACHE_SECONDS = 30
# An SES that did not answer is asked again sooner, but not on every page view (each failed
# call waits out the client's timeouts).
UNREACHABLE_CACHE_SECONDS = 10

_lock = threading.Lock()
# (the reading, or the SesError that stood for one, and its monotonic expiry)
_cached: tuple[SendQuota | SesError, float] | None = None


def ses_send_quota_read() -> SendQuota:
    """The account's SendQuota (Max24HourSend, MaxSendRate, SentLast24Hours) through the
    project's SES client, cached for QUOTA_CACHE_SECONDS in this process: the one GetAccount
    reading the pages and the rate limit's MaxSendRate (campaigns.ratelimit) share. Raises the
    SesError of a failed reading, itself kept for UNREACHABLE_CACHE_SECONDS."""
    global _cached
    with _lock:
        cached = _cached
    if cached is not None and time.monotonic() < cached[1]:
        reading = cached[0]
    else:
        try:
            reading = ses_client().send_quota()
            ttl = QUOTA_CACHE_SECONDS
        except SesError as err:
            # The code only: SES's messages can carry the account id and the IAM principal.
            logger.warning("SES send quota unavailable: %s", err.code or type(err).__name__)
            reading, ttl = err, UNREACHABLE_CACHE_SECONDS
        with _lock:
            _cached = (reading, time.monotonic() + ttl)
    if isinstance(reading, SesError):
        raise reading.with_traceback(None)
    return reading


def ses_send_quota() -> SendQuota | None:
    """ses_send_quota_read's SendQuota, or None when SES cannot be reached or gives none."""
    try:
        return ses_send_quota_read()
    except SesError:
        return None


def ses_send_quota_forget() -> None:
    """Drop the cached reading (tests; after the endpoint changes)."""
    global _cached
    with _lock:
        _cached = None


def quota_remaining(quota: SendQuota) -> float | None:
    """Messages the account may still send in the rolling 24 hours; None: no limit (-1)."""
    if quota.max_24_hour_send < 0:
        return None
    return max(0.0, quota.max_24_hour_send - quota.sent_last_24_hours)

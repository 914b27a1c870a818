"""Callbacks to integrators (tracking.callbacks, docs/API.md#callbacks)."""

from config.env import env_bool, env_int

# Callbacks go to public addresses only: an endpoint whose host resolves to a private,
# loopback or link-local address (localhost, 10.0.0.5, 169.254.169.254) is refused when saved
# and at each delivery. On only where integrators share the servers' private network.
CALLBACKS_ALLOW_PRIVATE_TARGETS = env_bool("CALLBACKS_ALLOW_PRIVATE_TARGETS", False)
# Each POST's read timeout (the connect timeout is at most 5 s).
CALLBACK_TIMEOUT_SECONDS = env_int("CALLBACK_TIMEOUT_SECONDS", 10, minimum=1)
# Posts in flight at once per delivery task (each endpoint has up to 4 tasks).
CALLBACK_CONCURRENCY = env_int("CALLBACK_CONCURRENCY", 8, minimum=1)
# A claimed delivery is due again after this long if its worker never answers (killed):
# above a claim's posts at their timeouts (100 rows / 8 at a time × 15 s: connect and read),
# so a slow receiver's rows are not claimed again while their posts are still in flight.
CALLBACK_LEASE_SECONDS = env_int("CALLBACK_LEASE_SECONDS", 300, minimum=1)
# The first retry after this many seconds, doubling to an hour apart.
CALLBACK_RETRY_BASE_SECONDS = env_int("CALLBACK_RETRY_BASE_SECONDS", 10, minimum=1)
# A delivery still refused this long after its event is marked failed.
CALLBACK_MAX_AGE_HOURS = env_int("CALLBACK_MAX_AGE_HOURS", 72, minimum=1)
# An endpoint whose every delivery failed for this long is disabled, with the reason.
CALLBACK_DISABLE_AFTER_HOURS = env_int("CALLBACK_DISABLE_AFTER_HOURS", 24, minimum=1)
# After a rotation, the old secret also signs for this long.
CALLBACK_SECRET_OVERLAP_HOURS = env_int("CALLBACK_SECRET_OVERLAP_HOURS", 24, minimum=0)
# The fan-out reads again the events of the last few seconds (an event's id is taken before
# its transaction commits); above the longest transaction that records events.
CALLBACK_FAN_OUT_GRACE_SECONDS = env_int("CALLBACK_FAN_OUT_GRACE_SECONDS", 5, minimum=0)

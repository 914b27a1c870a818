"""SES events in: SNS signature checks, pending-event retries, suppression, circuit breaker.

See docs/EVENTS.md for what each setting does in operation.
"""

from config.env import env_bool, env_int, env_list, env_str
from config.settings.celery import CELERY_BROKER_URL, REDIS_URL

# -- buffered intake (tracking.ses_events) -----------------------------------------------------
# On: a verified SNS notification's events are pushed to Redis and answered at once, and
# `manage.py flush_buffers` records them in batches (one INSERT per 500 events), far cheaper
# per event (docs/PERFORMANCE.md). Off (the default, tests, the demo): each is recorded during
# its request. Redis unreachable: recorded directly either way, nothing lost.
ESP_EVENTS_BUFFER = env_bool("ESP_EVENTS_BUFFER", False)
# The most events the buffer holds (queued and claimed): ~2 kB each, so 50,000 are ~100 MB of
# Redis at most; beyond it events are recorded during their request, as without the buffer.
ESP_EVENTS_BUFFER_MAX = env_int("ESP_EVENTS_BUFFER_MAX", 50_000, minimum=1)

# -- which SNS messages the webhook trusts (tracking.ses_events.sns) ---------------------------
# The SNS topics (comma-separated ARNs) whose messages the webhook accepts, subscription
# confirmations included: any AWS account's topic can subscribe any URL, validly signed by SNS.
# Required unless DEBUG: the web server refuses to start without it
# (tracking.ses_events.sns.sns_topics).
SNS_TOPIC_ARNS = env_list("SNS_TOPIC_ARNS", "")
# SNS retries an HTTPS delivery for 3,600 s at most (a hard limit), keeping the message's signed
# Timestamp: an hour and 5 minutes (clock skew, queueing) bounds a genuine retry; anything older
# is a replay. Five minutes ahead covers clock skew.
SNS_MESSAGE_MAX_AGE_SECONDS = env_int("SNS_MESSAGE_MAX_AGE_SECONDS", 3900)
SNS_MESSAGE_MAX_FUTURE_SECONDS = 300
# SNS signs a topic's messages with a certificate it serves from its region's endpoint,
# https://sns.<region>.amazonaws.com (…amazonaws.com.cn in China), under a path ending .pem: the
# only host trusted for a topic, the region taken from its pinned ARN. Compared with the whole
# host[:port]. Only tests change these (to a local server over http).
SNS_CERT_HOST = "sns.{region}.{dns_suffix}"
SNS_CERT_URL_SCHEMES = ("https",)
# A certificate fetch happens once per URL and process (then from the cache below): 3 s is far
# above a normal fetch and well inside SNS's 15 s delivery timeout.
SNS_CERT_FETCH_TIMEOUT_SECONDS = env_int("SNS_CERT_FETCH_TIMEOUT_SECONDS", 3)
# SNS certificates are valid for a year and rotate with a new URL: a day of caching is safe.
SNS_CERT_CACHE_SECONDS = env_int("SNS_CERT_CACHE_SECONDS", 86_400)
# The Django cache alias the certificates are shared through (one fetch for all processes).
SNS_CERT_CACHE = "sns"

# Django's own default cache is left as Django configures it (per-process memory); the "sns"
# alias is Redis when the installation has one (so every web process shares one fetch, and the
# event benchmark can hand its test certificate to the server under test), memory otherwise.
_redis_url = REDIS_URL or (CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else "")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    SNS_CERT_CACHE: (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _redis_url,
            "KEY_PREFIX": "mailwright",
            # A cache that does not answer in 1 s is skipped (the certificate is fetched).
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        }
        if _redis_url
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "sns"}
    ),
}

# -- events naming a message we have not recorded yet (tracking.ses_events) -------------------
# Retried with backoff (30 s doubling to 1 hour) by beat's `esp-events-retry-pending`; after
# this many hours the retries stop and the row stays, flagged "retries stopped", in the admin.
ESP_EVENT_PENDING_RETENTION_HOURS = env_int("ESP_EVENT_PENDING_RETENTION_HOURS", 72)
# …and this many hours after it arrived, beat's `esp-events-expire-pending` deletes it (logged by
# count): mostly events of mail another system sends through the same configuration set, which
# would otherwise pile up forever. Never before the retention above has passed.
ESP_EVENT_PENDING_EXPIRY_HOURS = env_int("ESP_EVENT_PENDING_EXPIRY_HOURS", 14 * 24)

# -- suppression -------------------------------------------------------------------------------
# Hard bounces and complaints suppress the contact at once. Soft bounces (SES Transient or
# Undetermined: mailbox full, message too large…) suppress it after this many within the window.
SOFT_BOUNCE_LIMIT = env_int("SOFT_BOUNCE_LIMIT", 3)
SOFT_BOUNCE_WINDOW_DAYS = env_int("SOFT_BOUNCE_WINDOW_DAYS", 30)

# -- circuit breaker ---------------------------------------------------------------------------
# A sending campaign is paused when, after at least CIRCUIT_BREAKER_MIN_SENT messages, its hard
# bounce rate exceeds 5% or its complaint rate 0.1%: SES reviews accounts above 5% / 0.1% and
# may suspend sending at 10% / 0.5%. Below the minimum sample a few bounces are noise.
CIRCUIT_BREAKER_MIN_SENT = env_int("CIRCUIT_BREAKER_MIN_SENT", 500)
CIRCUIT_BREAKER_BOUNCE_RATE = float(env_str("CIRCUIT_BREAKER_BOUNCE_RATE", "0.05"))
CIRCUIT_BREAKER_COMPLAINT_RATE = float(env_str("CIRCUIT_BREAKER_COMPLAINT_RATE", "0.001"))

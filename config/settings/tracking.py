"""Tracking: where the open pixel and click links in sent messages point."""

from config.env import env_bool, env_int, env_str

# Public base URL of this installation, as recipients' mail clients will reach it (no trailing
# slash). Baked into every sent message's links, so it must be right before the first send.
TRACKING_BASE_URL = env_str("TRACKING_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

# Buffered recording of opens and clicks (tracking.hits.buffer): each request pushes one record to
# Redis and the flusher (`manage.py flush_buffers`, one process beside the web processes)
# writes them in batches, instead of each request writing its own rows and counters. Needs
# Redis (REDIS_URL, or a redis:// CELERY_BROKER_URL); without it, or with this off, each
# request writes its own rows (the demo, the tests). Off by default: on in production.
TRACKING_BUFFER = env_bool("TRACKING_BUFFER", False)
# Each web process pushes its hits to Redis together, once per this many ms, instead of one
# round trip per request, which costs a request more than the rest of its work
# (docs/PERFORMANCE.md). The price: a
# web process killed hard (SIGKILL, out of memory) loses the hits of its last LINGER ms, ~10
# at 2,000/s (a normal stop or restart pushes them first). 0: each hit is in Redis before
# its answer is sent.
TRACKING_BUFFER_LINGER_MS = env_int("TRACKING_BUFFER_LINGER_MS", 5)
# The flusher's pause between passes: about how late an open shows in the report, and how
# full each batch is (0.5 s at 3,000 hits/s: ~1,500 hits a transaction).
TRACKING_FLUSH_INTERVAL_MS = env_int("TRACKING_FLUSH_INTERVAL_MS", 500)
# `manage.py flush_buffers` lowers its own CPU priority by this much (os.nice): recording
# is catch-up work, so on a machine it shares with the web server, requests come first and
# the buffer absorbs a burst, drained once it passes: a lower p99 for a slower drain
# (docs/decisions/0003-redis-buffers.md). 0 keeps the priority.
TRACKING_FLUSHER_NICE = env_int("TRACKING_FLUSHER_NICE", 10)
# A safety net: each web process checks the buffer every 5 s and flushes hits that waited
# more than 10 s (no flusher running, or it is far behind). Costly for web throughput while
# it works (it shares the GIL with requests), so it is not the flusher; off only if you
# monitor the flusher yourself.
TRACKING_FLUSH_IN_WEB = env_bool("TRACKING_FLUSH_IN_WEB", True)
# Floods (one message's pixel or link fetched over and over): per message, pixel or link, and
# machine-or-not as the request shows, at most TRACKING_REPEAT_CAP hits are stored per window
# of TRACKING_REPEAT_WINDOW_SECONDS; the rest are dropped and counted (tracking.hits.repeats). The
# first hits are always stored, so unique opens and clicks and their verdicts stay exact.
TRACKING_REPEAT_CAP = env_int("TRACKING_REPEAT_CAP", 5)
TRACKING_REPEAT_WINDOW_SECONDS = env_int("TRACKING_REPEAT_WINDOW_SECONDS", 60)
# The most hits the Redis buffer holds (~210 bytes each in Redis), and the most distinct
# repeat keys counted per window (~60 bytes each; two windows are kept). Beyond either, hits
# are dropped and counted, never refused with an error: the same Redis is Celery's broker
# and must not fill up.
TRACKING_BUFFER_MAX_HITS = env_int("TRACKING_BUFFER_MAX_HITS", 200_000)

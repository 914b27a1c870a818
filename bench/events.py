"""SES event intake benchmark: signed SNS notifications POSTed to a running server, measured.

    from bench import events
    events.measure(base_url="http://127.0.0.1:8000", n=5000)
    # → {"events_per_s": 2400.0, "lost_events": 0}

Call it from a Django-configured process using the same database and Redis as the server under
test (same DATABASE_URL, REDIS_URL or redis CELERY_BROKER_URL, ANYMAIL_WEBHOOK_SECRET). It:
  1. creates a campaign (status sending, `sent` counter n) with n sent notifications (bulk SQL);
  2. makes a test certificate (tests/sns_signing.py) under a fresh SigningCertURL
     https://sns.us-east-1.amazonaws.com/SimpleNotificationService-bench-<uuid>.pem and puts it
     in the SNS certificate cache (the Django cache alias SNS_CERT_CACHE, Redis: see
     config/settings/events.py). The server reads that cache before fetching anything, so it
     verifies the bench's signatures for real, while its URL rules stay those of production;
  3. signs n SNS Notifications (96% Delivery, 2% hard Bounce, 2% Open; one per notification);
  4. POSTs them with `concurrency` keep-alive connections, timing only this step;
  5. counts the campaign's Event rows: lost = posted − recorded (a non-2xx answer is lost).
     With a buffering server (ESP_EVENTS_BUFFER, flushed by `manage.py flush_buffers`) the
     rows come after the answers: it waits (up to `settle` seconds) until the count stops
     growing, and reports "recorded_per_s" (posting started → last row recorded) besides
     "events_per_s" (answers).

The server must have the sns cache on Redis; with per-process memory (no Redis configured) the
bench cannot hand it a certificate, and says so.

Standalone: `python bench/events.py --base-url http://127.0.0.1:8000 --n 5000`.
"""

import argparse
import base64
import http.client
import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import wrk  # noqa: E402

logger = logging.getLogger("bench.events")

WEBHOOK_PATH = "/webhooks/anymail/amazon_ses/tracking/"


def _django() -> None:
    from django.conf import settings

    if not settings.configured:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django

        django.setup()


def _check_shared_cache() -> None:
    from django.conf import settings
    from django.core.cache import caches

    backend = type(caches[settings.SNS_CERT_CACHE]).__name__
    if "Redis" not in backend:
        raise RuntimeError(
            f"the SNS certificate cache ({settings.SNS_CERT_CACHE!r}) is {backend}, not shared "
            "with the server: set REDIS_URL (or a redis:// CELERY_BROKER_URL) for both"
        )


def create_sent_campaign(n: int) -> tuple[int, list[tuple[str, str]]]:
    """A sending campaign with n sent notifications (bulk SQL); (campaign id, [(message id,
    recipient)])."""
    from django.db import connection, transaction

    from campaigns.counters import counters_add
    from campaigns.models import Campaign, ContactList
    from templates_app.models import Template

    tag = uuid.uuid4().hex[:10]
    with transaction.atomic():
        contact_list = ContactList.objects.create(name=f"bench-events-{tag}")
        template = Template.objects.create(name=f"bench-events-{tag}", subject="Hi", html="<p>Hi")
        campaign = Campaign.objects.create(
            name=f"bench-events-{tag}",
            template=template,
            contact_list=contact_list,
            from_email="bench@example.com",
            status=Campaign.Status.SENDING,
            recipient_count=n,
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO campaigns_contact (email, first_name, last_name, attributes, status, "
                "time_zone, created_at, updated_at) SELECT 'ev' || i || '.' || %s || "
                "'@bench.example', '', '', '{}'::jsonb, 'active', '', now(), now() "
                "FROM generate_series(1, %s) AS i",
                [tag, n],
            )
            cursor.execute(
                "INSERT INTO campaigns_notification (campaign_id, contact_id, status, "
                "message_id, reason, created_at, updated_at) "
                "SELECT %s, id, 'sent', 'bench-' || %s || '-' || id, '', now(), now() "
                "FROM campaigns_contact WHERE email LIKE %s",
                [campaign.pk, tag, f"%.{tag}@bench.example"],
            )
            cursor.execute(
                "SELECT n.message_id, c.email FROM campaigns_notification n "
                "JOIN campaigns_contact c ON c.id = n.contact_id WHERE n.campaign_id = %s "
                "ORDER BY n.id",
                [campaign.pk],
            )
            rows = cursor.fetchall()
        # As the delivery code would have: the circuit breaker reads `sent` from the counters.
        counters_add(campaign_id=campaign.pk, deltas={"sent": n})
    return campaign.pk, rows


def signed_bodies(rows: list[tuple[str, str]], signer) -> list[tuple[str, bytes]]:
    """(SNS MessageId, JSON body) per notification: 96% Delivery, 2% Bounce, 2% Open."""
    from tests.sns_signing import ses_sample

    bodies = []
    for i, (message_id, recipient) in enumerate(rows):
        sample = "bounce" if i % 50 == 0 else "open" if i % 50 == 25 else "delivery"
        record = ses_sample(sample, message_id=message_id, recipient=recipient)
        envelope = signer.notification(record)
        bodies.append((envelope["MessageId"], json.dumps(envelope).encode()))
    return bodies


def post_all(
    base_url: str, bodies: list[tuple[str, bytes]], *, concurrency: int, auth: str | None
) -> dict[int, int]:
    """POST every body with `concurrency` keep-alive connections; {status: count} (0 = no
    answer after 3 tries)."""
    url = urllib.parse.urlsplit(base_url)
    path = url.path.rstrip("/") + WEBHOOK_PATH
    work: queue.SimpleQueue = queue.SimpleQueue()
    for item in bodies:
        work.put(item)
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def worker() -> None:
        conn_class = (
            http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_class(url.hostname, url.port, timeout=30)
        seen: dict[int, int] = {}
        while True:
            try:
                sns_id, body = work.get_nowait()
            except queue.Empty:
                break
            headers = {
                "Content-Type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": "Notification",
                "x-amz-sns-message-id": sns_id,
            }
            if auth:
                headers["Authorization"] = auth
            status = 0
            for _ in range(3):
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()  # reconnects on the next request
            seen[status] = seen.get(status, 0) + 1
        conn.close()
        with lock:
            for status, count in seen.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


# wrk posts the bodies for a fixed time, each thread cycling through its own slice (thread k:
# bodies k, k + T, …), so every body is posted (several times, when the run is long enough:
# SNS redelivers too, and the intake must record each event once).
WRK_LUA = r"""
-- Each thread formats its share of the bodies once, in init(), and request() only hands the
-- next one out; no response() callback (it makes wrk build a Lua table of every answer's
-- headers): answers are counted from wrk's summary. The load generator shares the 2 cores
-- with the server it measures, so what it spends is taken from the figure.
local lines, threads, count = {}, {}, 0  -- count: threads set up (main state only)
for line in io.lines(os.getenv("EVENTS_BENCH_BODIES")) do lines[#lines + 1] = line end
local auth = os.getenv("EVENTS_BENCH_AUTH")
-- A pause before each request on a connection (ms), to pace the load below saturation (wrk
-- calls delay() only when the script defines it).
local pause = tonumber(os.getenv("EVENTS_BENCH_DELAY_MS") or "0") or 0
if pause > 0 then
  function delay() return pause end
end

function setup(thread)
  thread:set("index", count)
  count = count + 1
  table.insert(threads, thread)
end

function init(args)
  local stride = tonumber(os.getenv("EVENTS_BENCH_THREADS"))
  requests_ = {}
  for i = index + 1, #lines, stride do
    local id, body = lines[i]:match("^([^\t]*)\t(.*)$")
    local headers = {["Content-Type"] = "text/plain; charset=UTF-8",
                     ["x-amz-sns-message-type"] = "Notification",
                     ["x-amz-sns-message-id"] = id}
    if auth and auth ~= "" then headers["Authorization"] = auth end
    requests_[#requests_ + 1] = wrk.format("POST", WEBHOOK_PATH, headers, body)
  end
  next_ = 0
  slice_ = #requests_
  sent_ = 0
end

function request()
  next_ = next_ % #requests_ + 1
  sent_ = sent_ + 1
  return requests_[next_]
end

function done(summary, latency, requests)
  -- wrk counts an answer with a status above 399 as a status error; the webhook answers
  -- 200 or an error (it never redirects the benchmark's requests).
  -- distinct: the bodies sent at least once (a thread that ran past its slice repeats it).
  local e = summary.errors
  local distinct = 0
  for _, thread in ipairs(threads) do
    distinct = distinct + math.min(thread:get("sent_") or 0, thread:get("slice_") or 0)
  end
  io.write(string.format(
    'WRK {"ok": %d, "bad": %d, "duration_us": %d, "p99_us": %d, "distinct": %d}\n',
    summary.requests - e.status, e.status + e.connect + e.read + e.write + e.timeout,
    summary.duration, latency:percentile(99), distinct))
end
"""
WRK_THREADS = 2


def post_for(
    base_url: str,
    bodies: list[tuple[str, bytes]],
    *,
    seconds: float,
    concurrency: int,
    auth: str | None,
    delay_ms: float = 0,
) -> dict:
    """POST the bodies over and over for `seconds` with wrk (`concurrency` connections): a
    load generator in C, so a Python client's own CPU does not cap what is measured on a
    small machine; `delay_ms` before each request on a connection paces it (roughly
    concurrency × 1000 / delay_ms a second). {"ok": 2xx answers, "bad": others, "seconds",
    "p99_ms", "distinct": bodies sent at least once}."""
    with tempfile.TemporaryDirectory() as tmp:
        bodies_file = Path(tmp) / "bodies.tsv"
        bodies_file.write_bytes(
            b"".join(sid.encode() + b"\t" + body + b"\n" for sid, body in bodies)
        )
        script = Path(tmp) / "events.lua"
        script.write_text(WRK_LUA.replace("WEBHOOK_PATH", json.dumps(WEBHOOK_PATH)))
        stats = wrk(
            base_url,
            script,
            threads=WRK_THREADS,
            connections=max(WRK_THREADS, concurrency),
            seconds=seconds,
            timeout="10s",
            env={
                "EVENTS_BENCH_BODIES": str(bodies_file),
                "EVENTS_BENCH_AUTH": auth or "",
                "EVENTS_BENCH_THREADS": str(WRK_THREADS),
                "EVENTS_BENCH_DELAY_MS": str(delay_ms),
            },
        )
    return {
        "ok": stats["ok"],
        "bad": stats["bad"],
        "seconds": stats["duration_us"] / 1e6,
        "p99_ms": round(stats["p99_us"] / 1000, 2),
        "distinct": stats["distinct"],
    }


def _recorded_when_settled(campaign_id: int, n: int, settle: float) -> int:
    """The campaign's Event count once it reaches n, or once the events buffer is empty and
    the count has not grown for 2 s (a buffering server's flusher records after the answers,
    and may pause longer than that on a busy machine while records still wait), waiting at
    most `settle` seconds."""
    from django.db import connection

    from infra.queue import buffer_backlog
    from tracking.models import Event
    from tracking.ses_events.buffer import ESP_EVENTS_QUEUE

    deadline = time.monotonic() + settle
    last, last_change = -1, time.monotonic()
    while True:
        # The backlog before the count: a batch acknowledged after it was counted would
        # otherwise look recorded-and-gone while its events were never counted.
        empty = not any(buffer_backlog(queue=ESP_EVENTS_QUEUE).values())
        recorded = Event.objects.filter(notification__campaign_id=campaign_id).count()
        connection.close()
        now = time.monotonic()
        if recorded != last:
            last, last_change = recorded, now
        if recorded >= n or now > deadline:
            return recorded
        if now - last_change > 2 and empty:
            return recorded
        time.sleep(0.1)


def measure(
    n: int = 5000,
    *,
    base_url: str = "http://127.0.0.1:8000",
    concurrency: int = 8,
    settle: float = 60.0,
    seconds: float | None = None,
):
    """Intake throughput of the server at `base_url`: {"events_per_s", "recorded_per_s",
    "lost_events"}."""
    _django()
    _check_shared_cache()
    from django.conf import settings
    from django.db import connection

    from tests.sns_signing import TestSigner

    campaign_id, rows = create_sent_campaign(n)
    signer = TestSigner(
        cert_url="https://sns.us-east-1.amazonaws.com/"
        f"SimpleNotificationService-bench-{uuid.uuid4().hex}.pem"
    )
    signer.seed(timeout=3600)
    bodies = signed_bodies(rows, signer)
    secret = settings.ANYMAIL.get("WEBHOOK_SECRET")
    if isinstance(secret, list | tuple):
        secret = secret[0] if secret else None
    auth = "Basic " + base64.b64encode(secret.encode()).decode() if secret else None
    connection.close()  # no idle transaction held across the run

    started = time.perf_counter()
    if seconds and shutil.which("wrk"):
        run = post_for(base_url, bodies, seconds=seconds, concurrency=concurrency, auth=auth)
        statuses, elapsed, answered = {200: run["ok"], 0: run["bad"]}, run["seconds"], run["ok"]
        if answered < n:
            raise RuntimeError(f"only {answered} answers in {seconds} s for {n} events: raise it")
    else:
        statuses = post_all(base_url, bodies, concurrency=concurrency, auth=auth)
        elapsed = time.perf_counter() - started
        answered = n

    recorded = _recorded_when_settled(campaign_id, n, settle)
    until_recorded = time.perf_counter() - started  # to within 0.1 s when all were recorded
    logger.info(
        "events bench n=%s seconds=%.2f recorded_after=%.2f answers=%s recorded=%s",
        n,
        elapsed,
        until_recorded,
        statuses,
        recorded,
    )
    return {
        "events_per_s": round(answered / elapsed, 1),
        "recorded_per_s": round(recorded / until_recorded, 1),
        "lost_events": n - recorded,
        "answered": answered,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--seconds", type=float, default=None, help="post with wrk for this long (repeating)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = measure(
        args.n, base_url=args.base_url, concurrency=args.concurrency, seconds=args.seconds
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

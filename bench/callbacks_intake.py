"""Callbacks with the SES event intake: does the fan-out keep up with what comes in?

Runs on PostgreSQL and Redis (`make bench-callbacks CALLBACKS_WITH_INTAKE=1`, via
scripts/with-services.sh), everything at once on the same machine, for a fixed time:

  - the intake as docker-compose's `track` service runs it (granian, 2 workers of 1 thread,
    config.wsgi with its fast routes, the SES events buffered in Redis) with the flusher beside
    it (`manage.py flush_buffers`), driven by wrk POSTing signed SNS notifications (96%
    Delivery, 2% Bounce, 2% Open: bench/events.py's mix, as `make bench-tracking` drives it);
  - a Celery worker on the `callbacks` queue (--workers processes, as compose's
    `worker-callbacks`), beat's dispatch called every CALLBACK_POLL_SECONDS (2 s) from here,
    one endpoint subscribed to every message event, and the local receiver
    (bench/callback_receiver.py under granian, 1 worker of 8 threads) verifying each signature
    and keeping each event id's first arrival time;
  - probes: besides wrk's load, one notification every 0.1 s POSTed from here with its send
    time kept, for the end-to-end lag (event received → callback received).

Every 2 s it samples the backlog (events stored − callbacks delivered; and the outbox's
pending rows); after the window it stops the load and dispatches until every stored event's
callback is delivered (the drain), then checks: nothing missing, nothing twice.

Prints the intake's events/s (answers, as bench-tracking's events_per_s; and new events
stored), callbacks delivered/s in the same window, the backlog at the end of the warm-up (the
first fifth of the window) and at the end, its slope (events/s, a least-squares fit after the
warm-up: ≤ 0 keeps up, > 0 falls behind by that much a second), lag p50/p99 (probes: received
→ callback received; all events: stored → callback received), CPU per callback (worker,
receiver) and per event (web, flusher), the drain's time, answers to bodies wrk had already
sent (`repeated_answers`: a wrk thread that ran past its share; recorded once, as SNS's
redeliveries) and answered events never stored (`intake_lost`). The last line is JSON; it
exits 1 if a callback is missing, doubled or badly signed, or an answered event was lost.

The intake runs as fast as the server answers (wrk with 8 connections, as bench-tracking), so
on a small machine it takes the cores the callbacks would use; `--rate` (CALLBACKS_RATE) paces
it instead (wrk's delay() per connection: roughly, the rate reached is what is reported), to
ask whether the callbacks keep up with a given intake. The backlog counts what is stored: what
the web answered but the flusher has not stored yet is `unstored_end` (and the Redis buffer's
queue has its own slope, `intake_buffer_slope_per_s`); the probes' lag up to their stored row
is `probe_to_stored_p50_s`/`_p99_s` (the rest is the fan-out's and the POST's).

    make bench-callbacks CALLBACKS_WITH_INTAKE=1                       # 60 s
    make bench-callbacks CALLBACKS_WITH_INTAKE=1 CALLBACKS_SECONDS=15  # a quick look
    make bench-callbacks CALLBACKS_WITH_INTAKE=1 CALLBACKS_RATE=1000   # a paced intake
"""

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.callbacks import bench_endpoint, start, stop, wait_listening  # noqa: E402
from bench.common import (  # noqa: E402
    cpu_reference_ms,
    cpu_seconds,
    free_port,
    load_average,
    prepare_database,
    process_tree,
)

PROBE_INTERVAL = 0.1
SAMPLE_SECONDS = 2.0
WARM_UP_SHARE = 0.2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="the window under load")
    parser.add_argument("--workers", type=int, default=4, help="callbacks worker processes")
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="distinct signed notifications for wrk (default 3,000 a second of the window, or "
        "1.2 × --rate; "
        "past them wrk repeats bodies, which the intake records once: repeated_answers says)",
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=0,
        help="pace the intake near this many notifications a second (wrk's delay(); roughly: "
        "the rate reached is reported); 0: as fast as the server answers, as bench-tracking",
    )
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--drain-timeout", type=float, default=600)
    return parser.parse_args()


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def slope(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of (seconds, backlog) samples, per second."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_b = sum(b for _, b in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (b - mean_b) for t, b in samples)
    return cov / var if var else None


_SIGNER = None


def _sign_chunk(rows: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    from bench.events import signed_bodies

    return signed_bodies(rows, _SIGNER)


def sign_all(rows: list[tuple[str, str]], signer) -> list[tuple[str, bytes]]:
    """bench.events.signed_bodies over two processes (an RSA signature each, ~1 ms)."""
    global _SIGNER
    _SIGNER = signer
    step = max(1, len(rows) // 8)
    chunks = [rows[i : i + step] for i in range(0, len(rows), step)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return [body for chunk in pool.map(_sign_chunk, chunks) for body in chunk]


class Probes(threading.Thread):
    """One signed notification every PROBE_INTERVAL, its send time kept by SES message id."""

    def __init__(self, port: int, bodies: list[tuple[str, bytes]], ids: list[str], auth: str):
        super().__init__(daemon=True)
        self.port, self.bodies, self.ids, self.auth = port, bodies, ids, auth
        self.sent: dict[str, float] = {}
        self.failed = 0
        self.halt = threading.Event()

    def run(self) -> None:
        from bench.events import WEBHOOK_PATH

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        for message_id, (sns_id, body) in zip(self.ids, self.bodies, strict=True):
            if self.halt.is_set():
                break
            headers = {"Content-Type": "text/plain; charset=UTF-8",
                       "x-amz-sns-message-type": "Notification", "x-amz-sns-message-id": sns_id,
                       "Authorization": self.auth}  # fmt: skip
            sent = time.time()
            try:
                conn.request("POST", WEBHOOK_PATH, body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
                if answer.status == 200:
                    self.sent[message_id] = sent
                else:
                    self.failed += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                self.failed += 1
            self.halt.wait(max(0.0, PROBE_INTERVAL - (time.time() - sent)))
        conn.close()


class Beat(threading.Thread):
    """callbacks_dispatch every SAMPLE_SECONDS (as beat's schedule), and a backlog sample."""

    def __init__(self, campaign_id: int, endpoint_id: int, t0: float):
        super().__init__(daemon=True)
        self.campaign_id, self.endpoint_id, self.t0 = campaign_id, endpoint_id, t0
        # (s, backlog, outbox pending, answered but not stored: the intake's Redis buffer)
        self.samples: list[tuple[float, int, int, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from tracking import callbacks

        try:
            while not self.halt.is_set():
                began = time.monotonic()
                callbacks.callbacks_dispatch()
                self.samples.append((time.monotonic() - self.t0, *counts(self), buffered()))
                self.halt.wait(max(0.0, SAMPLE_SECONDS - (time.monotonic() - began)))
        finally:
            connection.close()


def buffered() -> int:
    """SES notifications answered and queued in the Redis buffer for the flusher (not those
    of the batch it is storing)."""
    from infra.queue import buffer_backlog
    from tracking.ses_events.buffer import ESP_EVENTS_QUEUE

    return buffer_backlog(queue=ESP_EVENTS_QUEUE)["queued"]


def counts(run) -> tuple[int, int]:
    """(events stored − callbacks delivered, outbox rows pending) for the bench's campaign."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM tracking_event e JOIN campaigns_notification n "
            "ON n.id = e.notification_id WHERE n.campaign_id = %s), "
            "(SELECT count(*) FILTER (WHERE status = 'delivered') FROM "
            "tracking_callbackdelivery WHERE endpoint_id = %s), "
            "(SELECT count(*) FILTER (WHERE status = 'pending') FROM "
            "tracking_callbackdelivery WHERE endpoint_id = %s)",
            [run.campaign_id, run.endpoint_id, run.endpoint_id],
        )
        stored, delivered, pending = cursor.fetchone()
    return stored - delivered, pending


def main() -> int:
    args = parse_args()
    reference = cpu_reference_ms()  # before any load: the core's speed at this hour
    for name, value in {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": "bench-callbacks-intake",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SSL_REDIRECT": "0",
        "ANYMAIL_WEBHOOK_SECRET": "bench:bench-webhook-secret",
        "SNS_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }.items():
        os.environ.setdefault(name, value)
    os.environ.update({"CALLBACKS_ALLOW_PRIVATE_TARGETS": "1", "LOG_LEVEL": "WARNING"})
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = os.environ["CELERY_BROKER_URL"]
    prepare_database()
    import django

    django.setup()
    import redis
    from django.db import connection
    from django.utils import timezone

    from bench.events import create_sent_campaign, post_for
    from bench.tracking import start_flusher, start_gunicorn
    from infra.queue import buffer_backlog
    from tests.sns_signing import TestSigner
    from tracking.models import CallbackDelivery, CallbackEndpoint, Event
    from tracking.ses_events.buffer import ESP_EVENTS_QUEUE

    n = args.events or max(2000, int(args.seconds * (args.rate * 1.2 if args.rate else 3000)))
    probe_n = int(args.seconds / PROBE_INTERVAL) + 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-callbacks-intake-"))
    key = f"bench-callbacks:{uuid.uuid4().hex[:8]}"
    receiver_port, web_port = free_port(), free_port()

    endpoint, _ = bench_endpoint(receiver_port)
    started = time.monotonic()
    campaign_id, rows = create_sent_campaign(n + probe_n)
    signer = TestSigner(
        cert_url="https://sns.us-east-1.amazonaws.com/"
        f"SimpleNotificationService-bench-{uuid.uuid4().hex}.pem"
    )
    signer.seed(timeout=3600)
    connection.close()  # not across the fork
    bodies = sign_all(rows, signer)
    load_bodies, probe_bodies = bodies[:n], bodies[n:]
    probe_ids = [message_id for message_id, _ in rows[n:]]
    print(f"{n:,} + {probe_n} probe notifications signed in {time.monotonic() - started:.1f} s",
          flush=True)  # fmt: skip
    secret = os.environ["ANYMAIL_WEBHOOK_SECRET"]
    auth = "Basic " + base64.b64encode(secret.encode()).decode()

    web_args = argparse.Namespace(
        server="granian", workers=2, worker_threads=1, app="fast", linger_ms=None
    )
    web = start_gunicorn(web_port, web_args, tmp / "web.log")
    flusher = start_flusher(tmp / "flusher.log")
    receiver_log = tmp / "receiver.log"
    receiver = start(
        [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
         "--port", str(receiver_port), "--workers", "1", "--blocking-threads", "8",
         "--log-level", "warning", "--no-access-log", "bench.callback_receiver:application"],
        {"BENCH_CALLBACK_SECRET": endpoint.secret, "BENCH_CALLBACK_KEY": key,
         "PYTHONPATH": str(ROOT)},
        receiver_log,
    )  # fmt: skip
    worker = start(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "callbacks",
         "--concurrency", str(args.workers), "--loglevel", "WARNING", "--without-gossip",
         "--without-mingle", "-n", f"bench-callbacks-intake-{os.getpid()}@%h"],
        {},
        tmp / "worker.log",
    )  # fmt: skip
    processes = {"web": web, "flusher": flusher, "worker": worker, "receiver": receiver}
    try:
        wait_listening(receiver_port, receiver, receiver_log)
        time.sleep(5)  # the worker's start
        cpu_before = {k: cpu_seconds(process_tree(p.pid)) for k, p in processes.items()}
        t0 = time.monotonic()
        beat = Beat(campaign_id, endpoint.pk, t0)
        probes = Probes(web_port, probe_bodies, probe_ids, auth)
        beat.start()
        probes.start()
        delay_ms = args.connections * 1000 / args.rate if args.rate else 0
        run = post_for(f"http://127.0.0.1:{web_port}", load_bodies, seconds=args.seconds,
                       concurrency=args.connections, auth=auth, delay_ms=delay_ms)  # fmt: skip
        # The window is wrk's run (its Lua formats the bodies first, seconds on a busy machine).
        window = run["seconds"]
        load_from = time.monotonic() - t0 - window
        wall1 = timezone.now()
        wall0 = wall1 - timedelta(seconds=window)
        probes.halt.set()
        probes.join()
        web_cpu = cpu_seconds(process_tree(web.pid)) - cpu_before["web"]
        end_backlog, end_pending = counts(beat)
        answered = run["ok"] + len(probes.sent)
        # Answered but not stored yet: in the Redis buffer, before the flusher.
        unstored_end = buffered()
        window_samples = list(beat.samples)
        print(f"window {window:.1f} s: {run['ok']:,} answers, backlog {end_backlog:,}, "
              f"outbox pending {end_pending:,}; draining", flush=True)  # fmt: skip

        # The drain: the buffer empty, every stored event's delivery made and answered.
        drain_started = time.monotonic()
        while True:
            time.sleep(1)
            empty = not any(buffer_backlog(queue=ESP_EVENTS_QUEUE).values())
            backlog, pending = counts(beat)
            if empty and backlog == 0 and pending == 0:
                break
            if time.monotonic() - drain_started > args.drain_timeout:
                raise RuntimeError(f"backlog {backlog} after {args.drain_timeout} s of drain")
        drain_s = time.monotonic() - drain_started
        beat.halt.set()
        beat.join()
        cpu = {k: cpu_seconds(process_tree(p.pid)) - cpu_before[k] for k, p in processes.items()}
    finally:
        for process in processes.values():
            stop(process)
        CallbackEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    posts = int(client.get(f"{key}:posts") or 0)
    bad = int(client.get(f"{key}:bad") or 0)
    arrived = {k.decode(): float(v) for k, v in client.hgetall(f"{key}:ids").items()}
    events = list(
        Event.objects.filter(notification__campaign_id=campaign_id).values_list(
            "pk", "created_at", "notification__message_id"
        )
    )
    ids = {f"evt_{pk}" for pk, _, _ in events}
    stored_lags = [arrived[f"evt_{pk}"] - at.timestamp() for pk, at, _ in events
                   if f"evt_{pk}" in arrived]  # fmt: skip
    probe_lags = [arrived[f"evt_{pk}"] - probes.sent[mid] for pk, _, mid in events
                  if mid in probes.sent and f"evt_{pk}" in arrived]  # fmt: skip
    # The probes' lag up to the event's row (the web, the buffer, the flusher): the rest is the
    # fan-out's and the callback's.
    probe_stored = [at.timestamp() - probes.sent[mid] for _, at, mid in events
                    if mid in probes.sent]  # fmt: skip
    deliveries = CallbackDelivery.objects.filter(endpoint=endpoint)
    delivered = deliveries.filter(status=CallbackDelivery.Status.DELIVERED).count()
    in_window = deliveries.filter(delivered_at__gte=wall0, delivered_at__lte=wall1).count()
    stored_in_window = Event.objects.filter(
        notification__campaign_id=campaign_id, created_at__gte=wall0, created_at__lte=wall1
    ).count()
    warm = load_from + window * WARM_UP_SHARE
    after_warm = [(t - load_from, b) for t, b, _, _ in window_samples if t >= warm]
    start_sample = after_warm[0] if after_warm else (0.0, 0)
    start_pending = next((p for t, _, p, _ in window_samples if t >= warm), 0)
    buffer_slope = slope([(t - load_from, q) for t, _, _, q in window_samples if t >= warm])
    result = {
        "seconds": round(window, 2),
        "workers": args.workers,
        "intake_events_per_s": round(run["ok"] / run["seconds"]),
        "intake_stored_per_s": round(stored_in_window / window),
        "callbacks_per_s": round(in_window / window),
        "backlog_start": start_sample[1],
        "backlog_start_at_s": round(start_sample[0], 1),
        "backlog_end": end_backlog,
        "backlog_slope_per_s": round(s, 1) if (s := slope(after_warm)) is not None else None,
        "unstored_end": unstored_end,
        "intake_buffer_slope_per_s": round(buffer_slope, 1) if buffer_slope is not None else None,
        "rate_asked": args.rate or None,
        "outbox_pending_start": start_pending,
        "outbox_pending_end": end_pending,
        "lag_p50_s": round(percentile(probe_lags, 0.5) or 0, 3) if probe_lags else None,
        "lag_p99_s": round(percentile(probe_lags, 0.99) or 0, 3) if probe_lags else None,
        "probes": len(probe_lags),
        "probe_to_stored_p50_s": round(percentile(probe_stored, 0.5), 3) if probe_stored else None,
        "probe_to_stored_p99_s": round(percentile(probe_stored, 0.99), 3) if probe_stored else None,
        "stored_lag_p50_s": round(percentile(stored_lags, 0.5), 3) if stored_lags else None,
        "stored_lag_p99_s": round(percentile(stored_lags, 0.99), 3) if stored_lags else None,
        "drain_s": round(drain_s, 1),
        "events_stored": len(events),
        "delivered": delivered,
        "posts": posts,
        "duplicates": posts - len(arrived),
        "missing": len(ids - arrived.keys()),
        "bad_signatures": bad,
        "intake_failed": run["bad"] + probes.failed,
        # Answers to bodies wrk had sent before (a thread that ran past its share of them):
        # the intake records an event once, as it does SNS's redeliveries.
        "repeated_answers": max(0, run["ok"] - run["distinct"]),
        # After the drain: distinct bodies answered but not stored, i.e. lost by the intake
        # (bodies wrk sent as it stopped may be unanswered: the answers bound them).
        "intake_lost": max(0, min(run["distinct"], run["ok"]) + len(probes.sent) - len(events)),
        "cpu_us_per_callback_worker": round(cpu["worker"] / delivered * 1e6) if delivered else None,
        "cpu_us_per_callback_receiver": round(cpu["receiver"] / delivered * 1e6)
        if delivered
        else None,
        "cpu_us_per_event_web": round(web_cpu / answered * 1e6),
        "cpu_us_per_event_flusher": round(cpu["flusher"] / len(events) * 1e6) if events else None,
        "load_average": load_average(),
    }
    print(
        f"intake {result['intake_events_per_s']:,} answers/s ({result['intake_stored_per_s']:,} "
        f"stored/s), callbacks {result['callbacks_per_s']:,}/s; backlog "
        f"{result['backlog_start']:,} → {result['backlog_end']:,} (slope "
        f"{result['backlog_slope_per_s']}/s); lag p50 {result['lag_p50_s']} s, p99 "
        f"{result['lag_p99_s']} s ({result['probes']} probes); drained in {drain_s:.1f} s; "
        f"duplicates {result['duplicates']}, missing {result['missing']}, bad signatures {bad}"
    )
    result["cpu_reference_ms"] = reference
    print(json.dumps(result))
    ok = result["missing"] == 0 and result["duplicates"] == 0 and bad == 0
    return 0 if ok and result["intake_failed"] == 0 and result["intake_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

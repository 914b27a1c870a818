"""Callbacks benchmark: N stored events fanned out and POSTed, signed, to a local receiver.

Runs on PostgreSQL and Redis (from `make bench-callbacks`, via scripts/with-services.sh):

  1. creates a sent campaign of N recipients and N tracking events on it (bulk SQL: 90%
     delivered, 5% opened, 5% clicked), as the intake would have stored them;
  2. starts the receiver (bench/callback_receiver.py under granian, 1 worker of 8 threads),
     which verifies every signature and counts posts and distinct event ids in Redis, and one
     endpoint subscribed to every message event;
  3. starts a Celery worker on the callbacks queue (--workers processes, as docker-compose's
     first worker takes it) and, as beat would, calls tracking.callbacks.callbacks_dispatch
     every CALLBACK_POLL_SECONDS (2 s) from here until every delivery is answered.

Prints the fan-out's rows/s (events → delivery rows), the time of a second pass over the
same events (what the grace's re-reading costs), callbacks_per_s (first dispatch → last
delivery recorded), the worker's and the receiver's CPU per 1,000 callbacks, duplicates
(posts − distinct ids) and bad signatures. The last line is JSON. Compare callbacks_per_s with
`make bench-tracking`'s events_per_s (the intake it must keep up with: docs/PERFORMANCE.md).

    make bench-callbacks                      # 50,000 events, 4 worker processes
    make bench-callbacks CALLBACKS_N=10000 CALLBACKS_WORKERS=2
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    cpu_reference_ms,
    cpu_seconds,
    free_port,
    load_average,
    prepare_database,
    process_tree,
)

ENV = {"CALLBACKS_ALLOW_PRIVATE_TARGETS": "1", "LOG_LEVEL": "WARNING"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="events")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--timeout", type=float, default=900)
    return parser.parse_args()


def create_events(n: int) -> int:
    """A sent campaign of n recipients, each with one event; the campaign's id."""
    from django.db import connection, transaction

    from bench.events import create_sent_campaign

    campaign_id, _rows = create_sent_campaign(n)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO campaigns_campaignlink (campaign_id, index, url) "
            "VALUES (%s, 0, 'https://shop.example.com/a') RETURNING id",
            [campaign_id],
        )
        (link_id,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO tracking_event (type, source, occurred_at, notification_id, link_id, "
            "user_agent, ip, description, verdict, verdict_reason, bounce_type, created_at) "
            "SELECT CASE WHEN n.id %% 20 = 0 THEN 'opened' WHEN n.id %% 20 = 1 THEN 'clicked' "
            "ELSE 'delivered' END, 'ses', now(), n.id, "
            "CASE WHEN n.id %% 20 = 1 THEN %s END, '', NULL, '', "
            "CASE WHEN n.id %% 20 IN (0, 1) THEN 'human' ELSE '' END, '', '', now() "
            "FROM campaigns_notification n WHERE n.campaign_id = %s",
            [link_id, campaign_id],
        )
    return campaign_id


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )  # fmt: skip


def wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the receiver did not start:\n{log.read_text()}") from None
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def bench_endpoint(port: int):
    """The run's one endpoint (every message event, to the local receiver on `port`), every
    other endpoint disabled, and the fan-out's mark past every event stored before: only this
    run's events are delivered. Made a minute ago, so outcomes are not held back for it.
    Returns the endpoint and the mark (the last event id stored before the run)."""
    from django.db import connection
    from django.utils import timezone

    from tracking import callbacks
    from tracking.models import CallbackEndpoint, CallbackMark

    CallbackEndpoint.objects.update(enabled=False)
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM tracking_event")
        (before,) = cursor.fetchone()
    CallbackMark.objects.update_or_create(pk=1, defaults={"event_id": before})
    endpoint = callbacks.endpoint_create(
        url=f"http://127.0.0.1:{port}/hooks/bench",
        event_types=[t for t in callbacks.EVENT_TYPES if t.startswith("message.")],
    )
    CallbackEndpoint.objects.filter(pk=endpoint.pk).update(
        created_at=timezone.now() - timedelta(minutes=1)
    )
    return endpoint, before


def main() -> int:
    args = parse_args()
    reference = cpu_reference_ms()  # before any load: the core's speed at this hour
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-callbacks")
    os.environ.update(ENV)
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = os.environ["CELERY_BROKER_URL"]
    prepare_database()
    import django

    django.setup()

    from tracking import callbacks
    from tracking.models import CallbackDelivery, CallbackEndpoint, CallbackMark

    tmp = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    key = f"bench-callbacks:{uuid.uuid4().hex[:8]}"
    port = free_port()
    endpoint, before = bench_endpoint(port)
    started = time.monotonic()
    create_events(args.n)
    print(f"{args.n:,} events stored in {time.monotonic() - started:.1f} s", flush=True)

    receiver_log = tmp / "receiver.log"
    receiver = start(
        [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--blocking-threads", "8",
         "--log-level", "warning", "--no-access-log", "bench.callback_receiver:application"],
        {"BENCH_CALLBACK_SECRET": endpoint.secret, "BENCH_CALLBACK_KEY": key,
         "PYTHONPATH": str(ROOT)},
        receiver_log,
    )  # fmt: skip
    worker_log = tmp / "worker.log"
    worker = start(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "callbacks",
         "--concurrency", str(args.workers), "--loglevel", "WARNING", "--without-gossip",
         "--without-mingle", "-n", f"bench-callbacks-{os.getpid()}@%h"],
        {},
        worker_log,
    )  # fmt: skip
    try:
        wait_listening(port, receiver, receiver_log)
        time.sleep(5)  # the worker's start (no readiness signal worth parsing here)
        pids = {"worker": process_tree(worker.pid), "receiver": process_tree(receiver.pid)}
        cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}

        t0 = time.monotonic()
        fanned = callbacks.callbacks_fan_out()
        # (the grace holds the mark at events younger than 5 s: a second pass may add none)
        fan_out_s = time.monotonic() - t0
        print(f"fan-out: {fanned:,} delivery rows in {fan_out_s:.2f} s", flush=True)
        # A pass over the same events again, all already queued (inserts nothing): what the
        # grace's re-reading costs, since each pass reads the last 5 s of events again.
        CallbackMark.objects.update(event_id=before)
        again = time.monotonic()
        callbacks.callbacks_fan_out()
        reread_s = time.monotonic() - again
        print(f"fan-out over the same events again: {reread_s:.2f} s", flush=True)
        pending = CallbackDelivery.objects.filter(endpoint=endpoint).exclude(
            status=CallbackDelivery.Status.DELIVERED
        )
        last = time.monotonic()
        while True:
            callbacks.callbacks_dispatch()
            left = pending.count()
            now = time.monotonic()
            if left == 0:
                break
            if now - t0 > args.timeout:
                raise RuntimeError(f"{left} deliveries left after {args.timeout} s")
            print(f"  {now - t0:6.1f} s: {left:,} left", flush=True)
            time.sleep(max(0.0, 2 - (time.monotonic() - last)))
            last = time.monotonic()
        elapsed = time.monotonic() - t0
        pids = {"worker": process_tree(worker.pid), "receiver": process_tree(receiver.pid)}
        cpu = {name: cpu_seconds(p) - cpu_before[name] for name, p in pids.items()}
    finally:
        stop(worker)
        stop(receiver)
        CallbackEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)

    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    posts = int(client.get(f"{key}:posts") or 0)
    distinct = client.hlen(f"{key}:ids")
    bad = int(client.get(f"{key}:bad") or 0)
    delivered = CallbackDelivery.objects.filter(
        endpoint=endpoint, status=CallbackDelivery.Status.DELIVERED
    ).count()
    result = {
        "events": args.n,
        "workers": args.workers,
        "fan_out_rows_per_s": round(fanned / fan_out_s) if fan_out_s else None,
        "fan_out_reread_s": round(reread_s, 3),
        "seconds": round(elapsed, 2),
        "callbacks_per_s": round(delivered / elapsed),
        "cpu_s_per_1000_worker": round(cpu["worker"] / delivered * 1000, 3),
        "cpu_s_per_1000_receiver": round(cpu["receiver"] / delivered * 1000, 3),
        "delivered": delivered,
        "posts": posts,
        "duplicates": posts - distinct,
        "missing": args.n - distinct,
        "bad_signatures": bad,
        "load_average": load_average(),
    }
    print(
        f"{delivered:,} callbacks in {elapsed:.1f} s: {result['callbacks_per_s']:,}/s "
        f"(worker {result['cpu_s_per_1000_worker']} CPU s per 1,000, receiver "
        f"{result['cpu_s_per_1000_receiver']}); duplicates {result['duplicates']}, missing "
        f"{result['missing']}, bad signatures {bad}"
    )
    result["cpu_reference_ms"] = reference
    print(json.dumps(result))
    return 0 if result["missing"] == 0 and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Tracking benchmark: opens and clicks through the web server and the whole stack, measured.

Runs on PostgreSQL and Redis (from `make bench-tracking`, via scripts/with-services.sh):
creates a sent campaign of N recipients with 3 links; starts granian as docker-compose's
`track` service runs it (2 workers of 1 thread serving config.wsgi,
tracking.hits.views.tracking_wsgi in front as config/wsgi.py applies it: --worker-threads 4 as the
`web` service runs it; --app django measures without the fast routes; --server gunicorn compares
with gunicorn, if installed) with the buffered write path on
(TRACKING_BUFFER=true) and the flusher beside it (`manage.py flush_buffers`); drives it with
wrk, a Lua script walking valid signed tokens (precomputed here: wrk's Lua has no HMAC) with a
mix of mail-client, proxy and scanner user agents:

  1. opens  (GET /t/o/<token>.gif)     for --seconds: requests/s, p50/p99 latency;
  2. clicks (GET /t/c/<token>/<index>) for --seconds: requests/s, p50/p99 latency;
  3. waits for the flusher to drain the buffer, then counts Events:
     lost_events = requests answered 2xx/3xx − Events recorded (0 when nothing is lost);
  4. bench.events.measure(base_url=…, n=…) (SES event intake) and bench.report.measure()
     (the report page), written by others: if a module is missing, a note, and null.

Also per endpoint: the web and flusher CPU per request and the load average, because the
machine is shared and requests/s alone moves with whatever else runs on it.

The last line is one JSON object (open_rps, click_rps, p99_ms, events_per_s, report_ms,
lost_events, …). Goal on 2 cores: ≥ 3,000 requests/s per endpoint with p99 < 20 ms.

    make bench-tracking                                   # 100,000 recipients, 20 s each
    make bench-tracking TRACKING_N=20000 TRACKING_SECONDS=5   # a quick look
"""

import argparse
import inspect
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    cpu_reference_ms,
    cpu_seconds,
    free_port,
    load_average,
    prepare_database,
    process_tree,
    wrk,
)

LINKS = 3
# What opens and clicks look like: mostly mail clients and browsers, some proxies and bots
# (so the classifier's tables are on the measured path too).
USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Mozilla/5.0",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))",
]

WRK_LUA = r"""
-- Walks the request paths in TRACKING_BENCH_PATHS (one per line), each thread from its own
-- offset, rotating user agents; done() prints one machine-readable line.
local paths = {}
for line in io.lines(os.getenv("TRACKING_BENCH_PATHS")) do paths[#paths + 1] = line end
local agents = {}
for line in io.lines(os.getenv("TRACKING_BENCH_AGENTS")) do agents[#agents + 1] = line end
local created = 0
local i, n = 0, 0

function setup(thread)
  thread:set("offset", created * 7919)
  created = created + 1
end

function init(args)
  i = (offset or 0) % #paths
end

function request()
  i = i % #paths + 1
  n = n + 1
  return wrk.format("GET", paths[i], {["User-Agent"] = agents[n % #agents + 1]})
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n",
        type=int,
        default=int(os.environ.get("TRACKING_N", 100_000)),
        help="recipients of the campaign (tokens the load walks)",
    )
    parser.add_argument("--seconds", type=int, default=20, help="load per endpoint")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WORKERS", 2)),
        help="web server worker processes (the Dockerfile's GRANIAN_WORKERS: 2)",
    )
    parser.add_argument(
        "--server",
        choices=["gunicorn", "granian"],
        default=os.environ.get("TRACKING_SERVER", "granian"),
        help="the WSGI server: granian (the Dockerfile's web), or gunicorn to compare (not a "
        "dependency: pip install gunicorn)",
    )
    parser.add_argument(
        "--worker-class",
        default=os.environ.get("WORKER_CLASS", "sync"),
        help="with gunicorn: its worker class, sync or gthread",
    )
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=1,
        help="threads per worker: granian's blocking threads (1 as docker-compose's `track` "
        "service runs the tracking routes; the `web` service has the Dockerfile's 4), or "
        "gunicorn gthread's",
    )
    parser.add_argument(
        "--flusher",
        choices=["process", "web"],
        default="process",
        help="process: `manage.py flush_buffers` beside gunicorn (as deployed); "
        "web: none, only the web processes' safety-net threads (flush after 10 s)",
    )
    parser.add_argument(
        "--app",
        choices=["fast", "django"],
        default="fast",
        help="fast: config.wsgi with tracking.hits.views.tracking_wsgi in front (the tracking URLs "
        "skip the middleware; config/wsgi.py wraps it so); django: every request through "
        "Django's handler and MIDDLEWARE",
    )
    parser.add_argument(
        "--linger-ms",
        type=int,
        default=None,
        help="TRACKING_BUFFER_LINGER_MS for the web processes (default: the setting's, 5; "
        "0: one RPUSH per request, before each answer)",
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--events-n", type=int, default=5000, help="SES events for bench.events.measure"
    )
    parser.add_argument(
        "--report-recipients",
        type=int,
        default=int(os.environ["REPORT_RECIPIENTS"])
        if os.environ.get("REPORT_RECIPIENTS")
        else None,
        help="recipients for bench.report.measure (its own default if unset)",
    )
    parser.add_argument("--drain-timeout", type=float, default=300)
    return parser.parse_args()  # fmt: skip


def create_sent_campaign(n: int) -> tuple[int, list[int]]:
    """A campaign in `sent` with n recipients sent a day ago and LINKS links (bulk SQL)."""
    from django.db import connection

    from campaigns.models import Campaign, CampaignLink, ContactList
    from templates_app.models import Template

    contact_list = ContactList.objects.create(name=f"bench-tracking-{time.time_ns()}")
    tag = contact_list.pk
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY campaigns_contact (email, first_name, last_name, attributes, status, "
            "time_zone, created_at, updated_at) FROM STDIN"
        ) as copy,
    ):
        for i in range(n):
            copy.write_row((f"t{i}.l{tag}@bench.example", "", "", "{}", "active", "", "now()",
                            "now()"))  # fmt: skip
    template = Template.objects.create(
        name=f"bench-tracking-{tag}", subject="Hi", html="<p>x</p>", text="x"
    )
    campaign = Campaign.objects.create(
        name=f"bench-tracking-{tag}", template=template, contact_list=contact_list,
        status=Campaign.Status.SENT, recipient_count=n,
    )  # fmt: skip
    CampaignLink.objects.bulk_create(
        CampaignLink(campaign=campaign, index=i, url=f"https://shop.example.com/p/{i}")
        for i in range(LINKS)
    )
    with connection.cursor() as cursor:
        # Sent a day ago: clicks now are not "within seconds of the send".
        cursor.execute(
            "INSERT INTO campaigns_notification (campaign_id, contact_id, status, message_id, "
            "reason, created_at, updated_at) "
            "SELECT %s, id, 'sent', 'bench-' || id, '', now() - interval '1 day', "
            "now() - interval '1 day' FROM campaigns_contact WHERE email LIKE %s "
            "RETURNING id",
            [campaign.pk, f"%.l{tag}@bench.example"],
        )
        ids = [row[0] for row in cursor.fetchall()]
    return campaign.pk, ids


def start_flusher(log: Path) -> subprocess.Popen:
    """The dedicated flusher process, as production runs it (`manage.py flush_buffers`)."""
    env = {**os.environ, **AS_DEPLOYED, "LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "manage.py", "flush_buffers"], cwd=ROOT, env=env, stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


# As docker-compose.yml runs it: opens, clicks and SES events buffered in Redis.
AS_DEPLOYED = {"TRACKING_BUFFER": "true", "ESP_EVENTS_BUFFER": "true"}

WSGI_SHIMS = {
    # config.wsgi as deployed (the tracking and SES webhook fast routes in front of Django),
    # or Django alone, to measure what the fast routes save.
    "fast": "from config.wsgi import application\n",
    "django": "from django.core.wsgi import get_wsgi_application\n"
    "application = get_wsgi_application()\n",
}


def start_gunicorn(port: int, args, log: Path) -> subprocess.Popen:
    (log.parent / "bench_wsgi.py").write_text(WSGI_SHIMS[args.app])
    linger = {} if args.linger_ms is None else {"TRACKING_BUFFER_LINGER_MS": str(args.linger_ms)}
    env = {**os.environ, **AS_DEPLOYED, "LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(log.parent), str(ROOT)]), **linger}  # fmt: skip
    if args.server == "granian":
        command = [
            sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(args.workers), "--blocking-threads",
            str(args.worker_threads), "--log-level", "warning", "--no-access-log",
            "bench_wsgi:application",
        ]  # fmt: skip
    else:
        threads = ["--threads", str(args.worker_threads)] if args.worker_class == "gthread" else []
        command = [
            sys.executable, "-m", "gunicorn", "bench_wsgi", "--bind", f"127.0.0.1:{port}",
            "--workers", str(args.workers), "--worker-class", args.worker_class, *threads,
            "--log-level", "warning",
        ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/t/o/x.gif", timeout=2):  # noqa: S310
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}") from None
            time.sleep(0.2)


def run_wrk(url: str, paths: list[str], args, tmp: Path, name: str) -> dict:
    paths_file = tmp / f"{name}.paths"
    paths_file.write_text("\n".join(paths) + "\n")
    agents_file = tmp / "agents.txt"
    agents_file.write_text("\n".join(USER_AGENTS) + "\n")
    script = tmp / "tracking.lua"
    script.write_text(WRK_LUA)
    stats = wrk(
        url,
        script,
        threads=args.threads,
        connections=args.connections,
        seconds=args.seconds,
        timeout="5s",
        env={"TRACKING_BENCH_PATHS": str(paths_file), "TRACKING_BENCH_AGENTS": str(agents_file)},
    )
    failed = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
    seconds = stats["duration_us"] / 1e6
    return {
        "rps": round(stats["requests"] / seconds),
        "p50_ms": round(stats["p50_us"] / 1000, 2),
        "p99_ms": round(stats["p99_us"] / 1000, 2),
        "max_ms": round(stats["max_us"] / 1000, 2),
        "requests": stats["requests"],
        "failed": failed,
        # wrk counts a response with status ≥ 400 under errors.status, not as success.
        "ok": stats["requests"] - stats["status"],
    }


def wait_drained(campaign_id: int, timeout: float) -> tuple[int, float]:
    """Wait until the buffer is empty and the Event count stops moving: (events, seconds)."""
    from django.db import connection

    from infra.queue import buffer_backlog
    from tracking.hits.buffer import QUEUE
    from tracking.models import Event

    started = time.monotonic()
    last = -1
    while True:
        backlog = buffer_backlog(queue=QUEUE)
        events = Event.objects.filter(
            notification__campaign_id=campaign_id, source=Event.Source.TRACKING
        ).count()
        connection.close()
        if backlog == {"queued": 0, "claimed": 0} and events == last:
            return events, time.monotonic() - started
        if time.monotonic() - started > timeout:
            print(f"buffer not drained after {timeout:.0f} s: {backlog}", file=sys.stderr)
            return events, time.monotonic() - started
        last = events
        time.sleep(0.5)


def other_measure(module: str, **kwargs) -> dict | None:
    """bench.<module>.measure(**kwargs), imported lazily; None (with a note) if missing."""
    try:
        measure = __import__(f"bench.{module}", fromlist=["measure"]).measure
    except ImportError as err:
        print(f"note: bench.{module} is not available ({err}); its keys are null")
        return None
    accepted = inspect.signature(measure).parameters
    return measure(**{k: v for k, v in kwargs.items() if k in accepted and v is not None})


def main() -> int:
    args = parse_args()
    reference = cpu_reference_ms()  # before any load: the core's speed at this hour
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
    # Plain http on loopback: no TLS proxy in front, so no redirect to https.
    os.environ.setdefault("DJANGO_SSL_REDIRECT", "0")
    os.environ.setdefault("ANYMAIL_WEBHOOK_SECRET", "bench:bench-webhook-secret")
    os.environ.setdefault("SNS_TOPIC_ARNS", "arn:aws:sns:us-east-1:123456789012:ses-events")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["LOG_LEVEL"] = "WARNING"
    if not (os.environ.get("REDIS_URL") or os.environ.get("CELERY_BROKER_URL", "")).startswith(
        "redis"
    ):
        print("The buffered path needs Redis: run under scripts/with-services.sh", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="mailwright-bench-tracking-"))
    prepare_database()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from campaigns.tokens import token_for
    from tracking.hits.buffer import buffer_dropped

    started = time.monotonic()
    campaign_id, ids = create_sent_campaign(args.n)
    rng = random.Random(42)
    rng.shuffle(ids)
    tokens = [token_for(nid) for nid in ids]
    print(f"campaign {campaign_id}: {args.n} sent notifications in "
          f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
    connection.close()

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    gunicorn = start_gunicorn(port, args, tmp / "web.log")
    flusher = start_flusher(tmp / "flusher.log") if args.flusher == "process" else None
    try:

        def cpu() -> tuple[float, float]:
            web = cpu_seconds(process_tree(gunicorn.pid))
            return web, cpu_seconds(process_tree(flusher.pid)) if flusher else 0.0

        def load(name: str, paths: list[str]) -> tuple[dict, float]:
            before = cpu()
            dropped_before = sum(buffer_dropped().values())
            result = run_wrk(base_url, paths, args, tmp, name)
            result["load_average"] = load_average()  # the machine is shared: how busy it was
            _, drain_s = wait_drained(campaign_id, args.drain_timeout)
            # Hits beyond the repeat cap (tracking.hits.repeats) or the buffer's limit: answered,
            # dropped on purpose and counted, so not lost.
            result["dropped"] = sum(buffer_dropped().values()) - dropped_before
            # Web and flusher CPU per request (not Redis's or PostgreSQL's): comparable across
            # runs even when other work on the machine lowers the requests/s.
            web, flush = (
                round((b - a) / result["requests"] * 1e6)
                for a, b in zip(before, cpu(), strict=True)
            )
            result["cpu_us_per_request"] = {"web": web, "flusher": flush}
            print(f"{name}: {result}", flush=True)
            return result, drain_s

        opens, open_drain_s = load("opens", [f"/t/o/{t}.gif" for t in tokens])
        clicks, click_drain_s = load("clicks", [f"/t/c/{t}/{rng.randrange(LINKS)}" for t in tokens])
        events, _ = wait_drained(campaign_id, args.drain_timeout)
        answered = opens["ok"] + clicks["ok"]
        dropped = opens["dropped"] + clicks["dropped"]
        # A request still in flight when wrk stops is recorded but not counted as answered:
        # at most --connections of them, so `extra_events` is small and never a loss.
        lost = max(0, answered - dropped - events)
        extra = max(0, events - (answered - dropped))
        print(f"answered {answered}, dropped {dropped}, recorded {events} (drained in "
              f"{open_drain_s:.1f} s and {click_drain_s:.1f} s)", flush=True)  # fmt: skip

        before = cpu()
        ses = other_measure("events", base_url=base_url, n=args.events_n, seconds=args.seconds)
        if ses:  # web CPU while answering, flusher CPU until recorded (see load())
            ses["cpu_us_per_event"] = dict(zip(("web", "flusher"), (
                round((b - a) / ses["answered"] * 1e6) for a, b in zip(before, cpu(), strict=True)
            ), strict=True))  # fmt: skip
            print(f"ses events: {ses}", flush=True)
        report = other_measure("report", recipients=args.report_recipients)
    finally:
        if flusher is not None:
            flusher.terminate()
            flusher.wait(timeout=30)
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gunicorn.kill()

    ses_lost = ses.get("lost_events") if ses else None
    result = {
        "open_rps": opens["rps"],
        "click_rps": clicks["rps"],
        "p99_ms": max(opens["p99_ms"], clicks["p99_ms"]),
        "events_per_s": ses.get("events_per_s") if ses else None,
        "report_ms": report.get("report_ms") if report else None,
        # Anything lost anywhere: tracking requests answered but not recorded, plus SES events.
        "lost_events": lost + (ses_lost or 0),
        "tracking_lost_events": lost,
        "ses_lost_events": ses_lost,
        "extra_events": extra,
        "dropped_hits": dropped,
        "open_p50_ms": opens["p50_ms"],
        "open_p99_ms": opens["p99_ms"],
        "click_p50_ms": clicks["p50_ms"],
        "click_p99_ms": clicks["p99_ms"],
        "failed_requests": opens["failed"] + clicks["failed"],
        "events_cpu_us_per_event": ses.get("cpu_us_per_event") if ses else None,
        "open_cpu_us_per_request": opens["cpu_us_per_request"],
        "click_cpu_us_per_request": clicks["cpu_us_per_request"],
        "load_average": max(opens["load_average"], clicks["load_average"]),
        "drain_seconds": round(max(open_drain_s, click_drain_s), 1),
        "recipients": args.n,
        "seconds_per_endpoint": args.seconds,
        "server": args.server,
        "workers": args.workers,
        "worker_class": args.worker_class if args.server == "gunicorn" else "granian",
        "app": "config.wsgi" if args.app == "fast" else "Django alone",
        "flusher": args.flusher,
        "linger_ms": settings.TRACKING_BUFFER_LINGER_MS
        if args.linger_ms is None
        else args.linger_ms,
        "connections": args.connections,
    }
    result["cpu_reference_ms"] = reference
    print(json.dumps(result))
    return 0 if lost == 0 and result["failed_requests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

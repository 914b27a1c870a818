"""API benchmark: POST /api/v1/messages through the whole stack, from the request to SES.

Runs on PostgreSQL and Redis (from `make bench-api`, via scripts/with-services.sh NEED_WRK=1)
the way docker-compose.yml runs the API: granian serving config.wsgi as the `web` service does
(the Dockerfile's GRANIAN_* settings: 2 workers of 16 threads), a Celery worker on the
`transactional` and `periodic` queues as `worker-transactional` (prefork, concurrency 8), and
the local SES endpoint (seslocal), or, with --ses-endpoint or AWS_ENDPOINT_URL_SESV2, any other
SES endpoint and no seslocal. It makes a live API key and a small template, then:

  1. drives POST /api/v1/messages with wrk for --seconds (bench/api.lua: each request with its
     own Idempotency-Key, address and reference), then waits until every accepted message has
     left `created`/`sending`;
  2. with --campaign N (N > 0): the same load while a bulk campaign of N recipients is sending
     (a `worker-bulk` beside it), the campaign cancelled afterwards.

Per phase: accepted_per_s (202 answers a second), p50_ms / p99_ms of the POSTs,
handoff_p50_s / handoff_p99_s (a message's ledger row made → recorded `sent`, i.e. accepted by
the SES endpoint: the row is recorded once the SES call has answered), lost (202 answers whose
message did not end `sent`), duplicates (recipients the SES endpoint accepted more than once,
from seslocal's /_local/stats; `unknown` elsewhere), and the CPU seconds per 1,000 requests
of the web server, the transactional worker and PostgreSQL (each process tree's
/proc/<pid>/stat, from the start of the load until the last hand-off).

The last line is one JSON object. Goals on 2 cores: ≥ 1,000 accepted/s, p99 < 100 ms, handoff
p99 < 2 s (< 5 s while a campaign sends), 0 lost, 0 duplicates (docs/PERFORMANCE.md).

    make bench-api                                        # 20 s of load, then with a campaign
    make bench-api API_SECONDS=5 API_CAMPAIGN=0            # a quick look
"""

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
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
from bench.send import (  # noqa: E402
    UNKNOWN,
    create_audience,
    endpoint_counts,
    postmaster_pid,
    start_ses,
    tree_cpu_seconds,
)

LUA = ROOT / "bench" / "api.lua"

# As docker-compose.yml's services run (x-app's environment and the Dockerfile's GRANIAN_*).
AS_DEPLOYED = {"TRACKING_BUFFER": "true", "ESP_EVENTS_BUFFER": "true"}
GRANIAN = {
    "GRANIAN_INTERFACE": "wsgi",
    "GRANIAN_HOST": "127.0.0.1",
    "GRANIAN_LOG_LEVEL": "warning",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="load per phase")
    parser.add_argument(
        "--campaign",
        type=int,
        default=0,
        metavar="N",
        help="a second phase: the same load while a campaign to N recipients sends (0: none)",
    )
    # A closed loop: each connection waits for its answer, so N connections cap the rate at
    # N / latency (16 at ~14 ms: ~1,100/s, whatever the server could take). 32 keep the
    # server, not the load tool, the bound (docs/PERFORMANCE.md, round 6).
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--web-workers", type=int, default=2, help="granian workers (the Dockerfile's 2)"
    )
    parser.add_argument(
        "--web-threads",
        type=int,
        default=16,
        help="granian blocking threads per worker (the Dockerfile's 16)",
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=8,
        help="prefork children of the transactional worker (docker-compose's 8)",
    )
    parser.add_argument(
        "--bulk-concurrency",
        type=int,
        default=4,
        help="prefork children of the bulk worker in the campaign phase (docker-compose's 4)",
    )
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument(
        "--ses-endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL_SESV2") or None,
        metavar="URL",
        help="send to this SES endpoint instead of starting seslocal (default: "
        "AWS_ENDPOINT_URL_SESV2 if set); without /_local/stats there (real SES), duplicates "
        "are reported as unknown",
    )
    return parser.parse_args()


def create_key_and_template() -> tuple[str, int]:
    """A live key with the messages scopes (its secret) and a small transactional template."""
    from campaigns.apikeys import api_key_create
    from templates_app.models import Template

    tag = time.time_ns()
    issued = api_key_create(name=f"bench-api-{tag}", scopes=["messages:send", "messages:read"])
    template = Template.objects.create(
        name=f"bench-api-{tag}",
        subject="Your sign-in code: {{ code }}",
        html='<p>Hello {{ first_name | default: "there" }},</p><p>Your code is <b>{{ code }}</b>.'
        '</p><p><a href="https://app.example.com/help">Not you?</a></p>',
        text="Hello {{ first_name }}, your code is {{ code }}.",
    )
    return issued.secret, template.pk


def start_process(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )  # fmt: skip


def start_web(port: int, args, tmp: Path) -> subprocess.Popen:
    env = {**AS_DEPLOYED, **GRANIAN, "GRANIAN_PORT": str(port),
           "GRANIAN_WORKERS": str(args.web_workers),
           "GRANIAN_BLOCKING_THREADS": str(args.web_threads)}  # fmt: skip
    return start_process(
        [sys.executable, "-m", "granian", "config.wsgi:application"], env, tmp / "web.log"
    )


def start_worker(queues: str, concurrency: int, tmp: Path) -> subprocess.Popen:
    name = queues.split(",")[0]
    return start_process(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "--concurrency",
         str(concurrency), "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
         "-n", f"bench-api-{name}-{os.getpid()}@%h"],
        AS_DEPLOYED, tmp / f"worker-{name}.log",
    )  # fmt: skip


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def post_message(base_url: str, secret: str, template_id: int, to: str) -> int:
    """One POST /api/v1/messages (the warm-up); the new message's id."""
    request = urllib.request.Request(  # noqa: S310 (our own server on loopback)
        f"{base_url}/api/v1/messages",
        data=json.dumps({"template": template_id, "to": to}).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())["id"]


def wait_for_web(base_url: str, web: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base_url}/api/v1/messages/0", timeout=2)  # noqa: S310
            return
        except urllib.error.HTTPError:  # it answers (401 without a key): up
            return
        except OSError:
            if web.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"granian did not start:\n{log.read_text()}") from None
            time.sleep(0.2)


def duplicates_at_endpoint(ses_url: str, stream_id: int):
    """Recipients of the stream's messages that the SES endpoint accepted more than once."""
    duplicates = endpoint_counts(ses_url=ses_url, campaign_id=stream_id, n=0)["duplicates"]
    return duplicates if isinstance(duplicates, int) else UNKNOWN


def stream_of(message_id: int) -> int:
    from campaigns.models import Notification

    return Notification.objects.values_list("campaign_id", flat=True).get(pk=message_id)


def wait_handed_off(ids: list[int], timeout: float) -> float:
    """Wait until none of the messages is `created` or `sending`; the seconds it took."""
    from django.db import connection

    from campaigns.models import Notification

    started = time.monotonic()
    while True:
        waiting = Notification.objects.filter(
            pk__in=ids, status__in=[Notification.Status.CREATED, Notification.Status.SENDING]
        ).count()
        connection.close()
        if not waiting:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            print(f"{waiting} messages not handed off after {timeout:.0f} s", file=sys.stderr)
            return time.monotonic() - started
        time.sleep(0.25)


def handoffs(ids: list[int]) -> dict:
    """From the ledger: statuses of the messages, and p50/p99 of created → recorded `sent`."""
    from django.db import connection

    from campaigns.models import Notification

    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "  # noqa: S608
            "updated_at - created_at)), percentile_cont(0.99) WITHIN GROUP (ORDER BY "
            f"extract(epoch FROM updated_at - created_at)) FROM {table} "
            "WHERE id = ANY(%s) AND status = 'sent'",
            [ids],
        )
        p50, p99 = cursor.fetchone()
        cursor.execute(
            f"SELECT status, count(*) FROM {table} WHERE id = ANY(%s) GROUP BY status",  # noqa: S608
            [ids],
        )
        statuses = dict(cursor.fetchall())
    return {
        "handoff_p50_s": round(p50, 3) if p50 is not None else None,
        "handoff_p99_s": round(p99, 3) if p99 is not None else None,
        "statuses": statuses,
    }


def phase(
    name: str,
    *,
    base_url: str,
    secret: str,
    template_id: int,
    stream_id: int,
    ses_url: str,
    web: subprocess.Popen,
    worker: subprocess.Popen,
    args,
    tmp: Path,
) -> dict:
    """One run of the load and its hand-offs, measured."""
    postgres = functools.partial(tree_cpu_seconds, postmaster_pid())
    trees = {
        "web": lambda: cpu_seconds(process_tree(web.pid)),
        "worker": lambda: cpu_seconds(process_tree(worker.pid)),
        # Of which the worker's main process: receiving tasks and handing them to its pool.
        "worker_main": lambda: cpu_seconds([worker.pid]),
        "postgres": postgres,
    }
    before = {k: measure() for k, measure in trees.items()}
    duplicates_before = duplicates_at_endpoint(ses_url, stream_id)
    ids_file = tmp / f"{name}.ids"
    stats = wrk(
        base_url,
        LUA,
        threads=args.threads,
        connections=args.connections,
        seconds=args.seconds,
        timeout="10s",
        env={
            "API_BENCH_KEY": secret,
            "API_BENCH_TEMPLATE": str(template_id),
            "API_BENCH_RUN": f"{name}{time.time_ns()}",
            "API_BENCH_IDS": str(ids_file),
        },
    )
    web_after = trees["web"]()
    load = load_average()
    ids = [int(x) for x in ids_file.read_text().split()]
    drain_s = wait_handed_off(ids, args.drain_timeout)
    after = {k: measure() for k, measure in trees.items()}
    after["web"] = web_after  # the web's work ends with the load
    seconds = stats["duration_us"] / 1e6
    accepted = len(ids)
    ledger = handoffs(ids)
    sent = ledger["statuses"].get("sent", 0)
    duplicates_after = duplicates_at_endpoint(ses_url, stream_id)
    duplicates = (
        UNKNOWN
        if UNKNOWN in (duplicates_before, duplicates_after)
        else duplicates_after - duplicates_before
    )
    requests = stats["requests"]
    result = {
        "accepted_per_s": round(accepted / seconds),
        "p50_ms": round(stats["p50_us"] / 1000, 1),
        "p99_ms": round(stats["p99_us"] / 1000, 1),
        "max_ms": round(stats["max_us"] / 1000, 1),
        "handoff_p50_s": ledger["handoff_p50_s"],
        "handoff_p99_s": ledger["handoff_p99_s"],
        "lost": accepted - sent,
        "duplicates": duplicates,
        "cpu_s_per_1000": {
            k: round(1000 * (after[k] - before[k]) / max(requests, 1), 3) for k in trees
        },
        "requests": requests,
        "accepted": accepted,
        "answers": stats["statuses"],
        "socket_errors": sum(stats[k] for k in ("connect", "read", "write", "timeout")),
        "statuses": ledger["statuses"],
        "drain_s": round(drain_s, 1),
        "load_average": load,
    }
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def campaign_started(campaign_id: int, timeout: float) -> None:
    """Send the campaign now and wait until its first recipients are handed to SES."""
    from django.db import connection

    from campaigns.models import Campaign, Notification
    from campaigns.services import campaign_send_now

    campaign_send_now(campaign=Campaign.objects.get(pk=campaign_id))
    started = time.monotonic()
    while not Notification.objects.filter(campaign_id=campaign_id, status="sent").exists():
        connection.close()
        if time.monotonic() - started > timeout:
            raise RuntimeError("the campaign sent nothing")
        time.sleep(0.25)


def campaign_sent(campaign_id: int) -> int:
    from campaigns.models import Notification

    return Notification.objects.filter(campaign_id=campaign_id, status="sent").count()


def main() -> int:
    args = parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
    # Plain http on loopback: no TLS proxy in front, so no redirect to https.
    os.environ.setdefault("DJANGO_SSL_REDIRECT", "0")
    os.environ.setdefault("ANYMAIL_WEBHOOK_SECRET", "bench:bench-webhook-secret")
    os.environ.setdefault("SNS_TOPIC_ARNS", "arn:aws:sns:us-east-1:123456789012:ses-events")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    # One key makes every request: its rate limit (campaigns.api.throttling, 100/s by default)
    # stays on, so its cost is measured, but far above what the machine can take.
    os.environ.setdefault("API_RATE_LIMIT_PER_SECOND", "1000000")
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["CAMPAIGN_SEND_PATH"] = "bulk"  # the campaign phase's (bench.send's audience)
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis"):
        print("Run under scripts/with-services.sh (PostgreSQL and Redis)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="mailwright-bench-api-"))
    prepare_database()
    ses_process, ses_url = start_ses(tmp, args.ses_endpoint)
    os.environ["AWS_ENDPOINT_URL_SESV2"] = ses_url
    try:  # seslocal outlives a failure before the measured part otherwise
        return run(args, tmp, ses_url)
    finally:
        stop(ses_process)


def run(args, tmp: Path, ses_url: str) -> int:
    reference = cpu_reference_ms()  # before any load: the core's speed at this hour
    import django

    django.setup()
    from django.db import connection

    from campaigns.models import Campaign
    from campaigns.services import campaign_cancel

    secret, template_id = create_key_and_template()
    campaign_id = None
    if args.campaign:
        started = time.monotonic()
        campaign_id = create_audience(args.campaign)
        print(f"campaign {campaign_id}: {args.campaign} contacts in "
              f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
    connection.close()

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    web = start_web(port, args, tmp)
    worker = start_worker("transactional,periodic", args.worker_concurrency, tmp)
    bulk = None
    results = {}
    try:
        wait_for_web(base_url, web, tmp / "web.log")
        # Warm-up, not measured: each web process's first requests import and connect, and
        # the first message makes the template's stream.
        warm = [post_message(base_url, secret, template_id, f"warm{i}@bench.example")
                for i in range(20)]  # fmt: skip
        wait_handed_off(warm, 60)
        stream_id = stream_of(warm[0])
        common = {"base_url": base_url, "secret": secret, "template_id": template_id,
                  "stream_id": stream_id, "ses_url": ses_url, "web": web, "worker": worker,
                  "args": args, "tmp": tmp}  # fmt: skip
        results["alone"] = phase("alone", **common)
        if campaign_id is not None:
            bulk = start_worker("bulk", args.bulk_concurrency, tmp)
            campaign_started(campaign_id, 120)
            sent_before = campaign_sent(campaign_id)
            results["campaign"] = phase("campaign", **common)
            status = Campaign.objects.values_list("status", flat=True).get(pk=campaign_id)
            results["campaign"]["bulk_sent_meanwhile"] = campaign_sent(campaign_id) - sent_before
            results["campaign"]["bulk_still_sending"] = status == Campaign.Status.SENDING
            if status == Campaign.Status.SENDING:
                campaign_cancel(campaign=Campaign.objects.get(pk=campaign_id))
            connection.close()
    finally:
        stop(bulk)
        stop(worker)
        stop(web)

    alone = results["alone"]
    result = {k: alone[k] for k in ("accepted_per_s", "p50_ms", "p99_ms", "handoff_p50_s",
                                    "handoff_p99_s", "lost", "duplicates")}  # fmt: skip
    result.update({f"cpu_s_per_1000_{k}": v for k, v in alone["cpu_s_per_1000"].items()})
    if "campaign" in results:
        during = results["campaign"]
        result.update({f"campaign_{k}": during[k] for k in (
            "accepted_per_s", "p99_ms", "handoff_p50_s", "handoff_p99_s", "lost", "duplicates",
            "bulk_sent_meanwhile", "bulk_still_sending")})  # fmt: skip
        result["campaign_recipients"] = args.campaign
    result.update({
        "requests": alone["requests"], "answers": alone["answers"],
        "socket_errors": alone["socket_errors"], "load_average": alone["load_average"],
        "seconds": args.seconds, "connections": args.connections,
        "web": f"granian {args.web_workers}x{args.web_threads}",
        "worker_concurrency": args.worker_concurrency,
    })  # fmt: skip
    result["cpu_reference_ms"] = reference
    print(json.dumps(result))
    failed = any(r["lost"] or r["duplicates"] not in (0, UNKNOWN) for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Send benchmark: N recipients through the real stack, measured.

Runs PostgreSQL and Redis (from `make bench`, via scripts/with-services.sh), Celery worker
processes, and the local SES endpoint (seslocal), or, with --ses-endpoint or
AWS_ENDPOINT_URL_SESV2, any other SES endpoint and no seslocal; creates N contacts and a
campaign with a ~50 kB HTML template (10 links, 2 merge fields), presses "Send now", and prints
throughput from Send now to the last recipient handed to SES, worker CPU seconds per 1,000
recipients, peak RSS per worker process, the CPU seslocal took apart from the workers' (it
shares the machine with them), the ledger's statuses, and the duplicates and missing
recipients counted by the endpoint's /_local/stats: `unknown` where it has none (real SES).
The last line is one JSON object.

    make bench                      # N=1000000, the bulk path
    make bench N=100000 SEND_PATH=rendered
    AWS_ENDPOINT_URL_SESV2=https://email.eu-west-1.amazonaws.com make bench N=1000
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    TICKS,
    cpu_reference_ms,
    cpu_seconds,
    free_port,
    prepare_database,
    process_tree,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("N", 1_000_000)))
    parser.add_argument("--path", choices=["bulk", "rendered"], default="bulk")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WORKERS", 2)),
        help="worker processes (Celery prefork children)",
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--ses-endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL_SESV2") or None,
        metavar="URL",
        help="send to this SES endpoint instead of starting seslocal (default: "
        "AWS_ENDPOINT_URL_SESV2 if set); without /_local/stats there (real SES), duplicates "
        "and missing are reported as unknown",
    )
    return parser.parse_args()  # fmt: skip


#: What the report says of a count the SES endpoint cannot give.
UNKNOWN = "unknown"


def endpoint_counts(*, ses_url: str, campaign_id: int, n: int) -> dict:
    """The SES calls, duplicates and missing recipients that seslocal's /_local/stats counted
    for the campaign; UNKNOWN for each where the endpoint has no such page (real SES answers
    it with an error, a proxy may not answer at all)."""
    url = f"{ses_url.rstrip('/')}/_local/stats?header=X-Campaign:{campaign_id}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
            stats = json.loads(response.read())
        return {
            "ses_calls": stats["calls"],
            "duplicates": stats["duplicate_deliveries"],
            "missing": n - stats["distinct_recipients"],
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"note: no counts from {ses_url}/_local/stats ({error}): "
              "duplicates and missing unknown", file=sys.stderr)  # fmt: skip
        return {"ses_calls": UNKNOWN, "duplicates": UNKNOWN, "missing": UNKNOWN}


def start_ses(tmp: Path, endpoint: str | None) -> tuple[subprocess.Popen | None, str]:
    if endpoint:
        return None, endpoint
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "seslocal", "--port", str(port), "--db", str(tmp / "ses.sqlite3"),
         "--no-bodies", "--max-send-rate", "100000", "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert "listening" in process.stdout.readline()
    return process, f"http://127.0.0.1:{port}"


def bench_template_html() -> str:
    """~50 kB of HTML, 10 distinct links, 2 merge fields (one with a fallback)."""
    paragraph = (
        '<p style="font-family:Helvetica,Arial,sans-serif;font-size:16px;line-height:24px;'
        'color:#333333;margin:0 0 16px 0">Lorem ipsum dolor sit amet, consectetur adipiscing '
        "elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim "
        "veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo.</p>\n"
    )
    links = "".join(
        f'<p><a href="https://shop.example.com/product/{i}?utm_source=newsletter&amp;'
        f'utm_campaign=bench">Product {i}</a></p>\n'
        for i in range(10)
    )
    body = paragraph * 170
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Bench</title></head><body>'
        '<h1>Hello {{ first_name | default: "there" }}</h1>'
        "<p>Offers for {{ city }}.</p>" + body + links + "</body></html>"
    )


def create_audience(n: int) -> int:
    """N contacts in one list, written with COPY (seconds for a million)."""
    from django.db import connection

    from campaigns.models import Campaign, ContactList
    from templates_app.models import Template

    contact_list = ContactList.objects.create(name=f"bench-{time.time_ns()}")
    cities = ["Leeds", "Lyon", "Lisbon", "Lagos", "Lima"]
    tag = contact_list.pk
    with connection.cursor() as cursor:
        with cursor.copy(
            "COPY campaigns_contact (email, first_name, last_name, attributes, status, "
            "time_zone, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(n):
                attributes = json.dumps({"city": cities[i % 5]})
                copy.write_row(
                    (f"r{i}.l{tag}@bench.example", f"Name{i % 997}", "", attributes, "active",
                     "", "now()", "now()")
                )  # fmt: skip
        cursor.execute(
            "INSERT INTO campaigns_membership (contact_list_id, contact_id, created_at) "
            "SELECT %s, id, now() FROM campaigns_contact WHERE email LIKE %s",
            [contact_list.pk, f"%.l{tag}@bench.example"],
        )
        # An imported audience is vacuumed and analyzed by autovacuum soon after the import;
        # done here, its pass over n fresh contacts does not land in the measured send.
        cursor.execute("VACUUM ANALYZE campaigns_contact, campaigns_membership")
    template = Template.objects.create(
        name=f"bench-{tag}", subject='Hi {{ first_name | default: "there" }}',
        html=bench_template_html(), text="Hi {{ first_name }}, offers for {{ city }}.",
    )  # fmt: skip
    campaign = Campaign.objects.create(
        name=f"bench-{tag}", template=template, contact_list=contact_list,
        from_email="bench@example.com", send_path=os.environ["CAMPAIGN_SEND_PATH"],
    )  # fmt: skip
    return campaign.pk


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process, its live descendants, and its children that have exited (the kernel
    adds those to the parent's cutime/cstime once reaped): a PostgreSQL postmaster's backends
    come and go during a run."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    reaped = (int(fields[13]) + int(fields[14])) / TICKS  # cutime + cstime
    return reaped + cpu_seconds(process_tree(pid))


def postmaster_pid() -> int:
    """The PostgreSQL server this run uses: the parent of our own backend."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


def redis_cpu_seconds() -> float:
    import redis

    info = redis.Redis.from_url(os.environ["REDIS_URL"]).info("cpu")
    return (
        info["used_cpu_sys"]
        + info["used_cpu_user"]
        + info.get("used_cpu_sys_children", 0)
        + info.get("used_cpu_user_children", 0)
    )


def machine_busy_seconds() -> float:
    """CPU seconds spent by the whole machine (all cores) not idle, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICKS  # minus idle and iowait


def machine_cores() -> int:
    """The cores /proc/stat counts, so a share of machine_busy_seconds() has the same base."""
    lines = Path("/proc/stat").read_text().splitlines()
    return sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())


def peak_rss_mb(pids: list[int]) -> float:
    peak = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


def per_1000(seconds: float | None, n: int) -> float | None:
    return round(1000 * seconds / n, 3) if seconds is not None else None


def main() -> int:
    args = parse_args()
    reference = cpu_reference_ms()  # before any load: the core's speed at this hour
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["CAMPAIGN_SEND_PATH"] = args.path
    tmp = Path(tempfile.mkdtemp(prefix="mailwright-bench-"))
    prepare_database()
    ses_process, ses_url = start_ses(tmp, args.ses_endpoint)
    os.environ["AWS_ENDPOINT_URL_SESV2"] = ses_url

    import django

    django.setup()
    from django.db import connection
    from django.db.models import Count

    from campaigns.models import Campaign, Notification
    from campaigns.services import campaign_send_now

    started = time.monotonic()
    campaign_id = create_audience(args.n)
    print(f"audience: {args.n} contacts in {time.monotonic() - started:.1f} s", flush=True)

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q",
         "transactional,bulk,periodic", "--concurrency", str(args.workers), "--loglevel",
         "WARNING", "--without-gossip", "--without-mingle", "-n", f"bench-{os.getpid()}@%h"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp / "worker.log").open("w"),
    )  # fmt: skip
    time.sleep(3)  # worker start-up is not part of a send
    pids = process_tree(worker.pid)
    # seslocal runs on this machine beside the workers (an external endpoint's CPU is not
    # ours to measure): its CPU is reported apart, so the send path's cost reads without it.
    others = {
        **({"ses": lambda: cpu_seconds(process_tree(ses_process.pid))} if ses_process else {}),
        "postgres": functools.partial(tree_cpu_seconds, postmaster_pid()),
        "redis": redis_cpu_seconds,
        "bench": time.process_time,  # this process: Send now and the poller
    }
    cpu_before = cpu_seconds(pids)
    others_before = {name: measure() for name, measure in others.items()}
    machine_before = machine_busy_seconds()
    window_before = time.monotonic()

    connection.close()
    sent_at = time.monotonic()
    sent_wall = time.time()
    campaign_send_now(campaign=Campaign.objects.get(pk=campaign_id))
    while True:
        status = Campaign.objects.filter(pk=campaign_id).values_list("status", flat=True).get()
        if status not in (Campaign.Status.SCHEDULED, Campaign.Status.SENDING):
            break
        if time.monotonic() - sent_at > args.timeout:
            print("timed out", file=sys.stderr)
            break
        time.sleep(0.25)
    pids = process_tree(worker.pid)
    cpu = cpu_seconds(pids) - cpu_before
    machine = machine_busy_seconds() - machine_before
    window = time.monotonic() - window_before
    others_cpu = {name: measure() - others_before[name] for name, measure in others.items()}
    rss = peak_rss_mb(pids[1:] or pids)  # the pool's children do the work
    last = (
        Notification.objects.filter(campaign_id=campaign_id)
        .order_by("-updated_at")
        .values_list("updated_at", flat=True)
        .first()
    )
    seconds = last.timestamp() - sent_wall
    first = (
        Notification.objects.filter(campaign_id=campaign_id, status="sent")
        .order_by("updated_at")
        .values_list("updated_at", flat=True)
        .first()
    )
    first_after = first.timestamp() - sent_wall if first else None
    counts = endpoint_counts(ses_url=ses_url, campaign_id=campaign_id, n=args.n)
    statuses = dict(
        Notification.objects.filter(campaign_id=campaign_id)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )

    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    if ses_process:
        ses_process.terminate()
    seslocal_cpu = others_cpu.get("ses")
    result = {
        "recipients": args.n,
        "path": args.path,
        "workers": args.workers,
        "seconds": round(seconds, 2),
        "first_sent_after_s": round(first_after, 2) if first_after is not None else None,
        "recipients_per_s": round(args.n / seconds),
        "cpu_s_per_1000": round(1000 * cpu / args.n, 3),
        "peak_rss_mb": round(rss, 1),
        "cpu_s_per_1000_ses_endpoint": per_1000(seslocal_cpu, args.n),
        "cpu_s_per_1000_postgres": round(1000 * others_cpu["postgres"] / args.n, 3),
        "cpu_s_per_1000_redis": round(1000 * others_cpu["redis"] / args.n, 3),
        "cpu_s_per_1000_bench": round(1000 * others_cpu["bench"] / args.n, 3),
        "cpu_s_per_1000_machine": round(1000 * machine / args.n, 3),
        # CPU seconds from Send now to the campaign's end, and seslocal's share of what the
        # machine's cores could give in that time (null against an external endpoint).
        "workers_cpu_s": round(cpu, 2),
        "seslocal_cpu_s": round(seslocal_cpu, 2) if seslocal_cpu is not None else None,
        "seslocal_cpu_share": (
            round(seslocal_cpu / (machine_cores() * window), 3)
            if seslocal_cpu is not None
            else None
        ),
        "machine_cpu_s": round(machine, 2),
        "cpu_window_s": round(window, 2),
        **counts,
        "statuses": statuses,
    }
    print(f"{result['recipients_per_s']} recipients/s; {result['cpu_s_per_1000']} worker CPU s "
          f"per 1,000; peak RSS {result['peak_rss_mb']} MB per worker process")  # fmt: skip
    for key in ("workers_cpu_s", "seslocal_cpu_s", "seslocal_cpu_share", "machine_cpu_s",
                "cpu_window_s", "duplicates", "missing", "statuses"):  # fmt: skip
        value = result[key]
        shown = "n/a" if value is None else value if isinstance(value, str) else json.dumps(value)
        print(f"{key}={shown}")
    result["cpu_reference_ms"] = reference
    print(json.dumps(result))
    if counts["duplicates"] == UNKNOWN:  # the ledger is all there is to go by
        return 0 if statuses == {"sent": args.n} else 1
    return 0 if counts["duplicates"] == 0 and counts["missing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

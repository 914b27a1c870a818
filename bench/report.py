"""Report benchmark: a 1M-recipient campaign's admin page, rendered through Django's test
Client as a superuser, 20 times; the median in milliseconds. Goal: under 200 ms.

The campaign is written with bulk SQL in seconds: its contacts and ledger rows (so a page that
touched the ledger would show it in the timing; it must not), 10 links, and counters shaped
like a real campaign's (delivery outcomes, opens and clicks all and human, per link, and a
week of hourly series). No Event rows: the report never reads them.

    python bench/report.py             # PostgreSQL at DATABASE_URL; sets Django up itself
    scripts/with-services.sh .venv/bin/python bench/report.py --n 100000   # a throwaway one

From a process that has set Django up (DJANGO_SETTINGS_MODULE, django.setup()):

    from bench.report import measure
    measure()  # {"report_ms": 42.0, ...}
"""

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUNS = 20
LINKS = 10
HOURS = 7 * 24  # a week of hourly opens and clicks


def realistic_counters(n: int, *, start: datetime) -> dict[str, int]:
    """Counters of an n-recipient campaign a week after sending (rates typical of a
    newsletter: 97% sent, 95% delivered, 25% unique opens of which half machine, 3% clicks)."""
    from campaigns.counters import counter_hour, hourly_counter, link_counter

    sent = n * 97 // 100
    counters = {
        "sent": sent, "failed": n // 200, "unknown": n // 1000, "skipped": 0,
        "delivered": n * 95 // 100, "bounced_hard": n // 100, "bounced_soft": n // 200,
        "complained": n // 5000, "rejected": n // 100_000, "delayed": n // 300,
        "opens": n * 2 // 5, "unique_opens": n // 4, "human_opens": n // 5,
        "unique_human_opens": n // 8, "clicks": n // 20, "unique_clicks": n * 3 // 100,
        "human_clicks": n // 30, "unique_human_clicks": n // 50, "unsubscribed": n // 500,
    }  # fmt: skip
    counters["skipped"] = n - sent - counters["failed"] - counters["unknown"]
    for i in range(LINKS):
        share = 2 ** -(i + 1)  # the first link gets half the clicks, the next a quarter…
        for series in ("clicks", "unique_clicks", "human_clicks"):
            counters[link_counter(index=i, series=series)] = int(counters[series] * share)
    for h in range(HOURS):
        hour = counter_hour(at=start + timedelta(hours=h))
        decay = 0.97**h  # most opens in the first hours, a long tail after
        for series, total in [("opens", counters["opens"]), ("clicks", counters["clicks"]),
                              ("human_opens", counters["human_opens"]),
                              ("human_clicks", counters["human_clicks"])]:  # fmt: skip
            value = int(total * 0.03 * decay)
            if value:
                counters[hourly_counter(series=series, hour=hour)] = value
    return counters


def create_campaign(n: int, *, ledger: bool = True) -> int:
    """A sent campaign of n recipients with links and counters; contacts and ledger rows with
    INSERT … SELECT generate_series (PostgreSQL; ~10 s for a million of each)."""
    from django.db import connection, transaction

    from campaigns.counters import counters_add
    from campaigns.models import Campaign, CampaignLink, Contact, ContactList, Notification
    from templates_app.models import Template

    tag = time.time_ns()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=7)
    with transaction.atomic():
        contact_list = ContactList.objects.create(name=f"bench-report-{tag}")
        template = Template.objects.create(
            name=f"bench-report-{tag}", subject="Hi", html="<p>Hi</p>", text="Hi"
        )
        campaign = Campaign.objects.create(
            name=f"bench-report-{tag}", template=template, contact_list=contact_list,
            status=Campaign.Status.SENT, recipient_count=n, started_at=start,
            finished_at=start + timedelta(hours=1),
        )  # fmt: skip
        CampaignLink.objects.bulk_create(
            CampaignLink(campaign=campaign, index=i, url=f"https://shop.example.com/p/{i}")
            for i in range(LINKS)
        )
        counters_add(campaign_id=campaign.pk, deltas=realistic_counters(n, start=start))
        if ledger:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {Contact._meta.db_table} (email, first_name, last_name, "  # noqa: S608
                    "attributes, status, time_zone, created_at, updated_at) "
                    "SELECT 'r' || i || '.b' || %s || '@bench.example', '', '', '{}', "
                    "'active', '', now(), now() FROM generate_series(1, %s) AS i",
                    [tag, n],
                )
                cursor.execute(
                    f"INSERT INTO {Notification._meta.db_table} (campaign_id, contact_id, "  # noqa: S608
                    "status, message_id, reason, created_at, updated_at) "
                    "SELECT %s, id, 'delivered', 'bench-' || id, '', now(), now() "
                    f"FROM {Contact._meta.db_table} WHERE email LIKE %s",
                    [campaign.pk, f"%.b{tag}@bench.example"],
                )
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {Notification._meta.db_table}")
    return campaign.pk


def delete_campaign(campaign_id: int) -> None:
    """Remove what create_campaign wrote (its contacts go with its ledger rows)."""
    from django.db import connection, transaction

    from campaigns.models import Campaign, Contact, Notification

    campaign = Campaign.objects.select_related("template", "contact_list").get(pk=campaign_id)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH gone AS (DELETE FROM {Notification._meta.db_table} "  # noqa: S608
                "WHERE campaign_id = %s RETURNING contact_id) "
                f"DELETE FROM {Contact._meta.db_table} WHERE id IN (SELECT contact_id FROM gone)",
                [campaign_id],
            )
        campaign.delete()  # its links and counters go with it
        campaign.template.delete()
        campaign.contact_list.delete()


def measure(*, recipients: int = 1_000_000, runs: int = RUNS, ledger: bool = True,
            keep: bool = False) -> dict:  # fmt: skip
    """Create the campaign, render its admin change page `runs` times as a superuser (after
    one warm-up), and return {"report_ms": median, …}. Needs Django set up (PostgreSQL)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    started = time.monotonic()
    campaign_id = create_campaign(recipients, ledger=ledger)
    setup_s = time.monotonic() - started
    user = get_user_model().objects.create_superuser(
        f"bench-report-{time.time_ns()}", password=None
    )
    try:
        # A host the settings allow (ALLOWED_HOSTS defaults to localhost).
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        url = f"/admin/campaigns/campaign/{campaign_id}/change/"
        response = client.get(url)  # warm-up: template loading, first connection
        assert response.status_code == 200, response.status_code
        timings = []
        with CaptureQueriesContext(connection) as queries:
            for _ in range(runs):
                t0 = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, response.status_code
        ledger_queries = [
            q["sql"] for q in queries.captured_queries
            if "campaigns_notification" in q["sql"] or "tracking_event" in q["sql"]
        ]  # fmt: skip
    finally:
        user.delete()
        if not keep:
            delete_campaign(campaign_id)
    return {
        "report_ms": round(statistics.median(timings), 2),
        "report_ms_max": round(max(timings), 2),
        "queries_per_page": len(queries.captured_queries) // runs,
        "ledger_or_event_queries": len(ledger_queries),
        "recipients": recipients,
        "setup_s": round(setup_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("N", 1_000_000)))
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--no-ledger", action="store_true", help="skip the contacts and ledger")
    parser.add_argument("--keep", action="store_true", help="leave the campaign in the database")
    args = parser.parse_args()
    # As bench/send.py: the real settings on the database at DATABASE_URL, created and
    # migrated if needed.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    os.environ.setdefault("DJANGO_SSL_REDIRECT", "0")  # its test client speaks plain http
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["LOG_LEVEL"] = "WARNING"
    from bench.send import prepare_database

    prepare_database()
    import django

    django.setup()
    result = measure(recipients=args.n, runs=args.runs, ledger=not args.no_ledger,
                     keep=args.keep)  # fmt: skip
    print(f"campaign page with {args.n} recipients: median {result['report_ms']} ms "
          f"over {args.runs} renders")  # fmt: skip
    print(json.dumps(result))
    return 0 if result["ledger_or_event_queries"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Bulk job benchmark: a job of N rows (JSON, three personalisation fields and a reference)
through what POST /api/v1/jobs does before its 202 (parse, check every row, stage the rows
with COPY, commit) and what the worker's freeze does (contacts, ledger rows and their
MessageRequests, chunk by chunk), printing the time of each; then the same rows again as a
second job, every contact existing.

    DATABASE_URL=postgres://…/mailwright_bench CELERY_BROKER_URL=redis://… \
        .venv/bin/python bench/jobs.py --n 100000

Needs PostgreSQL and Redis (the freeze enqueues its batches; they are purged from the bulk
queue at the end, never sent). Its contacts are bench-job-<run>-<i>@example.com, deleted at
the end with the jobs.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import prepare_database  # noqa: E402


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="rows in the job")
    args = parser.parse_args()
    prepare_database()
    _django()
    import orjson
    from django.db import transaction

    from campaigns import jobs, services
    from campaigns.models import Campaign, CampaignCounter, Contact, Notification
    from config.celery import app
    from templates_app.models import Template

    run = str(int(time.time()))
    body = orjson.dumps(
        {
            "template": "bench",
            "rows": [
                {
                    "to": f"bench-job-{run}-{i}@example.com",
                    "personalisation": {"first_name": f"Ada{i}", "plan": "pro", "n": i},
                    "reference": f"order-{i}",
                }
                for i in range(args.n)
            ],
        }
    )
    template = Template.objects.create(
        name=f"bench job {run}",
        subject="Your {{ plan }} plan",
        html="<p>Hello {{ first_name }}, order {{ n }}.</p>",
        text="Hello {{ first_name }}, order {{ n }}.",
    )
    results = {"rows": args.n, "body_mb": round(len(body) / 1e6, 1)}
    made = []
    try:
        for label in ("new", "existing"):
            start = time.perf_counter()
            rows = orjson.loads(body)["rows"]
            checked = jobs.job_rows_check(rows)
            checked_at = time.perf_counter()
            with transaction.atomic():
                job = jobs.job_create(api_key=None, template=template, checked=checked)
            accepted_at = time.perf_counter()
            made.append(job.pk)
            services.campaign_transition(
                campaign_id=job.pk, from_statuses={"scheduled"}, to="sending"
            )
            freeze_start = time.perf_counter()
            services.campaign_freeze(campaign_id=job.pk)
            frozen_at = time.perf_counter()
            assert Notification.objects.filter(campaign_id=job.pk).count() == args.n
            created = frozen_at - freeze_start
            results[f"{label}_check_s"] = round(checked_at - start, 2)
            results[f"{label}_stage_s"] = round(accepted_at - checked_at, 2)
            results[f"{label}_create_s"] = round(frozen_at - freeze_start, 2)
            print(
                f"{label:>8} contacts: parse + check {checked_at - start:5.1f} s, "
                f"stage + commit {accepted_at - checked_at:5.1f} s (the 202 after "
                f"{accepted_at - start:5.1f} s); create the ledger {created:5.1f} s "
                f"({args.n / created:,.0f} rows/s)"
            )
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("bulk")  # the batches the freezes enqueued
        Notification.objects.filter(campaign_id__in=made).delete()  # (requests cascade)
        CampaignCounter.objects.filter(campaign_id__in=made).delete()
        Campaign.objects.filter(pk__in=made).delete()
        template.delete()
        Contact.objects.filter(email__startswith=f"bench-job-{run}-").delete()
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""Contact import benchmark: N rows through the import's check (the dry run) and its write
(chunked upserts), as the Celery tasks run them, printing rows/s for each; then the same file
again with "also update existing contacts" (every row an existing contact).

    DATABASE_URL=postgres://…/mailwright_bench .venv/bin/python bench/import.py --n 200000

Needs PostgreSQL only (the steps run in this process, not through a worker). The contacts it
creates are named bench-import-<run>-<i>@example.com and deleted at the end.
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


def _file(n: int, run: str) -> bytes:
    rows = ["Email Address;First Name;Last Name;City;Plan"]
    rows += [f"bench-import-{run}-{i}@example.com;Ada{i};Lovelace;London;pro" for i in range(n)]
    return ("\n".join(rows) + "\n").encode()


def _timed(step, **kwargs) -> float:
    start = time.perf_counter()
    step(**kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="rows in the file")
    args = parser.parse_args()
    prepare_database()
    _django()
    from campaigns import imports
    from campaigns.models import Contact, ContactList, ImportJob

    run = str(int(time.time()))
    data = _file(args.n, run)
    contact_list = ContactList.objects.create(name=f"bench import {run}")
    results = {"rows": args.n, "mb": round(len(data) / 1e6, 1)}
    try:
        for label, update in (("new", False), ("update", True)):
            job = imports.import_job_create(user_id=None, file_name="bench.csv", data=data)
            ImportJob.objects.filter(pk=job.pk).update(
                status=ImportJob.Status.CHECKING,
                contact_list=contact_list,
                update_existing=update,
            )
            check = _timed(imports.import_job_check, job_id=job.pk)
            ImportJob.objects.filter(pk=job.pk).update(
                status=ImportJob.Status.IMPORTING, **imports.RUN_RESET
            )
            write = _timed(imports.import_job_run, job_id=job.pk)
            job.refresh_from_db()
            assert job.status == ImportJob.Status.DONE, job.status_reason
            results[f"{label}_check_rows_per_s"] = round(args.n / check)
            results[f"{label}_import_rows_per_s"] = round(args.n / write)
            print(
                f"{label:>6}: check {check:6.1f} s ({args.n / check:8,.0f} rows/s), "
                f"import {write:6.1f} s ({args.n / write:8,.0f} rows/s): "
                f"{job.new_count} new, {job.updated_count} updated, {job.unchanged_count} unchanged"
            )
    finally:
        Contact.objects.filter(email__startswith=f"bench-import-{run}-").delete()
        contact_list.delete()
        ImportJob.objects.filter(file_name="bench.csv").delete()
    print(json.dumps(results))


if __name__ == "__main__":
    main()

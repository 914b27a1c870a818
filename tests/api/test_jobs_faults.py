"""A bulk job whose worker is SIGKILLed while it creates the job's ledger rows, and one whose
queued start is lost with the broker: real worker processes, Redis, PostgreSQL and the local
SES endpoint (the idioms of tests/campaigns/test_faults.py). The promise: every accepted row
gets exactly one ledger row and is handed to SES at most once."""

import time
from contextlib import contextmanager

import pytest
from django.db import connection

from campaigns import services
from campaigns.jobs import JOB_CHUNK
from campaigns.models import Campaign, JobRequest, JobRow, MessageRequest, Notification
from tests.api.helpers import api_client
from tests.campaigns.test_faults import assert_at_most_once, status_of, statuses, sweep_while
from tests.conftest import wait_for
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

N = Notification.Status
ROWS = 20_000


@pytest.fixture
def template():
    return TemplateFactory(
        slug="notice",
        subject="Notice {{ ref }}",
        html="<p>Dear {{ name }}, notice {{ ref }}.</p>",
        text="Dear {{ name }}, notice {{ ref }}.",
    )


def post_job(client, rows: int, tag: str) -> int:
    answer = client.post(
        "/api/v1/jobs",
        {
            "template": "notice",
            "rows": [
                {"to": f"{tag}{i}@example.org", "personalisation": {"name": f"N{i}", "ref": i}}
                for i in range(rows)
            ],
        },
        format="json",
    )
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


# An advisory lock key of this test's: the second chunk's checkpoint waits for it.
HOLD = 15_015


@contextmanager
def second_chunk_held():
    """Every move of a job's checkpoint past the first chunk waits (a trigger on JobRequest)
    while this test holds an advisory lock: the freeze is caught with its second chunk's
    ledger rows inserted and not committed, however loaded the machine (polling for the
    moment, as this test once did, could miss it and time out). Lets go on exit."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [HOLD])
        cursor.execute(
            "CREATE FUNCTION test_hold_chunk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"PERFORM pg_advisory_xact_lock({HOLD}); RETURN NEW; END $$;"
            "CREATE TRIGGER test_hold_chunk BEFORE UPDATE ON campaigns_jobrequest FOR EACH ROW "
            f"WHEN (NEW.rows_done_through > {JOB_CHUNK}) EXECUTE FUNCTION test_hold_chunk();"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER test_hold_chunk ON campaigns_jobrequest;"
                "DROP FUNCTION test_hold_chunk();"
            )
            cursor.execute("SELECT pg_advisory_unlock(%s)", [HOLD])


def chunk_waiting() -> bool:
    """A backend waits for the held lock: the freeze is inside its second chunk."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND objid = %s",
            [HOLD],
        )
        return cursor.fetchone()[0] > 0


def assert_each_row_once(ses, job_id: int) -> None:
    job = Campaign.objects.get(pk=job_id)
    ledger = Notification.objects.filter(campaign_id=job_id)
    assert ledger.count() == ROWS
    assert ledger.values("contact_id").distinct().count() == ROWS
    assert MessageRequest.objects.filter(notification__campaign_id=job_id).count() == ROWS
    assert job.recipient_count == ROWS and job.frozen_at is not None
    assert not JobRow.objects.filter(job_id=job_id).exists()
    counts = statuses(job)
    assert set(counts) <= {N.SENT, N.UNKNOWN}, counts
    assert counts[N.SENT] + counts[N.UNKNOWN] == ROWS
    # The endpoint saw nobody twice; it accepted every `sent` row, and of the `unknown` ones
    # (calls in flight when the worker died) some or all. (Counted, not listed: its message
    # listing stops at 10,000.)
    seen = ses.stats(header=f"X-Campaign:{job_id}")
    assert seen["duplicate_recipients"] == 0
    assert seen["recipients"] == seen["distinct_recipients"]
    assert counts[N.SENT] <= seen["recipients"] <= ROWS


def test_a_job_killed_while_its_rows_are_created_is_resumed_without_duplicates(
    ses, celery_workers, template
):
    """SIGKILL the whole worker while the freeze inserts the job's second chunk (its first
    chunk committed, its batches sending): once the dead creator's lease runs out (seconds:
    3 here, 20 by default), the sweeper hands the creation to a new worker, which goes on
    after the checkpoint; every row gets one ledger row, and the endpoint sees each recipient
    at most once."""
    assert ROWS > JOB_CHUNK  # at least two chunks, so the kill lands between them
    lease = {"JOB_CREATION_LEASE_SECONDS": "3"}
    with second_chunk_held():
        worker = celery_workers.start(concurrency=2, env=lease)
        job_id = post_job(api_client(), ROWS, "kill")
        wait_for(
            chunk_waiting,
            timeout=120,
            message=lambda: f"the freeze inside its second chunk: {celery_workers.logs()}",
        )
        worker.kill()
        killed = time.monotonic()
    job = Campaign.objects.get(pk=job_id)
    assert job.frozen_at is None, "the kill came after the creation ended"
    made = Notification.objects.filter(campaign_id=job_id).count()
    assert made == JOB_CHUNK  # the first chunk only: the killed one rolled back
    assert JobRequest.objects.get(pk=job_id).creator_until is not None  # the dead one's lease

    celery_workers.start(concurrency=2, env=lease)
    # Resumed in seconds: the lease (3 s), a sweep (every 1 s here, 10 s in production),
    # and the freeze of the second chunk. The stall threshold (5 minutes) plays no part.
    sweep_while(
        lambda: Campaign.objects.filter(pk=job_id, frozen_at__isnull=False).exists(),
        timeout=120,
        every=1.0,
        message=lambda: f"creation resumed: {statuses(job)}\n{celery_workers.logs()}",
    )
    assert time.monotonic() - killed < 60
    sweep_while(
        lambda: status_of(job) == Campaign.Status.SENT,
        timeout=240,
        every=2.0,
        message=lambda: f"job sent after the kill: {statuses(job)}\n{celery_workers.logs()}",
    )
    assert_each_row_once(ses, job_id)

    shown = api_client().get(f"/api/v1/jobs/{job_id}").json()
    assert shown["status"] == "sent"
    assert shown["progress"]["rows_created"] == ROWS
    assert shown["counts"]["pending"] == 0


def test_a_job_whose_start_was_lost_with_the_broker_is_started_by_beat(
    ses, celery_workers, redis_server, template
):
    """Accepted while no worker runs, then Redis restarts (its queue lost: no persistence):
    the job is still `scheduled` and due, so beat's start of due campaigns starts it once a
    worker runs; nothing is lost, nothing sent twice."""
    job_id = post_job(api_client(), 2_000, "lost")
    redis_server.stop()
    redis_server.start()
    celery_workers.start(concurrency=2)
    assert status_of(Campaign.objects.get(pk=job_id)) == Campaign.Status.SCHEDULED
    assert services.campaigns_start_due() == [job_id]
    job = Campaign.objects.get(pk=job_id)
    wait_for(
        lambda: status_of(job) == Campaign.Status.SENT,
        timeout=120,
        message=lambda: f"job sent: {statuses(job)}\n{celery_workers.logs()}",
    )
    counts = assert_at_most_once(ses, job, 2_000)
    assert counts == {N.SENT: 2_000}

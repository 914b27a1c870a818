"""Recovery of transactional messages with real processes: Celery workers SIGKILLed, the
transactional queue purged, Redis stopped at the POST, counting at the local SES endpoint.

The promise: a message answered 202 is sent once (a lost task is found and enqueued again),
and one whose hand-off died is `unknown`, never sent twice. Beat runs messages_sweep every
10 s in production; these tests run it in the test process every second while they wait
(`sweep_until`), with the grace cut to 3 s and leases dead after 6 s instead of 20, so that
each test takes seconds: the rules are the same.
"""

import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns import leases
from campaigns.message_sweeper import SweepResult, messages_sweep
from campaigns.models import BatchLease, Notification
from tests.api.helpers import api_client
from tests.conftest import _forget_broker_state, _queued, _ready, _redis, wait_for
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

N = Notification.Status
FINAL = {N.SENT, N.UNKNOWN}


@pytest.fixture
def fast_sweep(settings, monkeypatch):
    settings.MESSAGE_SWEEP_GRACE_SECONDS = 3
    monkeypatch.setattr(leases, "LEASE_TIMEOUT", timedelta(seconds=6))


@pytest.fixture
def template():
    return TemplateFactory(slug="reset", subject="Reset", html="<p>Hi</p>", text="Hi")


def post(client, to: str, **fields) -> int:
    answer = client.post(
        "/api/v1/messages", {"template": "reset", "to": to, **fields}, format="json"
    )
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def statuses(ids) -> dict[int, str]:
    return dict(Notification.objects.filter(pk__in=ids).values_list("pk", "status"))


def accepted(ses) -> Counter:
    """How many times the endpoint accepted each address."""
    return Counter(a for m in ses.messages(limit=10_000, bodies=0) for a in m["recipients"])


def sweep_until(predicate, *, timeout: float, total: SweepResult, message=lambda: ""):
    """Wait for `predicate`, running the message sweep every second (beat's, sped up), adding
    what each sweep did to `total`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out: {message()}"
        result = messages_sweep()
        for field in ("enqueued", "requeued", "unknown"):
            setattr(total, field, getattr(total, field) + getattr(result, field))
        time.sleep(1.0)


def assert_once(ses, ids: list[int]) -> Counter:
    """Every message final; `sent` ones accepted exactly once, `unknown` ones at most once;
    the endpoint saw no address twice. Returns the statuses' counts."""
    found = statuses(ids)
    assert set(found.values()) <= FINAL, found
    times = accepted(ses)
    email = dict(Notification.objects.filter(pk__in=ids).values_list("pk", "contact__email"))
    for message_id, status in found.items():
        limit = (1, 1) if status == N.SENT else (0, 1)
        assert limit[0] <= times[email[message_id]] <= limit[1], (message_id, status)
    assert ses.stats()["duplicate_recipients"] == 0
    return Counter(found.values())


def test_messages_whose_tasks_were_lost_are_sent_once(template, ses, celery_workers, fast_sweep):
    """Two ways to lose a committed message's task: the queue purged before any worker took
    it, and a worker SIGKILLed while it held tasks it had taken but not yet claimed (waiting
    for a send slot). The sweeper finds both and a new worker sends each message once."""
    client = api_client()
    purged = [post(client, f"purged{i}@example.org") for i in range(4)]
    assert (_ready(), _queued("transactional")) == (4, 1)  # the messages, one drain task
    _forget_broker_state()  # no worker ever sees them

    # A worker paced to one send every 10 s drains the held messages (popped off the ready
    # list); the second of a batch waits for its slot with its row `created` under the
    # batch's lease when the whole worker is killed (the wait is long enough for the check
    # and the kill, even on a busy machine).
    slow = celery_workers.start(concurrency=2, env={"SES_MAX_SEND_RATE": "0.1"})
    held = [post(client, f"held{i}@example.org") for i in range(4)]

    def waiting_for_a_slot():
        for message_id in held:
            if (
                statuses([message_id]).get(message_id) == N.CREATED
                and BatchLease.objects.filter(
                    first_id__lte=message_id, last_id__gte=message_id
                ).exists()
            ):
                return message_id
        return None

    taken = wait_for(
        waiting_for_a_slot,
        timeout=30,
        message=lambda: f"a task taken, not claimed: {statuses(held)}\n{slow.output()[-3000:]}",
    )
    slow.kill()
    assert statuses([taken])[taken] == N.CREATED
    # The slots it had reserved ahead at its slow pace would hold the next worker back.
    stale = list(_redis().scan_iter("ratelimit:*"))
    if stale:
        _redis().delete(*stale)

    celery_workers.start(concurrency=2)
    total = SweepResult()
    ids = purged + held
    sweep_until(
        lambda: set(statuses(ids).values()) <= FINAL,
        timeout=90,
        total=total,
        message=lambda: f"{statuses(ids)} {total}\n{celery_workers.logs()}",
    )
    counts = assert_once(ses, ids)
    assert statuses([taken])[taken] == N.SENT  # lost, found, sent
    assert all(statuses(purged)[i] == N.SENT for i in purged)
    assert total.requeued >= len(purged) + 1, (total, celery_workers.logs())
    # Only a call in flight when the worker died can be unknown (at most one per process).
    assert counts[N.UNKNOWN] <= 2


def test_a_message_left_sending_by_a_killed_worker_ends_unknown_and_is_never_resent(
    template, ses, celery_workers, fast_sweep
):
    ses.faults(latency_ms=8000)  # the SES call is in flight for 8 s
    worker = celery_workers.start(concurrency=1)
    client = api_client()
    message_id = post(client, "inflight@example.org")
    wait_for(lambda: statuses([message_id])[message_id] == N.SENDING, timeout=30)
    worker.kill()  # mid-hand-off: SES may or may not send it
    ses.faults(latency_ms=0)
    celery_workers.start(concurrency=1)

    total = SweepResult()
    sweep_until(
        lambda: statuses([message_id])[message_id] == N.UNKNOWN,
        timeout=30,
        total=total,
        message=lambda: f"{statuses([message_id])}\n{celery_workers.logs()}",
    )
    shown = client.get(f"/api/v1/messages/{message_id}").json()
    assert shown["status"] == "unknown"
    assert shown["reason"] == "batch died during the hand-off to SES"

    # The stream goes on: the next message is sent; the unknown one is never enqueued again.
    # Sweeps go on past the endpoint's late answer and several grace periods.
    after = post(client, "after@example.org")
    started = time.monotonic()
    sweep_until(
        lambda: statuses([after])[after] == N.SENT and time.monotonic() > started + 12,
        timeout=60,
        total=total,
    )
    assert total.requeued == 0
    assert statuses([message_id])[message_id] == N.UNKNOWN
    assert accepted(ses)["inflight@example.org"] <= 1  # the endpoint answered its call late
    assert_once(ses, [message_id, after])


def test_a_message_posted_while_redis_is_down_is_accepted_and_sent_once_it_is_back(
    template, ses, celery_workers, redis_server, fast_sweep
):
    client = api_client()
    redis_server.stop()
    ids = [post(client, f"outage{i}@example.org") for i in range(2)]  # 202, not 500
    assert set(statuses(ids).values()) == {N.CREATED}
    redis_server.start()
    celery_workers.start(concurrency=2)

    total = SweepResult()
    sweep_until(
        lambda: set(statuses(ids).values()) == {N.SENT},
        timeout=60,
        total=total,
        message=lambda: f"{statuses(ids)} {total}\n{celery_workers.logs()}",
    )
    assert total.requeued == 2
    assert assert_once(ses, ids) == {N.SENT: 2}


def test_a_scheduled_message_is_not_sent_before_its_time_and_is_sent_after(
    template, ses, celery_workers, fast_sweep
):
    celery_workers.start(concurrency=1)
    client = api_client()
    send_at = timezone.now() + timedelta(seconds=6)
    message_id = post(client, "scheduled@example.org", send_at=send_at.isoformat())

    total = SweepResult()
    while timezone.now() < send_at - timedelta(seconds=0.5):
        total.enqueued += messages_sweep().enqueued
        assert statuses([message_id])[message_id] == N.CREATED
        assert ses.stats()["recipients"] == 0
        time.sleep(0.5)
    sweep_until(
        lambda: statuses([message_id])[message_id] == N.SENT,
        timeout=30,
        total=total,
        message=lambda: f"{statuses([message_id])}\n{celery_workers.logs()}",
    )
    sent_at = Notification.objects.get(pk=message_id).updated_at
    assert send_at <= sent_at < send_at + timedelta(seconds=5)
    # Enqueued once when its time came; a few sweeps more enqueue nothing.
    for _ in range(3):
        total.enqueued += messages_sweep().enqueued
    assert (total.enqueued, total.requeued) == (1, 0)
    assert_once(ses, [message_id])

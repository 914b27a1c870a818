"""The message sweeper in-process, on the real PostgreSQL and Redis (the broker's real
`transactional` queue, no worker consuming it): what it enqueues, when, how often, and how
far its marks let it read. tests/api/test_recovery_workers.py runs the same paths with worker
processes killed, a purged queue and Redis stopped, counting at the SES endpoint."""

import logging
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from campaigns import leases, sweeper
from campaigns.message_sweeper import MARK, messages_sweep
from campaigns.models import (
    BatchLease,
    Campaign,
    MessageRequest,
    Notification,
    SweepMark,
)
from tests.api.helpers import api_client, post_message
from tests.conftest import _forget_broker_state, _queued, _ready
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_broker")]

N = Notification.Status
GRACE = timedelta(seconds=settings.MESSAGE_SWEEP_GRACE_SECONDS)


@pytest.fixture
def template():
    return TemplateFactory(slug="reset", subject="Reset", html="<p>Hi</p>", text="Hi")


def test_a_lost_task_is_enqueued_again_once_after_the_grace(template):
    client = api_client()
    ids = [post_message(client, to=f"lost{i}@example.org") for i in range(3)]
    assert (_ready(), _queued("transactional")) == (3, 1)  # the messages, and one drain task
    _forget_broker_state()  # the tasks are lost (a purged queue, a broker restarted empty)

    now = timezone.now()
    assert messages_sweep(now=now).requeued == 0  # within the grace: may still be coming
    assert _queued("transactional") == 0

    later = now + GRACE + timedelta(seconds=1)
    assert messages_sweep(now=later).requeued == 3
    assert _queued("transactional") == 3
    queued_at = set(MessageRequest.objects.filter(pk__in=ids).values_list("queued_at", flat=True))
    assert queued_at == {later}
    # The next sweeps find them waiting in the queue: nothing enqueued twice…
    assert messages_sweep(now=later + timedelta(seconds=10)).requeued == 0
    assert messages_sweep(now=later + GRACE * 2).requeued == 0
    assert _queued("transactional") == 3
    # …until they have waited REQUEUE_BUSY_AFTER (workers that far behind): once more.
    assert messages_sweep(now=later + timedelta(minutes=6)).requeued == 3
    assert set(Notification.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        N.CREATED
    }


def test_a_message_under_a_live_lease_is_not_enqueued_again(template):
    message_id = post_message(api_client(), to="held@example.org")
    _forget_broker_state()
    stream_id = Notification.objects.get(pk=message_id).campaign_id
    later = timezone.now() + GRACE + timedelta(seconds=1)
    # A throttled message waiting for its retry leaves a waiting lease: not lost.
    leases.lease_wait(campaign_id=stream_id, first_id=message_id, last_id=message_id, until=later)
    assert messages_sweep(now=later).requeued == 0
    BatchLease.objects.all().delete()
    assert messages_sweep(now=later).requeued == 1


def test_a_message_left_sending_by_a_dead_batch_ends_unknown_and_is_not_enqueued(template):
    message_id = post_message(api_client(), to="dead@example.org")
    _forget_broker_state()
    message = Notification.objects.get(pk=message_id)
    # A worker claimed it (committed before the SES call), then died: its lease stops beating.
    Notification.objects.filter(pk=message_id).update(status=N.SENDING)
    leases.lease_take(campaign_id=message.campaign_id, first_id=message_id, last_id=message_id)

    now = timezone.now()
    assert messages_sweep(now=now).unknown == 0  # its lease is alive: the call may answer
    result = messages_sweep(now=now + leases.LEASE_TIMEOUT + timedelta(seconds=1))
    message.refresh_from_db()
    assert message.status == N.UNKNOWN
    assert message.reason == "batch died during the hand-off to SES"
    assert result.requeued == 0
    assert not BatchLease.objects.exists()  # the dead lease went with it
    assert messages_sweep(now=now + timedelta(minutes=10)).requeued == 0
    assert _queued("transactional") == 0
    shown = api_client().get(f"/api/v1/messages/{message_id}").json()
    assert (shown["status"], shown["reason"]) == ("unknown", message.reason)


def test_a_scheduled_message_is_enqueued_once_when_its_time_comes(template):
    send_at = timezone.now() + timedelta(minutes=5)
    message_id = post_message(api_client(), to="later@example.org", send_at=send_at.isoformat())
    assert _queued("transactional") == 0  # not at its POST

    for minute in range(5):  # every sweep before its time: nothing
        result = messages_sweep(now=timezone.now() + timedelta(minutes=minute))
        assert (result.enqueued, result.requeued) == (0, 0)
    assert _queued("transactional") == 0

    at = send_at + timedelta(seconds=1)
    assert messages_sweep(now=at).enqueued == 1
    assert _queued("transactional") == 1
    for seconds in (10, 20, 40, 120):  # waiting in the queue: never enqueued again meanwhile
        result = messages_sweep(now=at + timedelta(seconds=seconds))
        assert (result.enqueued, result.requeued) == (0, 0)
    assert _queued("transactional") == 1
    assert MessageRequest.objects.get(pk=message_id).queued_at == at


def test_a_scheduled_message_whose_task_was_lost_is_enqueued_again(template):
    send_at = timezone.now() + timedelta(minutes=5)
    post_message(api_client(), to="later@example.org", send_at=send_at.isoformat())
    at = send_at + timedelta(seconds=1)
    assert messages_sweep(now=at).enqueued == 1
    _forget_broker_state()
    assert messages_sweep(now=at + GRACE + timedelta(seconds=1)).requeued == 1


def test_the_marks_pass_what_is_answered_and_what_waits_for_its_time(template):
    client = api_client()
    scheduled = post_message(
        client, to="week@example.org", send_at=(timezone.now() + timedelta(days=7)).isoformat()
    )
    sent = post_message(client, to="sent@example.org")
    waiting = post_message(client, to="waiting@example.org")
    last = post_message(client, to="sent2@example.org")
    Notification.objects.filter(pk__in=[sent, last]).update(status=N.SENT)

    later = timezone.now() + GRACE + timedelta(seconds=1)
    messages_sweep(now=later)
    mark = SweepMark.objects.get(name=MARK)
    # The first message still waiting holds the id mark; the one due next week does not.
    assert mark.low_id == waiting > scheduled
    assert mark.low_send_at == later - GRACE

    Notification.objects.filter(pk=waiting).update(status=N.SENT)
    messages_sweep(now=later)
    mark.refresh_from_db()
    assert mark.low_id == last + 1
    # Nothing left to read from it: the next sweep reads no message.
    assert messages_sweep(now=later + timedelta(seconds=10)).waiting == 0


def test_young_messages_hold_the_id_mark(template):
    """A row younger than the grace may have an uncommitted one below it (ids are taken
    before commit): the mark does not pass it yet, answered or not."""
    message_id = post_message(api_client(), to="young@example.org")
    Notification.objects.filter(pk=message_id).update(status=N.SENT)
    messages_sweep()
    assert SweepMark.objects.get(name=MARK).low_id == message_id
    messages_sweep(now=timezone.now() + GRACE + timedelta(seconds=1))
    assert SweepMark.objects.get(name=MARK).low_id == message_id + 1


def test_the_campaign_sweeper_never_freezes_or_finishes_a_stream(template):
    """A stream is `sending` with no frozen_at for ever: the campaign sweeper must not take it
    for a stalled freeze (freezing it would finish it, and its later messages never go)."""
    message_id = post_message(api_client(), to="stream@example.org")
    _forget_broker_state()
    Notification.objects.filter(pk=message_id).update(status=N.SENT)
    stream = Campaign.objects.get(kind=Campaign.Kind.TRANSACTIONAL)
    Campaign.objects.filter(pk=stream.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    sweeper.campaigns_sweep()
    stream.refresh_from_db()
    assert (stream.status, stream.frozen_at) == (Campaign.Status.SENDING, None)
    assert _queued("bulk") == 0  # no campaign_freeze enqueued for it


def test_redis_down_at_the_post_answers_202_and_logs_ids_only(template, redis_server, caplog):
    client = api_client()
    redis_server.stop()
    with caplog.at_level(logging.ERROR, logger="campaigns.ready"):
        answer = client.post(
            "/api/v1/messages", {"template": "reset", "to": "outage@example.org"}, format="json"
        )
    assert answer.status_code == 202, answer.content
    message_id = answer.json()["id"]
    assert Notification.objects.get(pk=message_id).status == N.CREATED
    [record] = [r for r in caplog.records if r.name == "campaigns.ready"]
    assert "not pushed to the ready list" in record.getMessage()
    assert f":{message_id}" in record.getMessage()
    assert "outage@" not in record.getMessage()
    redis_server.start()
    result = messages_sweep(now=timezone.now() + GRACE + timedelta(seconds=1))
    assert result.requeued == 1
    assert _queued("transactional") == 1


def test_a_failed_enqueue_stops_at_the_first_call_and_says_how_many(redis_server, caplog):
    """task_enqueue_on_commit is shared: a freeze's batches whose enqueue fails are left to
    the campaign sweeper, and the freeze goes on (no exception out of the commit)."""
    from django.db import transaction

    from infra.tasks import task_enqueue_on_commit

    redis_server.stop()
    with caplog.at_level(logging.ERROR, logger="infra.tasks"), transaction.atomic():
        task_enqueue_on_commit("campaigns.tasks.deliver_batch", (7, 1, 1), (7, 2, 2))
    redis_server.start()
    [record] = [r for r in caplog.records if r.name == "infra.tasks"]
    assert "2 of 2 left to the sweepers, first (7, 1, 1)" in record.getMessage()


def test_messages_sharing_a_send_at_are_enqueued_past_a_page_and_the_cap(template, monkeypatch):
    """Many messages scheduled for one moment: read in pages by (send_at, id), the sweep goes
    past a page of them; over its cap, the rest wait for the first to be answered (workers
    far behind), and the mark passes those answered however many share the moment."""
    from campaigns import message_sweeper

    monkeypatch.setattr(message_sweeper, "SWEEP_PAGE", 3)
    monkeypatch.setattr(message_sweeper, "SWEEP_MAX_ROWS", 6)
    client = api_client()
    send_at = timezone.now() + timedelta(minutes=1)
    ids = [
        post_message(client, to=f"same{i}@example.org", send_at=send_at.isoformat())
        for i in range(8)
    ]
    at = send_at + GRACE + timedelta(seconds=1)

    assert messages_sweep(now=at).enqueued == 6
    assert messages_sweep(now=at).enqueued == 0  # the first six wait in the queue
    Notification.objects.filter(pk__in=ids[:3]).update(status=N.SENT)
    assert messages_sweep(now=at).enqueued == 0  # reads them once more, and passes them
    mark = SweepMark.objects.get(name=MARK)
    assert (mark.low_send_at, mark.low_send_at_id) == (send_at, ids[3])
    assert messages_sweep(now=at).enqueued == 2
    assert messages_sweep(now=at).enqueued == 0
    assert _queued("transactional") == 8
    Notification.objects.filter(pk__in=ids).update(status=N.SENT)
    messages_sweep(now=at)
    mark = SweepMark.objects.get(name=MARK)
    assert (mark.low_send_at, mark.low_send_at_id) == (at - GRACE, 0)
    assert mark.low_id == max(ids) + 1


def test_a_waiting_message_does_not_hide_lost_ones_after_it(template, monkeypatch):
    from campaigns import message_sweeper

    monkeypatch.setattr(message_sweeper, "SWEEP_PAGE", 2)
    client = api_client()
    ids = [post_message(client, to=f"page{i}@example.org") for i in range(5)]
    _forget_broker_state()
    now = timezone.now() + GRACE + timedelta(seconds=1)
    assert messages_sweep(now=now).requeued == 5  # all of them, page after page
    assert SweepMark.objects.get(name=MARK).low_id == ids[0]


def test_a_second_sweep_meanwhile_returns_without_enqueueing(template):
    """Beat firing again while a sweep runs: the second finds the mark's row locked and
    leaves, so no message is enqueued twice by two sweeps at once."""
    import threading

    from django.db import connection, transaction

    post_message(api_client(), to="twice@example.org")
    _forget_broker_state()
    later = timezone.now() + GRACE + timedelta(seconds=1)
    messages_sweep(now=timezone.now())  # makes the mark's row
    locked, release = threading.Event(), threading.Event()

    def first_sweep_holding_the_mark():
        with transaction.atomic():
            SweepMark.objects.select_for_update().get(name=MARK)
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=first_sweep_holding_the_mark)
    thread.start()
    assert locked.wait(10)
    try:
        assert messages_sweep(now=later).requeued == 0
    finally:
        release.set()
        thread.join()
    assert messages_sweep(now=later).requeued == 1


def test_a_sweep_never_scans_the_ledger(template):
    """3,000 answered messages and a 3,000-row campaign behind the mark: every statement of a
    sweep that reads the ledger does so by primary key, whatever the planner knows of the
    tables (none is analyzed here); the requests are read from the mark by their own key."""
    import secrets

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from infra.db import pg_lookup_sql, pg_rows
    from tests.conftest import plan_nodes, unanalyzed_campaign

    first = post_message(api_client(), to="plan@example.org")
    stream_id, contact_id = Notification.objects.values_list("campaign_id", "contact_id").get(
        pk=first
    )
    messages = Notification.objects.bulk_create(
        Notification(
            campaign_id=stream_id, contact_id=contact_id, status=N.SENT,
            repeat_key=secrets.randbits(62) + 1,
        )
        for _ in range(3_000)
    )  # fmt: skip
    MessageRequest.objects.bulk_create(MessageRequest(notification=m) for m in messages)
    unanalyzed_campaign(3_000)  # a campaign's rows, ids after them: no MessageRequest
    SweepMark.objects.update_or_create(name=MARK, defaults={"low_id": messages[2_900].pk})

    with CaptureQueriesContext(connection) as queries:
        messages_sweep(now=timezone.now() + GRACE + timedelta(seconds=1))
    ledger, requests = Notification._meta.db_table, MessageRequest._meta.db_table
    # The ORM's statements never touch the ledger; the page's statuses come by pg_lookup…
    assert [q["sql"] for q in queries if ledger in q["sql"]] == []
    assert SweepMark.objects.get(name=MARK).low_id == messages[-1].pk + 1
    pages = [q["sql"] for q in queries if f'FROM "{requests}"' in q["sql"]]
    assert any(f'"{requests}"."notification_id" > {messages[2_900].pk - 1}' in q for q in pages)
    # …one primary-key lookup per id.
    columns = ("id", "campaign_id", "status", "created_at", "updated_at")
    sql = pg_lookup_sql(table=ledger, key="id", columns=columns)
    ids = [m.pk for m in messages[2_900:]]
    ((plan,),) = pg_rows(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", [ids])
    scans = [n for n in plan_nodes(plan[0]["Plan"]) if n.get("Relation Name") == ledger]
    assert {n["Node Type"] for n in scans} == {"Index Scan"}
    assert {n["Index Name"] for n in scans} == {f"{ledger}_pkey"}

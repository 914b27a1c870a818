"""The ready list (campaigns.ready): committed messages pushed onto Redis, one drain task for
many, each stream's popped messages sent as one batch of exactly those ids; real PostgreSQL,
Redis (the broker's `transactional` queue, no worker consuming it unless eager) and the local
SES endpoint. Recovery with killed workers: tests/api/test_recovery_workers.py."""

import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from campaigns import ready
from campaigns.message_sweeper import messages_sweep
from campaigns.models import Notification
from campaigns.tasks import deliver_ready
from infra.redis_client import redis_thread_client
from tests.api.helpers import api_client, post_message
from tests.conftest import _forget_broker_state, _queued, _ready, _redis
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_broker")]

N = Notification.Status
GRACE = timedelta(seconds=settings.MESSAGE_SWEEP_GRACE_SECONDS)


@pytest.fixture
def template():
    return TemplateFactory(slug="reset", subject="Hi {{ code }}", html="<p>{{ code }}</p>")


def statuses(ids) -> dict[int, str]:
    return dict(Notification.objects.filter(pk__in=ids).values_list("pk", "status"))


def test_messages_posted_together_share_one_drain_task(template, monkeypatch):
    monkeypatch.setattr(ready, "DRAIN_FLAG_MS", 60_000)  # however slow the machine
    client = api_client()
    ids = [post_message(client, to=f"a{i}@example.org") for i in range(5)]
    assert _ready() == 5
    assert _queued("transactional") == 1  # the flag held back the other four drains
    assert set(statuses(ids).values()) == {N.CREATED}


def test_a_drain_sends_exactly_its_messages_in_one_batch_and_leaves_nothing(template, ses):
    """Five messages of one stream, one of them scheduled between them: one drain sends the
    five due ones (one batch: one lease, its claims by id) and never the scheduled one, which
    lies inside the batch's id range."""
    client = api_client()
    due = [
        post_message(client, to=f"due{i}@example.org", personalisation={"code": i})
        for i in range(2)
    ]
    later = post_message(
        client,
        to="later@example.org",
        send_at=(timezone.now() + timedelta(hours=1)).isoformat(),
    )
    due += [
        post_message(client, to=f"due{i}@example.org", personalisation={"code": i})
        for i in (2, 3, 4)
    ]
    assert _ready() == 5

    deliver_ready()  # the drain task, in-process

    assert statuses(due) == dict.fromkeys(due, N.SENT)
    assert statuses([later]) == {later: N.CREATED}
    assert ses.stats()["recipients"] == 5
    assert sorted(m["subject"] for m in ses.messages(limit=10)) == [f"Hi {i}" for i in range(5)]
    assert _ready() == 0
    assert not _redis().exists(ready.DRAIN_FLAG_KEY)  # the next push enqueues a drain


def test_a_message_pushed_while_the_drain_works_is_sent_by_the_same_drain(template, ses):
    """Pushed after the drain's pop, while the flag still stands (so no drain of its own):
    the drain pops again before it leaves."""
    client = api_client()
    first = post_message(client, to="first@example.org")
    _forget_broker_state()
    pushed = []

    def deliver(stream_id: int, ids: list[int]) -> None:
        if not pushed:  # while the first group goes: a new POST
            pushed.append(post_message(client, to="second@example.org"))
        from campaigns.tasks import _deliver_popped

        _deliver_popped(stream_id, ids)

    _redis().set(ready.DRAIN_FLAG_KEY, 1)  # the drain's own flag, as its enqueue set it
    ready.messages_push([(Notification.objects.get(pk=first).campaign_id, first)])
    assert _queued("transactional") == 0
    assert ready.messages_drain(deliver=deliver, defer=None) == 2
    assert statuses([first, *pushed]) == {first: N.SENT, pushed[0]: N.SENT}
    assert _queued("transactional") == 0  # no second drain was needed


def test_a_drain_leaving_sees_a_message_pushed_before_the_flag_went(template):
    """The list empty at the pop, a message pushed before the flag's delete (its push found
    the flag set, so enqueued nothing): the second look after the delete keeps the drain."""
    client = api_client()
    message = post_message(client, to="late@example.org")
    stream_id = Notification.objects.get(pk=message).campaign_id
    _forget_broker_state()
    calls = []
    real_lpop = ready.redis.Redis.lpop

    def lpop(self, name, count=None):
        items = real_lpop(self, name, count)
        if not items and not calls:  # the push lands between the empty pop and the delete
            calls.append("pushed")
            ready.messages_push([(stream_id, message)])
        return items

    _redis().set(ready.DRAIN_FLAG_KEY, 1)
    delivered = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ready.redis.Redis, "lpop", lpop)
        assert ready.messages_drain(deliver=lambda s, ids: delivered.extend(ids), defer=None) == 1
    assert delivered == [message]
    assert _queued("transactional") == 0  # the pusher's flag test failed: no task of its own


def test_the_sweeper_counts_the_ready_list_and_starts_a_lost_drain(template):
    """The drain task is lost (the queue purged) while the list holds the messages: the sweep
    enqueues a drain (within a sweep), and requeues nothing while they wait on the list."""
    client = api_client()
    ids = [post_message(client, to=f"w{i}@example.org") for i in range(2)]
    _redis().delete("transactional", ready.DRAIN_FLAG_KEY)  # the drain task lost
    assert _ready() == 2

    result = messages_sweep(now=timezone.now() + GRACE + timedelta(seconds=1))
    assert result.requeued == 0  # they may be waiting on the list: they are
    assert _queued("transactional") == 1  # a drain for them

    # Popped by a drain that died before its claim: list empty, rows `created`, no lease.
    _redis().delete(ready.READY_KEY, "transactional")
    result = messages_sweep(now=timezone.now() + GRACE + timedelta(seconds=1))
    assert result.requeued == 2
    assert _queued("transactional") == 2  # one deliver_message each
    assert set(statuses(ids).values()) == {N.CREATED}


def test_without_redis_each_message_is_a_task_of_its_own(template, settings):
    """The demo (SQLite, a file-system broker): no ready list."""
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = "filesystem://"  # what redis_url() reads; the app keeps its
    post_message(api_client(), to="demo@example.org")
    assert (_ready(), _queued("transactional")) == (0, 1)


def test_a_push_whose_connection_was_dropped_goes_again_on_a_new_one(template):
    """Redis restarted, or closed the thread's connection, since its last push: the push is
    sent again on a new connection, not left to the sweeper's grace."""
    client = api_client()
    post_message(client, to="before@example.org")
    mine = redis_thread_client(ready._client()).client_id()
    _redis().client_kill_filter(_id=mine)

    post_message(client, to="after@example.org")

    assert _ready() == 2
    assert redis_thread_client(ready._client()).client_id() != mine


def test_a_push_loads_the_script_again_after_redis_lost_it(template):
    client = api_client()
    post_message(client, to="before@example.org")
    _redis().script_flush()
    post_message(client, to="after@example.org")
    assert _ready() == 2


def test_a_push_redis_cannot_take_is_left_to_the_sweeper(template, monkeypatch, caplog):
    """Redis gone (the retry's connection refused too): the message is stored, answered 202,
    and the log names how many and the first id, never an address."""
    client = api_client()
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # refused
    monkeypatch.setattr(ready, "_client", lambda: unreachable)
    message = post_message(client, to="nowhere@example.org")
    assert statuses([message]) == {message: N.CREATED}
    assert _ready() == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "campaigns.ready"]
    assert logged == [
        "messages not pushed to the ready list (ConnectionError): 1 left to the sweeper, "
        f"first {Notification.objects.get(pk=message).campaign_id}:{message}"
    ]


def test_a_stream_whose_batch_fails_does_not_hold_the_others():
    ready.messages_push([(1, 10), (2, 20), (1, 11)])
    delivered = []

    def deliver(stream_id: int, ids: list[int]) -> None:
        if stream_id == 1:
            raise RuntimeError("a bug in one stream's batch")
        delivered.append((stream_id, ids))

    assert ready.messages_drain(deliver=deliver, defer=None) == 3
    assert delivered == [(2, [20])]
    assert _ready() == 0


def test_a_drain_past_its_time_defers_the_rest_of_its_pop_and_hands_over(monkeypatch):
    """A drain ends far inside its time limit: the groups it has no time for go to a task
    each, and a new drain takes the list over."""
    monkeypatch.setattr(ready, "DRAIN_MAX_SECONDS", 0.0)
    ready.messages_push([(1, 10), (2, 20), (1, 11)])
    _redis().delete("transactional")
    deferred = []
    popped = ready.messages_drain(
        deliver=lambda *_: pytest.fail("no time left"), defer=lambda s, ids: deferred.append(ids)
    )
    assert popped == 3
    assert deferred == [[10, 11], [20]]
    assert _queued("transactional") == 1  # the next drain


def _drain_while_pushing(*, seconds: float, push: int) -> list[list[int]]:
    """Run a drain whose deliveries each push `push` more messages for `seconds` (as the web
    keeps pushing while the drain works); the batches it delivered."""
    _redis().delete("transactional")  # the first push's drain task: this test runs the drain
    batches = []
    started = time.monotonic()

    def deliver(stream_id: int, ids: list[int]) -> None:
        batches.append(ids)
        if time.monotonic() - started < seconds:
            ready.messages_push([(stream_id, ids[-1] + 1 + i) for i in range(push)])

    ready.messages_drain(deliver=deliver, defer=None)
    assert _ready() == 0
    return batches


def test_a_drain_that_keeps_up_keeps_other_drains_away(monkeypatch):
    """Pushes go on for five flag lifetimes, each pop smaller than DRAIN_POP: the drain sets
    the flag again at each pop, so no push enqueues a second drain (two drains would split
    the flow into smaller batches, each paying a batch's fixed cost)."""
    monkeypatch.setattr(ready, "DRAIN_FLAG_MS", 100)
    monkeypatch.setattr(ready, "DRAIN_LINGER_SECONDS", 0.03)
    ready.messages_push([(1, 1)])
    batches = _drain_while_pushing(seconds=0.5, push=1)
    assert len(batches) >= 6  # the drain outlived its first flag several times over
    assert _queued("transactional") == 0
    assert not _redis().exists(ready.DRAIN_FLAG_KEY)  # gone with the drain


def test_a_drain_that_falls_behind_lets_another_start(monkeypatch):
    """Every pop full (more pushed than a pop takes): the flag is not set again, so once it
    lapses the next push enqueues a drain to help."""
    monkeypatch.setattr(ready, "DRAIN_FLAG_MS", 100)
    monkeypatch.setattr(ready, "DRAIN_POP", 2)
    ready.messages_push([(1, 1), (1, 2)])
    _drain_while_pushing(seconds=0.5, push=2)
    assert _queued("transactional") >= 1


def test_a_live_stream_goes_on_the_bulk_path_with_its_stored_template(template, ses):
    """One SendBulkEmail for the drain's messages, with the stream's stored template (made by
    the worker) and each message's personalisation; if SES has lost the template, the call's
    messages go rendered instead, and the next batch stores it again."""
    client = api_client()
    ids = [
        post_message(client, to=f"bulk{i}@example.org", personalisation={"code": i})
        for i in range(3)
    ]
    stream = Notification.objects.select_related("campaign").get(pk=ids[0]).campaign
    deliver_ready()
    assert statuses(ids) == dict.fromkeys(ids, N.SENT)
    sent = ses.messages(limit=10)
    assert {(m["api"], m["template"]) for m in sent} == {
        ("SendBulkEmail", stream.ses_template_name)
    }
    assert sorted(m["subject"] for m in sent) == ["Hi 0", "Hi 1", "Hi 2"]

    ses.reset()  # SES forgot the template; this process still thinks it stored
    lost = post_message(client, to="lost@example.org", personalisation={"code": 7})
    deliver_ready()
    assert statuses([lost]) == {lost: N.SENT}
    [rendered] = ses.messages(limit=10)
    assert (rendered["api"], rendered["subject"]) == ("SendEmail", "Hi 7")

    again = post_message(client, to="again@example.org", personalisation={"code": 8})
    deliver_ready()
    assert statuses([again]) == {again: N.SENT}
    assert {m["api"] for m in ses.messages(limit=10)} == {"SendEmail", "SendBulkEmail"}


def test_only_a_live_lease_of_its_own_stream_holds_a_message_back_from_the_sweeper(template):
    """A drain's lease spans its popped ids, which may hold other streams' ids: those are not
    in its hands, and are requeued when lost; a span of its own stream holds a message."""
    from campaigns import leases
    from campaigns.models import BatchLease

    TemplateFactory(slug="other", subject="Other", html="<p>Other</p>")
    client = api_client()
    message = post_message(client, to="span@example.org")
    other = client.post(
        "/api/v1/messages", {"template": "other", "to": "o@example.org"}, format="json"
    ).json()["id"]
    stream_id, other_stream = (Notification.objects.get(pk=i).campaign_id for i in (message, other))
    assert stream_id != other_stream
    Notification.objects.filter(pk=other).update(status=N.SENT)
    _forget_broker_state()
    later = timezone.now() + GRACE + timedelta(seconds=1)
    span = {"first_id": message - 100, "last_id": message + 100, "until": later}
    leases.lease_wait(campaign_id=other_stream, **span)
    assert messages_sweep(now=later).requeued == 1  # another stream's span: lost
    _forget_broker_state()
    later += GRACE + timedelta(seconds=1)
    leases.lease_wait(campaign_id=stream_id, **{**span, "until": later})
    assert messages_sweep(now=later).requeued == 0  # its own stream's: in hand
    BatchLease.objects.filter(campaign_id=stream_id).delete()
    assert messages_sweep(now=later).requeued == 1

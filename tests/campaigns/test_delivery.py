"""The hand-off to SES and what each answer does to the ledger (in-process, real endpoint)."""

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from campaigns import delivery, messages, senders, services, sweeper
from campaigns.models import Campaign, CampaignCounter, Contact, Membership, Notification
from campaigns.tokens import unsubscribe_token_for
from tests.factories import CampaignFactory, list_with_contacts

pytestmark = pytest.mark.django_db

N = Notification.Status


@pytest.fixture
def started(ses, django_capture_on_commit_callbacks):
    """A campaign of 120 recipients, started (audience frozen) but with no batch run yet."""
    campaign = CampaignFactory(contact_list=list_with_contacts(120))
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_send_now(campaign=campaign)
    with django_capture_on_commit_callbacks(execute=False) as batches:
        services.campaign_start(campaign_id=campaign.pk)
    assert len(batches) == 1  # one on_commit callback enqueues every range
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING
    assert campaign.recipient_count == 120
    return campaign


def _deliver(campaign) -> delivery.BatchResult:
    ids = Notification.objects.filter(campaign=campaign).values_list("id", flat=True)
    return delivery.deliver_batch(campaign_id=campaign.pk, first_id=min(ids), last_id=max(ids))


def _statuses(campaign) -> dict[str, int]:
    rows = Notification.objects.filter(campaign=campaign)
    return {
        status: rows.filter(status=status).count()
        for status in N.values
        if rows.filter(status=status).exists()
    }  # noqa: E501


def test_batch_sends_everyone_once(ses_kind, started, ses):
    result = _deliver(started)
    assert (result.claimed, result.sent) == (120, 120)
    assert _statuses(started) == {N.SENT: 120}
    assert ses.stats()["calls"]["SendBulkEmail"] == 3  # 50 + 50 + 20

    # Running the same range again claims nothing and sends nothing.
    assert _deliver(started).claimed == 0
    assert ses.stats()["recipients"] == 120
    assert services.campaign_finish_if_done(campaign_id=started.pk)


def test_a_batch_finishes_its_campaign_once_the_counters_and_the_ledger_agree(started, ses):
    ids = sorted(Notification.objects.filter(campaign=started).values_list("id", flat=True))
    delivery.deliver_batch(campaign_id=started.pk, first_id=ids[0], last_id=ids[59])
    assert not services.campaign_finish_if_answered(campaign_id=started.pk)  # 60 of 120

    # Counters short of the audience (drifted): the batch leaves it to the sweeper's ledger check.
    delivery.deliver_batch(campaign_id=started.pk, first_id=ids[60], last_id=ids[-1])
    CampaignCounter.objects.filter(campaign_id=started.pk, name="sent").update(value=119)
    assert not services.campaign_finish_if_answered(campaign_id=started.pk)
    assert Campaign.objects.get(pk=started.pk).status == Campaign.Status.SENDING
    sweeper.campaigns_sweep()
    assert Campaign.objects.get(pk=started.pk).status == Campaign.Status.SENT


def test_counters_that_add_up_never_finish_a_campaign_the_ledger_says_is_not_done(started, ses):
    ids = sorted(Notification.objects.filter(campaign=started).values_list("id", flat=True))
    delivery.deliver_batch(campaign_id=started.pk, first_id=ids[0], last_id=ids[-2])
    CampaignCounter.objects.filter(campaign_id=started.pk, name="sent").update(value=120)
    assert not services.campaign_finish_if_answered(campaign_id=started.pk)  # one row `created`
    delivery.deliver_batch(campaign_id=started.pk, first_id=ids[-1], last_id=ids[-1])
    assert services.campaign_finish_if_answered(campaign_id=started.pk)
    assert Campaign.objects.get(pk=started.pk).status == Campaign.Status.SENT


@pytest.fixture
def short_throttle_budget(monkeypatch):
    """A batch gives up on a throttling SES after a fraction of a second (60 s in production)."""
    monkeypatch.setattr(delivery, "THROTTLE_PAUSE_SECONDS", 0.01)
    monkeypatch.setattr(delivery, "THROTTLE_BUDGET_SECONDS", 0.1)


def test_throttling_gives_rows_back_for_a_retry_without_failures(
    ses_kind, started, ses, short_throttle_budget
):
    ses.faults(throttle=1.0)
    result = _deliver(started)
    assert result.retry == delivery.RETRY_THROTTLED
    assert result.released >= 50  # each throttled call's rows, given back and tried again
    assert _statuses(started) == {N.CREATED: 120}
    assert not services.campaign_finish_if_done(campaign_id=started.pk)

    ses.faults(throttle=0)
    assert _deliver(started).sent == 120
    assert ses.stats()["duplicate_recipients"] == 0


@pytest.mark.parametrize("after_accept", [False, True])
def test_a_5xx_answer_makes_rows_unknown_and_they_are_never_resent(
    ses_kind, started, ses, after_accept
):
    ses.faults(error_5xx=1.0, error_5xx_after_accept=after_accept)
    result = _deliver(started)
    assert result.unknown == 120
    assert _statuses(started) == {N.UNKNOWN: 120}
    accepted = ses.stats()["recipients"]
    assert accepted == (120 if after_accept else 0)

    ses.faults(error_5xx=0)
    assert _deliver(started).claimed == 0  # unknown rows are not claimed again
    assert ses.stats()["recipients"] == accepted
    assert services.campaign_finish_if_done(campaign_id=started.pk)


def test_a_refusal_of_the_whole_campaign_pauses_it_and_spends_nobody(ses_kind, started, ses):
    """SES refusing what every message of the campaign shares (its stored template is gone)
    is not any recipient's failure: the campaign is paused with the reason, rows kept."""
    Campaign.objects.filter(pk=started.pk).update(ses_template_name="no-such-template")
    result = _deliver(started)
    assert (result.sent, result.failed, result.retry) == (0, 0, "")
    assert _statuses(started) == {N.CREATED: 120}
    started.refresh_from_db()
    assert started.status == Campaign.Status.PAUSED
    assert started.status_reason.startswith("SES refused the campaign's messages")
    assert "NotFoundException" in started.status_reason


def test_contacts_suppressed_after_the_freeze_are_skipped(started, ses):
    contact_ids = list(
        Notification.objects.filter(campaign=started)
        .order_by("id")
        .values_list("contact_id", flat=True)
    )
    Contact.objects.filter(pk__in=contact_ids[:5]).update(status=Contact.Status.BOUNCED)
    # Left the campaign's list after the freeze (the first also bounced: that reason wins).
    Membership.objects.filter(
        contact_list_id=started.contact_list_id, contact_id__in=contact_ids[4:7]
    ).update(unsubscribed_at=timezone.now())
    result = _deliver(started)
    assert (result.sent, result.skipped) == (113, 7)
    assert ses.stats()["recipients"] == 113
    reasons = dict(
        Notification.objects.filter(campaign=started, status=N.SKIPPED).values_list(
            "contact_id", "reason"
        )
    )
    assert reasons == {
        **{cid: "suppressed: the address bounced" for cid in contact_ids[:5]},
        **{cid: "unsubscribed from the list" for cid in contact_ids[5:7]},
    }


def test_paused_campaign_claims_nothing_until_resumed(
    started, ses, django_capture_on_commit_callbacks
):
    services.campaign_pause(campaign=started)
    assert _deliver(started).claimed == 0
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        services.campaign_resume(campaign=started)
    assert len(enqueued) == 1
    assert _deliver(started).sent == 120


def test_pause_mid_batch_stops_it_between_groups(rendered, ses, monkeypatch):
    """A batch re-reads its campaign's status between groups: paused after its first group,
    it claims nothing more (the rest stay created, for the resume's batches)."""
    monkeypatch.setattr(delivery, "STATUS_CHECK_SECONDS", 0)
    record = delivery._Batch._record

    def record_then_pause(self, outcome):  # (on the batch's own thread)
        record(self, outcome)
        Campaign.objects.filter(pk=self.campaign.pk).update(status=Campaign.Status.PAUSED)

    monkeypatch.setattr(delivery._Batch, "_record", record_then_pause)
    result = _deliver(rendered)
    assert (result.sent, result.claimed, result.retry) == (50, 50, "")
    assert _statuses(rendered) == {N.SENT: 50, N.CREATED: 70}
    assert ses.stats()["recipients"] == 50


def test_a_pause_during_the_wait_for_a_slot_claims_nothing_more(started, ses, monkeypatch):
    """Bulk path: the slot is taken before the rows are claimed, so a pause that comes while
    a batch waits for its slot leaves the next rows unclaimed (never `sending` in a paused
    campaign), while the calls already made are answered and recorded."""
    from campaigns.ratelimit import ses_rate_limiter_reset

    monkeypatch.setattr(delivery, "STATUS_CHECK_SECONDS", 0)
    monkeypatch.setattr(settings, "SES_MAX_SEND_RATE", 100)  # calls of 5, ~19 a second
    ses_rate_limiter_reset()
    acquire = None

    def acquire_then_pause(self, n, **kwargs):
        granted = acquire(self, n, **kwargs)
        if Notification.objects.filter(campaign=started, status=N.SENT).count() >= 10:
            Campaign.objects.filter(pk=started.pk).update(status=Campaign.Status.PAUSED)
        return granted

    from campaigns import ratelimit

    limiter_class = type(ratelimit.ses_rate_limiter()[0])
    acquire = limiter_class.acquire
    monkeypatch.setattr(limiter_class, "acquire", acquire_then_pause)
    try:
        result = _deliver(started)
    finally:
        monkeypatch.setattr(settings, "SES_MAX_SEND_RATE", 0)
        ses_rate_limiter_reset()
    counts = _statuses(started)
    assert set(counts) == {N.SENT, N.CREATED}, counts
    assert counts[N.SENT] == result.sent == result.claimed == ses.stats()["recipients"]
    assert 10 <= result.sent <= 10 + 5 * senders.BULK_IN_FLIGHT


def test_cancel_skips_unclaimed_rows_and_counts_add_up(started, ses):
    ids = list(
        Notification.objects.filter(campaign=started).order_by("id").values_list("id", flat=True)
    )
    delivery.deliver_batch(campaign_id=started.pk, first_id=ids[0], last_id=ids[49])
    services.campaign_cancel(campaign=started)
    assert _deliver(started).claimed == 0
    assert _statuses(started) == {N.SENT: 50, N.SKIPPED: 70}
    started.refresh_from_db()
    assert started.status == Campaign.Status.CANCELLED


def test_sweeper_flags_rows_of_a_dead_batch_unknown_and_finishes(started, ses):
    # A batch claimed these rows and died before recording any answer.
    Notification.objects.filter(campaign=started).update(
        status=N.SENDING, updated_at=timezone.now() - timedelta(hours=1)
    )
    sweeper.campaigns_sweep()
    assert _statuses(started) == {N.UNKNOWN: 120}
    started.refresh_from_db()
    assert started.status == Campaign.Status.SENT
    assert ses.stats()["recipients"] == 0  # nothing was re-sent


def test_sweeper_settles_a_dead_batch_within_seconds_and_spares_live_ones(started, ses):
    """A batch's lease beats while it runs; one that stopped beating LEASE_TIMEOUT ago died
    mid-hand-off: its `sending` rows become unknown at the next sweep (whenever they were
    claimed), while the rows of a live batch are left alone."""
    from campaigns import leases
    from campaigns.models import BatchLease

    ids = sorted(Notification.objects.filter(campaign=started).values_list("id", flat=True))
    Notification.objects.filter(campaign=started).update(status=N.SENDING)  # claimed just now
    dead = leases.lease_take(campaign_id=started.pk, first_id=ids[0], last_id=ids[59])
    BatchLease.objects.filter(pk=dead).update(
        heartbeat_at=timezone.now() - leases.LEASE_TIMEOUT - timedelta(seconds=1)
    )
    leases.lease_take(campaign_id=started.pk, first_id=ids[60], last_id=ids[-1])  # alive
    sweeper.campaigns_sweep()
    assert _statuses(started) == {N.UNKNOWN: 60, N.SENDING: 60}
    assert list(BatchLease.objects.filter(campaign=started).values_list("first_id", flat=True)) == [
        ids[60]
    ]
    started.refresh_from_db()
    assert started.status == Campaign.Status.SENDING  # the live batch is still at work
    assert ses.stats()["recipients"] == 0  # nothing was re-sent


def test_sweeper_leaves_created_rows_to_a_batch_waiting_for_its_retry(
    started, ses, django_capture_on_commit_callbacks
):
    """A throttled batch retried later leaves a waiting lease: its rows sit `created` with no
    batch running, and they are not taken for lost until the retry is overdue."""
    from campaigns import leases

    ids = sorted(Notification.objects.filter(campaign=started).values_list("id", flat=True))
    Notification.objects.filter(campaign=started).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )
    leases.lease_wait(
        campaign_id=started.pk,
        first_id=ids[0],
        last_id=ids[-1],
        until=timezone.now() + timedelta(minutes=5),
    )
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        sweeper.campaigns_sweep()
    assert enqueued == []


def test_sweeper_leaves_created_rows_whose_batches_wait_in_the_queue(
    started, ses, django_capture_on_commit_callbacks
):
    from config.celery import app

    Notification.objects.filter(campaign=started).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("bulk")
        app.send_task("campaigns.tasks.campaigns_sweep", queue="bulk", connection=conn)
        try:
            with django_capture_on_commit_callbacks(execute=False) as enqueued:
                sweeper.campaigns_sweep()
        finally:
            conn.default_channel.queue_purge("bulk")
    assert enqueued == []


def test_sweeper_reenqueues_a_campaign_whose_batches_were_lost(
    started, ses, django_capture_on_commit_callbacks
):
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("bulk")  # nothing of theirs waits there
    Notification.objects.filter(campaign=started).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        sweeper.campaigns_sweep()
    assert len(enqueued) == 1
    started.refresh_from_db()
    assert started.status == Campaign.Status.SENDING


def test_campaign_is_never_finished_while_rows_are_pending(started):
    assert not services.campaign_finish_if_done(campaign_id=started.pk)
    started.refresh_from_db()
    assert started.status == Campaign.Status.SENDING


def _start(campaign, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_send_now(campaign=campaign)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_start(campaign_id=campaign.pk)
    campaign.refresh_from_db()


@pytest.fixture
def rendered(started):
    Campaign.objects.filter(pk=started.pk).update(send_path=Campaign.SendPath.RENDERED)
    started.refresh_from_db()
    return started


def test_rendered_path_sends_each_recipient_once_with_sendemail(ses_kind, rendered, ses):
    result = _deliver(rendered)
    assert (result.claimed, result.sent) == (120, 120)
    stats = ses.stats()
    assert stats["calls"].get("SendEmail") == 120 and "SendBulkEmail" not in stats["calls"]
    assert stats["duplicate_recipients"] == 0
    message_ids = {m["message_id"] for m in ses.messages()}
    assert (
        set(Notification.objects.filter(campaign=rendered).values_list("message_id", flat=True))
        == message_ids
    )


def test_rendered_path_throttling_and_5xx(ses_kind, rendered, ses, short_throttle_budget):
    ses.faults(throttle=1.0)
    result = _deliver(rendered)
    assert result.retry == delivery.RETRY_THROTTLED
    assert _statuses(rendered) == {N.CREATED: 120}
    ses.faults(error_5xx=1.0)
    assert _deliver(rendered).unknown == 120
    assert _statuses(rendered) == {N.UNKNOWN: 120}


def test_bulk_and_rendered_paths_send_the_same_message(
    ses_kind, ses, django_capture_on_commit_callbacks
):
    import re

    contact_list = list_with_contacts(3)
    first = Contact.objects.filter(lists=contact_list).first()
    first.attributes = {"city": "Zürich & <Co>"}
    first.first_name = 'Ada "Q" O\'Neil'
    first.save()
    template_kwargs = {
        "subject": 'Hi {{ first_name | default: "there" }} & co',
        "html": '<p>{% if city %}{{ city }}{% else %}nowhere{% endif %} <a href="https://e.x/?a=1&amp;b=2">x</a></p>'
                '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
        # Text-part URLs: one shared with the HTML (one link row), one of its own with
        # sentence punctuation after it, one running into a field, and the unsubscribe field.
        "text": "{{ first_name }} in {{ city | default: \"?\" }}\n"
                "Shop (https://e.x/?a=1&b=2). More: <https://e.x/more>.\n"
                "Yours: https://e.x/?c={{ city }} Unsubscribe: {{ unsubscribe_url }}",
    }  # fmt: skip
    from tests.factories import TemplateFactory

    template = TemplateFactory(**template_kwargs)
    bulk = CampaignFactory(contact_list=contact_list, template=template)
    rendered = CampaignFactory(
        contact_list=contact_list, template=template, send_path=Campaign.SendPath.RENDERED
    )
    for campaign in (bulk, rendered):
        _start(campaign, django_capture_on_commit_callbacks)
        assert _deliver(campaign).sent == 3

    def messages(campaign) -> dict:
        token = re.compile(r"/t/([ocu])/[0-9a-z]+\.[A-Za-z0-9_-]+")
        parts = ("subject", "html", "text")
        out = {}
        for m in ses.messages(header=f"X-Campaign:{campaign.pk}"):
            # Each message's own token: in its unsubscribe header, its footer, its links.
            nid = Notification.objects.get(campaign=campaign, contact__email=m["to"][0]).pk
            headers = {h["name"].lower(): h["value"] for h in m["headers"]}
            unsubscribe = f"{settings.TRACKING_BASE_URL}/t/u/{unsubscribe_token_for(nid)}"
            assert headers["list-unsubscribe"] == f"<{unsubscribe}>"
            assert headers["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"
            assert f'href="{unsubscribe}"' in m["html"]
            out[m["to"][0]] = tuple(token.sub(r"/t/\1/TOKEN", m[part] or "") for part in parts)
        return out

    assert messages(bulk) == messages(rendered)
    assert len(messages(bulk)) == 3
    subject, html, text = messages(bulk)[first.email]
    assert subject == 'Hi Ada "Q" O\'Neil & co'
    assert "Zürich &amp; &lt;Co&gt;" in html
    base = settings.TRACKING_BASE_URL
    assert text == (
        'Ada "Q" O\'Neil in Zürich & <Co>\n'
        f"Shop ({base}/t/c/TOKEN/0). More: <{base}/t/c/TOKEN/1>.\n"
        f"Yours: https://e.x/?c=Zürich & <Co> Unsubscribe: {base}/t/u/TOKEN"
    )
    for campaign in (bulk, rendered):
        links = campaign.links.order_by("index").values_list("index", "url")
        assert list(links) == [(0, "https://e.x/?a=1&b=2"), (1, "https://e.x/more")]


def test_editing_the_template_mid_send_changes_nothing(started, ses):
    started.template.subject = "Edited after the start"
    started.template.html = "<p>edited</p>"
    started.template.save()
    Campaign.objects.filter(pk=started.pk).update(send_path=Campaign.SendPath.RENDERED)
    started.refresh_from_db()
    assert _deliver(started).sent == 120
    assert not any("Edited" in m["subject"] for m in ses.messages())


def test_sending_is_paced_by_the_shared_rate_limit(started, ses, settings):
    import time

    from campaigns.ratelimit import ses_rate_limiter_reset

    settings.SES_MAX_SEND_RATE = 100  # 95 recipients/s, calls of 5, a burst of one call
    ses_rate_limiter_reset()
    try:
        began = time.monotonic()
        assert _deliver(started).sent == 120
        # The first 5 go at once; the other 115 need 115 / 95 s of slots at least.
        assert time.monotonic() - began >= 115 / 95 - 0.05
        assert ses.stats()["calls"]["SendBulkEmail"] == 24
    finally:
        settings.SES_MAX_SEND_RATE = 0
        ses_rate_limiter_reset()


def test_rows_given_back_after_a_cancel_are_skipped_not_stranded(started, ses, monkeypatch):
    ses.faults(throttle=1.0)
    monkeypatch.setattr(delivery, "STATUS_CHECK_SECONDS", 0)
    record = delivery._Batch._record

    def cancelled_while_in_flight(self, outcome):
        Campaign.objects.filter(pk=self.campaign.pk).update(status=Campaign.Status.CANCELLED)
        return record(self, outcome)

    monkeypatch.setattr(delivery._Batch, "_record", cancelled_while_in_flight)
    result = _deliver(started)
    assert not result.retry  # nothing would ever run the retry of a cancelled campaign
    assert _statuses(started) == {N.SKIPPED: 120}


def test_sweeper_skips_created_rows_left_in_a_cancelled_campaign(started):
    Campaign.objects.filter(pk=started.pk).update(status=Campaign.Status.CANCELLED)
    sweeper.campaigns_sweep()
    assert _statuses(started) == {N.SKIPPED: 120}


def test_sweeper_reads_the_ledger_only_of_campaigns_with_unanswered_rows(started):
    """No status index: the sweeper picks campaigns by their counters, and a campaign whose
    rows all have an answer is never read again."""
    from campaigns.selectors import campaigns_with_unanswered_rows

    Campaign.objects.filter(pk=started.pk).update(status=Campaign.Status.CANCELLED)
    cancelled = [Campaign.Status.CANCELLED]
    assert campaigns_with_unanswered_rows(statuses=cancelled) == [started.pk]  # 120 created
    sweeper.campaigns_sweep()  # skips them, counting them
    assert campaigns_with_unanswered_rows(statuses=cancelled) == []
    # Counters short of the audience (drifted, or rows given back late): read again.
    CampaignCounter.objects.filter(campaign=started, name="skipped").update(value=119)
    assert campaigns_with_unanswered_rows(statuses=cancelled) == [started.pk]
    assert campaigns_with_unanswered_rows(statuses=[Campaign.Status.SENDING]) == []


def test_audience_is_frozen_in_chunks_each_enqueued_as_it_commits(
    ses, django_capture_on_commit_callbacks, monkeypatch
):
    from campaigns import tasks

    monkeypatch.setattr(services, "FREEZE_CHUNK", 7)
    monkeypatch.setattr(services, "FIRST_FREEZE_CHUNK", 7)
    monkeypatch.setattr(services, "BATCH_SIZE", 5)
    campaign = CampaignFactory(contact_list=list_with_contacts(20))
    inactive = Contact.objects.filter(lists=campaign.contact_list).order_by("id")[:3]
    Contact.objects.filter(pk__in=[c.pk for c in inactive]).update(status=Contact.Status.BOUNCED)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_send_now(campaign=campaign)
    enqueued = []
    monkeypatch.setattr(tasks.deliver_batch, "delay", lambda *args: enqueued.append(args))
    with django_capture_on_commit_callbacks(execute=True) as chunks:
        services.campaign_start(campaign_id=campaign.pk)
    campaign.refresh_from_db()
    ids = sorted(Notification.objects.filter(campaign=campaign).values_list("id", flat=True))
    assert (len(ids), campaign.recipient_count) == (17, 17)
    assert campaign.frozen_at is not None
    assert len(chunks) == 3  # 20 members in chunks of 7: one commit (and enqueue) each
    covered = [i for _, first, last in enqueued for i in ids if first <= i <= last]
    assert covered == ids  # every row in exactly one batch

    # Run again (as the sweeper would after a crash): nothing new, nothing enqueued.
    enqueued.clear()
    assert services.campaign_freeze(campaign_id=campaign.pk) == 17
    assert enqueued == [] and Notification.objects.filter(campaign=campaign).count() == 17


def test_a_campaign_is_not_finished_before_its_audience_is_frozen(
    started, ses, eager_celery, django_capture_on_commit_callbacks
):
    Campaign.objects.filter(pk=started.pk).update(frozen_at=None)
    assert _deliver(started).sent == 120
    assert not services.campaign_finish_if_done(campaign_id=started.pk)
    Campaign.objects.filter(pk=started.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        sweeper.campaigns_sweep()  # the freeze looks dead: the sweeper has it finished
    sweeper.campaigns_sweep()  # …and the next sweep finds the campaign done
    started.refresh_from_db()
    assert started.frozen_at is not None and started.status == Campaign.Status.SENT


def test_cancel_during_the_freeze_stops_it(ses, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(services, "FREEZE_CHUNK", 5)
    monkeypatch.setattr(services, "FIRST_FREEZE_CHUNK", 5)
    campaign = CampaignFactory(contact_list=list_with_contacts(20))
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_send_now(campaign=campaign)
    freeze = services._freeze_audience

    def freeze_then_cancel(**kwargs):
        ids = freeze(**kwargs)
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.CANCELLED)
        return ids

    monkeypatch.setattr(services, "_freeze_audience", freeze_then_cancel)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_start(campaign_id=campaign.pk)
    assert Notification.objects.filter(campaign=campaign).count() == 5  # the first chunk only


def test_batches_read_the_template_snapshot_once_per_campaign_version(
    started, django_assert_num_queries
):
    """A batch reads its campaign without the snapshot; the compiled template is kept per SES
    template name (which names the content), so only a new name reads it again."""
    messages._compiled_by_name.clear()

    def load():
        return Campaign.objects.defer("template_snapshot").get(pk=started.pk)

    campaign = load()
    with django_assert_num_queries(1):  # the deferred snapshot
        first = messages.campaign_compiled_template(campaign)
    again = load()
    with django_assert_num_queries(0):
        assert messages.campaign_compiled_template(again) is first
    snapshot = {**started.template_snapshot, "subject": "Changed {{ first_name }}"}
    Campaign.objects.filter(pk=started.pk).update(
        template_snapshot=snapshot, ses_template_name=started.ses_template_name + "x"
    )
    changed = messages.campaign_compiled_template(load())
    assert changed is not first
    assert changed.render({"first_name": "Ann"}).subject == "Changed Ann"


def test_merge_data_is_the_contacts_as_services_give_them_plus_the_builtins():
    from campaigns.ledger import ClaimedRow

    compiled = messages._compile_snapshot(
        json.dumps(
            {
                "subject": "{{ first_name }} {{ email }}",
                "html": "{{ city }} {{ score }} {{ vip }} {{ gone }} {{ unsubscribe_url }}",
                "text": "{{ last_name }}",
            },
            sort_keys=True,
        ),
        "https://t.example",
    )
    attributes = {"city": "Zürich", "score": 3.0, "vip": True, "gone": None}
    row = ClaimedRow(7, 3, "a@example.com", "Ann", "Lee", attributes, "")
    plan = messages.merge_plan(compiled.fields)
    data = messages.merge_data(row, plan, "7.abcdefghijklmnop", "https://t.example/u")
    expected = services.contact_merge_data(
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        attributes=attributes,
        fields=compiled.fields - messages.BUILTIN_FIELDS,
    )
    assert data == {
        **expected,
        "_t": "7.abcdefghijklmnop",
        "unsubscribe_url": "https://t.example/u",
    }
    assert expected["score"] == "3" and expected["vip"] == "true" and expected["gone"] == ""


def test_a_frozen_template_that_no_longer_compiles_fails_the_campaign_once(started, ses):
    """A campaign started before the language's limits, its frozen template past them: its
    batches cannot compile it, so the campaign ends failed with the reason and its rows are
    skipped, rather than every batch failing and being enqueued again forever."""
    deep = "{% if a %}" * 40 + "x" + "{% endif %}" * 40
    Campaign.objects.filter(pk=started.pk).update(
        template_snapshot={**started.template_snapshot, "html": deep},
        ses_template_name=started.ses_template_name + "-old",
    )
    assert _deliver(started).claimed == 0
    started.refresh_from_db()
    assert started.status == Campaign.Status.FAILED
    assert started.status_reason.startswith("The template does not parse")
    assert _statuses(started) == {N.SKIPPED: 120}
    assert ses.stats()["recipients"] == 0
    assert _deliver(started).claimed == 0  # a batch still queued finds it failed

"""The hand-off to SES and what each answer does to the ledger (in-process, real endpoint)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns import delivery, services
from campaigns.models import Campaign, Contact, Notification
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


def test_batch_sends_everyone_once(started, ses):
    result = _deliver(started)
    assert (result.claimed, result.sent) == (120, 120)
    assert _statuses(started) == {N.SENT: 120}
    assert ses.stats()["calls"]["SendBulkEmail"] == 3  # 50 + 50 + 20

    # Running the same range again claims nothing and sends nothing.
    assert _deliver(started).claimed == 0
    assert ses.stats()["recipients"] == 120
    assert services.campaign_finish_if_done(campaign_id=started.pk)


def test_throttling_releases_rows_for_a_retry_without_failures(started, ses):
    ses.faults(throttle=1.0)
    result = _deliver(started)
    assert result.retry and result.released == 120
    assert _statuses(started) == {N.CREATED: 120}
    assert not services.campaign_finish_if_done(campaign_id=started.pk)

    ses.faults(throttle=0)
    assert _deliver(started).sent == 120
    assert ses.stats()["duplicate_recipients"] == 0


@pytest.mark.parametrize("after_accept", [False, True])
def test_a_5xx_answer_makes_rows_unknown_and_they_are_never_resent(started, ses, after_accept):
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


def test_a_definite_refusal_fails_rows_with_the_reason(started, ses):
    Campaign.objects.filter(pk=started.pk).update(ses_template_name="no-such-template")
    result = _deliver(started)
    assert result.failed == 120
    reasons = set(Notification.objects.filter(campaign=started).values_list("reason", flat=True))
    assert len(reasons) == 1 and reasons.pop().startswith("NotFoundException")


def test_contacts_suppressed_after_the_freeze_are_skipped(started, ses):
    contact_ids = Notification.objects.filter(campaign=started).values_list("contact_id", flat=True)
    Contact.objects.filter(pk__in=list(contact_ids)[:5]).update(status=Contact.Status.BOUNCED)
    result = _deliver(started)
    assert (result.sent, result.skipped) == (115, 5)
    assert ses.stats()["recipients"] == 115


def test_paused_campaign_claims_nothing_until_resumed(
    started, ses, django_capture_on_commit_callbacks
):
    services.campaign_pause(campaign=started)
    assert _deliver(started).claimed == 0
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        services.campaign_resume(campaign=started)
    assert len(enqueued) == 1
    assert _deliver(started).sent == 120


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
    services.campaigns_sweep()
    assert _statuses(started) == {N.UNKNOWN: 120}
    started.refresh_from_db()
    assert started.status == Campaign.Status.SENT
    assert ses.stats()["recipients"] == 0  # nothing was re-sent


def test_sweeper_reenqueues_a_campaign_whose_batches_were_lost(
    started, ses, django_capture_on_commit_callbacks
):
    Notification.objects.filter(campaign=started).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        services.campaigns_sweep()
    assert len(enqueued) == 1
    started.refresh_from_db()
    assert started.status == Campaign.Status.SENDING


def test_campaign_is_never_finished_while_rows_are_pending(started):
    assert not services.campaign_finish_if_done(campaign_id=started.pk)
    started.refresh_from_db()
    assert started.status == Campaign.Status.SENDING

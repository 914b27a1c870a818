"""Messages without a list (transactional streams and bulk jobs: Campaign.contact_list is
empty): their headers, unsubscribing through them, the admin, and the sweeper, which must
never finish, fail or freeze a transactional stream."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from campaigns import delivery, services, sweeper
from campaigns.models import Campaign, Contact, MessageRequest, Notification
from campaigns.tokens import unsubscribe_token_for
from campaigns.transactional import stream_for
from templates_app.services import template_snapshot
from tests.api.helpers import api_client
from tests.factories import CampaignFactory, ContactFactory, TemplateFactory
from tracking.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def template():
    return TemplateFactory(
        slug="receipt",
        subject="Your receipt",
        html="<p>Thanks {{ first_name }}. <a href='{{ unsubscribe_url }}'>Unsubscribe</a></p>",
        text="Thanks {{ first_name }}. Unsubscribe: {{ unsubscribe_url }}",
    )


def _headers(sent: dict) -> dict[str, str]:
    return {h["name"].lower(): h["value"] for h in sent["headers"]}


def _post_message(to: str = "ada@example.com") -> Notification:
    answer = api_client().post(
        "/api/v1/messages",
        {"template": "receipt", "to": to, "personalisation": {"first_name": "Ada"}},
        format="json",
    )
    assert answer.status_code == 202, answer.content
    return Notification.objects.get(pk=answer.json()["id"])


def _unsubscribe_url(message_id: int) -> str:
    return f"/t/u/{unsubscribe_token_for(message_id)}"


def test_a_transactional_message_carries_no_list_unsubscribe_header(template, ses, eager_celery):
    message = _post_message()

    [sent] = ses.messages()
    headers = _headers(sent)
    assert "list-unsubscribe" not in headers and "list-unsubscribe-post" not in headers
    assert headers["x-campaign"] == str(message.campaign_id)
    # The template's own footer link still works (the template's author chose to show it).
    assert f"{settings.TRACKING_BASE_URL}{_unsubscribe_url(message.pk)}" in sent["html"]


def test_unsubscribing_through_a_transactional_message_is_from_all_mail(
    template, ses, eager_celery, client
):
    message = _post_message()
    url = _unsubscribe_url(message.pk)

    page = client.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    assert "no more mail from us" in body and "Only mail sent to the list" not in body
    assert Contact.objects.get(pk=message.contact_id).status == Contact.Status.ACTIVE

    # RFC 8058 one-click asks for the list; with no list, it is all mail.
    answer = client.post(
        url, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert answer.status_code == 200
    assert Contact.objects.get(pk=message.contact_id).status == Contact.Status.UNSUBSCRIBED
    [event] = Event.objects.filter(notification=message, type=Event.Type.UNSUBSCRIBED)
    assert event.description.startswith("all mail")

    # Their next message is accepted and skipped, never handed to SES.
    later = _post_message()
    later.refresh_from_db()
    assert later.status == Notification.Status.SKIPPED
    assert len(ses.messages()) == 1


def test_the_page_form_of_a_listless_message_unsubscribes_from_all_mail(
    template, ses, eager_celery, client
):
    message = _post_message()
    page = client.post(_unsubscribe_url(message.pk), {"scope": "list"})  # a forged choice
    assert page.status_code == 200
    assert "will receive no more mail from us" in page.content.decode()
    assert Contact.objects.get(pk=message.contact_id).status == Contact.Status.UNSUBSCRIBED


def _job(template, contacts) -> tuple[Campaign, list[Notification]]:
    """A bulk job as the API makes one: no list, its rows and their requests."""
    job = Campaign.objects.create(
        kind=Campaign.Kind.JOB,
        name="job",
        template=template,
        status=Campaign.Status.SENDING,
        started_at=timezone.now(),
        template_snapshot=template_snapshot(template=template),
        send_path=Campaign.SendPath.RENDERED,
    )
    rows = [Notification.objects.create(campaign=job, contact=c) for c in contacts]
    for row in rows:
        MessageRequest.objects.create(notification=row, personalisation={"first_name": "Job"})
    return job, rows


def test_a_job_message_carries_list_unsubscribe_and_one_click_leaves_all_mail(
    template, ses, client
):
    contact = ContactFactory()
    job, [row] = _job(template, [contact])

    result = delivery.deliver_batch(campaign_id=job.pk, first_id=row.pk, last_id=row.pk)

    assert result.sent == 1
    [sent] = ses.messages()
    headers = _headers(sent)
    url = _unsubscribe_url(row.pk)
    assert headers["list-unsubscribe"] == f"<{settings.TRACKING_BASE_URL}{url}>"
    assert headers["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"
    assert "Thanks Job" in sent["html"]
    answer = client.post(
        url, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert answer.status_code == 200
    assert Contact.objects.get(pk=contact.pk).status == Contact.Status.UNSUBSCRIBED


def test_the_campaign_admin_lists_and_opens_campaigns_only(template, admin_client):
    campaign = CampaignFactory(template=template)
    stream_id = stream_for(template=template, test_mode=False)
    job, _ = _job(template, [ContactFactory()])

    page = admin_client.get("/admin/campaigns/campaign/")
    assert page.status_code == 200
    ids = {c.pk for c in page.context["cl"].result_list}
    assert ids == {campaign.pk}
    for other in (stream_id, job.pk):
        # Not a campaign: the admin says it does not exist, and its own views answer 404.
        assert admin_client.get(f"/admin/campaigns/campaign/{other}/change/").status_code == 302
        assert admin_client.get(f"/admin/campaigns/campaign/{other}/progress/").status_code == 404
        assert admin_client.get(f"/admin/campaigns/campaign/{other}/report.csv").status_code == 404
        action = f"/admin/campaigns/campaign/{other}/action/cancel/"
        assert admin_client.post(action).status_code == 404
    assert Campaign.objects.get(pk=stream_id).status == Campaign.Status.SENDING
    dashboard = admin_client.get("/admin/")
    assert dashboard.status_code == 200
    assert f"/admin/campaigns/campaign/{stream_id}/change/" not in dashboard.content.decode()


def test_the_sweeper_never_finishes_freezes_or_fans_out_a_transactional_stream(template, ses):
    stream_id = stream_for(template=template, test_mode=False)
    # Idle for long, a message waiting for its send_at, counted as not answered yet: a
    # campaign in that state would be frozen again and its `created` rows enqueued.
    scheduled = Notification.objects.create(
        campaign_id=stream_id, contact=ContactFactory(), repeat_key=7
    )
    MessageRequest.objects.create(
        notification=scheduled, send_at=timezone.now() + timedelta(days=1)
    )
    hour_ago = timezone.now() - timedelta(hours=1)
    Notification.objects.filter(pk=scheduled.pk).update(updated_at=hour_ago)
    Campaign.objects.filter(pk=stream_id).update(updated_at=hour_ago, recipient_count=1)
    queued = sweeper.queue_length("bulk")  # the real broker's bulk queue (no worker runs)

    sweeper.campaigns_sweep()

    assert sweeper.queue_length("bulk") == queued, "no freeze, no batch enqueued"
    assert services.campaign_finish_if_done(campaign_id=stream_id) is False
    assert Campaign.objects.get(pk=stream_id).status == Campaign.Status.SENDING
    assert Notification.objects.get(pk=scheduled.pk).status == Notification.Status.CREATED


def test_a_stream_that_cannot_send_fails_its_messages_not_itself(template, ses):
    stream_id = stream_for(template=template, test_mode=False)
    waiting = Notification.objects.create(
        campaign_id=stream_id, contact=ContactFactory(), repeat_key=3
    )

    assert services.campaign_fail_sending(campaign_id=stream_id, reason="does not parse") is False

    assert Campaign.objects.get(pk=stream_id).status == Campaign.Status.SENDING
    waiting.refresh_from_db()
    assert (waiting.status, waiting.reason) == (Notification.Status.FAILED, "does not parse")

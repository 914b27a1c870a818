"""The whole path on real components: a Celery worker process, Redis, PostgreSQL, anymail's
SES backend over HTTP to the local SES endpoint, then the tracking views and the report."""

import re

import pytest

from campaigns import services
from campaigns.models import Campaign, Notification
from tests.conftest import wait_for
from tests.factories import CampaignFactory, list_with_contacts
from tracking.reports.report import campaign_report

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RECIPIENTS = 200


def test_campaign_is_sent_once_to_each_recipient_and_tracked(celery_worker_process, ses, client):
    contact_list = list_with_contacts(RECIPIENTS)
    campaign = CampaignFactory(contact_list=contact_list)

    services.campaign_send_now(campaign=campaign)

    def finished():
        campaign.refresh_from_db()
        return campaign.status == Campaign.Status.SENT

    wait_for(finished, timeout=120, message=f"campaign sent\n{celery_worker_process.output()}")

    # The endpoint accepted each recipient exactly once, through SendBulkEmail.
    stats = ses.stats()
    assert stats["recipients"] == RECIPIENTS
    assert stats["distinct_recipients"] == RECIPIENTS
    assert stats["duplicate_recipients"] == 0
    assert stats["calls"].get("SendBulkEmail") == RECIPIENTS // 50
    messages = ses.messages()
    by_address = {message["to"][0]: message for message in messages}
    emails = set(contact_list.contacts.values_list("email", flat=True))
    assert set(by_address) == emails

    # Every notification records the MessageId the endpoint gave for its recipient.
    rows = Notification.objects.filter(campaign=campaign).select_related("contact")
    assert rows.count() == RECIPIENTS
    for row in rows:
        assert row.status == Notification.Status.SENT
        assert row.message_id == by_address[row.contact.email]["message_id"]

    # The message is personalized, with tracked links and the open pixel.
    row = rows.first()
    html = by_address[row.contact.email]["html"]
    assert f"Hi {row.contact.first_name}," in html
    assert "https://example.com/a" not in html
    pixel = re.search(r'src="http://tracking\.test(/t/o/[^"]+\.gif)"', html).group(1)
    clicks = re.findall(r'href="http://tracking\.test(/t/c/[^"]+)"', html)
    assert len(clicks) == 3  # two links and the hidden honeypot (index 2)

    report = campaign_report(campaign_id=campaign.pk)
    assert (report.recipients, report.sent, report.unique_opens, report.unique_clicks) == (
        RECIPIENTS, RECIPIENTS, 0, 0,
    )  # fmt: skip

    assert client.get(pixel).status_code == 200
    response = client.get(clicks[1])
    assert response.status_code == 302
    assert response["Location"] == "https://example.com/b?x=1&y=2"

    report = campaign_report(campaign_id=campaign.pk)
    assert (report.unique_opens, report.unique_clicks) == (1, 1)
    assert [(link.url, link.clicks) for link in report.links] == [
        ("https://example.com/a", 0),
        ("https://example.com/b?x=1&y=2", 1),
    ]

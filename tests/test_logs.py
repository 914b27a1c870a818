"""Logs carry ids, never addresses, names or bodies: a whole send, its events and its tracking
are run with every logger at DEBUG, and nothing personal may show up in what they wrote."""

import logging

import pytest

from campaigns.models import Notification
from tests.factories import CampaignFactory, ContactFactory, TemplateFactory
from tests.test_webhooks import post, ses_event, sns_envelope
from tracking.tokens import token_for

pytestmark = pytest.mark.django_db


def test_a_send_and_its_events_log_no_personal_data(
    client, admin_client, caplog, eager_celery, ses, django_capture_on_commit_callbacks
):
    contacts = [
        ContactFactory(email=f"secret.person{i}@private.example", first_name="Zebedee")
        for i in range(3)
    ]
    template = TemplateFactory(
        subject="Confidential subject line {{ first_name }}",
        html='<p>Body text for {{ first_name }}</p><a href="https://example.com/x">x</a>',
    )
    campaign = CampaignFactory(template=template)
    campaign.contact_list.contacts.add(*contacts)

    caplog.set_level(logging.DEBUG)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/campaigns/campaign/{campaign.pk}/action/send-now/")
    notification = Notification.objects.get(contact=contacts[0])
    assert notification.status == "sent"
    ses.faults(error_5xx=1.0)  # an error path logs too
    # Events and tracking for that message.
    post(client, sns_envelope(ses_event("Bounce", notification.message_id, contacts[0].email)))
    post(client, sns_envelope(ses_event("Delivery", "unknown-id", contacts[1].email)))
    client.get(f"/t/o/{token_for(notification.pk)}.gif")
    client.get(f"/t/c/{token_for(notification.pk)}/0")

    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records
    )
    assert f"campaign {campaign.pk}" in logged  # the logs did record the send, by id
    for secret in ["secret.person", "private.example", "Zebedee", "Confidential", "Body text"]:
        assert secret not in logged, f"{secret!r} was logged"

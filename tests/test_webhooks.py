"""SES events, as AWS documents them, in SNS envelopes, posted to anymail's SES webhook."""

import base64
import json
import uuid

import pytest

from campaigns.models import Contact, Notification
from tests.factories import CampaignFactory, ContactFactory
from tracking.models import Event

pytestmark = pytest.mark.django_db

WEBHOOK = "/webhooks/anymail/amazon_ses/tracking/"
AUTH = "Basic " + base64.b64encode(b"sns:webhook-test-secret").decode()
MESSAGE_ID = "0100018c5d2a7b1e-3f2f1c7e-5a1b-4c1d-9e2f-0123456789ab-000000"


def ses_mail(message_id: str, recipient: str) -> dict:
    return {
        "timestamp": "2026-11-20T10:00:00.000Z",
        "source": "news@example.com",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": [recipient],
        "headersTruncated": False,
        "headers": [{"name": "X-Campaign", "value": "1"}],
        "commonHeaders": {
            "from": ["news@example.com"],
            "to": [recipient],
            "messageId": message_id,
            "subject": "Hello",
        },
        "tags": {"ses:configuration-set": ["events"]},
    }


def ses_event(event_type: str, message_id: str, recipient: str) -> dict:
    when = "2026-11-20T10:00:05.000Z"
    details = {
        "Delivery": {
            "delivery": {
                "timestamp": when,
                "processingTimeMillis": 812,
                "recipients": [recipient],
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
            }
        },
        "Bounce": {
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": when,
                "feedbackId": "0100018c5d2a7b1e-feedback-000000",
                "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
            }
        },
        "Complaint": {
            "complaint": {
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": when,
                "feedbackId": "0100018c5d2a7b1e-complaint-000000",
                "userAgent": "ExampleCorp Feedback Loop (V0.01)",
                "complaintFeedbackType": "abuse",
                "arrivalDate": when,
            }
        },
        "Open": {
            "open": {
                "ipAddress": "192.0.2.1",
                "timestamp": when,
                "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
            }
        },
        "Click": {
            "click": {
                "ipAddress": "192.0.2.1",
                "link": "https://example.com/a",
                "linkTags": {},
                "timestamp": when,
                "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)",
            }
        },
    }[event_type]
    return {"eventType": event_type, "mail": ses_mail(message_id, recipient), **details}


def sns_envelope(message: dict, sns_id: str | None = None) -> dict:
    return {
        "Type": "Notification",
        "MessageId": sns_id or str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Subject": "Amazon SES Email Event Notification",
        "Message": json.dumps(message),
        "Timestamp": "2026-11-20T10:00:06.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+..",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def post(client, envelope: dict, auth: str | None = AUTH):
    headers = {
        "HTTP_X_AMZ_SNS_MESSAGE_TYPE": envelope["Type"],
        "HTTP_X_AMZ_SNS_MESSAGE_ID": envelope["MessageId"],
    }
    if auth:
        headers["HTTP_AUTHORIZATION"] = auth
    return client.post(WEBHOOK, data=json.dumps(envelope), content_type="text/plain", **headers)


@pytest.fixture
def sent():
    contact = ContactFactory()
    campaign = CampaignFactory()
    return Notification.objects.create(
        campaign=campaign, contact=contact, status=Notification.Status.SENT, message_id=MESSAGE_ID
    )


@pytest.mark.parametrize(
    ("event_type", "status", "contact_status"),
    [
        ("Delivery", "delivered", "active"),
        ("Bounce", "bounced", "bounced"),
        ("Complaint", "complained", "complained"),
        ("Open", "sent", "active"),
        ("Click", "sent", "active"),
    ],
)
def test_ses_event_updates_the_notification(client, sent, event_type, status, contact_status):
    response = post(client, sns_envelope(ses_event(event_type, MESSAGE_ID, sent.contact.email)))

    assert response.status_code == 200
    sent.refresh_from_db()
    assert sent.status == status
    assert Contact.objects.get(pk=sent.contact_id).status == contact_status
    event = Event.objects.get(notification=sent)
    assert event.source == "ses"
    assert event.type == {
        "Delivery": "delivered", "Bounce": "bounced", "Complaint": "complained",
        "Open": "opened", "Click": "clicked",
    }[event_type]  # fmt: skip
    assert event.payload["eventType"] == event_type


def test_redelivered_sns_message_is_recorded_once(client, sent):
    envelope = sns_envelope(ses_event("Delivery", MESSAGE_ID, sent.contact.email))
    assert post(client, envelope).status_code == 200
    assert post(client, envelope).status_code == 200
    assert Event.objects.filter(notification=sent).count() == 1


def test_late_delivery_does_not_overwrite_a_bounce(client, sent):
    post(client, sns_envelope(ses_event("Bounce", MESSAGE_ID, sent.contact.email)))
    post(client, sns_envelope(ses_event("Delivery", MESSAGE_ID, sent.contact.email)))
    sent.refresh_from_db()
    assert sent.status == "bounced"
    assert Event.objects.filter(notification=sent).count() == 2


def test_soft_bounce_is_recorded_but_changes_nothing(client, sent):
    event = ses_event("Bounce", MESSAGE_ID, sent.contact.email)
    event["bounce"]["bounceType"] = "Transient"
    event["bounce"]["bounceSubType"] = "MailboxFull"
    post(client, sns_envelope(event))
    sent.refresh_from_db()
    assert sent.status == "sent"
    assert sent.contact.status == "active"
    assert Event.objects.get(notification=sent).description.startswith("Transient")


def test_unknown_status_is_resolved_by_a_delivery(client, sent):
    Notification.objects.filter(pk=sent.pk).update(status=Notification.Status.UNKNOWN)
    post(client, sns_envelope(ses_event("Delivery", MESSAGE_ID, sent.contact.email)))
    sent.refresh_from_db()
    assert sent.status == "delivered"


def test_event_for_unknown_message_writes_nothing(client, sent):
    response = post(client, sns_envelope(ses_event("Delivery", "no-such-message", "x@example.org")))
    assert response.status_code == 200
    assert not Event.objects.exists()


def test_webhook_without_credentials_is_refused(client, sent):
    envelope = sns_envelope(ses_event("Delivery", MESSAGE_ID, sent.contact.email))
    assert post(client, envelope, auth=None).status_code == 401
    wrong = "Basic " + base64.b64encode(b"sns:wrong").decode()
    assert post(client, envelope, auth=wrong).status_code == 400
    assert not Event.objects.exists()
    sent.refresh_from_db()
    assert sent.status == "sent"

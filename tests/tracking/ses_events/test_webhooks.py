"""SES events, as AWS documents them, in signed SNS envelopes, posted to the SES webhook
(tracking.ses_events.webhook): what each records, counts and suppresses, pending events, the circuit
breaker. Authentication, topics, signatures and hostile requests: test_sns.py."""

import base64
import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import CampaignCounter, Contact, Notification
from tests.factories import CampaignFactory, ContactFactory, NotificationFactory
from tests.sns_signing import default_signer, ses_sample, sns_headers
from tracking.models import Event, PendingEspEvent

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
    """An SNS Notification carrying `message`, signed with the test certificate (which is put in
    the SNS certificate cache for its URL, so the webhook's signature check passes)."""
    signer = default_signer()
    signer.seed()
    return signer.notification(message, sns_id=sns_id)


def post(client, envelope: dict, auth: str | None = AUTH):
    headers = sns_headers(envelope)
    if auth:
        headers["HTTP_AUTHORIZATION"] = auth
    return client.post(WEBHOOK, data=json.dumps(envelope), content_type="text/plain", **headers)


@pytest.fixture
def sent():
    return NotificationFactory(sent=True, message_id=MESSAGE_ID)


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


def test_event_for_unknown_message_is_kept_pending(client, sent):
    response = post(client, sns_envelope(ses_event("Delivery", "no-such-message", "x@example.org")))
    assert response.status_code == 200
    assert not Event.objects.exists()
    pending = PendingEspEvent.objects.get()
    assert (pending.message_id, pending.source, pending.attempts) == ("no-such-message", "ses", 0)
    assert pending.payload["eventType"] == "Delivery"


def test_webhook_without_credentials_is_refused(client, sent):
    envelope = sns_envelope(ses_event("Delivery", MESSAGE_ID, sent.contact.email))
    assert post(client, envelope, auth=None).status_code == 401
    wrong = "Basic " + base64.b64encode(b"sns:wrong").decode()
    assert post(client, envelope, auth=wrong).status_code == 403
    assert not Event.objects.exists()
    sent.refresh_from_db()
    assert sent.status == "sent"


# -- every SES event type, from the samples AWS documents (tests/data/ses_events) ---------------


def counters(campaign_id: int) -> dict[str, int]:
    return dict(
        CampaignCounter.objects.filter(campaign_id=campaign_id).values_list("name", "value")
    )


@pytest.mark.parametrize(
    ("sample", "event_type", "bounce_type", "status", "contact_status", "counter"),
    [
        ("send", "sent", "", "sent", "active", None),
        ("delivery", "delivered", "", "delivered", "active", "delivered"),
        ("bounce", "bounced", "hard", "bounced", "bounced", "bounced_hard"),
        ("bounce_transient", "bounced", "soft", "sent", "active", "bounced_soft"),
        ("notification_bounce", "bounced", "hard", "bounced", "bounced", "bounced_hard"),
        ("complaint", "complained", "", "complained", "complained", "complained"),
        ("reject", "rejected", "", "rejected", "active", "rejected"),
        ("open", "opened", "", "sent", "active", None),
        ("click", "clicked", "", "sent", "active", None),
        ("rendering_failure", "render_fail", "", "failed", "active", "rendering_failed"),
        ("delivery_delay", "deferred", "", "sent", "active", "delayed"),
        ("subscription", "subscription", "", "sent", "active", None),
    ],
)
def test_each_ses_event_type(
    client, sent, sample, event_type, bounce_type, status, contact_status, counter
):
    record = ses_sample(sample, message_id=MESSAGE_ID, recipient=sent.contact.email)
    assert post(client, sns_envelope(record)).status_code == 200

    event = Event.objects.get(notification=sent)
    assert (event.type, event.bounce_type, event.source) == (event_type, bounce_type, "ses")
    assert event.payload == record
    assert event.esp_event_id.startswith("ses:")
    sent.refresh_from_db()
    assert sent.status == status
    assert Contact.objects.get(pk=sent.contact_id).status == contact_status
    # SES opens and clicks are recorded, but counted only from our own pixel and redirect.
    assert counters(sent.campaign_id) == ({counter: 1} if counter else {})


def test_event_times_are_the_ses_event_times(client, sent):
    post(client, sns_envelope(ses_sample("bounce", message_id=MESSAGE_ID, recipient="a@x.org")))
    event = Event.objects.get()
    assert event.occurred_at.isoformat() == "2017-08-05T00:41:02.669000+00:00"
    assert event.description == "Permanent: General"


def test_undetermined_bounce_is_soft(client, sent):
    record = ses_sample("bounce", message_id=MESSAGE_ID, recipient=sent.contact.email)
    record["bounce"]["bounceType"] = "Undetermined"
    record["bounce"]["bounceSubType"] = "Undetermined"
    post(client, sns_envelope(record))
    assert Event.objects.get().bounce_type == "soft"
    sent.refresh_from_db()
    assert sent.status == "sent"


def test_duplicates_are_recorded_and_counted_once(client, sent):
    record = ses_sample("delivery", message_id=MESSAGE_ID, recipient=sent.contact.email)
    envelope = sns_envelope(record)
    for _ in range(3):  # SNS redelivers the same message (same SNS MessageId)
        assert post(client, envelope).status_code == 200
    # The same SES event published again (another topic, another SNS MessageId).
    assert post(client, sns_envelope(record)).status_code == 200
    assert Event.objects.count() == 1
    assert counters(sent.campaign_id) == {"delivered": 1}


def test_out_of_order_events_never_move_a_notification_back(client, sent):
    email = sent.contact.email
    post(client, sns_envelope(ses_sample("complaint", message_id=MESSAGE_ID, recipient=email)))
    post(client, sns_envelope(ses_sample("bounce", message_id=MESSAGE_ID, recipient=email)))
    post(client, sns_envelope(ses_sample("delivery", message_id=MESSAGE_ID, recipient=email)))
    sent.refresh_from_db()
    assert sent.status == "complained"
    assert Event.objects.count() == 3  # each recorded (the journey shows them)
    # Counted only where the row moved: the bounce and the delivery came for a row already
    # further along.
    assert counters(sent.campaign_id) == {"complained": 1}


# -- pending events: an event that outran the send's bookkeeping --------------------------------


def test_pending_event_is_recorded_by_the_retry_once_the_message_id_is_known(client, sent):
    from tracking.ses_events.retry import esp_events_retry_pending

    Notification.objects.filter(pk=sent.pk).update(message_id=None)  # not recorded yet
    record = ses_sample("bounce", message_id=MESSAGE_ID, recipient=sent.contact.email)
    envelope = sns_envelope(record)
    assert post(client, envelope).status_code == 200
    assert post(client, envelope).status_code == 200  # redelivered while pending: one row
    pending = PendingEspEvent.objects.get()
    assert not Event.objects.exists()

    # Not due yet: the first retry is 30 s later.
    assert esp_events_retry_pending().total == 0
    # Due, still unknown: rescheduled with backoff, kept.
    PendingEspEvent.objects.update(next_attempt_at=timezone.now())
    summary = esp_events_retry_pending()
    assert (summary.pending, summary.recorded) == (1, 0)
    pending.refresh_from_db()
    assert pending.attempts == 1
    assert pending.next_attempt_at > timezone.now() + timedelta(seconds=50)

    # The send's bookkeeping catches up; the next retry records it, with all its effects.
    Notification.objects.filter(pk=sent.pk).update(message_id=MESSAGE_ID)
    PendingEspEvent.objects.update(next_attempt_at=timezone.now())
    assert esp_events_retry_pending().recorded == 1
    assert not PendingEspEvent.objects.exists()
    event = Event.objects.get(notification=sent)
    assert (event.type, event.bounce_type, event.source) == ("bounced", "hard", "ses")
    sent.refresh_from_db()
    assert sent.status == "bounced"
    assert Contact.objects.get(pk=sent.contact_id).status == "bounced"
    assert counters(sent.campaign_id) == {"bounced_hard": 1}
    # SNS delivering it once more changes nothing.
    assert post(client, envelope).status_code == 200
    assert Event.objects.count() == 1
    assert not PendingEspEvent.objects.exists()


def test_pending_event_past_retention_is_kept_and_flagged(client, sent, caplog, admin_client):
    from tracking.ses_events.pending import GAVE_UP
    from tracking.ses_events.retry import esp_events_retry_pending

    record = ses_sample("delivery", message_id="never-sent-here", recipient="a@example.org")
    post(client, sns_envelope(record))
    PendingEspEvent.objects.update(
        created_at=timezone.now() - timedelta(hours=73), next_attempt_at=timezone.now()
    )
    with caplog.at_level(logging.WARNING, logger="tracking.ses_events"):
        esp_events_retry_pending()
    pending = PendingEspEvent.objects.get()
    assert pending.next_attempt_at == GAVE_UP
    assert pending.attempts == 1
    assert f"pending={pending.pk} message_id=never-sent-here" in caplog.text
    assert esp_events_retry_pending().total == 0  # never due again, still there
    page = admin_client.get("/admin/tracking/pendingespevent/")
    assert page.status_code == 200
    assert b"retries stopped" in page.content
    assert b"never-sent-here" in page.content


def test_admin_retry_now_records_a_pending_event(client, sent, admin_client):
    Notification.objects.filter(pk=sent.pk).update(message_id=None)
    post(client, sns_envelope(ses_event("Delivery", MESSAGE_ID, sent.contact.email)))
    Notification.objects.filter(pk=sent.pk).update(message_id=MESSAGE_ID)
    pending = PendingEspEvent.objects.get()
    response = admin_client.post(
        "/admin/tracking/pendingespevent/",
        {"action": "retry_now", "_selected_action": [pending.pk]},
        follow=True,
    )
    assert b"Recorded 1" in response.content
    assert Event.objects.get().type == "delivered"


def test_retry_task_is_scheduled_on_the_periodic_queue():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["esp-events-retry-pending"]
    assert entry["task"] == "tracking.tasks.esp_events_retry_pending"
    assert entry["options"]["queue"] == "periodic"


def test_retry_task_runs_the_service(client, sent, eager_celery):
    from tracking.tasks import esp_events_retry_pending as task

    Notification.objects.filter(pk=sent.pk).update(message_id=None)
    post(client, sns_envelope(ses_event("Delivery", MESSAGE_ID, sent.contact.email)))
    Notification.objects.filter(pk=sent.pk).update(message_id=MESSAGE_ID)
    PendingEspEvent.objects.update(next_attempt_at=timezone.now())
    task.delay()
    assert Event.objects.get().type == "delivered"


# -- suppression ------------------------------------------------------------------------------


def test_soft_bounces_suppress_after_the_limit_within_the_window(client, settings):
    settings.SOFT_BOUNCE_LIMIT = 3
    contact = ContactFactory()
    rows = [NotificationFactory(contact=contact, sent=True, message_id=f"m{i}") for i in range(4)]

    def soft_bounce(row, when):
        record = ses_sample(
            "bounce_transient", message_id=row.message_id, recipient=contact.email, timestamp=when
        )
        post(client, sns_envelope(record))
        contact.refresh_from_db()
        return contact.status

    # Two within 30 days, one 40 days before: the old one is outside the window.
    assert soft_bounce(rows[0], "2026-09-01T10:00:00.000Z") == "active"
    assert soft_bounce(rows[1], "2026-10-15T10:00:00.000Z") == "active"
    assert soft_bounce(rows[2], "2026-10-20T10:00:00.000Z") == "active"
    # The third within 30 days of each other suppresses the contact.
    assert soft_bounce(rows[3], "2026-10-25T10:00:00.000Z") == "bounced"
    assert Event.objects.filter(bounce_type="soft").count() == 4
    # Soft bounces never move the notification itself.
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}


def test_soft_bounce_limit_is_a_setting(client, settings):
    settings.SOFT_BOUNCE_LIMIT = 1
    contact = ContactFactory()
    row = NotificationFactory(contact=contact, sent=True, message_id="m0")
    post(
        client,
        sns_envelope(
            ses_sample("bounce_transient", message_id=row.message_id, recipient=contact.email)
        ),
    )
    contact.refresh_from_db()
    assert contact.status == "bounced"


# -- circuit breaker --------------------------------------------------------------------------


# The breaker runs once the event's transaction has committed: these tests commit for real.
breaker = pytest.mark.django_db(transaction=True)


def _sending_campaign(n: int, *, sent_counter: bool = True):
    from campaigns.counters import counters_add
    from campaigns.models import Campaign

    campaign = CampaignFactory(status=Campaign.Status.SENDING)
    contacts = ContactFactory.create_batch(n)
    for c in contacts:
        NotificationFactory(campaign=campaign, contact=c, sent=True, message_id=f"cb-{c.pk}")
    if sent_counter:
        counters_add(campaign_id=campaign.pk, deltas={"sent": n})
    return campaign, contacts


@breaker
@pytest.mark.parametrize("sent_counter", [True, False])
def test_circuit_breaker_pauses_on_hard_bounce_rate(client, settings, sent_counter):
    settings.CIRCUIT_BREAKER_MIN_SENT = 40
    campaign, contacts = _sending_campaign(40, sent_counter=sent_counter)
    for contact in contacts[:2]:  # 2 / 40 = 5%: not above the limit
        post(client, sns_envelope(ses_sample("bounce", message_id=f"cb-{contact.pk}",
                                             recipient=contact.email)))  # fmt: skip
    campaign.refresh_from_db()
    assert campaign.status == "sending"
    # Soft bounces do not count toward the hard-bounce rate.
    post(client, sns_envelope(ses_sample("bounce_transient", message_id=f"cb-{contacts[3].pk}",
                                         recipient=contacts[3].email)))  # fmt: skip
    campaign.refresh_from_db()
    assert campaign.status == "sending"

    post(client, sns_envelope(ses_sample("bounce", message_id=f"cb-{contacts[2].pk}",
                                         recipient=contacts[2].email)))  # fmt: skip
    campaign.refresh_from_db()
    assert campaign.status == "paused"
    assert campaign.status_reason.startswith("Paused automatically: 3 of 40 sent messages bounced")
    assert "7.5%" in campaign.status_reason


@breaker
def test_circuit_breaker_pauses_on_complaint_rate(client, settings):
    settings.CIRCUIT_BREAKER_MIN_SENT = 30
    campaign, contacts = _sending_campaign(30)
    post(client, sns_envelope(ses_sample("complaint", message_id=f"cb-{contacts[0].pk}",
                                         recipient=contacts[0].email)))  # fmt: skip
    campaign.refresh_from_db()
    assert campaign.status == "paused"
    assert "marked it as spam" in campaign.status_reason
    # The marketer sees the reason on the campaign's page.


@breaker
def test_circuit_breaker_waits_for_the_minimum_sample(client, settings):
    settings.CIRCUIT_BREAKER_MIN_SENT = 500
    campaign, contacts = _sending_campaign(20)
    for contact in contacts[:10]:  # 50% bounced, but only 20 sent
        post(client, sns_envelope(ses_sample("bounce", message_id=f"cb-{contact.pk}",
                                             recipient=contact.email)))  # fmt: skip
    campaign.refresh_from_db()
    assert campaign.status == "sending"


@breaker
def test_circuit_breaker_reason_is_shown_to_the_marketer(client, settings, admin_client):
    settings.CIRCUIT_BREAKER_MIN_SENT = 10
    campaign, contacts = _sending_campaign(10)
    post(client, sns_envelope(ses_sample("complaint", message_id=f"cb-{contacts[0].pk}",
                                         recipient=contacts[0].email)))  # fmt: skip
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    assert "marked it as spam" in page.content.decode()


# -- a message counts once, and only for recipients on it -------------------------------------


def naming(record: dict, addresses: list[str]) -> dict:
    """`record` (a Bounce, Complaint or Delivery) listing `addresses` as its recipients."""
    kind = record["eventType"]
    if kind == "Delivery":
        record["delivery"]["recipients"] = addresses
    else:
        key = {"Bounce": "bouncedRecipients", "Complaint": "complainedRecipients"}[kind]
        record[kind.lower()][key] = [{"emailAddress": a} for a in addresses]
    return record


def test_a_complaint_naming_600_recipients_counts_its_message_once(client, sent):
    others = [f"other{i}@example.org" for i in range(600)]
    record = naming(
        ses_event("Complaint", MESSAGE_ID, sent.contact.email), [*others, sent.contact.email]
    )
    assert post(client, sns_envelope(record)).status_code == 200
    assert Event.objects.count() == 1  # its one recipient on the message
    assert counters(sent.campaign_id) == {"complained": 1}
    assert Contact.objects.get(pk=sent.contact_id).status == "complained"


@pytest.mark.parametrize("kind", ["Bounce", "Complaint", "Delivery"])
def test_recipients_not_on_the_message_move_nothing(client, sent, kind, caplog):
    """Someone else (another contact of ours, a stranger), listed on this message's event:
    not the message's recipient, so neither its row nor its contact moves, nothing counts."""
    stranger, other = "stranger@example.org", ContactFactory().email
    record = naming(ses_event(kind, MESSAGE_ID, sent.contact.email), [other, stranger])
    with caplog.at_level(logging.WARNING):
        assert post(client, sns_envelope(record)).status_code == 200
    assert not Event.objects.exists()
    assert not PendingEspEvent.objects.exists()
    assert counters(sent.campaign_id) == {}
    sent.refresh_from_db()
    assert (sent.status, sent.contact.status) == ("sent", "active")
    assert "no recipient of the event is on its message" in caplog.text
    assert other not in caplog.text and stranger not in caplog.text


def test_a_destination_longer_than_ses_allows_is_not_recorded(client, sent):
    everyone = [sent.contact.email, *(f"r{i}@example.org" for i in range(60))]
    record = naming(ses_event("Complaint", MESSAGE_ID, sent.contact.email), everyone)
    record["mail"]["destination"] = everyone
    assert post(client, sns_envelope(record)).status_code == 200
    assert not Event.objects.exists()
    assert counters(sent.campaign_id) == {}


def test_several_recipients_on_one_message_count_it_once(client, sent):
    """SES sends one message to up to 50 recipients; ours have one, but a message with several
    records an event for each and still counts once."""
    everyone = [sent.contact.email, "cc1@example.org", "cc2@example.org"]
    for kind in ("Delivery", "Complaint"):
        record = naming(ses_event(kind, MESSAGE_ID, sent.contact.email), everyone)
        record["mail"]["destination"] = everyone
        assert post(client, sns_envelope(record)).status_code == 200
    assert Event.objects.count() == 6
    assert counters(sent.campaign_id) == {"delivered": 1, "complained": 1}


@pytest.mark.parametrize(
    ("sample", "counter"),
    [
        ("delivery", "delivered"),
        ("bounce", "bounced_hard"),
        ("complaint", "complained"),
        ("reject", "rejected"),
        ("rendering_failure", "rendering_failed"),
        ("bounce_transient", "bounced_soft"),
        ("delivery_delay", "delayed"),
    ],
)
def test_a_message_counts_once_per_counter(client, sent, sample, counter):
    """Two distinct events of one kind for one message (and each replayed): the first moves
    the row (or, for soft bounces and delays, is the message's first of its kind) and counts;
    the second finds the row already there and counts nothing; replays count nothing."""
    for when in ("2026-11-20T10:00:01.000Z", "2026-11-20T10:05:00.000Z"):
        record = ses_sample(
            sample, message_id=MESSAGE_ID, recipient=sent.contact.email, timestamp=when
        )
        for _ in range(2):  # SNS delivers it twice; the same event published again
            assert post(client, sns_envelope(record)).status_code == 200
    assert Event.objects.count() == 2
    assert counters(sent.campaign_id) == {counter: 1}


@breaker
def test_a_complaint_naming_other_recipients_does_not_trip_the_breaker(client, settings):
    settings.CIRCUIT_BREAKER_MIN_SENT = 40
    settings.CIRCUIT_BREAKER_COMPLAINT_RATE = 0.05
    campaign, contacts = _sending_campaign(40)
    # One complaint for contact 0's message, also naming ten other recipients of the campaign
    # (of other messages): 1 complaint in 40 (2.5%), not 11 (27.5%).
    record = naming(
        ses_sample("complaint", message_id=f"cb-{contacts[0].pk}", recipient=contacts[0].email),
        [c.email for c in contacts[:11]],
    )
    assert post(client, sns_envelope(record)).status_code == 200
    campaign.refresh_from_db()
    assert campaign.status == "sending"
    assert counters(campaign.pk) == {"sent": 40, "complained": 1}
    assert set(Contact.objects.filter(status="complained")) == {contacts[0]}


def test_the_recount_agrees_with_what_the_intake_counted(client):
    """Out of order, replayed, repeated and misaddressed events: the recount
    (manage.py recount_campaign) replays the same rule."""
    from tracking.reports.recount import campaign_counters_recount

    campaign = CampaignFactory()
    rows = [
        NotificationFactory(campaign=campaign, sent=True, message_id=f"rc-{i}") for i in range(5)
    ]

    def send(sample, row, when=None, recipients=None):
        record = ses_sample(sample, message_id=row.message_id, recipient=row.contact.email,
                            timestamp=when)  # fmt: skip
        if recipients is not None:
            record = naming(record, recipients)
        assert post(client, sns_envelope(record)).status_code == 200

    send("delivery", rows[0])
    send("complaint", rows[0])
    send("delivery", rows[0], "2026-11-20T11:00:00.000Z")  # a second delivery: no move
    send("bounce", rows[1])
    send("delivery", rows[1])  # late: the row is further along
    send("complaint", rows[2], recipients=["x@example.org", rows[2].contact.email])
    send("bounce_transient", rows[3])
    send("bounce_transient", rows[3], "2026-11-20T11:00:00.000Z")
    send("delivery_delay", rows[4])
    send("delivery_delay", rows[4], "2026-11-20T11:00:00.000Z")
    send("delivery", rows[4])
    written = counters(campaign.pk)
    assert written == {
        "delivered": 2, "complained": 2, "bounced_hard": 1, "bounced_soft": 1, "delayed": 1,
    }  # fmt: skip
    recounted = campaign_counters_recount(campaign_id=campaign.pk)
    assert {k: v for k, v in recounted.items() if k in written} == written


# -- pending events expire ---------------------------------------------------------------------


def test_pending_events_expire_after_the_expiry_and_are_counted_in_the_log(
    client, sent, settings, caplog, admin_client
):
    from tracking.ses_events.pending import esp_events_expire_pending

    settings.ESP_EVENT_PENDING_RETENTION_HOURS = 72
    settings.ESP_EVENT_PENDING_EXPIRY_HOURS = 100
    for i in range(3):
        record = ses_sample("delivery", message_id=f"elsewhere-{i}", recipient="a@example.org")
        assert post(client, sns_envelope(record)).status_code == 200
    now = timezone.now()
    PendingEspEvent.objects.filter(message_id__in=["elsewhere-0", "elsewhere-1"]).update(
        created_at=now - timedelta(hours=101)
    )
    PendingEspEvent.objects.filter(message_id="elsewhere-2").update(
        created_at=now - timedelta(hours=99)
    )
    page = admin_client.get("/admin/tracking/pendingespevent/")
    assert b"Expires" in page.content
    with caplog.at_level(logging.WARNING, logger="tracking.ses_events"):
        assert esp_events_expire_pending() == 2
    assert list(PendingEspEvent.objects.values_list("message_id", flat=True)) == ["elsewhere-2"]
    assert "ses events pending expired count=2" in caplog.text
    assert esp_events_expire_pending() == 0


def test_pending_events_never_expire_before_their_retries_stop(client, sent, settings):
    from tracking.ses_events.pending import esp_events_expire_pending

    settings.ESP_EVENT_PENDING_RETENTION_HOURS = 200
    settings.ESP_EVENT_PENDING_EXPIRY_HOURS = 1
    post(client, sns_envelope(ses_sample("delivery", message_id="later", recipient="a@x.org")))
    PendingEspEvent.objects.update(created_at=timezone.now() - timedelta(hours=150))
    assert esp_events_expire_pending() == 0
    assert PendingEspEvent.objects.count() == 1


def test_expiry_task_is_scheduled_and_runs_the_service(client, sent, settings, eager_celery):
    from tracking.tasks import esp_events_expire_pending as task

    entry = settings.CELERY_BEAT_SCHEDULE["esp-events-expire-pending"]
    assert entry["task"] == "tracking.tasks.esp_events_expire_pending"
    assert entry["options"]["queue"] == "periodic"
    post(client, sns_envelope(ses_sample("delivery", message_id="gone", recipient="a@x.org")))
    PendingEspEvent.objects.update(created_at=timezone.now() - timedelta(days=400))
    assert task.delay().get() == 1
    assert not PendingEspEvent.objects.exists()


def test_the_portable_insert_path_records_the_same(client, sent, monkeypatch):
    # SQLite (the demo) has no data-modifying CTE: the lookup and the insert are two statements.
    from django.db import connection

    monkeypatch.setattr(connection, "vendor", "sqlite-like")
    record = ses_sample("bounce", message_id=MESSAGE_ID, recipient=sent.contact.email)
    assert post(client, sns_envelope(record)).status_code == 200
    assert post(client, sns_envelope(record)).status_code == 200
    post(client, sns_envelope(ses_event("Delivery", "unknown-id", "a@example.org")))
    event = Event.objects.get()
    assert (event.type, event.bounce_type, event.notification_id) == ("bounced", "hard", sent.pk)
    assert PendingEspEvent.objects.get().message_id == "unknown-id"
    assert counters(sent.campaign_id) == {"bounced_hard": 1}

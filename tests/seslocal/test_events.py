"""seslocal publishing SES events through SNS (seslocal/events.py): their shape, their delivery
to the product's webhook on a live server (signature, certificate and all), and its failures."""

import json
import logging
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from campaigns.models import Contact, Membership, Notification
from seslocal import serve_in_thread
from seslocal.events import BOUNCED, COMPLAINED, DELIVERED, SUPPRESSED, recipient_outcome
from tests.conftest import _free_port, seslocal_running, wait_for
from tests.factories import CampaignFactory, ContactListFactory
from tracking.ses_events.parse import ses_event_recipients
from tracking.ses_events.webhook import WEBHOOK_PATH

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ses_events"
TOPIC = "arn:aws:sns:us-east-1:000000000000:seslocal-test"
N = Notification.Status
SIMPLE = {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}}
AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/ses/aws4_request"}


def send_email(url: str, *to: str) -> str:
    body = {"FromEmailAddress": "news@example.com", "Destination": {"ToAddresses": list(to)},
            "Content": SIMPLE, "ConfigurationSetName": "demo-set"}  # fmt: skip
    request = urllib.request.Request(  # noqa: S310 (the local endpoint)
        url + "/v2/email/outbound-emails", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **AUTH},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())["MessageId"]


def local(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


@pytest.mark.parametrize(
    ("address", "outcome"),
    [
        ("success@simulator.amazonses.com", DELIVERED),
        ("reader@example.com", DELIVERED),
        ("bounce@simulator.amazonses.com", BOUNCED),
        ("Ana+Bounce@Example.com", BOUNCED),
        ("bounce@example.org", BOUNCED),
        ("bounced@example.org", DELIVERED),
        ("suppressionlist@simulator.amazonses.com", SUPPRESSED),
        ("complaint@simulator.amazonses.com", COMPLAINED),
        ("reader+complaint@example.com", COMPLAINED),
    ],
)
def test_recipient_outcomes_follow_the_simulator_and_the_local_pattern(address, outcome):
    assert recipient_outcome(address) == outcome


def test_events_have_ses_shape_and_signed_sns_envelopes(tmp_path):
    """What seslocal posts: SNS's headers and envelope around SES event objects whose keys are
    the documented samples' (tests/data/ses_events), for the right recipients each."""
    import http.server
    import threading

    posts: list[tuple[dict, dict]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((dict(self.headers), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    webhook = f"http://user:p%40ss@127.0.0.1:{receiver.server_address[1]}/hook/"
    server, url = serve_in_thread(events={"webhook": webhook, "topic_arn": TOPIC, "delay": 0.2})
    try:
        message_id = send_email(
            url, "reader@example.com", "bounce@simulator.amazonses.com",
            "complaint@simulator.amazonses.com",
        )  # fmt: skip
        wait_for(lambda: len(posts) == 4, timeout=20)
        cert = urllib.request.urlopen(  # noqa: S310 (the local endpoint)
            posts[0][1]["SigningCertURL"], timeout=5
        ).read()
        stats = local(url, "/_local/events")
    finally:
        server.stop()
        receiver.shutdown()
        receiver.server_close()

    assert cert.startswith(b"-----BEGIN CERTIFICATE-----")
    assert (stats["enabled"], stats["published"], stats["dropped"]) == (True, 4, 0)
    kinds = [json.loads(envelope["Message"])["eventType"] for _, envelope in posts]
    assert kinds == ["Send", "Delivery", "Bounce", "Complaint"]
    for headers, envelope in posts:
        assert headers["x-amz-sns-message-type"] == "Notification"
        assert headers["x-amz-sns-message-id"] == envelope["MessageId"]
        assert headers["Authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
        assert envelope["TopicArn"] == TOPIC
        assert envelope["SignatureVersion"] == "2"
        event = json.loads(envelope["Message"])
        sample = json.loads((DATA / f"{event['eventType'].lower()}.json").read_text())
        assert event.keys() == sample.keys()
        assert event["mail"].keys() == sample["mail"].keys()
        assert event["mail"]["messageId"] == message_id
        assert event["mail"]["tags"]["ses:configuration-set"] == ["demo-set"]
        details = next(key for key in event if key not in ("eventType", "mail"))
        assert event[details].keys() == sample[details].keys()
    recipients = {
        json.loads(p["Message"])["eventType"]: sorted(
            ses_event_recipients(json.loads(p["Message"]))
        )
        for _, p in posts
    }
    assert recipients == {
        "Send": [
            "bounce@simulator.amazonses.com", "complaint@simulator.amazonses.com",
            "reader@example.com",
        ],
        "Delivery": ["complaint@simulator.amazonses.com", "reader@example.com"],
        "Bounce": ["bounce@simulator.amazonses.com"],
        "Complaint": ["complaint@simulator.amazonses.com"],
    }  # fmt: skip


def test_failed_posts_are_retried_then_dropped_and_logged_by_ids(caplog):
    """Nothing listens at the webhook: each event is tried 1 + retries times, then dropped;
    the endpoint goes on answering, and the log names ids, never an address or the URL."""
    port = _free_port()
    webhook = f"http://user:secret-password@127.0.0.1:{port}/hook/"
    caplog.set_level(logging.INFO, logger="seslocal")
    server, url = serve_in_thread(
        events={"webhook": webhook, "delay": 0, "retries": 1, "timeout": 1}
    )
    try:
        message_id = send_email(url, "reader@example.com")
        wait_for(lambda: local(url, "/_local/events")["dropped"] == 2, timeout=20)
        assert send_email(url, "again@example.com")  # still accepting sends
        assert local(url, "/_local/health")["ok"]
    finally:
        server.stop()
    log = caplog.text
    assert f"event not delivered type=Send message_id={message_id}" in log
    assert f"event dropped type=Delivery message_id={message_id}" in log
    assert "attempts=2" in log
    for secret in ("reader@example.com", "secret-password", "/hook/", str(port)):
        assert secret not in log


def test_events_are_off_unless_asked():
    server, url = serve_in_thread()
    try:
        send_email(url, "reader@example.com")
        assert local(url, "/_local/events") == {"enabled": False}
    finally:
        server.stop()


# -- to the product's webhook, end to end ---------------------------------------------------------


@pytest.fixture
def publishing_ses(live_server, settings, tmp_path):
    """`python -m seslocal --events-webhook …` posting to the live server's SES webhook, which
    trusts its certificate host (as config/settings/demo.py does), and the app sending to it."""
    from tracking.ses_events.sns import sns_cert_cache_clear

    secret = settings.ANYMAIL["WEBHOOK_SECRET"]
    webhook = live_server.url.replace("http://", f"http://{secret}@") + WEBHOOK_PATH
    with seslocal_running(
        tmp_path, "--events-webhook", webhook, "--events-topic-arn", TOPIC, "--events-delay", "0.5"
    ) as endpoint:
        settings.SNS_CERT_HOST = urlsplit(endpoint.url).netloc
        settings.SNS_CERT_URL_SCHEMES = ("http",)
        settings.SNS_TOPIC_ARNS = [TOPIC]
        sns_cert_cache_clear()
        try:
            yield endpoint
        finally:
            sns_cert_cache_clear()


@pytest.mark.e2e
def test_a_sent_campaign_ends_delivered_bounced_and_complained_in_its_report(
    publishing_ses, eager_celery, django_capture_on_commit_callbacks
):
    from campaigns.services import campaign_send_now
    from tracking.models import Event
    from tracking.reports.report import campaign_report

    addresses = {
        "reader1@example.com": N.DELIVERED,
        "reader2@example.com": N.DELIVERED,
        "success@simulator.amazonses.com": N.DELIVERED,
        "bounce@simulator.amazonses.com": N.BOUNCED,
        "reader+bounce@example.com": N.BOUNCED,
        "complaint@simulator.amazonses.com": N.COMPLAINED,
    }
    contact_list = ContactListFactory()
    for address in addresses:
        contact = Contact.objects.create(email=address, first_name="Reader", attributes={})
        Membership.objects.create(contact_list=contact_list, contact=contact)
    campaign = CampaignFactory(contact_list=contact_list)
    with django_capture_on_commit_callbacks(execute=True):
        campaign_send_now(campaign=campaign)

    def statuses() -> dict[str, str]:
        rows = Notification.objects.filter(campaign=campaign).select_related("contact")
        return {row.contact.email: row.status for row in rows}

    wait_for(lambda: statuses() == addresses, timeout=60, message=publishing_ses.log_text)
    report = campaign_report(campaign_id=campaign.pk)
    # The complaint's message was delivered first, as SES's simulator does.
    assert (report.sent, report.delivered, report.bounced_hard, report.complained) == (6, 4, 2, 1)
    sent_events = Event.objects.filter(notification__campaign=campaign, type=Event.Type.SENT)
    assert sent_events.count() == 6
    suppressed = Contact.objects.filter(email__in=list(addresses)).exclude(status="active")
    assert suppressed.count() == 3
    log = publishing_ses.log_text()
    assert "event not delivered" not in log and "dropped" not in log
    assert "@" not in log.replace("seslocal listening", "")

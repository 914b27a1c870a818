"""Who may speak to the SES webhook (tracking.ses_events.webhook, tracking.ses_events.sns):
basic auth before the body is read, junk refused with a short reason and nothing of it logged,
pinned topics, certificate hosts tied to the topic's region, timestamps, signatures, confirmations,
the routes mounted and the configuration the webhook needs to start.

Messages are signed with a test certificate (tests/sns_signing.py); the certificate reaches the
webhook either through the certificate cache (seeded for the SigningCertURL) or, in the fetch
tests, from a local HTTP server that the settings allow as the SNS host.
"""

import base64
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler
from django.test import RequestFactory

from tests.conftest import call_wsgi
from tests.factories import NotificationFactory
from tests.sns_signing import (
    CERT_URL,
    TOPIC_ARN,
    TestSigner,
    default_signer,
    ses_sample,
    sns_headers,
    sns_timestamp,
)
from tests.tracking.ses_events.test_webhooks import AUTH, WEBHOOK, post
from tracking.models import Event, PendingEspEvent
from tracking.ses_events.sns import (
    SnsVerificationError,
    sns_cert_cache_clear,
    sns_cert_cache_key,
    sns_cert_cache_seed,
    sns_cert_url_check,
    sns_string_to_sign,
    sns_topic_parse,
    sns_topics,
)
from tracking.ses_events.webhook import ses_webhook_wsgi

pytestmark = pytest.mark.django_db

MESSAGE_ID = "0100018c5d2a7b1e-aaaabbbb-5a1b-4c1d-9e2f-0123456789ab-000000"


@pytest.fixture
def signer():
    signer = default_signer()
    signer.seed()
    return signer


@pytest.fixture
def sent():
    return NotificationFactory(sent=True, message_id=MESSAGE_ID)


def delivery(sent) -> dict:
    return ses_sample("delivery", message_id=MESSAGE_ID, recipient=sent.contact.email)


def nothing_written(sent) -> bool:
    sent.refresh_from_db()
    return (
        not Event.objects.exists()
        and not PendingEspEvent.objects.exists()
        and sent.status == "sent"
        and sent.contact.status == "active"
    )


# -- accepted -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_notification_is_recorded(client, signer, sent, version):
    response = post(client, signer.notification(delivery(sent), version=version))
    assert response.status_code == 200
    assert Event.objects.get(notification=sent).type == "delivered"


def test_notification_without_subject_is_accepted(client, signer, sent):
    assert post(client, signer.notification(delivery(sent), subject=None)).status_code == 200
    assert Event.objects.count() == 1


def test_string_to_sign_follows_the_aws_rules():
    notification = {
        "Type": "Notification", "MessageId": "m1", "TopicArn": "arn:t", "Subject": "s",
        "Message": "hello", "Timestamp": "2026-01-01T00:00:00.000Z", "SignatureVersion": "1",
        "Signature": "x", "SigningCertURL": CERT_URL, "UnsubscribeURL": "https://u",
    }  # fmt: skip
    assert sns_string_to_sign(message=notification) == (
        b"Message\nhello\nMessageId\nm1\nSubject\ns\n"
        b"Timestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn:t\nType\nNotification\n"
    )
    del notification["Subject"]
    assert b"Subject" not in sns_string_to_sign(message=notification)
    confirmation = {
        "Type": "SubscriptionConfirmation", "MessageId": "m2", "Token": "tok",
        "TopicArn": "arn:t", "Message": "confirm", "SubscribeURL": "https://s",
        "Timestamp": "2026-01-01T00:00:00.000Z",
    }  # fmt: skip
    assert sns_string_to_sign(message=confirmation) == (
        b"Message\nconfirm\nMessageId\nm2\nSubscribeURL\nhttps://s\n"
        b"Timestamp\n2026-01-01T00:00:00.000Z\nToken\ntok\nTopicArn\narn:t\n"
        b"Type\nSubscriptionConfirmation\n"
    )
    del confirmation["Token"]  # required for confirmations
    with pytest.raises(SnsVerificationError):
        sns_string_to_sign(message=confirmation)


@pytest.mark.parametrize(
    ("arn", "url"),
    [
        (TOPIC_ARN, "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem"),
        ("arn:aws:sns:eu-west-3:123456789012:t",
         "https://sns.eu-west-3.amazonaws.com/SimpleNotificationService-abc.pem"),
        ("arn:aws-cn:sns:cn-north-1:123456789012:t",
         "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem"),
        ("arn:aws-us-gov:sns:us-gov-west-1:123456789012:t.fifo",
         "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem"),
    ],
)  # fmt: skip
def test_the_certificate_host_of_the_topics_region_is_allowed(arn, url):
    assert sns_cert_url_check(url=url, topic=sns_topic_parse(arn=arn)) == url


@pytest.mark.parametrize(
    "url",
    [
        # Virtual-hosted S3 buckets: anyone can name a bucket "sns" or "sns.us-east-1…".
        "https://sns.s3.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.s3.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com.s3.amazonaws.com/x.pem",
        "https://sns.s3-website-us-east-1.amazonaws.com/x.pem",
        "https://s3.amazonaws.com/sns.us-east-1.amazonaws.com/x.pem",
        # Another region than the topic's, or its partition's suffix on the wrong region.
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-x.pem",
        "https://sns.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com./SimpleNotificationService-x.pem",
        "https://SNS.US-EAST-1.AMAZONAWS.COM/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-x.pem",
        "https://x@sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com/x.pem?.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com\n.evil.example/x.pem",
    ],
)
def test_other_certificate_hosts_are_refused(url):
    with pytest.raises(SnsVerificationError):
        sns_cert_url_check(url=url, topic=sns_topic_parse(arn=TOPIC_ARN))


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:sns:s3:123456789012:t",  # not a region
        "arn:aws:sns:us-east:123456789012:t",
        "arn:aws:sns:us-east-1.evil.example:123456789012:t",
        "arn:aws:sns:us-east-1:12345678901:t",  # 11 digits
        "arn:aws:sqs:us-east-1:123456789012:t",
        "arn:evil:sns:us-east-1:123456789012:t",
        "arn:aws:sns:us-east-1:123456789012:t\nx",
        "arn:aws:sns:us-east-1:123456789012:" + "t" * 260,
        "",
    ],
)
def test_topic_arns_are_parsed_strictly(arn):
    with pytest.raises(ValueError):
        sns_topic_parse(arn=arn)


# -- refused: 403 and nothing written --------------------------------------------------------------


def _forge_other_key(signer, sent):
    # Signed by someone else's key, claiming the real certificate's URL.
    return TestSigner(cert_url=signer.cert_url).notification(delivery(sent))


def _forge_tampered_message(signer, sent):
    envelope = signer.notification(delivery(sent))
    bounce = ses_sample("bounce", message_id=MESSAGE_ID, recipient=sent.contact.email)
    return {**envelope, "Message": json.dumps(bounce)}


def _forge_tampered_timestamp(signer, sent):
    return {**signer.notification(delivery(sent)), "Timestamp": "2026-11-21T10:00:06.000Z"}


def _forge_dropped_subject(signer, sent):
    envelope = signer.notification(delivery(sent))
    del envelope["Subject"]
    return envelope


def _forge_version(version):
    def forge(signer, sent):
        return {**signer.notification(delivery(sent)), "SignatureVersion": version}

    return forge


def _forge_signature(value):
    def forge(signer, sent):
        envelope = signer.notification(delivery(sent))
        if value is None:
            del envelope["Signature"]
        else:
            envelope["Signature"] = value
        return envelope

    return forge


def _forge_cert_url(url):
    """Signed correctly, with the certificate even cached for `url`: only the URL rules can
    refuse it."""

    def forge(signer, sent):
        sns_cert_cache_seed(url=url, pem=signer.pem)
        envelope = signer.notification(delivery(sent))
        return signer.sign(envelope, cert_url=url)

    return forge


FORGERIES = {
    "other key": _forge_other_key,
    "tampered message": _forge_tampered_message,
    "tampered timestamp": _forge_tampered_timestamp,
    "subject dropped": _forge_dropped_subject,
    "signature version 3": _forge_version("3"),
    "no signature version": _forge_version(None),
    "v1 signature claimed as v2": _forge_version("2"),
    "no signature": _forge_signature(None),
    "not base64": _forge_signature("!!not base64!!"),
    "placeholder signature": _forge_signature("EXAMPLEpH+.."),
    "http url": _forge_cert_url(
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem"
    ),
    "lookalike host": _forge_cert_url("https://sns.us-east-1.amazonaws.com.evil.example/x.pem"),
    "other host": _forge_cert_url("https://evil.example/sns.us-east-1.amazonaws.com/x.pem"),
    "userinfo": _forge_cert_url("https://sns.us-east-1.amazonaws.com@evil.example/x.pem"),
    "port": _forge_cert_url("https://sns.us-east-1.amazonaws.com:8443/x.pem"),
    "other service": _forge_cert_url("https://sqs.us-east-1.amazonaws.com/x.pem"),
    "not .pem": _forge_cert_url("https://sns.us-east-1.amazonaws.com/x.pem.txt"),
    "query": _forge_cert_url("https://sns.us-east-1.amazonaws.com/x.pem?a=.pem"),
    "s3 path": _forge_cert_url("https://s3.amazonaws.com/sns.us-east-1.amazonaws.com/x.pem"),
    "s3 bucket named sns": _forge_cert_url("https://sns.s3.amazonaws.com/x.pem"),
    "another region": _forge_cert_url(
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem"
    ),
    "stale timestamp": lambda signer, sent: signer.notification(
        delivery(sent), timestamp=sns_timestamp(-3901)
    ),
    "future timestamp": lambda signer, sent: signer.notification(
        delivery(sent), timestamp=sns_timestamp(+301)
    ),
    "timestamp without a zone": lambda signer, sent: signer.notification(
        delivery(sent), timestamp="2026-11-20T10:00:06.000"
    ),
    "timestamp in month 13": lambda signer, sent: signer.notification(
        delivery(sent), timestamp="2026-13-20T10:00:06.000Z"
    ),
    "another account's topic": lambda signer, sent: signer.notification(
        delivery(sent), topic_arn="arn:aws:sns:us-east-1:999999999999:ses-events"
    ),
    "another topic of ours": lambda signer, sent: signer.notification(
        delivery(sent), topic_arn="arn:aws:sns:us-east-1:123456789012:other"
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
def test_forged_notification_is_refused_and_writes_nothing(client, signer, sent, forgery):
    envelope = forgery(signer, sent)
    response = post(client, envelope)
    assert response.status_code == 403
    assert nothing_written(sent)


def test_forged_event_for_unknown_message_is_not_kept_pending(client, signer, sent):
    record = ses_sample("delivery", message_id="unknown", recipient="a@example.org")
    envelope = TestSigner(cert_url=signer.cert_url).notification(record)
    assert post(client, envelope).status_code == 403
    assert nothing_written(sent)


def test_certificate_with_a_non_rsa_key_is_refused(client, sent):
    signer = TestSigner(cert_url=CERT_URL.replace(".pem", "-ec.pem"))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cert = signer.cert
    from cryptography import x509

    ec_cert = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(ec_key.public_key())
        .serial_number(1)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(ec_key, hashes.SHA256())
    )
    signer.pem = ec_cert.public_bytes(serialization.Encoding.PEM)
    signer.seed()
    assert post(client, signer.notification(delivery(sent))).status_code == 403
    assert nothing_written(sent)


def test_basic_auth_is_still_required_with_a_valid_signature(client, signer, sent):
    envelope = signer.notification(delivery(sent))
    assert post(client, envelope, auth=None).status_code == 401
    assert post(client, envelope, auth="Basic c25zOndyb25n").status_code == 403  # sns:wrong
    assert nothing_written(sent)
    assert post(client, envelope, auth=AUTH).status_code == 200


def test_the_timestamp_window(client, signer, sent, settings):
    """An SNS retry an hour after publishing, or clocks a little ahead, are accepted; older or
    further ahead is a replay, refused."""
    settings.SNS_MESSAGE_MAX_AGE_SECONDS = 3900
    settings.SNS_MESSAGE_MAX_FUTURE_SECONDS = 300
    for delta, status in ((-3901, 403), (301, 403), (-3800, 200), (-60, 200), (200, 200)):
        envelope = signer.notification(delivery(sent), timestamp=sns_timestamp(delta))
        assert post(client, envelope).status_code == status, delta
    assert Event.objects.count() == 1


def test_a_foreign_topic_in_its_own_region_is_refused(client, signer, sent):
    """Validly signed, its certificate on its own region's SNS host (cached as if fetched): an
    SNS topic of another AWS account, subscribed to our URL. Refused before any fetch."""
    foreign = TestSigner(
        cert_url="https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-f.pem"
    )
    foreign.seed()
    envelope = foreign.notification(
        delivery(sent), topic_arn="arn:aws:sns:eu-west-1:999999999999:ses-events"
    )
    assert post(client, envelope).status_code == 403
    assert nothing_written(sent)


def test_a_pinned_topic_of_another_region_uses_its_regions_host(client, sent, settings):
    other = "arn:aws:sns:eu-west-1:123456789012:ses-events"
    settings.SNS_TOPIC_ARNS = [TOPIC_ARN, other]
    signer = TestSigner(
        cert_url="https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-e.pem"
    )
    signer.seed()
    assert post(client, signer.notification(delivery(sent), topic_arn=other)).status_code == 200
    # The same topic's message signed under the us-east-1 host: not where SNS signs it.
    us = TestSigner(cert_url="https://sns.us-east-1.amazonaws.com/SimpleNotificationService-u.pem")
    us.seed()
    bounce = ses_sample("bounce", message_id=MESSAGE_ID, recipient=sent.contact.email)
    assert post(client, us.notification(bounce, topic_arn=other)).status_code == 403
    sent.refresh_from_db()
    assert sent.status == "delivered"


# -- subscription confirmations ---------------------------------------------------------------


class _Server:
    """A local HTTP server whose answers the test sets per path; it records what it got."""

    def __init__(self):
        self.routes: dict[str, tuple[int, bytes, dict, float]] = {}
        self.requests: list[tuple[str, str, bytes]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append((self.command, self.path, self.rfile.read(length)))
                status, body, headers, delay = server.routes.get(
                    urllib.parse.urlsplit(self.path).path, (404, b"not found", {}, 0)
                )
                time.sleep(delay)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def hits(self, path: str) -> int:
        return sum(1 for _, p, _ in self.requests if urllib.parse.urlsplit(p).path == path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    server = _Server()
    yield server
    server.close()


CONFIRM_RESPONSE = (
    b'<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
    b"<ConfirmSubscriptionResult><SubscriptionArn>" + TOPIC_ARN.encode() + b":sub-1"
    b"</SubscriptionArn></ConfirmSubscriptionResult><ResponseMetadata><RequestId>r-1"
    b"</RequestId></ResponseMetadata></ConfirmSubscriptionResponse>"
)


@pytest.fixture
def sns_api(server, monkeypatch):
    """SNS's API (where anymail confirms subscriptions) answered by the local server."""
    server.routes["/"] = (200, CONFIRM_RESPONSE, {"Content-Type": "text/xml"}, 0)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", server.url)
    return server


def test_verified_subscription_confirmation_is_confirmed(client, signer, sns_api):
    confirmation = signer.confirmation(version="2")
    assert post(client, confirmation).status_code == 200
    (method, _, body) = sns_api.requests[0]
    form = urllib.parse.parse_qs(body.decode())
    assert method == "POST"
    assert form["Action"] == ["ConfirmSubscription"]
    assert form["TopicArn"] == [TOPIC_ARN]
    assert form["Token"] == [confirmation["Token"]]


@pytest.mark.parametrize(
    "forge",
    [
        lambda signer, c: {**c, "Token": "f" * 40},  # another token than the signed one
        lambda signer, c: {**c, "SubscribeURL": "https://evil.example/confirm"},
        lambda signer, c: TestSigner(cert_url=signer.cert_url).confirmation(),
    ],
    ids=["token", "subscribe url", "other key"],
)
def test_forged_subscription_confirmation_is_not_confirmed(client, signer, sns_api, forge):
    confirmation = forge(signer, signer.confirmation())
    assert post(client, confirmation).status_code == 403
    assert sns_api.requests == []


def test_a_foreign_topics_subscription_is_not_confirmed(client, signer, sns_api):
    """Anyone can subscribe our URL to their own topic: SNS then sends a validly signed
    confirmation, with our basic auth if they learnt it. Only pinned topics are confirmed."""
    for arn in ("arn:aws:sns:us-east-1:999999999999:ses-events",
                "arn:aws:sns:us-east-1:123456789012:not-pinned"):  # fmt: skip
        assert post(client, signer.confirmation(topic_arn=arn)).status_code == 403
    assert sns_api.requests == []


def test_unsubscribe_confirmation_is_verified_and_ignored(client, signer, sns_api):
    confirmation = signer.confirmation("UnsubscribeConfirmation")
    assert post(client, confirmation).status_code == 200
    assert post(client, {**confirmation, "Token": "x"}).status_code == 403
    assert sns_api.requests == []


# -- fetching certificates: the real fetch code, against a local server ---------------------------


@pytest.fixture
def local_certs(server, settings):
    """Allow the local server as an SNS certificate host (over http): only tests do this."""
    settings.SNS_CERT_HOST = urllib.parse.urlsplit(server.url).netloc
    settings.SNS_CERT_URL_SCHEMES = ("http", "https")
    settings.SNS_CERT_FETCH_TIMEOUT_SECONDS = 1
    sns_cert_cache_clear()
    yield server
    sns_cert_cache_clear()


def _signer_at(server, path: str) -> TestSigner:
    signer = TestSigner(cert_url=server.url + path)
    server.routes[path] = (200, signer.pem, {"Content-Type": "application/x-pem-file"}, 0)
    return signer


def test_certificate_is_fetched_once_then_cached(client, sent, local_certs):
    from django.conf import settings
    from django.core.cache import caches

    server = local_certs
    signer = _signer_at(server, "/SimpleNotificationService-1.pem")
    record = delivery(sent)
    assert post(client, signer.notification(record)).status_code == 200
    assert server.hits("/SimpleNotificationService-1.pem") == 1
    # Again: from process memory.
    assert post(client, signer.notification(record)).status_code == 200
    # Another process (memory empty): from the shared cache.
    sns_cert_cache_clear()
    assert post(client, signer.notification(record)).status_code == 200
    assert server.hits("/SimpleNotificationService-1.pem") == 1
    # Cache expired too: fetched again.
    caches[settings.SNS_CERT_CACHE].delete(sns_cert_cache_key(url=signer.cert_url))
    sns_cert_cache_clear()
    assert post(client, signer.notification(record)).status_code == 200
    assert server.hits("/SimpleNotificationService-1.pem") == 2
    assert Event.objects.count() == 1  # the same SES event each time


def test_forged_message_with_a_fetchable_certificate_is_refused(client, sent, local_certs):
    signer = _signer_at(local_certs, "/SimpleNotificationService-2.pem")
    envelope = signer.notification(delivery(sent))
    envelope["Message"] = envelope["Message"].replace("Delivery", "Bounce")
    assert post(client, envelope).status_code == 403
    assert nothing_written(sent)


@pytest.mark.parametrize(
    "route",
    [
        (404, b"no such key", {}, 0),
        (500, b"oops", {}, 0),
        (301, b"", {"Location": "/moved.pem"}, 0),  # not followed: it could leave the SNS host
        (200, b"-----BEGIN CERTIFICATE-----\nnot a certificate\n", {}, 0),
        (200, b"x" * (65 * 1024), {}, 0),  # far larger than any certificate
        (200, b"late", {}, 1.5),  # slower than the 1 s timeout
    ],
    ids=["404", "500", "redirect", "garbage", "oversized", "timeout"],
)
def test_unavailable_certificate_answers_503_so_sns_retries(client, sent, local_certs, route):
    server = local_certs
    signer = _signer_at(server, "/SimpleNotificationService-3.pem")
    good = server.routes["/SimpleNotificationService-3.pem"]
    server.routes["/moved.pem"] = good
    server.routes["/SimpleNotificationService-3.pem"] = route
    envelope = signer.notification(delivery(sent))
    started = time.monotonic()
    assert post(client, envelope).status_code == 503
    assert time.monotonic() - started < 3
    assert nothing_written(sent)
    assert server.hits("/moved.pem") == 0
    # A failure is not cached: once the certificate is served, SNS's retry is accepted.
    server.routes["/SimpleNotificationService-3.pem"] = good
    assert post(client, envelope).status_code == 200
    assert Event.objects.count() == 1


def test_sns_hosts_only_by_default(client, sent, server):
    # Without the test override the same local URL is refused before any fetch.
    signer = _signer_at(server, "/SimpleNotificationService-4.pem")
    assert post(client, signer.notification(delivery(sent))).status_code == 403
    assert server.requests == []
    assert nothing_written(sent)


# -- hostile requests: refused before the body is read, or with a short reason; never a 500 ----

MARK = "BODYMARK-7f3a"  # in every junk body: it must never reach a log
WRONG_AUTH = {
    "wrong password": "Basic " + base64.b64encode(b"sns:wrong").decode(),
    "scheme only": "Basic",
    "not base64": f"Basic !!!{MARK}",
    "other scheme": f"Bearer {MARK}",
    "not UTF-8": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    "not ASCII": "Basic sns:wébhook",
    "secret plus a newline": "Basic " + base64.b64encode(b"sns:webhook-test-secret\n").decode(),
    "empty credentials": "Basic " + base64.b64encode(b"").decode(),
}
JUNK = {
    "empty": b"",
    "not JSON": f"{MARK} not json".encode(),
    "not UTF-8": b"\xff\xfe{" + MARK.encode(),
    "lone surrogate": f'{{"Type": "\\ud800{MARK}"}}'.encode(),
    "nested 100,000 deep": b"[" * 100_000 + MARK.encode(),
    "a JSON string": f'"{MARK}"'.encode(),
    "Type a list": json.dumps({"Type": [MARK]}).encode(),
    "Type with a newline": json.dumps({"Type": f"Notification\n{MARK} forged"}).encode(),
    "MessageId with CR LF": json.dumps(
        {"Type": "Notification", "MessageId": f"x\r\n{MARK}", "TopicArn": TOPIC_ARN}
    ).encode(),
    "TopicArn an object": json.dumps(
        {"Type": "Notification", "MessageId": "m-1", "TopicArn": {MARK: 1}}
    ).encode(),
    "huge": MARK.encode() * 300_000,  # 3.9 MB
    "huge integer": (
        f'{{"Type": "Notification", "MessageId": {"9" * 5000}, "m": "{MARK}"}}'.encode()
    ),
}


class Unreadable:
    """A request body that fails the test if anything reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = read


def _post_raw(route: str, body, headers: dict) -> int:
    """POST `body` (bytes, or an Unreadable) to the webhook through Django's URL route or the
    WSGI fast route; the status answered."""
    environ = RequestFactory().generic(
        "POST", WEBHOOK, data=b"" if isinstance(body, Unreadable) else body,
        content_type="text/plain; charset=UTF-8", **headers,
    ).environ  # fmt: skip
    if isinstance(body, Unreadable):
        environ["wsgi.input"] = body
        environ["CONTENT_LENGTH"] = "1000"
    via_django = []

    def django_app(environ, start_response):
        via_django.append(True)
        return WSGIHandler()(environ, start_response)

    app = ses_webhook_wsgi(django_app) if route == "fast" else django_app
    status, _, _ = call_wsgi(app, environ)
    assert bool(via_django) == (route == "django"), "the route taken"
    return status


def _headers(auth: str | None, **extra) -> dict:
    headers = {"HTTP_X_AMZ_SNS_MESSAGE_TYPE": "Notification", "HTTP_X_AMZ_SNS_MESSAGE_ID": "m-1"}
    if auth is not None:
        headers["HTTP_AUTHORIZATION"] = auth
    return {**headers, **extra}


def _no_trace_in_logs(caplog, *needles: str) -> None:
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert "\n" not in record.getMessage() and "\r" not in record.getMessage(), text
        for needle in needles:
            assert needle not in text, text


ROUTES = ["django", "fast"]


@pytest.mark.parametrize("route", ROUTES)
def test_without_valid_credentials_the_body_is_never_read(route, sent, caplog):
    caplog.set_level(logging.DEBUG)
    for name, auth in [("none", None), *WRONG_AUTH.items()]:
        status = _post_raw(route, Unreadable(), _headers(auth))
        assert status == (401 if auth is None else 403), name
    assert nothing_written(sent)
    _no_trace_in_logs(caplog, MARK, "!!!", "wébhook")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("junk", JUNK.values(), ids=JUNK.keys())
def test_junk_without_valid_credentials_is_refused_unread(route, junk, sent, caplog):
    caplog.set_level(logging.DEBUG)
    for name, auth in [("none", None), *WRONG_AUTH.items()]:
        status = _post_raw(route, junk, _headers(auth))
        assert status == (401 if auth is None else 403), name
    assert nothing_written(sent)
    _no_trace_in_logs(caplog, MARK)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("junk", JUNK.values(), ids=JUNK.keys())
def test_junk_with_valid_credentials_gets_400_and_stays_out_of_the_logs(route, junk, sent, caplog):
    caplog.set_level(logging.DEBUG)
    status = _post_raw(route, junk, _headers(AUTH))
    assert status == (413 if len(junk) > 1024 * 1024 else 400)
    assert nothing_written(sent)
    _no_trace_in_logs(caplog, MARK)
    assert "ses webhook refused status=4" in caplog.text  # the reason is logged, alone


@pytest.mark.parametrize("route", ROUTES)
def test_a_content_length_that_is_not_a_length_gets_400(route, signer, sent):
    envelope = signer.notification(delivery(sent))
    headers = {**sns_headers(envelope), "HTTP_AUTHORIZATION": AUTH}
    for length in ("-1", "abc", "1e3"):
        environ = (
            RequestFactory()
            .post(WEBHOOK, data=json.dumps(envelope), content_type="text/plain", **headers)
            .environ
        )
        environ["CONTENT_LENGTH"] = length
        app = ses_webhook_wsgi(WSGIHandler()) if route == "fast" else WSGIHandler()
        assert call_wsgi(app, environ)[0] == 400, length
    assert nothing_written(sent)


FORGED = "FORGED-LINE"


def _forged_fields(signer, sent) -> dict:
    """Requests each carrying a CR or LF in a field a log line could show."""
    good = signer.notification(delivery(sent))
    payload = delivery(sent)
    payload["mail"]["messageId"] = f"m\n{FORGED}"
    # (ses_sample replaces text in a JSON file: the escapes become CR LF once parsed)
    bad_id = ses_sample("delivery", message_id=MESSAGE_ID, recipient=f"a\\r\\n{FORGED}@x.org")
    return {
        "Type": {**good, "Type": f"Notification\r\n{FORGED}"},
        "MessageId": {**good, "MessageId": f"abc\n{FORGED}"},
        "TopicArn": {**good, "TopicArn": f"{TOPIC_ARN}\n{FORGED}"},
        "SignatureVersion": {**good, "SignatureVersion": f"1\n{FORGED}"},
        "SigningCertURL": {
            **good,
            "SigningCertURL": f"https://sns.us-east-1.amazonaws.com/\n{FORGED}.pem",
        },
        "Timestamp": {**good, "Timestamp": f"2026-11-20T10:00:06.000Z\n{FORGED}"},
        "SES messageId (signed)": signer.notification(payload),
        "recipient (signed)": signer.notification(bad_id),
    }


@pytest.mark.parametrize("route", ROUTES)
def test_a_line_break_in_any_logged_field_cannot_forge_a_log_line(route, signer, sent, caplog):
    caplog.set_level(logging.DEBUG)
    for field, envelope in _forged_fields(signer, sent).items():
        headers = sns_headers({**envelope, "Type": "Notification"})
        headers["HTTP_X_AMZ_SNS_MESSAGE_ID"] = envelope["MessageId"]
        headers["HTTP_AUTHORIZATION"] = AUTH
        status = _post_raw(route, json.dumps(envelope).encode(), headers)
        assert status in (200, 400, 403), field
    # Only the last, signed and on its message, is recorded (its recipient is never logged).
    assert Event.objects.count() == 1
    assert caplog.records
    _no_trace_in_logs(caplog, FORGED)


def test_only_the_ses_tracking_route_is_mounted(client):
    for path in (
        "/webhooks/anymail/amazon_ses/inbound/",
        "/webhooks/anymail/mailgun/tracking/",
        "/webhooks/anymail/mailgun/inbound/",
        "/webhooks/anymail/mandrill/",
        "/webhooks/anymail/postmark/inbound/",
        "/webhooks/anymail/sendgrid/tracking/",
    ):
        assert client.post(path, data="{}", content_type="application/json").status_code == 404
    assert client.get(WEBHOOK).status_code == 405


# -- configuration --------------------------------------------------------------------------------


def test_the_webhook_will_not_start_without_pinned_topics(settings):
    settings.DEBUG = False
    settings.SNS_TOPIC_ARNS = []
    with pytest.raises(ImproperlyConfigured, match="Set SNS_TOPIC_ARNS"):
        ses_webhook_wsgi(WSGIHandler())
    settings.SNS_TOPIC_ARNS = ["arn:aws:sns:us-east-1:123456789012:ok", "arn:aws:s3:::bucket"]
    with pytest.raises(ImproperlyConfigured, match="arn:aws:s3:::bucket"):
        ses_webhook_wsgi(WSGIHandler())
    settings.SNS_TOPIC_ARNS = [TOPIC_ARN]
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": None}
    with pytest.raises(ImproperlyConfigured, match="ANYMAIL_WEBHOOK_SECRET"):
        ses_webhook_wsgi(WSGIHandler())


@pytest.mark.slow
def test_the_web_server_fails_at_start_up_naming_what_to_set(tmp_path):
    """The real start-up (config.wsgi, as granian loads it), without SNS_TOPIC_ARNS."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SNS_TOPIC_ARNS", "DJANGO_DEBUG", "DJANGO_SETTINGS_MODULE")
    }
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DJANGO_SECRET_KEY="x")
    root = Path(__file__).resolve().parents[3]
    started = subprocess.run(
        [sys.executable, "-c", "import config.wsgi"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode != 0
    assert "ImproperlyConfigured: Set SNS_TOPIC_ARNS" in started.stderr
    env["SNS_TOPIC_ARNS"] = TOPIC_ARN
    started = subprocess.run(
        [sys.executable, "-c", "import config.wsgi"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr


def test_in_debug_without_pinned_topics_every_message_is_refused(client, signer, sent, settings):
    settings.DEBUG = True
    settings.SNS_TOPIC_ARNS = []
    assert sns_topics() == {}
    response = post(client, signer.notification(delivery(sent)))
    assert response.status_code == 403
    assert response.content == b"TopicArn is not one of SNS_TOPIC_ARNS"
    assert nothing_written(sent)

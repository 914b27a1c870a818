"""Signing SNS messages the way SNS does, with a test certificate (tests and bench/events.py).

A `TestSigner` makes an RSA key and a self-signed certificate, as the local SES endpoint does
(seslocal.events.self_signed_rsa; no CA: tracking.ses_events.sns trusts a certificate because
of where it comes from, sns.<region>.amazonaws.com over https, and the tests put it in the
certificate cache for that URL, or serve it from a local server they allow). It signs for
TOPIC_ARN (the topic tests/settings.py pins) unless told another; messages carry the current
time, as SNS's do (the webhook refuses old ones).
"""

import base64
import functools
import json
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from seslocal.events import iso_ms, self_signed_rsa
from tracking.ses_events.sns import sns_cert_cache_seed, sns_string_to_sign

REGION = "us-east-1"
TOPIC_ARN = f"arn:aws:sns:{REGION}:123456789012:ses-events"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-mailwright-test.pem"
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


def sns_timestamp(delta_seconds: float = 0) -> str:
    """SNS's Timestamp for now (plus `delta_seconds`): 2026-11-20T10:00:06.000Z."""
    return iso_ms(time.time() + delta_seconds)


class TestSigner:
    """An RSA key, its self-signed certificate, and the SigningCertURL it claims to be at."""

    __test__ = False  # not a pytest test class

    def __init__(self, cert_url: str = CERT_URL, key_size: int = 2048):
        self.cert_url = cert_url
        self.key, self.cert = self_signed_rsa("sns.amazonaws.com", key_size=key_size)
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def seed(self, timeout: int | None = None) -> None:
        """Put the certificate in the SNS certificate cache for `cert_url`
        (see tracking.ses_events.sns)."""
        sns_cert_cache_seed(url=self.cert_url, pem=self.pem, timeout=timeout)

    def sign(self, message: dict, *, version: str = "1", cert_url: str | None = None) -> dict:
        """`message` with SignatureVersion, SigningCertURL and Signature set, as SNS signs it."""
        signed = {
            **message,
            "SignatureVersion": version,
            "SigningCertURL": cert_url or self.cert_url,
        }
        signature = self.key.sign(
            sns_string_to_sign(message=signed), padding.PKCS1v15(), _HASHES[version]()
        )
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed

    def notification(
        self,
        ses_event: dict | str,
        *,
        sns_id: str | None = None,
        version: str = "1",
        subject: str | None = "Amazon SES Email Event Notification",
        timestamp: str | None = None,
        topic_arn: str = TOPIC_ARN,
    ) -> dict:
        """A signed SNS Notification carrying `ses_event` (an object, or the Message string),
        published now unless `timestamp` says when."""
        message = {
            "Type": "Notification",
            "MessageId": sns_id or str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": ses_event if isinstance(ses_event, str) else json.dumps(ses_event),
            "Timestamp": timestamp or sns_timestamp(),
            "UnsubscribeURL": (
                f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe"
                f"&SubscriptionArn={topic_arn}:0b1f3d6e-0000-4000-8000-000000000000"
            ),
        }
        if subject is not None:
            message["Subject"] = subject
        return self.sign(message, version=version)

    def confirmation(
        self,
        kind: str = "SubscriptionConfirmation",
        *,
        version: str = "1",
        topic_arn: str = TOPIC_ARN,
    ) -> dict:
        """A signed SubscriptionConfirmation (or UnsubscribeConfirmation), published now."""
        token = "2336412f37fb687f5d51e6e2425f004aed8c1d3e" * 3
        region = topic_arn.split(":")[3]
        message = {
            "Type": kind,
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic_arn,
            "Message": (
                f"You have chosen to subscribe to the topic {topic_arn}.\n"
                "To confirm the subscription, visit the SubscribeURL included in this message."
            ),
            "SubscribeURL": (
                f"https://sns.{region}.amazonaws.com/?Action=ConfirmSubscription"
                f"&TopicArn={topic_arn}&Token={token}"
            ),
            "Timestamp": sns_timestamp(),
        }
        return self.sign(message, version=version)


@functools.cache
def default_signer() -> TestSigner:
    """One signer per process (making a 2048-bit key takes ~0.1 s)."""
    return TestSigner()


def sns_headers(envelope: dict) -> dict:
    """The headers SNS sends with a message, for Django's test client."""
    return {
        "HTTP_X_AMZ_SNS_MESSAGE_TYPE": envelope["Type"],
        "HTTP_X_AMZ_SNS_MESSAGE_ID": envelope["MessageId"],
        "HTTP_X_AMZ_SNS_TOPIC_ARN": envelope["TopicArn"],
    }


DATA = Path(__file__).resolve().parent / "data" / "ses_events"
SAMPLE_MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
SAMPLE_RECIPIENT = "recipient@example.com"
DETAILS_KEYS = {
    "Bounce": "bounce", "Complaint": "complaint", "Delivery": "delivery", "Open": "open",
    "Click": "click", "DeliveryDelay": "deliveryDelay", "Subscription": "subscription",
    "Reject": "reject", "Rendering Failure": "failure",
}  # fmt: skip


def ses_sample(name: str, *, message_id: str, recipient: str, timestamp: str | None = None) -> dict:
    """The SES event record tests/data/ses_events/<name>.json, for `message_id` and `recipient`
    (and, if given, with its event `timestamp` replaced: a different event of the same kind)."""
    text = (DATA / f"{name}.json").read_text()
    text = text.replace(SAMPLE_MESSAGE_ID, message_id).replace(SAMPLE_RECIPIENT, recipient)
    event = json.loads(text)
    if timestamp is not None:
        kind = event.get("eventType") or event.get("notificationType")
        event[DETAILS_KEYS[kind]]["timestamp"] = timestamp
    return event

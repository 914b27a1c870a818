"""SES event publishing through SNS, locally: what SES and SNS POST to an HTTPS subscription.

With ``--events-webhook URL`` every message the endpoint accepts is followed, a moment later,
by the SES events a configuration set with an SNS event destination would publish for it: Send,
then Delivery (or Bounce for the bounce addresses below), then Complaint for the complaint
addresses. Each event is one SNS Notification (the SES event object, as text, in ``Message``),
signed as SNS signs (SignatureVersion 2) with a key made at start-up, whose self-signed
certificate this server serves at ``SigningCertURL`` (``/SimpleNotificationService-….pem``,
named after its fingerprint, so a restart is a new URL as a rotation is at SNS). A receiver
trusts that certificate only if it is told to trust this host (the demo's settings do).

Which recipients do what (lower-cased addr-specs):

* ``bounce@simulator.amazonses.com``, and locally any ``bounce@…`` or ``…+bounce@…``: a hard
  bounce (Permanent/General, 5.1.1), no delivery;
* ``suppressionlist@simulator.amazonses.com``: a hard bounce (Permanent/OnAccountSuppressionList);
* ``complaint@simulator.amazonses.com``, and locally ``complaint@…`` or ``…+complaint@…``:
  delivered, then a complaint (abuse);
* anyone else: delivered.

Posting happens on one thread of its own, in order of when each event is due; a failed post
(no connection, a timeout, an answer other than 2xx) is retried after 1, 2, 4… s up to
``retries`` times, then dropped. Either way it is logged with ids only (the SES message id,
the SNS message id, the event type, the status): never an address or the URL, whose userinfo
is the webhook's credentials. Nothing here can stop the endpoint: a publisher that fails only
logs.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import http.client
import itertools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .messages import OutMessage

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

logger = logging.getLogger("seslocal.events")

DEFAULT_TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:seslocal-events"
ACCOUNT_ID = "000000000000"
SNS_SUBJECT = "Amazon SES Email Event Notification"

SIMULATOR = "simulator.amazonses.com"
DELIVERED, BOUNCED, SUPPRESSED, COMPLAINED = "delivered", "bounced", "suppressed", "complained"


def recipient_outcome(address: str) -> str:
    """What SES's mailbox simulator (or the local test pattern) does with `address`."""
    local, _, domain = address.lower().rpartition("@")
    if domain == SIMULATOR and local == "suppressionlist":
        return SUPPRESSED
    tag = local.rpartition("+")[2] if "+" in local else local
    if tag == "bounce":
        return BOUNCED
    if tag == "complaint":
        return COMPLAINED
    return DELIVERED


@dataclass(frozen=True)
class EventsConfig:
    """Where and how events are published (``--events-*`` options)."""

    webhook: str
    topic_arn: str = DEFAULT_TOPIC_ARN
    delay: float = 1.0  # seconds between a send and its Delivery (its Send event comes sooner)
    retries: int = 3
    timeout: float = 5.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the events webhook must be an http(s) URL")
        if self.delay < 0 or self.retries < 0 or self.timeout <= 0:
            raise ValueError("events delay and retries must be >= 0, timeout > 0")


def iso_ms(stamp: float) -> str:
    """SES's and SNS's timestamps: 2026-11-20T10:00:06.000Z."""
    when = datetime.fromtimestamp(stamp, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _mail(message: OutMessage) -> dict[str, Any]:
    """The event's ``mail`` object, as SES writes it for a message it accepted."""
    destination = [address for _kind, address in message.recipients.addresses]
    headers = [
        {"name": "From", "value": message.from_addr},
        *({"name": "To", "value": to} for to in message.recipients.to),
        {"name": "Subject", "value": message.subject},
        {"name": "MIME-Version", "value": "1.0"},
        *({"name": name, "value": value} for name, value in message.headers),
    ]
    from_domain = message.from_addr.rpartition("@")[2].rstrip(">").lower()
    tags: dict[str, list[str]] = {
        "ses:source-ip": ["127.0.0.1"],
        "ses:from-domain": [from_domain],
        "ses:caller-identity": ["seslocal"],
    }
    if message.config_set:
        tags["ses:configuration-set"] = [message.config_set]
    for name, value in message.tags:
        tags.setdefault(name, []).append(value)
    return {
        "timestamp": iso_ms(message.created),
        "source": message.from_addr,
        "sourceArn": f"arn:aws:ses:us-east-1:{ACCOUNT_ID}:identity/{from_domain}",
        "sendingAccountId": ACCOUNT_ID,
        "messageId": message.message_id,
        "destination": destination,
        "headersTruncated": False,
        "headers": headers,
        "commonHeaders": {
            "from": [message.from_addr],
            "to": list(message.recipients.to),
            "messageId": message.message_id,
            "subject": message.subject,
        },
        "tags": tags,
    }


def ses_events(message: OutMessage, *, delay: float) -> list[tuple[float, dict[str, Any]]]:
    """(when it is due, the SES event object) for each event SES would publish for `message`."""
    sent = message.created
    mail = _mail(message)
    by_outcome: dict[str, list[str]] = {}
    for _kind, address in message.recipients.addresses:
        by_outcome.setdefault(recipient_outcome(address), []).append(address)
    delivered = by_outcome.get(DELIVERED, []) + by_outcome.get(COMPLAINED, [])
    events: list[tuple[float, dict[str, Any]]] = [
        (sent + delay / 4, {"eventType": "Send", "mail": mail, "send": {}})
    ]
    done = sent + delay
    if delivered:
        delivery = {
            "timestamp": iso_ms(done),
            "processingTimeMillis": int(delay * 1000),
            "recipients": delivered,
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-1.smtp-out.amazonses.com",
        }
        events.append((done, {"eventType": "Delivery", "mail": mail, "delivery": delivery}))
    for outcome, sub_type in ((BOUNCED, "General"), (SUPPRESSED, "OnAccountSuppressionList")):
        if by_outcome.get(outcome):
            bounce = {
                "bounceType": "Permanent",
                "bounceSubType": sub_type,
                "bouncedRecipients": [
                    {
                        "emailAddress": address,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                    for address in by_outcome[outcome]
                ],
                "timestamp": iso_ms(done),
                "feedbackId": f"0100{uuid.uuid4().hex}-000000",
                "reportingMTA": "dsn; a8-1.smtp-out.amazonses.com",
            }
            events.append((done, {"eventType": "Bounce", "mail": mail, "bounce": bounce}))
    if by_outcome.get(COMPLAINED):
        complained = done + delay
        complaint = {
            "complainedRecipients": [{"emailAddress": a} for a in by_outcome[COMPLAINED]],
            "timestamp": iso_ms(complained),
            "feedbackId": f"0100{uuid.uuid4().hex}-000000",
            "userAgent": "Amazon SES Mailbox Simulator",
            "complaintFeedbackType": "abuse",
            "arrivalDate": iso_ms(complained),
        }
        events.append(
            (complained, {"eventType": "Complaint", "mail": mail, "complaint": complaint})
        )
    return events


def self_signed_rsa(
    common_name: str, *, key_size: int = 2048
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An RSA key and its self-signed certificate (valid from a day ago for a year), as a
    stand-in for SNS's: this endpoint's, and the tests' signer (tests/sns_signing.py)."""
    # Imported here: only a server publishing events needs them (cryptography is one of the
    # project's own dependencies).
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return key, cert


class SnsSigner:
    """A key and its self-signed certificate: SNS's role, for this endpoint's events."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives import serialization

        self._key, cert = self_signed_rsa("sns.seslocal")
        self.pem = cert.public_bytes(serialization.Encoding.PEM)
        fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        self.cert_path = f"/SimpleNotificationService-seslocal-{fingerprint[:32]}.pem"

    def sign(self, message: dict[str, str]) -> str:
        """The base64 signature (version 2: SHA256withRSA) over SNS's string to sign."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        # tracking.ses_events.sns.sns_string_to_sign's for a Notification, written again:
        # seslocal never imports the product.
        keys = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
        text = "".join(f"{key}\n{message[key]}\n" for key in keys if key in message)
        signature = self._key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode()


@dataclass
class _Delivery:
    ses_type: str
    message_id: str
    envelope: dict[str, str] | None  # signed at its first attempt (SNS's Timestamp), then kept
    event: dict[str, Any]
    attempt: int = 0


class EventPublisher:
    """Queues the events of accepted messages and POSTs them, as SNS does, on its own thread."""

    def __init__(self, config: EventsConfig, *, base_url: str) -> None:
        self.config = config
        self.signer = SnsSigner()
        self.cert_url = base_url + self.signer.cert_path
        self._target = urlsplit(config.webhook)
        self._subscription = f"{config.topic_arn}:{uuid.uuid4()}"
        self._unsubscribe_url = (
            f"{base_url}/?Action=Unsubscribe&SubscriptionArn={self._subscription}"
        )
        self._queue: list[tuple[float, int, _Delivery]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self.published = 0  # posts answered 2xx
        self.dropped = 0  # events given up after their retries
        self._thread = threading.Thread(target=self._run, name="seslocal-events", daemon=True)
        self._thread.start()

    # --- queueing (the request handler's thread) ----------------------------------------

    def messages_accepted(self, messages: list[OutMessage]) -> None:
        with self._wake:
            for message in messages:
                for due, event in ses_events(message, delay=self.config.delay):
                    job = _Delivery(event["eventType"], message.message_id, None, event)
                    heapq.heappush(self._queue, (due, next(self._order), job))
            self._wake.notify()

    def clear(self) -> None:
        """Forget the events not yet published (the endpoint's reset)."""
        with self._wake:
            self._queue.clear()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=self.config.timeout + 1)

    def stats(self) -> dict[str, Any]:
        """``GET /_local/events``'s counts."""
        with self._wake:
            pending = len(self._queue)
        return {
            "enabled": True,
            "pending": pending,
            "published": self.published,
            "dropped": self.dropped,
            "topic_arn": self.config.topic_arn,
            "signing_cert_url": self.cert_url,
        }

    # --- publishing (its own thread) ----------------------------------------------------

    def _next(self) -> _Delivery | None:
        with self._wake:
            while not self._stopped:
                if self._queue and self._queue[0][0] <= time.time():
                    return heapq.heappop(self._queue)[2]
                wait = self._queue[0][0] - time.time() if self._queue else None
                self._wake.wait(timeout=wait)
            return None

    def _run(self) -> None:
        while (job := self._next()) is not None:
            try:
                self._publish(job)
            except Exception as exc:  # noqa: BLE001 (never let one event stop the thread)
                logger.error(
                    "event publisher failed type=%s message_id=%s error=%s",
                    job.ses_type,
                    job.message_id,
                    type(exc).__name__,
                )

    def _envelope(self, event: dict[str, Any]) -> dict[str, str]:
        message = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": self.config.topic_arn,
            "Subject": SNS_SUBJECT,
            "Message": json.dumps(event),
            "Timestamp": iso_ms(time.time()),
        }
        signature = self.signer.sign(message)
        return {
            **message,
            "SignatureVersion": "2",
            "Signature": signature,
            "SigningCertURL": self.cert_url,
            "UnsubscribeURL": self._unsubscribe_url,
        }

    def _publish(self, job: _Delivery) -> None:
        if job.envelope is None:
            job.envelope = self._envelope(job.event)
        job.attempt += 1
        sns_id = job.envelope["MessageId"]
        try:
            status = self._post(job.envelope)
            error = "" if 200 <= status < 300 else f"status={status}"
        except (OSError, http.client.HTTPException) as exc:
            error = f"error={type(exc).__name__}"
        if not error:
            self.published += 1
            logger.debug(
                "event published type=%s message_id=%s sns_id=%s",
                job.ses_type,
                job.message_id,
                sns_id,
            )
            return
        if job.attempt > self.config.retries:
            self.dropped += 1
            logger.warning(
                "event dropped type=%s message_id=%s sns_id=%s attempts=%d %s",
                job.ses_type,
                job.message_id,
                sns_id,
                job.attempt,
                error,
            )
            return
        retry_in = 2 ** (job.attempt - 1)
        logger.warning(
            "event not delivered type=%s message_id=%s sns_id=%s attempt=%d %s retry_in=%ds",
            job.ses_type,
            job.message_id,
            sns_id,
            job.attempt,
            error,
            retry_in,
        )
        with self._wake:
            heapq.heappush(self._queue, (time.time() + retry_in, next(self._order), job))

    def _post(self, envelope: dict[str, str]) -> int:
        target = self._target
        connection_class = (
            http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(target.hostname, target.port, timeout=self.config.timeout)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "User-Agent": "Amazon Simple Notification Service Agent",
            "x-amz-sns-message-type": envelope["Type"],
            "x-amz-sns-message-id": envelope["MessageId"],
            "x-amz-sns-topic-arn": envelope["TopicArn"],
            "x-amz-sns-subscription-arn": self._subscription,
        }
        if target.username is not None:
            # SNS sends the subscription URL's credentials (after a 401 challenge; here at once).
            credentials = f"{unquote(target.username)}:{unquote(target.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        try:
            connection.request("POST", path, body=json.dumps(envelope).encode(), headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

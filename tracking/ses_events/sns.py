"""Trusting Amazon SNS messages: which topics, which certificates, which signatures, how old.

The checks run cheapest first, so junk costs no RSA or fetch (sns_verify; each check and why:
docs/EVENTS.md). Errors carry fixed reasons only: nothing of the message reaches a log through
them. Certificates are fetched once per URL and cached in the shared Django cache, so a fleet
of web processes fetches each one once a day.
"""

import base64
import contextlib
import functools
import hashlib
import http.client
import logging
import re
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.core.cache import InvalidCacheBackendError, caches
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

logger = logging.getLogger(__name__)

# SNS certificates are ~1.7 kB of PEM; anything above 64 KiB is not one.
MAX_CERT_BYTES = 64 * 1024

SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
# Keys a message may leave out: only a Notification's Subject (absent when none was given).
OPTIONAL_KEYS = {("Notification", "Subject")}
SIGNATURE_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}

# arn:<partition>:sns:<region>:<12-digit account>:<topic name> (256 characters at most, FIFO
# topics end in .fifo). The region is strict (us-east-1, ap-southeast-4, us-gov-west-1,
# cn-north-1…): it becomes part of the only certificate host trusted for the topic.
TOPIC_ARN = re.compile(
    r"arn:(aws|aws-cn|aws-us-gov):sns:([a-z]{2}(?:-[a-z]+)+-[1-9][0-9]?):[0-9]{12}:"
    r"[A-Za-z0-9_-]{1,251}(?:\.fifo)?"
)
DNS_SUFFIX = {"aws": "amazonaws.com", "aws-cn": "amazonaws.com.cn", "aws-us-gov": "amazonaws.com"}
# SNS's certificate paths: /SimpleNotificationService-<hex>.pem. One segment of plain characters:
# nothing a fetch could read as a control character, a query or another path.
CERT_PATH = re.compile(r"/[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.pem")
PRINTABLE_ASCII = re.compile(r"[!-~]{1,2048}")
# As SNS writes it: 2026-11-20T10:00:06.000Z.
TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")


# SNS MessageIds are UUIDs; this much is safe in a log line and a buffer record.
MESSAGE_ID = re.compile(r"[A-Za-z0-9-]{1,100}")


class SnsMalformed(ValueError):
    """Not an SNS message at all (not JSON, not an object, no SNS type or id, disagreeing with
    SNS's headers): 400. Its text is a fixed reason, safe to log."""


class SnsVerificationError(Exception):
    """The message is not provably from one of our SNS topics (forged, tampered, replayed, or
    signed elsewhere): 403. Its text is a fixed reason, safe to log."""


class SnsCertificateUnavailable(Exception):
    """The signing certificate could not be fetched now: 503, so SNS delivers again later."""


@dataclass(frozen=True)
class SnsTopic:
    """A topic the webhook accepts, and the one host its signing certificates may come from."""

    arn: str
    region: str
    cert_host: str


def sns_topic_parse(*, arn: str) -> SnsTopic:
    """The SnsTopic of a TopicArn; ValueError if it is not an SNS topic ARN."""
    match = TOPIC_ARN.fullmatch(arn)
    if match is None:
        raise ValueError("not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)")
    partition, region = match.groups()
    host = settings.SNS_CERT_HOST.format(region=region, dns_suffix=DNS_SUFFIX[partition])
    return SnsTopic(arn=arn, region=region, cert_host=host)


@functools.cache
def sns_topics() -> dict[str, SnsTopic]:
    """The pinned topics, by ARN (SNS_TOPIC_ARNS). ImproperlyConfigured if one is not a topic
    ARN, or if there is none while DEBUG is off: the webhook would refuse every message."""
    topics = {}
    for arn in settings.SNS_TOPIC_ARNS:
        try:
            topics[arn] = sns_topic_parse(arn=arn)
        except ValueError as err:
            raise ImproperlyConfigured(f"SNS_TOPIC_ARNS: {arn!r} is {err}.") from None
    if not topics:
        if not settings.DEBUG:
            raise ImproperlyConfigured(
                "Set SNS_TOPIC_ARNS to the ARNs (comma-separated) of the SNS topics that "
                "publish SES events to the webhook, e.g. "
                "SNS_TOPIC_ARNS=arn:aws:sns:us-east-1:123456789012:ses-events."
            )
        logger.warning("SNS_TOPIC_ARNS is empty: the SES webhook refuses every SNS message")
    return topics


@receiver(setting_changed)
def _topics_changed(*, setting: str, **kwargs) -> None:
    if setting in ("SNS_TOPIC_ARNS", "SNS_CERT_HOST", "DEBUG"):
        sns_topics.cache_clear()


def sns_message_parse(*, body: bytes, message_type: str | None, message_id: str | None) -> dict:
    """The SNS message in `body`, given the x-amz-sns-message-type and -id headers SNS sent
    with it; SnsMalformed if it is not one. Its Type is one of SIGNED_KEYS', its MessageId
    matches MESSAGE_ID and its TopicArn is a string; nothing is verified yet (sns_verify)."""
    try:
        # orjson refuses invalid UTF-8, lone surrogates and nesting deeper than 1024 levels.
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SnsMalformed("body is not JSON") from None
    if not isinstance(message, dict):
        raise SnsMalformed("body is not a JSON object")
    kind = message.get("Type")
    if not isinstance(kind, str) or kind not in SIGNED_KEYS:
        raise SnsMalformed("Type is not an SNS message type")
    if kind != message_type:
        raise SnsMalformed("Type disagrees with x-amz-sns-message-type")
    sns_id = message.get("MessageId")
    if not isinstance(sns_id, str) or not MESSAGE_ID.fullmatch(sns_id):
        raise SnsMalformed("MessageId is not an SNS message id")
    if sns_id != message_id:
        raise SnsMalformed("MessageId disagrees with x-amz-sns-message-id")
    if not isinstance(message.get("TopicArn"), str):
        raise SnsMalformed("no TopicArn")
    return message


def sns_string_to_sign(*, message: dict) -> bytes:
    """The bytes SNS signed for `message` (an SNS JSON body, parsed)."""
    message_type = message.get("Type")
    keys = SIGNED_KEYS.get(message_type)
    if keys is None:
        raise SnsVerificationError("unknown SNS message type")
    parts = []
    for key in keys:
        value = message.get(key)
        if value is None and (message_type, key) in OPTIONAL_KEYS:
            continue
        if not isinstance(value, str):
            raise SnsVerificationError(f"SNS message without a string {key}")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode()


def sns_cert_url_check(*, url: object, topic: SnsTopic) -> str:
    """`url` if SNS signs `topic`'s messages with a certificate from there; SnsVerificationError
    otherwise."""
    if not isinstance(url, str):
        raise SnsVerificationError("no SigningCertURL")
    # urlsplit drops tabs and line breaks, which the fetch would not: none may be there.
    if not PRINTABLE_ASCII.fullmatch(url):
        raise SnsVerificationError("SigningCertURL has a space or control character")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise SnsVerificationError("unparsable SigningCertURL") from None
    if parts.scheme not in settings.SNS_CERT_URL_SCHEMES:
        raise SnsVerificationError("SigningCertURL scheme is not allowed")
    # netloc, not hostname: "user@host" and "host:port" must fail the exact match too.
    if parts.netloc != topic.cert_host:
        raise SnsVerificationError("SigningCertURL host is not the topic region's SNS host")
    if not CERT_PATH.fullmatch(parts.path) or parts.query or parts.fragment:
        raise SnsVerificationError("SigningCertURL is not a .pem path")
    return url


def sns_timestamp_check(*, timestamp: object, now: float) -> None:
    """SnsVerificationError unless `timestamp` (SNS's, when it published the message) is
    within the window around `now` (a time.time()). SNS retries an HTTPS delivery for 3,600 s
    at most (a hard limit of SNS), and a retry keeps the signed Timestamp: a message older than
    the window is a replay."""
    if not isinstance(timestamp, str) or not TIMESTAMP.fullmatch(timestamp):
        raise SnsVerificationError("Timestamp is not an SNS timestamp")
    try:
        published = datetime.fromisoformat(timestamp).timestamp()
    except ValueError:  # the right shape, not a date (month 13)
        raise SnsVerificationError("Timestamp is not an SNS timestamp") from None
    if now - published > settings.SNS_MESSAGE_MAX_AGE_SECONDS:
        raise SnsVerificationError("Timestamp is too old")
    if published - now > settings.SNS_MESSAGE_MAX_FUTURE_SECONDS:
        raise SnsVerificationError("Timestamp is in the future")


def sns_verify(*, message: dict, now: float | None = None) -> SnsTopic:
    """The pinned topic `message` comes from, if it is provably from SNS and recent;
    SnsVerificationError if not, SnsCertificateUnavailable if its certificate cannot be
    fetched right now.

    In order: TopicArn pinned (SNS_TOPIC_ARNS: any account's topic can subscribe any URL),
    Timestamp within the window (an older one is a replay, not a retry), SignatureVersion 1
    or 2, SigningCertURL on the topic's region's SNS host, then the signature over AWS's
    string to sign."""
    arn = message.get("TopicArn")
    topic = sns_topics().get(arn) if isinstance(arn, str) else None
    if topic is None:
        raise SnsVerificationError("TopicArn is not one of SNS_TOPIC_ARNS")
    sns_timestamp_check(timestamp=message.get("Timestamp"), now=time.time() if now is None else now)
    digest = SIGNATURE_HASHES.get(message.get("SignatureVersion"))
    if digest is None:
        raise SnsVerificationError("unsupported SignatureVersion")
    url = sns_cert_url_check(url=message.get("SigningCertURL"), topic=topic)
    to_sign = sns_string_to_sign(message=message)
    signature = message.get("Signature")
    try:
        signature = (
            base64.b64decode(signature, validate=True) if isinstance(signature, str) else b""
        )
    except ValueError:
        raise SnsVerificationError("Signature is not base64") from None
    if not signature:
        raise SnsVerificationError("no Signature")
    key = sns_public_key(url=url)
    try:
        key.verify(signature, to_sign, padding.PKCS1v15(), digest())
    except InvalidSignature:
        raise SnsVerificationError("signature does not verify") from None
    return topic


# -- certificates --------------------------------------------------------------------------------

# url → (RSA public key, monotonic expiry). Certificates are a handful per region: no bound
# needed (only certificates that fetched and parsed are stored).
_keys: dict[str, tuple[rsa.RSAPublicKey, float]] = {}
_fetch_lock = threading.Lock()


def _cache():
    try:
        return caches[settings.SNS_CERT_CACHE]
    except (AttributeError, InvalidCacheBackendError):
        return caches["default"]


def sns_cert_cache_key(*, url: str) -> str:
    return "sns-cert:" + hashlib.sha256(url.encode()).hexdigest()


def sns_cert_cache_seed(*, url: str, pem: bytes, timeout: int | None = None) -> None:
    """Store `pem` as the certificate of `url` in the shared cache (tests, the event benchmark:
    a server using the same cache then accepts messages signed with its key)."""
    _cache().set(sns_cert_cache_key(url=url), pem, timeout or settings.SNS_CERT_CACHE_SECONDS)
    _keys.pop(url, None)


def sns_cert_cache_clear() -> None:
    """Forget the certificates this process holds in memory (the shared cache keeps its own)."""
    _keys.clear()


def sns_public_key(*, url: str) -> rsa.RSAPublicKey:
    """The RSA key of the certificate at `url`: from memory, the shared cache, or fetched."""
    cached = _keys.get(url)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    # One fetch per process at a time: a burst of SNS deliveries after a certificate rotation
    # must not fetch it once per request.
    with _fetch_lock:
        cached = _keys.get(url)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        cache_key = sns_cert_cache_key(url=url)
        try:
            pem = _cache().get(cache_key)
        except Exception:  # noqa: BLE001 (a cache that is down is a miss, not an outage)
            logger.warning("sns certificate cache unavailable; fetching", exc_info=True)
            pem = None
        fetched = pem is None
        if fetched:
            pem = _fetch(url)
        try:
            key = _public_key(pem)
        except SnsCertificateUnavailable:
            if not fetched:  # a bad cache entry: forget it, so the next delivery fetches
                with contextlib.suppress(Exception):
                    _cache().delete(cache_key)
            raise
        if fetched:
            try:
                _cache().set(cache_key, pem, settings.SNS_CERT_CACHE_SECONDS)
            except Exception:  # noqa: BLE001 (still cached in this process)
                logger.warning("sns certificate cache unavailable; not shared", exc_info=True)
        _keys[url] = (key, time.monotonic() + settings.SNS_CERT_CACHE_SECONDS)
        return key


def _public_key(pem: bytes) -> rsa.RSAPublicKey:
    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
    except ValueError:
        raise SnsCertificateUnavailable("the signing certificate does not parse") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsVerificationError("the signing certificate's key is not RSA")
    return key


def _opener() -> urllib.request.OpenerDirector:
    """HTTPS (and, where settings allow it, HTTP) without redirects: a redirect could lead off
    the SNS host the URL was checked against."""
    opener = urllib.request.OpenerDirector()
    opener.add_handler(urllib.request.HTTPSHandler(context=ssl.create_default_context()))
    if "http" in settings.SNS_CERT_URL_SCHEMES:
        opener.add_handler(urllib.request.HTTPHandler())
    return opener


def _fetch(url: str) -> bytes:
    started = time.monotonic()
    host = urlsplit(url).netloc
    try:
        with _opener().open(url, timeout=settings.SNS_CERT_FETCH_TIMEOUT_SECONDS) as response:
            status = response.status
            body = response.read(MAX_CERT_BYTES + 1)
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError, timeouts: OSError
        logger.warning("sns certificate fetch failed host=%s error=%s", host, type(err).__name__)
        raise SnsCertificateUnavailable("the signing certificate could not be fetched") from err
    if status != 200 or len(body) > MAX_CERT_BYTES:
        logger.warning("sns certificate fetch refused host=%s status=%s", host, status)
        raise SnsCertificateUnavailable(f"the signing certificate fetch answered {status}")
    logger.info("sns certificate fetched host=%s ms=%d", host, (time.monotonic() - started) * 1000)
    return body

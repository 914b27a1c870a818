"""Verifying Amazon SNS message signatures (anymail checks basic auth, not signatures).

What is checked, per AWS's "Verifying the signatures of Amazon SNS messages":
  - SignatureVersion 1 (RSA PKCS#1 v1.5 with SHA1) or 2 (with SHA256); anything else is refused;
  - SigningCertURL is https, its host is exactly sns.<region>.amazonaws.com (or …amazonaws.com.cn),
    its path ends in .pem, and it has no user, port, query or fragment;
  - the signature verifies, with that certificate's key, over the string to sign: "Key\\nValue\\n"
    for Message, MessageId, Subject (if present), Timestamp, TopicArn, Type (Notification), or
    Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type (Subscription and
    Unsubscribe confirmations).

Certificates are fetched once per URL (no redirects followed, 64 KiB at most, a short timeout)
and cached in process memory and in the shared Django cache named by SNS_CERT_CACHE, so a fleet
of web processes fetches each certificate once a day. Only a successful fetch is cached.
"""

import base64
import contextlib
import hashlib
import logging
import re
import ssl
import threading
import time
import urllib.request
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.core.cache import InvalidCacheBackendError, caches

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


class SnsVerificationError(Exception):
    """The message is not provably from SNS (forged, tampered, or from an untrusted URL): 403."""


class SnsCertificateUnavailable(Exception):
    """The signing certificate could not be fetched now: 503, so SNS delivers again later."""


def sns_string_to_sign(*, message: dict) -> bytes:
    """The bytes SNS signed for `message` (an SNS JSON body, parsed)."""
    message_type = message.get("Type")
    keys = SIGNED_KEYS.get(message_type)
    if keys is None:
        raise SnsVerificationError(f"unknown SNS message type {message_type!r}")
    parts = []
    for key in keys:
        value = message.get(key)
        if value is None and (message_type, key) in OPTIONAL_KEYS:
            continue
        if not isinstance(value, str):
            raise SnsVerificationError(f"SNS message without a string {key}")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode()


def sns_cert_url_check(*, url: object) -> str:
    """`url` if SNS may sign with a certificate from there; SnsVerificationError otherwise."""
    if not isinstance(url, str):
        raise SnsVerificationError("no SigningCertURL")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise SnsVerificationError("unparsable SigningCertURL") from None
    if parts.scheme not in settings.SNS_CERT_URL_SCHEMES:
        raise SnsVerificationError(f"SigningCertURL scheme {parts.scheme!r} is not allowed")
    # netloc, not hostname: "user@host" and "host:port" must fail the exact match too.
    if not re.fullmatch(settings.SNS_CERT_HOST_PATTERN, parts.netloc):
        raise SnsVerificationError("SigningCertURL host is not an SNS host")
    if not parts.path.endswith(".pem") or parts.query or parts.fragment:
        raise SnsVerificationError("SigningCertURL is not a .pem path")
    return url


def sns_verify(*, message: dict) -> None:
    """Return if `message` carries a valid SNS signature; raise SnsVerificationError if not,
    SnsCertificateUnavailable if its certificate cannot be fetched right now."""
    digest = SIGNATURE_HASHES.get(message.get("SignatureVersion"))
    if digest is None:
        raise SnsVerificationError(
            f"unsupported SignatureVersion {message.get('SignatureVersion')!r}"
        )
    url = sns_cert_url_check(url=message.get("SigningCertURL"))
    to_sign = sns_string_to_sign(message=message)
    try:
        signature = base64.b64decode(message.get("Signature") or "", validate=True)
    except (ValueError, TypeError):
        raise SnsVerificationError("Signature is not base64") from None
    if not signature:
        raise SnsVerificationError("no Signature")
    key = sns_public_key(url=url)
    try:
        key.verify(signature, to_sign, padding.PKCS1v15(), digest())
    except InvalidSignature:
        raise SnsVerificationError("signature does not verify") from None


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
    except (OSError, ValueError) as err:  # URLError, timeouts and resets are OSErrors
        logger.warning("sns certificate fetch failed host=%s error=%s", host, type(err).__name__)
        raise SnsCertificateUnavailable("the signing certificate could not be fetched") from err
    if status != 200 or len(body) > MAX_CERT_BYTES:
        logger.warning("sns certificate fetch refused host=%s status=%s", host, status)
        raise SnsCertificateUnavailable(f"the signing certificate fetch answered {status}")
    logger.info("sns certificate fetched host=%s ms=%d", host, (time.monotonic() - started) * 1000)
    return body

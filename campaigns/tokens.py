"""Opaque signed tokens: each names one notification, for one purpose.

base36(id) + "." + 16 chars of HMAC-SHA256 (96 bits), keyed by SECRET_KEY (or one of
SECRET_KEY_FALLBACKS, tried after it) and salted by purpose: **tracking** (the pixel and click
URLs, which proxies and scanners fetch and log) or **unsubscribe** (List-Unsubscribe and the
footer link), so no URL a proxy fetches can unsubscribe anyone. Alphabet [0-9a-z._-]: tokens
survive URLs and Handlebars' HTML escaping unchanged.
"""

import binascii
import functools
import hashlib
import re
from types import MappingProxyType

from django.conf import settings
from django.utils.crypto import constant_time_compare

_TRACKING_SALT = "tracking.token"
_UNSUBSCRIBE_SALT = (
    "tracking.unsubscribe"  # (named before the module moved: a new salt would void sent links)
)
_SIGNATURE_CHARS = 16
_SIGNED_BYTES = _SIGNATURE_CHARS * 3 // 4  # base64: 3 bytes per 4 characters
_URL_SAFE = bytes.maketrans(b"+/", b"-_")
# The one spelling _sign gives (int() alone would also take "A", "0a", "a_b", " a" or other
# scripts' digits for the same id): ≤ 13 base36 digits (a 64-bit id), no leading zero.
_TOKEN = re.compile(r"([1-9a-z][0-9a-z]{0,12})\.([A-Za-z0-9_-]{16})")


@functools.lru_cache(maxsize=32)  # 2 purposes × (the key + its fallbacks)
def _key(salt: str, secret: str) -> tuple:
    """HMAC-SHA256 (RFC 2104) with Django's salted_hmac key, its two padded-key hash states
    computed once per salt and secret: a signature is then two copies and two small updates,
    where hmac.digest() looks the digest up by name and sets up a fresh context every call
    (one signature per token, two tokens per recipient; cost: docs/PERFORMANCE.md)."""
    key = hashlib.sha256((salt + secret).encode()).digest().ljust(64, b"\0")  # SHA-256's block
    return (
        hashlib.sha256(bytes(b ^ 0x36 for b in key)),
        hashlib.sha256(bytes(b ^ 0x5C for b in key)),
    )


def _signature(notification_id: int, key: tuple) -> str:
    """Equal to django.utils.crypto.salted_hmac(salt, str(id), secret, algorithm="sha256"),
    base64 (URL-safe), cut to _SIGNATURE_CHARS, for `key` = _key(salt, secret)."""
    inner, outer = key
    inner = inner.copy()
    inner.update(str(notification_id).encode())
    outer = outer.copy()
    outer.update(inner.digest())
    # 16 base64 characters are the first 12 bytes' (one C call each, no padding to cut)
    return (
        binascii.b2a_base64(outer.digest()[:_SIGNED_BYTES], newline=False)
        .translate(_URL_SAFE)
        .decode()
    )


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def _sign(salt: str, notification_id: int) -> str:
    key = _key(salt, settings.SECRET_KEY)
    return f"{_base36(notification_id)}.{_signature(notification_id, key)}"


def _sign_all(salt: str, notification_ids: list[int]) -> list[str]:
    key = _key(salt, settings.SECRET_KEY)  # looked up once for the lot
    return [f"{_base36(nid)}.{_signature(nid, key)}" for nid in notification_ids]


def _verify(salt: str, token: str) -> int | None:
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    head, signature = match.groups()
    notification_id = int(head, 36)
    key = _key(salt, settings.SECRET_KEY)
    if constant_time_compare(signature, _signature(notification_id, key)):
        return notification_id
    for secret in settings.SECRET_KEY_FALLBACKS:  # only once the current key has failed
        if constant_time_compare(signature, _signature(notification_id, _key(salt, secret))):
            return notification_id
    return None


# --- tracking: the open pixel and click links -------------------------------------------------


def token_for(notification_id: int) -> str:
    return _sign(_TRACKING_SALT, notification_id)


def tokens_for(notification_ids: list[int]) -> list[str]:
    """token_for of each id, the key looked up once (a campaign group signs 50)."""
    return _sign_all(_TRACKING_SALT, notification_ids)


def notification_id_from(token: str) -> int | None:
    """The notification a tracking token names, or None if it is malformed, not ours, or of
    another purpose (an unsubscribe token)."""
    return _verify(_TRACKING_SALT, token)


# --- unsubscribe: the List-Unsubscribe header and the footer link ----------------------------


def unsubscribe_token_for(notification_id: int) -> str:
    return _sign(_UNSUBSCRIBE_SALT, notification_id)


def unsubscribe_tokens_for(notification_ids: list[int]) -> list[str]:
    """unsubscribe_token_for of each id, the key looked up once."""
    return _sign_all(_UNSUBSCRIBE_SALT, notification_ids)


def notification_id_from_unsubscribe_token(token: str) -> int | None:
    """The notification an unsubscribe token names, or None if it is malformed, not ours, or
    of another purpose (a tracking token)."""
    return _verify(_UNSUBSCRIBE_SALT, token)


# -- the unsubscribe links a message carries (no database) ------------------------------

# Where tracking/urls.py's unsubscribe route answers, below config/urls.py's "t/" (a test
# checks it against reverse()). Spelled out rather than reversed: URLs are built in workers,
# for the public TRACKING_BASE_URL, 1M times per campaign.
UNSUBSCRIBE_PATH = "/t/u/"
# RFC 8058 §3.1: the List-Unsubscribe-Post value, and the POST body a mail provider sends.
ONE_CLICK = "List-Unsubscribe=One-Click"
ONE_CLICK_HEADER = MappingProxyType({"List-Unsubscribe-Post": ONE_CLICK})


def unsubscribe_urls_for(notification_ids: list[int]) -> list[str]:
    """The absolute unsubscribe URL of each message (its footer link and its List-Unsubscribe
    header's URI), signed with the key looked up once, as tokens_for."""
    prefix = f"{settings.TRACKING_BASE_URL}{UNSUBSCRIBE_PATH}"
    return [prefix + token for token in unsubscribe_tokens_for(notification_ids)]


def unsubscribe_url(*, notification_id: int) -> str:
    """The absolute unsubscribe URL of one message."""
    return unsubscribe_urls_for([notification_id])[0]


def list_unsubscribe_header_for_url(url: str) -> dict[str, str]:
    """The recipient's own List-Unsubscribe header for the URL unsubscribe_urls_for gave: one
    URI in angle brackets (RFC 2369). The bulk path sends the other header, the same in every
    message (ONE_CLICK_HEADER), once per SES call."""
    return {"List-Unsubscribe": f"<{url}>"}


def list_unsubscribe_headers(*, notification_id: int) -> dict[str, str]:
    """Both RFC 8058 headers of a message: `List-Unsubscribe: <https://…/t/u/TOKEN>` and
    `List-Unsubscribe-Post: List-Unsubscribe=One-Click`.

    RFC 8058 wants an https URI (TRACKING_BASE_URL is https in production; the demo's http
    still gives a working RFC 2369 link), and both headers covered by the DKIM signature.
    """
    return {
        **list_unsubscribe_header_for_url(unsubscribe_url(notification_id=notification_id)),
        **ONE_CLICK_HEADER,
    }

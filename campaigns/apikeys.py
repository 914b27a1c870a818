"""API keys: made (shown once), found and checked, revoked (models.ApiKey).

A key reads `mw_live_3f9a1c2b_<secret>` (`mw_test_…` for a test key). The first three parts
are its prefix, kept in clear to find the key and to tell keys apart in the admin; the secret
(256 random bits) is kept only as its SHA-256 digest and compared in constant time. A slow
password hash buys nothing for a secret of that entropy and would cost every request.
"""

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from campaigns.models import ApiKey

KEY_NAMESPACE = "mw"
LIVE, TEST = "live", "test"

# What a key may be granted. Part 1 of the API uses the first four; the rest are for the
# resources of part 2 (contacts, lists, templates, campaigns, events, callbacks).
SCOPES = {
    "messages:send": "Send transactional messages",
    "messages:read": "Read messages and their events",
    "jobs:send": "Start and cancel bulk jobs",
    "jobs:read": "Read bulk jobs",
    "contacts:read": "Read contacts and lists",
    "contacts:write": "Change contacts and lists",
    "templates:read": "Read templates",
    "templates:write": "Change templates",
    "campaigns:read": "Read campaigns and reports",
    "campaigns:write": "Change, schedule and cancel campaigns",
    "webhooks:read": "Read callback endpoints and their deliveries",
    "webhooks:write": "Manage callback endpoints",
}

# The prefix's random part: 8 lowercase hex digits. Anything else is refused before a query.
_PREFIX_RANDOM = re.compile(r"[0-9a-f]{8}")

# last_used_at is written when it is older than this: at most one write a minute per key.
LAST_USED_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # the whole key, shown once and never kept


def api_key_create(
    *,
    name: str,
    scopes: Iterable[str],
    test: bool = False,
    expires_at: datetime | None = None,
    created_by=None,
) -> IssuedKey:
    """Make a key; the returned secret is the only time it is seen in clear."""
    scopes = sorted(set(scopes))
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(unknown)}")
    prefix = f"{KEY_NAMESPACE}_{TEST if test else LIVE}_{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name,
        prefix=prefix,
        secret_hash=_digest(secret),
        scopes=scopes,
        test=test,
        expires_at=expires_at,
        created_by=created_by,
    )
    return IssuedKey(key=key, secret=f"{prefix}_{secret}")


class KeyRefused(Exception):
    """The key cannot be used; `status` is 401 (not a key of ours) or 403 (revoked, expired)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def api_key_check(raw: str) -> ApiKey:
    """The key `raw` names, if it may be used now; KeyRefused if not."""
    parts = raw.split("_", 3)
    if (
        len(parts) != 4
        or parts[0] != KEY_NAMESPACE
        or parts[1] not in (LIVE, TEST)
        or not _PREFIX_RANDOM.fullmatch(parts[2])
    ):
        # (Also keeps what PostgreSQL cannot compare, a NUL, away from the query: not a 500.)
        raise KeyRefused(401, "invalid_api_key", "The API key is not valid.")
    prefix, secret = "_".join(parts[:3]), parts[3]
    key = _key_by_prefix(prefix)
    # Compared even when no key has that prefix, so the answer takes the same time.
    expected = key.secret_hash if key is not None else _digest("")
    if not hmac.compare_digest(expected, _digest(secret)) or key is None:
        raise KeyRefused(401, "invalid_api_key", "The API key is not valid.")
    now = timezone.now()
    if key.revoked_at is not None:
        raise KeyRefused(403, "api_key_revoked", "The API key was revoked.")
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyRefused(403, "api_key_expired", "The API key has expired.")
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_PRECISION:
        # Guarded, so concurrent requests (and other processes) write it once.
        ApiKey.objects.filter(pk=key.pk).exclude(last_used_at__gt=now - LAST_USED_PRECISION).update(
            last_used_at=now
        )
        key.last_used_at = now  # (the cached copy: this process asks again in a minute)
    return key


def api_key_revoke(*, key: ApiKey) -> bool:
    """Revoke the key: at once in this process, within API_KEY_CACHE_SECONDS in the others
    (their cached copies); False if it already was."""
    revoked = bool(
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    )
    _cache.pop(key.prefix, None)
    return revoked


# The key check runs on every request. A cached copy of each key that was found spares that
# request its query (~0.6 ms, a PostgreSQL round trip, where the whole POST costs a few):
# the secret, revocation and expiry are still checked on every request, against a copy at most
# API_KEY_CACHE_SECONDS old, so a key revoked from another process is refused within that
# delay (docs/API.md). Unknown prefixes are never cached (a key made since is found at once).
_cache: dict[str, tuple[float, ApiKey]] = {}  # prefix -> (monotonic time read, key)
_CACHE_MAX_KEYS = 10_000  # beyond, the cache starts afresh (keys are few; prefixes random)


def _key_by_prefix(prefix: str) -> ApiKey | None:
    ttl = float(getattr(settings, "API_KEY_CACHE_SECONDS", 0))
    now = time.monotonic()
    if ttl > 0:
        cached = _cache.get(prefix)
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
    # One lookup on the unique index (no ORDER BY: the model's ordering is for the admin).
    key = next(iter(ApiKey.objects.filter(prefix=prefix).order_by()[:1]), None)
    if key is not None and ttl > 0:
        if len(_cache) >= _CACHE_MAX_KEYS:
            _cache.clear()
        _cache[prefix] = (now, key)
    return key


def api_key_cache_clear() -> None:
    """Forget every cached key (tests that change keys behind the services' back)."""
    _cache.clear()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

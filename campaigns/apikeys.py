"""API keys: made (shown once), found and checked, revoked (models.ApiKey).

A key reads `mw_live_3f9a1c2b_<secret>` (`mw_test_…` for a test key). The first three parts
are its prefix, kept in clear to find the key and to tell keys apart in the admin; the secret
(256 random bits) is kept only as its SHA-256 digest and compared in constant time. A slow
password hash buys nothing for a secret of that entropy and would cost every request.
"""

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

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
    "webhooks:write": "Manage callback endpoints",
}

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
    if len(parts) != 4 or parts[0] != KEY_NAMESPACE or parts[1] not in (LIVE, TEST):
        raise KeyRefused(401, "invalid_api_key", "The API key is not valid.")
    prefix, secret = "_".join(parts[:3]), parts[3]
    key = ApiKey.objects.filter(prefix=prefix).first()
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
        # Guarded, so concurrent requests write it once.
        ApiKey.objects.filter(pk=key.pk).exclude(last_used_at__gt=now - LAST_USED_PRECISION).update(
            last_used_at=now
        )
    return key


def api_key_revoke(*, key: ApiKey) -> bool:
    """Revoke the key (at once, for every request after); False if it already was."""
    return bool(
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

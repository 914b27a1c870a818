"""Signed tokens: one purpose each (tracking, unsubscribe), Django's HMAC, one spelling, and key
rotation through SECRET_KEY_FALLBACKS."""

import base64
import json
import os
import subprocess
import sys

import pytest
from django.utils.crypto import salted_hmac

from campaigns.tokens import (
    _key,
    notification_id_from,
    notification_id_from_unsubscribe_token,
    token_for,
    tokens_for,
    unsubscribe_token_for,
    unsubscribe_tokens_for,
)
from tests.conftest import ROOT

IDS = (1, 36, 10**12, 2**63 - 1)


@pytest.mark.parametrize(
    ("salt", "sign"),
    [("tracking.token", token_for), ("tracking.unsubscribe", unsubscribe_token_for)],
)
def test_signatures_are_djangos_salted_hmac_one_salt_per_purpose(salt, sign):
    for notification_id in IDS:
        digest = salted_hmac(salt, str(notification_id), algorithm="sha256").digest()
        signature = sign(notification_id).partition(".")[2]
        assert signature == base64.urlsafe_b64encode(digest).decode()[:16]


def test_a_token_does_its_own_purpose_only():
    for notification_id in IDS:
        tracking, unsubscribe = token_for(notification_id), unsubscribe_token_for(notification_id)
        assert tracking != unsubscribe
        assert notification_id_from(tracking) == notification_id
        assert notification_id_from_unsubscribe_token(unsubscribe) == notification_id
        # The pixel's or a link's token cannot unsubscribe, and the other way round.
        assert notification_id_from_unsubscribe_token(tracking) is None
        assert notification_id_from(unsubscribe) is None
    assert tokens_for(list(IDS)) == [token_for(i) for i in IDS]
    assert unsubscribe_tokens_for(list(IDS)) == [unsubscribe_token_for(i) for i in IDS]


def test_tokens_of_a_fallback_key_work_those_of_an_unknown_key_never(settings):
    old_key, new_key = settings.SECRET_KEY, "the-new-secret-" + "n" * 40
    signed_before = [token_for(42), unsubscribe_token_for(42)]
    settings.SECRET_KEY = new_key
    settings.SECRET_KEY_FALLBACKS = []
    verify = (notification_id_from, notification_id_from_unsubscribe_token)
    assert [check(token) for check, token in zip(verify, signed_before, strict=True)] == [
        None,
        None,
    ]
    settings.SECRET_KEY_FALLBACKS = ["an-older-secret-" + "o" * 40, old_key]
    assert [check(token) for check, token in zip(verify, signed_before, strict=True)] == [42, 42]
    # Still one purpose each, whichever key signed them.
    assert notification_id_from(signed_before[1]) is None
    assert notification_id_from_unsubscribe_token(signed_before[0]) is None
    # New tokens are signed with the new key only.
    assert token_for(42) != signed_before[0]
    settings.SECRET_KEY_FALLBACKS = []
    assert notification_id_from(token_for(42)) == 42
    # A key that is neither the key nor a fallback signs nothing we accept.
    settings.SECRET_KEY = "a-key-this-site-never-had-" + "x" * 30
    forged = [token_for(42), unsubscribe_token_for(42)]
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = new_key, [old_key]
    assert [check(token) for check, token in zip(verify, forged, strict=True)] == [None, None]


def test_fallbacks_are_tried_only_when_the_current_key_fails(settings):
    """The common case (a token of the current key) derives no fallback key: it costs what it
    cost before there were fallbacks."""
    token = token_for(7)
    settings.SECRET_KEY_FALLBACKS = [f"never-used-fallback-{i}-" + "f" * 40 for i in range(8)]
    _key.cache_clear()
    assert notification_id_from(token) == 7
    assert _key.cache_info().currsize == 1  # the current key's only
    assert notification_id_from(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert _key.cache_info().currsize == 1 + 8  # a failure tries each fallback


@pytest.mark.parametrize("verify", [notification_id_from, notification_id_from_unsubscribe_token])
def test_only_the_one_spelling_of_a_token_is_accepted(verify):
    sign = token_for if verify is notification_id_from else unsubscribe_token_for
    token = sign(12345)
    head, _, signature = token.partition(".")
    assert verify(token) == 12345
    spellings = [
        f"{head.upper()}.{signature}",  # int(…, 36) reads upper case too
        f"0{head}.{signature}",  # a leading zero
        f"{head[:1]}_{head[1:]}.{signature}",  # int() allows underscores
        f" {head}.{signature}",
        f"{head}.{signature}\n",
        f"{head}\r\n.{signature}",
        f"{head}.{signature}\r\nX-Injected: 1",
        f"{head}.{signature}x",
        f"{head}.{signature[:-1]}",
        "".join(chr(0x660 + int(d)) if d.isdigit() else d for d in head) + "." + signature,
        f"{head}.{signature[:-1]}é",
        "9" * 14 + "." + signature,  # more digits than a 64-bit id has
        "9" * 100_000 + "." + signature,
        "." + signature,
        f"{head}.",
        f"{head}..{signature}",
        "",
        ".",
        "\x00",
    ]
    for spelling in spellings:
        assert verify(spelling) is None, repr(spelling[:40])


@pytest.mark.slow
def test_fallbacks_are_read_from_the_environment():
    """DJANGO_SECRET_KEY_FALLBACKS, comma-separated, in the real settings module."""
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.SECRET_KEY_FALLBACKS))"
    )
    base = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "production-like-secret-for-this-test-only"}  # fmt: skip
    for value, expected in [
        ("old-key-one, old-key-two,", ["old-key-one", "old-key-two"]),
        ("", []),
        (None, []),
    ]:
        env = dict(base)
        env.pop("DJANGO_SECRET_KEY_FALLBACKS", None)
        if value is not None:
            env["DJANGO_SECRET_KEY_FALLBACKS"] = value
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        assert json.loads(out.stdout) == expected

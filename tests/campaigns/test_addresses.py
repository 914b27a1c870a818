"""The one address rule (campaigns.addresses): what is stored is exactly what can be sent."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.addresses import InvalidAddress, address_normalize, address_sendable, sender_header

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
atoms = st.text(alphabet=ATEXT, min_size=1, max_size=12)
labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
tlds = st.from_regex(r"[a-z]{2,8}", fullmatch=True)
plain = st.builds(
    lambda local, domain, tld: f"{'.'.join(local)}@{'.'.join(domain)}.{tld}",
    st.lists(atoms, min_size=1, max_size=4),
    st.lists(labels, min_size=1, max_size=3),
    tlds,
)


@given(plain)
def test_the_fast_path_accepts_only_what_the_whole_rule_accepts(address):
    """The sender's per-recipient check is a regex for the usual shape: every address it lets
    through must be one the full rule (email-validator, IDNA) stores unchanged but for case."""
    try:
        normalized = address_normalize(address)
    except InvalidAddress:
        assert not address_sendable(address)
        return
    assert normalized == address.lower()
    assert address_sendable(address) and address_sendable(normalized)


@given(st.one_of(plain, st.emails(), st.text(max_size=40)))
def test_sendable_is_exactly_what_the_rule_stores(text):
    try:
        stored = address_normalize(text)
    except InvalidAddress:
        stored = None
    if stored is not None:
        assert address_sendable(stored)
    if address_sendable(text):
        assert stored == text.lower()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('"a\x01b"@example.com', "control character"),
        ("user@\u2603.com", "after the @-sign is invalid"),
        ('"john..doe"@example.com', "Quoting"),
        ("john..doe@example.com", "two periods in a row"),
        ("ann@example.com\r\nBcc: x@evil.example", "control character"),
        ("\u00e9@example.com", "Internationalized characters before the @-sign"),
        ("ann@localhost", "It should have a period"),
        ("ann@example.test", "special-use or reserved"),
        ("a" * 65 + "@example.com", "too long"),
        ("ann@" + "a" * 250 + ".com", "too long"),
        ("", "empty"),
        ("Ann <ann@example.com>", ""),
    ],
)
def test_addresses_senders_cannot_use_are_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidAddress) as refused:
        address_normalize(raw)
    assert reason in " ".join(refused.value.messages)
    assert not address_sendable(raw)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("  Ann.Lee+news@Example.COM \n", "ann.lee+news@example.com"),
        ("o'neil@example.ie", "o'neil@example.ie"),
        ("user@b\u00fccher.de", "user@xn--bcher-kva.de"),  # SES takes IDN domains as IDNA
    ],
)
def test_addresses_are_stored_as_they_are_sent(raw, stored):
    assert address_normalize(raw) == stored
    assert address_sendable(stored)


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("News <news@example.com>", "News <news@example.com>"),
        ("news@example.com", "news@example.com"),
        ('"News, Inc." <news@example.com>', '"News, Inc." <news@example.com>'),
        ("Zo\u00eb <z@b\u00fccher.de>", "=?utf-8?q?Zo=C3=AB?= <z@xn--bcher-kva.de>"),
    ],
)
def test_a_sender_is_sent_as_ses_takes_it(value, header):
    assert sender_header(value) == header


@pytest.mark.parametrize(
    "value",
    [
        "News <news@example.com>\r\nBcc: all@example.com",
        "news@example.com, other@example.com",
        "News, Inc. <news@example.com>",
        "News <news@exam ple.com>",
        "news @ example.com",
        'Evil <"john..doe"@example.com>',
        "nobody",
    ],
)
def test_a_sender_the_rule_refuses(value):
    with pytest.raises(InvalidAddress):
        sender_header(value)

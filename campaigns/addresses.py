"""The one rule for recipient addresses: what may be stored is exactly what can be sent.

Every entry point stores `address_normalize(raw)` and the sender checks
`address_sendable(stored)` before a row goes into an SES call: an address SES cannot carry
(it takes ASCII before the @ and IDNA domains only) must never take its call down with it.
The rule is email-validator's with quoted local parts, domain literals, display names and
SMTPUTF8 refused, the domain in its ASCII form, the whole address lower-cased (one contact
per mailbox).
"""

import functools
import re
from email import _header_value_parser as header_parser
from email.errors import HeaderParseError

import email_validator
from django.core.exceptions import ValidationError
from django.core.mail.message import sanitize_address

# RFC 5322 dot-atom local part, and a domain of LDH labels with an alphabetic TLD: the shape
# of nearly every stored address. An address of this shape (and length) passes
# address_normalize unchanged but for case, which tests/campaigns/test_addresses.py checks with
# generated addresses: the sender's per-recipient check is then one regex match instead of
# a full validation (cost: docs/PERFORMANCE.md).
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN = re.compile(
    rf"(?=.{{1,64}}@)({_ATEXT}+(?:\.{_ATEXT}+)*)@(?=.{{4,253}}\Z)((?:{_LABEL}\.)+[a-z]{{2,63}})\Z",
    re.IGNORECASE | re.ASCII,
)

# A control character (C0 or DEL): one regex search, where a generator over the characters
# was most of the check's cost for a bulk job's 100,000 addresses.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidAddress(ValidationError):
    """The address cannot be stored or sent; the message says why, for the person who typed it."""


def address_normalize(raw: object) -> str:
    """`raw` as it is stored and sent (trimmed, ASCII domain, lower-case), or InvalidAddress
    with the reason."""
    if not isinstance(raw, str):
        raise InvalidAddress("An email address must be text.", code="invalid")
    address = raw.strip()
    if not address:
        raise InvalidAddress("The email address is empty.", code="required")
    if _CONTROL.search(address):
        raise InvalidAddress(
            "The email address contains a control character (a line break or tab?).",
            code="invalid",
        )
    if _PLAIN.match(address) and not _special_use(address):
        return address.lower()
    try:
        checked = email_validator.validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
            globally_deliverable=True,
        )
    except email_validator.EmailNotValidError as err:
        raise InvalidAddress(str(err), code="invalid") from None
    if len(checked.local_part) > 64:  # (email-validator checks it only in its strict mode)
        raise InvalidAddress(
            "The part before the @-sign is too long (64 characters at most).", code="invalid"
        )
    return checked.ascii_email.lower()


def address_sendable(address: str) -> bool:
    """True if `address` (as stored) can go into an SES call: it is what address_normalize
    makes of itself."""
    if _PLAIN.match(address) and not _special_use(address):
        return True
    return _sendable_slow(address)


@functools.lru_cache(maxsize=1024)
def _sendable_slow(address: str) -> bool:
    try:
        return address_normalize(address) == address.lower()
    except InvalidAddress:
        return False


def _special_use(address: str) -> bool:
    # Domains that never receive mail (RFC 6761 and friends), which email-validator refuses.
    tld = address.rpartition(".")[2].lower()
    return tld in _SPECIAL_USE_TLDS


_SPECIAL_USE_TLDS = frozenset(email_validator.SPECIAL_USE_DOMAIN_NAMES)


def sender_header(value: str) -> str:
    """A campaign's From (`News <news@example.com>` or the bare address) as SES takes it: the
    name RFC 2047-encoded where it is not ASCII, the address under the rule above. Refused
    with InvalidAddress and the reason: a line break or control character, not exactly one
    address, an address that does not read as typed, or one the rule refuses. The admin's
    form checks a From with it, and the start and the sender use it: one rule."""
    if not isinstance(value, str) or _CONTROL.search(value):
        raise InvalidAddress(
            "The sender must be on one line, without control characters.", code="invalid"
        )
    try:
        mailbox, rest = header_parser.get_mailbox(value.strip())
    except (HeaderParseError, IndexError, ValueError):
        mailbox, rest = None, "?"
    if mailbox is None or rest or not mailbox.local_part or not mailbox.domain:
        raise InvalidAddress(
            "This is not one sender address: write it as News <news@example.com> or "
            'news@example.com (quote a name with a comma: "News, Inc." <news@example.com>).',
            code="invalid",
        )
    addr_spec = f"{mailbox.local_part}@{mailbox.domain}"
    if addr_spec not in value:  # the parse dropped spaces, quotes or comments
        raise InvalidAddress(
            f"The sender's address reads as {addr_spec}: write it exactly so.", code="invalid"
        )
    return sanitize_address((mailbox.display_name or "", address_normalize(addr_spec)), "utf-8")

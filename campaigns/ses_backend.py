"""django-anymail's Amazon SES backend, with a fast path for campaign recipients.

anymail parses every recipient into an EmailAddress built on email.headerregistry, ~60 µs
each (measured): 30% of a worker's CPU on the bulk path. Campaign recipients are contacts'
addresses, already normalized and validated, and plain ASCII ones need none of that: they
become PlainAddress objects, which answer what anymail's SendBulkEmail payload asks of an
address (addr_spec, format). Anything else still goes through anymail's parser.

Rendered (non-template) messages: anymail's SendEmail payload always builds a MIME message
with Django's EmailMessage.message() and sends Content.Raw. For a campaign message (~50 kB
of HTML) that is ~7.7 ms of worker CPU (mostly quoted-printable encoding), and the endpoint
then parses the MIME back. SES v2 takes the same message as Content.Simple (subject, text,
HTML, up to 15 headers) and builds the MIME itself, so CampaignSimplePayload sends that
whenever the message fits; anything else (attachments, more alternatives, headers Simple
content refuses, ...) gets anymail's own raw payload, unchanged.
"""

import functools
import re

import boto3
import orjson
from anymail.backends.amazon_ses import (
    AmazonSESBasePayload,
    AmazonSESV2SendBulkEmailPayload,
    AmazonSESV2SendEmailPayload,
    EmailBackend,
)
from anymail.backends.base import BasePayload
from anymail.utils import (
    UNSET,
    force_non_lazy_dict,
    merge_dicts_one_level,
    parse_address_list,
)
from django.conf import settings

from campaigns.ses_http import SesV2HttpClient

# Dot-atom local part and an ASCII domain, no display name: formats to itself.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\Z")


class PlainAddress:
    __slots__ = ("addr_spec",)
    display_name = ""

    def __init__(self, addr_spec: str):
        self.addr_spec = addr_spec

    @property
    def address(self) -> str:
        return self.addr_spec

    def format(self, use_rfc2047: bool = False, idna_encode=None) -> str:
        return self.addr_spec

    def format_addr_spec(self, idna_encode=None) -> str:
        return self.addr_spec

    def __str__(self) -> str:
        return self.addr_spec


def parse_recipients(addresses):
    if isinstance(addresses, list) and all(
        isinstance(address, str) and _PLAIN_ADDRESS.match(address) for address in addresses
    ):
        return [PlainAddress(address) for address in addresses]
    return parse_address_list(addresses, field="to")


def parse_from(value):
    """anymail's parse, cached: a campaign's From is the same string for every message."""
    if isinstance(value, str):
        return list(_parse_from(value))
    return parse_address_list(value, field="from_email")


@functools.lru_cache(maxsize=256)
def _parse_from(value: str) -> tuple:
    return tuple(parse_address_list(value, field="from_email"))  # immutable EmailAddresses


def _dumps_plain(data: dict) -> str:
    # {field: str} needs nothing of anymail's encoder (lazy strings, decimals): orjson's
    # compact JSON, ~10x faster (2.5 → 0.25 µs a recipient, measured).
    return orjson.dumps(data).decode()


class PlainMergeData(dict):
    """{address: {field: str}}, as campaigns.delivery builds it (every value through
    merge_value): the bulk payload takes it as it is, without anymail's per-recipient copy and
    lazy-string pass."""


def _merge_data_unchanged(default, value):
    """anymail's combiner for merge_data, but PlainMergeData without defaults is kept as is
    (merge_dicts_one_level copies every recipient's dict)."""
    if default is UNSET and type(value) is PlainMergeData:
        return value
    return merge_dicts_one_level(default, value)


def _plain_merge_data(merge_data):
    """merge_data as it is when it is {address: {field: str}} (PlainMergeData, or checked);
    anything else through anymail's lazy-string forcing."""
    if type(merge_data) is PlainMergeData or all(
        type(data) is dict and all(type(value) is str for value in data.values())
        for data in merge_data.values()
    ):
        return merge_data
    return force_non_lazy_dict(merge_data)


class CampaignBulkPayload(AmazonSESV2SendBulkEmailPayload):
    """anymail's SendBulkEmail payload, building the same request with less work per entry.

    Measured per 50-entry call: anymail's generic code (a lazy-string pass over every merge
    value, a CaseInsensitiveDict per entry for its headers) was ~1/3 of a send worker's CPU.
    For a campaign's groups (To recipients with merge data and per-recipient headers only)
    the entries are built directly; anything else is left to anymail. Same params as
    anymail's own payload, except that the message's own headers go once into
    DefaultContent.Template.Headers instead of into every entry: the same messages (tested).
    """

    base_message_attrs = tuple(
        (attr, combiner, {"to": parse_recipients, "from_email": parse_from}.get(attr, converter))
        for attr, combiner, converter in AmazonSESV2SendBulkEmailPayload.base_message_attrs
    )
    anymail_message_attrs = tuple(
        (attr, _merge_data_unchanged, _plain_merge_data)
        if attr == "merge_data"
        else (attr, combiner, converter)
        for attr, combiner, converter in AmazonSESV2SendBulkEmailPayload.anymail_message_attrs
    )

    def finalize_payload(self):
        merge_headers = self.merge_headers
        if (
            self.recipients["cc"]
            or self.recipients["bcc"]
            or self.metadata
            or self.merge_metadata
            or self.tags
            or not all(
                _distinct_names((*self.headers, *names))
                for names in {tuple(headers) for headers in merge_headers.values()} or [()]
            )
        ):
            return super().finalize_payload()
        if self.headers:
            # The message's own headers once, in DefaultContent.Template.Headers: SES adds
            # them to every entry's message (an entry's header of the same name would win,
            # but names are distinct here). anymail repeats them in every entry's
            # ReplacementHeaders: the same messages, with ~200 bytes more per entry for us to
            # serialize and SES to parse.
            self.params["DefaultContent"]["Template"]["Headers"] = [
                {"Name": name, "Value": value} for name, value in self.headers.items()
            ]
        idna_encode = self.backend.idna_encode
        serialize = _dumps_plain if type(self.merge_data) is PlainMergeData else self.serialize_json
        entries = []
        for to in self.recipients["to"]:
            address = to.addr_spec
            entry = {
                "Destination": {
                    "ToAddresses": [to.format(use_rfc2047=True, idna_encode=idna_encode)]
                },
                "ReplacementEmailContent": {
                    "ReplacementTemplate": {
                        "ReplacementTemplateData": serialize(self.merge_data.get(address, {}))
                    }
                },
            }
            headers = merge_headers.get(address)
            if headers:
                entry["ReplacementHeaders"] = [
                    {"Name": name, "Value": value} for name, value in headers.items()
                ]
            entries.append(entry)
        self.params["BulkEmailEntries"] = entries
        return None


@functools.lru_cache(maxsize=64)
def _distinct_names(names: tuple[str, ...]) -> bool:
    # anymail merges headers case-insensitively: names that differ only in case, or a
    # recipient's header that replaces one of the message's, take its path. (Asked once per
    # set of names, and cached: every recipient of a campaign has the same header names.)
    return len({name.lower() for name in names}) == len(names)


class _NotSimple(Exception):
    """The message needs more than Content.Simple can say: anymail's raw payload sends it."""


# Simple content headers: what the sesv2 service model allows (MessageHeaderList max 15;
# MessageHeaderName printable ASCII but ':', 1-126; MessageHeaderValue printable ASCII, 1-995)
# and not one SES sets itself from the Simple structure (SES refuses those: "Amazon SES header
# fields"). From, To and Reply-To never get here: anymail takes them out of extra_headers.
_MAX_HEADERS = 15
_HEADER_NAME = re.compile(r"[!-9;-~]{1,126}\Z")
_HEADER_VALUE = re.compile(r"[ -~]{1,995}\Z")
_SES_SET_HEADERS = frozenset(
    ["bcc", "cc", "date", "message-id", "mime-version", "return-path", "subject"]
)


class _Headers:
    """Stands in for anymail's mime_message, which its set_metadata and set_tags only use to
    add X-Metadata and X-Tag headers (msg[name] = value, msg.add_header(name, value)): so
    those two are inherited as they are, EmailTags (AMAZON_SES_MESSAGE_TAG_NAME) included."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def __setitem__(self, name: str, value: str) -> None:
        self.items.append((name, value))

    add_header = __setitem__


class CampaignSimplePayload(AmazonSESV2SendEmailPayload):
    """anymail's SendEmail payload, sending Content.Simple instead of a MIME message.

    Measured on a campaign message (65 kB HTML + 1 kB text, one recipient): building the
    payload takes 0.13 ms of CPU instead of 5.5 ms; `make bench SEND_PATH=rendered`: worker
    CPU 7.7 -> 3.3 ms per message (the rest is mostly botocore's ~2 ms per call), the local
    endpoint 8.2 -> 1.0 ms. Raises _NotSimple for what Simple content cannot carry.
    """

    base_message_attrs = tuple(
        (attr, combiner, {"to": parse_recipients, "from_email": parse_from}.get(attr, converter))
        for attr, combiner, converter in AmazonSESV2SendEmailPayload.base_message_attrs
    )

    def __init__(self, message, defaults, backend):
        encoding = str(message.encoding or settings.DEFAULT_CHARSET)  # what Django would use
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            raise _NotSimple("encoding")
        super().__init__(message, defaults, backend)
        headers = self.mime_message.items
        if len(headers) > _MAX_HEADERS:
            raise _NotSimple("too many headers")
        for name, value in headers:
            if (
                not _HEADER_NAME.match(name)
                or not _HEADER_VALUE.match(value)
                or len(name) + len(value) > 996
                or name.lower() in _SES_SET_HEADERS
                or name.lower().startswith("content-")
            ):
                raise _NotSimple(f"header {name}")
        if not (self.text or self.html) or "\n" in self.subject or "\r" in self.subject:
            raise _NotSimple("body or subject")  # (Django refuses a multi-line subject)

    def init_payload(self):
        AmazonSESBasePayload.init_payload(self)  # ConfigurationSetName; no MIME message
        self.all_recipients = []  # for anymail's parse_recipient_status
        self.mime_message = _Headers()
        self.subject = ""
        self.text = self.html = None

    def finalize_payload(self):
        body = {}
        if self.text or not self.html:  # (an empty text part next to HTML says nothing)
            body["Text"] = {"Data": self.text, "Charset": "UTF-8"}
        if self.html:
            body["Html"] = {"Data": self.html, "Charset": "UTF-8"}
        simple = {"Subject": {"Data": self.subject, "Charset": "UTF-8"}, "Body": body}
        if self.mime_message.items:
            simple["Headers"] = [{"Name": n, "Value": v} for n, v in self.mime_message.items]
        self.params["Content"] = {"Simple": simple}

    def _format(self, address) -> str:
        return address.format(use_rfc2047=True, idna_encode=self.backend.idna_encode)

    # What anymail's raw payload puts in MIME headers goes to SendEmail's own parameters.
    def set_from_email(self, email):
        super().set_from_email(email)
        self.params["FromEmailAddress"] = self._format(email)

    def set_recipients(self, recipient_type, emails):
        super().set_recipients(recipient_type, emails)  # Destination: addr-specs only
        if emails and recipient_type != "bcc":  # SES writes To and Cc from Destination
            key = f"{recipient_type.capitalize()}Addresses"
            self.params["Destination"][key] = [self._format(email) for email in emails]

    def set_subject(self, subject):
        super().set_subject(subject)
        self.subject = subject or ""

    def set_reply_to(self, emails):
        super().set_reply_to(emails)
        if emails:
            self.params["ReplyToAddresses"] = [self._format(email) for email in emails]

    def set_extra_headers(self, headers):
        super().set_extra_headers(headers)
        for name, value in headers.items():
            self.mime_message[name] = str(value)  # (Django str()s header values too)

    # (A second text or HTML body comes from an empty body plus an alternative of its type:
    # Django sends both parts.)
    def set_text_body(self, body):
        if self.text is not None:
            raise _NotSimple("two text bodies")
        super().set_text_body(body)
        self.text = body

    def set_html_body(self, body):
        if self.html is not None:
            raise _NotSimple("two HTML bodies")
        super().set_html_body(body)
        self.html = body

    def set_alternatives(self, alternatives):
        # anymail's generic handling: the first text/html becomes the HTML body; any other
        # alternative goes to add_alternative.
        self._no_send_defaults("alternatives")
        BasePayload.set_alternatives(self, alternatives)

    def add_alternative(self, content, mimetype):
        raise _NotSimple(f"alternative {mimetype}")

    def set_attachments(self, attachments):
        super().set_attachments(attachments)
        if attachments:  # (inline images included)
            raise _NotSimple("attachments")

    def set_spoofed_to_header(self, header_to):
        raise _NotSimple("To header")


class CampaignSESBackend(EmailBackend):
    """anymail's SES backend with the fast payloads above, sending through SesV2HttpClient
    (campaigns.ses_http): boto3's client configures it, then sends go over a lean path."""

    def open(self):
        if self.client:
            return False
        try:
            session = boto3.session.Session(**self.session_params)
            boto3_client = session.client("sesv2", **self.client_params)
            self.client = SesV2HttpClient(
                boto3_client=boto3_client, credentials=session.get_credentials()
            )
        except Exception:
            if not self.fail_silently:
                raise
            return False
        return True

    def build_message_payload(self, message, defaults):
        if getattr(message, "template_id", UNSET) is not UNSET:
            return CampaignBulkPayload(message, defaults, self)
        try:
            return CampaignSimplePayload(message, defaults, self)
        except _NotSimple:
            return super().build_message_payload(message, defaults)

"""The campaign SES backend: exactly the SendBulkEmail request anymail's own would build, and
Content.Simple SendEmail requests for rendered messages that Simple content can carry."""

import json

import pytest
from anymail.backends.amazon_ses import (
    AmazonSESV2SendBulkEmailPayload,
    AmazonSESV2SendEmailPayload,
)
from anymail.message import AnymailMessage
from django.conf import settings
from django.core.mail import get_connection

from campaigns.ses_backend import (
    CampaignBulkPayload,
    CampaignSESBackend,
    CampaignSimplePayload,
    PlainAddress,
)


def _params(payload_class, to: list[str], **attrs) -> dict:
    message = AnymailMessage(from_email="News <news@example.com>", to=to)
    message.template_id = "tpl"
    message.merge_global_data = {}
    message.merge_data = {address: {"first_name": f"n{i}"} for i, address in enumerate(to)}
    message.merge_headers = {
        address: {"X-Campaign": "7", "List-Unsubscribe": f"<https://t.example/u/{i}>"}
        for i, address in enumerate(to)
    }
    for name, value in attrs.items():
        setattr(message, name, value)
    payload = payload_class(message, {}, CampaignSESBackend())
    payload.finalize_payload()
    return payload.params


def test_plain_addresses_give_the_same_request_as_anymail():
    to = ["a@example.com", "first.last+tag@sub.example.org", "o'neil@example.ie"]
    assert _params(CampaignBulkPayload, to) == _params(AmazonSESV2SendBulkEmailPayload, to)


@pytest.mark.parametrize(
    "attrs",
    [
        {"extra_headers": {"List-Unsubscribe": "<https://t.example/all>"}},  # replaced per entry
        {"cc": ["cc@example.com"]},
        {"tags": ["t"], "metadata": {"k": "v"}},
        {"merge_data": {"a@example.com": {"n": 1.5}}},  # not plain strings: anymail forces them
    ],
    ids=["replaced-header", "cc", "tags-metadata", "non-str-merge-data"],
)
def test_what_the_lean_entries_do_not_cover_gets_anymails_result(attrs):
    to = ["a@example.com", "b@example.com"]
    assert _params(CampaignBulkPayload, to, **attrs) == _params(
        AmazonSESV2SendBulkEmailPayload, to, **attrs
    )


def _effective_headers(params: dict) -> list[dict]:
    """Each entry's message headers as SES makes them: the template's Headers, replaced by
    the entry's ReplacementHeaders of the same name, plus the entry's others."""
    shared = params["DefaultContent"]["Template"].get("Headers", [])
    return [
        {
            **{h["Name"].lower(): h["Value"] for h in shared},
            **{h["Name"].lower(): h["Value"] for h in entry.get("ReplacementHeaders", [])},
        }
        for entry in params["BulkEmailEntries"]
    ]


def test_the_messages_own_headers_go_once_as_the_templates():
    to = ["a@example.com", "b@example.com"]
    shared = {"X-Global": "1", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    fast = _params(CampaignBulkPayload, to, extra_headers=shared)
    slow = _params(AmazonSESV2SendBulkEmailPayload, to, extra_headers=shared)
    assert fast["DefaultContent"]["Template"]["Headers"] == [
        {"Name": "X-Global", "Value": "1"},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
    ]
    assert [len(entry["ReplacementHeaders"]) for entry in fast["BulkEmailEntries"]] == [2, 2]
    # The same messages as anymail's request makes (it repeats them in every entry).
    assert _effective_headers(fast) == _effective_headers(slow)
    assert len(_effective_headers(fast)[0]) == 4
    for params in (fast, slow):
        del params["BulkEmailEntries"]
        params["DefaultContent"]["Template"].pop("Headers", None)
    assert fast == slow


def test_other_addresses_go_through_anymails_parser():
    to = ["plain@example.com", "josé@exämple.com", "Named Person <named@example.com>"]
    fast = _params(CampaignBulkPayload, to)
    assert fast == _params(AmazonSESV2SendBulkEmailPayload, to)
    assert len(fast["BulkEmailEntries"]) == 3


def test_plain_address_answers_like_anymails():
    address = PlainAddress("a@example.com")
    assert (address.addr_spec, address.address, address.display_name) == (
        "a@example.com", "a@example.com", "",
    )  # fmt: skip
    assert address.format(use_rfc2047=True, idna_encode="idna2008") == "a@example.com"


# --- Rendered messages: Content.Simple, or anymail's raw payload for what Simple can't carry


def _message(**kwargs) -> AnymailMessage:
    message = AnymailMessage(
        subject=kwargs.pop("subject", "Grüße, Zoë"),
        body=kwargs.pop("body", "Hello Zoë\nsecond line"),
        from_email=kwargs.pop("from_email", "Mailwright Démo <news@example.com>"),
        to=kwargs.pop("to", ["Jörg Ü <user@exämple.com>", "plain@example.com"]),
        reply_to=kwargs.pop("reply_to", ["Help <help@example.com>"]),
        headers=kwargs.pop(
            "headers",
            {"X-Campaign": "7", "List-Unsubscribe": "<https://example.com/u/abc>"},
        ),
        **kwargs,
    )
    message.attach_alternative("<p>Hello <b>Zoë</b></p>", "text/html")
    return message


def _payload(message, backend=None):
    payload = (backend or CampaignSESBackend()).build_message_payload(message, {})
    payload.finalize_payload()
    return payload


def test_simple_payload_gives_the_exact_sendemail_params():
    payload = _payload(_message())
    assert type(payload) is CampaignSimplePayload
    utf8 = "UTF-8"
    assert payload.params == {
        "FromEmailAddress": "=?utf-8?q?Mailwright_D=C3=A9mo?= <news@example.com>",
        "Destination": {
            "ToAddresses": [
                "=?utf-8?b?SsO2cmcgw5w=?= <user@xn--exmple-cua.com>",
                "plain@example.com",
            ]
        },
        "ReplyToAddresses": ["Help <help@example.com>"],
        "Content": {
            "Simple": {
                "Subject": {"Data": "Grüße, Zoë", "Charset": utf8},
                "Body": {
                    "Text": {"Data": "Hello Zoë\nsecond line", "Charset": utf8},
                    "Html": {"Data": "<p>Hello <b>Zoë</b></p>", "Charset": utf8},
                },
                "Headers": [
                    {"Name": "X-Campaign", "Value": "7"},
                    {"Name": "List-Unsubscribe", "Value": "<https://example.com/u/abc>"},
                ],
            }
        },
    }
    # A message id per recipient, as anymail's raw payload answers.
    status = payload.parse_recipient_status({"MessageId": "m-1"})
    assert {email: s.message_id for email, s in status.items()} == {
        "user@exämple.com": "m-1",
        "plain@example.com": "m-1",
    }


def test_simple_payload_keeps_anymails_other_parameters():
    backend = CampaignSESBackend(
        configuration_set_name="cs", message_tag_name="Campaign", idna_encoder="idna2008"
    )
    message = _message(cc=["Cc Person <cc@example.com>"], bcc=["Bcc <bcc@example.com>"])
    message.extra_headers["Reply-To"] = "Other <other@example.com>"  # wins, as in Django
    message.metadata = {"campaign": 7}
    message.tags = ["spring"]
    message.envelope_sender = "bounces@example.com"
    params = _payload(message, backend).params
    assert params["ConfigurationSetName"] == "cs"
    assert params["EmailTags"] == [{"Name": "Campaign", "Value": "spring"}]
    assert params["FeedbackForwardingEmailAddress"] == "bounces@example.com"
    assert params["ReplyToAddresses"] == ["Other <other@example.com>"]
    assert params["Destination"]["CcAddresses"] == ["Cc Person <cc@example.com>"]
    assert params["Destination"]["BccAddresses"] == ["bcc@example.com"]
    assert params["Content"]["Simple"]["Headers"][2:] == [
        {"Name": "X-Metadata", "Value": '{"campaign": 7}'},
        {"Name": "X-Tag", "Value": "spring"},
    ]


def test_html_only_message_has_no_text_part():
    message = AnymailMessage(
        subject="s", body="<p>x</p>", from_email="a@example.com", to=["b@example.com"]
    )
    message.content_subtype = "html"
    body = _payload(message).params["Content"]["Simple"]["Body"]
    assert body == {"Html": {"Data": "<p>x</p>", "Charset": "UTF-8"}}


def _attachment(message):
    message.attach("a.txt", "attached", "text/plain")


def _second_alternative(message):
    message.attach_alternative("<p>again</p>", "text/html")


def _calendar_alternative(message):
    message.attach_alternative("BEGIN:VCALENDAR", "text/calendar")


def _non_ascii_header(message):
    message.extra_headers["X-Note"] = "café"


def _ses_set_header(message):
    message.extra_headers["Message-ID"] = "<id@example.com>"


def _too_many_headers(message):
    message.extra_headers.update({f"X-H{i}": "v" for i in range(15)})


def _spoofed_to(message):
    message.extra_headers["To"] = "Everyone <list@example.com>"


def _other_charset(message):
    message.encoding = "iso-8859-1"


@pytest.mark.parametrize(
    "change",
    [
        _attachment,
        _second_alternative,
        _calendar_alternative,
        _non_ascii_header,
        _ses_set_header,
        _too_many_headers,
        _spoofed_to,
        _other_charset,
    ],
)
def test_what_simple_content_cannot_carry_goes_raw_as_before(change):
    message = _message()
    change(message)
    payload = _payload(message)
    assert type(payload) is AmazonSESV2SendEmailPayload
    assert set(payload.params["Content"]) == {"Raw"}
    stock = AmazonSESV2SendEmailPayload(message, {}, CampaignSESBackend())
    stock.finalize_payload()
    assert payload.params.keys() == stock.params.keys()
    assert payload.params["Destination"] == stock.params["Destination"]


# --- End to end: the real backend against the local SES endpoint


def _send(backend_path: str, message) -> str:
    message.connection = get_connection(backend_path)
    assert message.send() == 1
    return message.anymail_status.message_id


def test_sendemail_simple_is_stored_like_the_raw_message(ses):
    html = "<html><body>" + "<p>Grüße <a href='https://e.x/?a=1&amp;b=2'>x</a></p>\n" * 800
    text = "Zoë\n" + "line with trailing space \n" * 50

    def message():
        m = _message(body=text, to=["Jörg <user@xn--exmple-cua.com>"])
        m.alternatives = []
        m.attach_alternative(html, "text/html")
        return m

    simple_id = _send(settings.SES_EMAIL_BACKEND, message())
    raw_id = _send("anymail.backends.amazon_ses.EmailBackend", message())
    stored = {m["message_id"]: m for m in ses.messages()}
    assert stored.keys() == {simple_id, raw_id}
    simple, raw = stored[simple_id], stored[raw_id]
    assert simple["has_raw"] is False and raw["has_raw"] is True
    assert simple["subject"] == raw["subject"] == "Grüße, Zoë"
    assert simple["text"] == raw["text"] == text
    assert simple["html"] == raw["html"] == html
    assert simple["headers"] == [
        {"name": "X-Campaign", "value": "7"},
        {"name": "List-Unsubscribe", "value": "<https://example.com/u/abc>"},
    ]
    assert all(header in raw["headers"] for header in simple["headers"])
    assert simple["recipients"] == raw["recipients"] == ["user@xn--exmple-cua.com"]
    assert simple["to"] == ["=?utf-8?b?SsO2cmc=?= <user@xn--exmple-cua.com>"]
    assert simple["reply_to"] == ["Help <help@example.com>"]
    assert simple["from"] == "=?utf-8?q?Mailwright_D=C3=A9mo?= <news@example.com>"
    # (the endpoint's header filter, which the bench and the delivery tests count with)
    assert {m["message_id"] for m in ses.messages(header="X-Campaign:7")} == stored.keys()


def test_plain_merge_data_is_the_same_json():
    """PlainMergeData (built by campaigns.delivery) is serialized by orjson, compact and UTF-8:
    the same template data SES parses from anymail's encoding."""
    from campaigns.ses_backend import PlainMergeData

    to = ["a@example.com", "b@example.com"]
    data = {"a@example.com": {"n": 'Zoë "Z" <z>'}, "b@example.com": {"n": "\\", "c": ""}}
    fast = _params(CampaignBulkPayload, to, merge_data=PlainMergeData(data))
    slow = _params(AmazonSESV2SendBulkEmailPayload, to, merge_data=data)

    def template_data(params):
        return [
            e["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"]
            for e in params["BulkEmailEntries"]
        ]

    assert [json.loads(d) for d in template_data(fast)] == [
        json.loads(d) for d in template_data(slow)
    ]
    assert template_data(fast)[0] == '{"n":"Zoë \\"Z\\" <z>"}'

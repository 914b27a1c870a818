"""The campaign SES backend builds exactly the SendBulkEmail request anymail's own would."""

from anymail.backends.amazon_ses import AmazonSESV2SendBulkEmailPayload
from anymail.message import AnymailMessage

from campaigns.ses_backend import CampaignBulkPayload, CampaignSESBackend, PlainAddress


def _params(payload_class, to: list[str]) -> dict:
    message = AnymailMessage(from_email="News <news@example.com>", to=to)
    message.template_id = "tpl"
    message.merge_global_data = {}
    message.merge_data = {address: {"first_name": f"n{i}"} for i, address in enumerate(to)}
    message.extra_headers = {"X-Campaign": "7"}
    payload = payload_class(message, {}, CampaignSESBackend())
    payload.finalize_payload()
    return payload.params


def test_plain_addresses_give_the_same_request_as_anymail():
    to = ["a@example.com", "first.last+tag@sub.example.org", "o'neil@example.ie"]
    assert _params(CampaignBulkPayload, to) == _params(AmazonSESV2SendBulkEmailPayload, to)


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

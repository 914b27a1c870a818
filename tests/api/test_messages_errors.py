"""Every way a request to the messages API can be wrong: a clear 4xx in the one error shape
({"errors": [{"code", "field", "message"}]}), nothing stored, never a 500."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Contact, IdempotencyRecord, MessageRequest, Notification
from tests.api.helpers import api_client
from tests.factories import CampaignFactory, NotificationFactory, TemplateFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/messages"
GOOD = {"template": "receipt", "to": "ada@example.com", "personalisation": {"order": "A-17"}}


@pytest.fixture
def template():
    return TemplateFactory(slug="receipt", subject="Order {{ order }}", html="<p>{{ order }}</p>")


@pytest.fixture
def client():
    client = api_client()
    client.raise_request_exception = False  # a 500 must show as one, not as a test error
    return client


def body(**changes) -> bytes:
    fields = {**GOOD, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def _in(days: int) -> str:
    return (timezone.now() + timedelta(days=days)).isoformat()


# (id, raw body, content type, status, code, field)
POSTS = [
    ("truncated JSON", b'{"template": "receipt"', "application/json", 400, "invalid_json", ""),
    ("not UTF-8", b"\xff\xfe{}", "application/json", 400, "invalid_json", ""),
    ("NaN", b'{"template": NaN}', "application/json", 400, "invalid_json", ""),
    ("nested too deep", b"[" * 200_000 + b"]" * 200_000, "application/json", 400,
     "invalid_json", ""),
    ("a list", b"[1, 2]", "application/json", 400, "body_not_object", ""),
    ("null", b"null", "application/json", 400, "body_not_object", ""),
    ("a string", b'"receipt"', "application/json", 400, "body_not_object", ""),
    ("empty body", b"", "application/json", 400, "required", "template"),
    ("unknown field", body(personalization={}), "application/json", 400, "unknown_field",
     "personalization"),
    ("no template", body(template=...), "application/json", 400, "required", "template"),
    ("no recipient", body(to=...), "application/json", 400, "recipient_required", "to"),
    ("both recipients", body(contact=1), "application/json", 400, "recipient_required", "to"),
    ("template true", body(template=True), "application/json", 400, "invalid", "template"),
    ("template a list", body(template=["receipt"]), "application/json", 400, "invalid",
     "template"),
    ("to a number", body(to=5), "application/json", 400, "invalid", "to"),
    ("to an object", body(to={"email": "a@example.com"}), "application/json", 400, "invalid",
     "to"),
    ("contact text", body(to=..., contact="x"), "application/json", 400, "invalid", "contact"),
    ("contact 0", body(to=..., contact=0), "application/json", 400, "min_value", "contact"),
    ("contact past 64 bits", body(to=..., contact=2**64), "application/json", 400, "max_value",
     "contact"),
    ("personalisation text", body(personalisation="x"), "application/json", 400, "not_a_dict",
     "personalisation"),
    ("personalisation nested", body(personalisation={"a": {"b": 1}}), "application/json", 400,
     "invalid_value", "personalisation"),
    ("personalisation a list value", body(personalisation={"a": [1]}), "application/json", 400,
     "invalid_value", "personalisation"),
    ("personalisation too many", body(personalisation={f"k{i}": i for i in range(101)}),
     "application/json", 400, "too_many_fields", "personalisation"),
    ("personalisation too large", body(personalisation={"a": "x" * 70_000}), "application/json",
     400, "too_large", "personalisation"),
    ("personalisation NUL", body(personalisation={"a": "x\u0000y"}), "application/json", 400,
     "invalid_value", "personalisation"),
    ("personalisation NUL name", body(personalisation={"a\u0000": 1}), "application/json", 400,
     "invalid_value", "personalisation"),
    ("personalisation surrogate", b'{"template": "receipt", "to": "ada@example.com", '
     b'"personalisation": {"a": "\\ud800"}}', "application/json", 400, "invalid_value",
     "personalisation"),
    ("personalisation infinite", b'{"template": "receipt", "to": "ada@example.com", '
     b'"personalisation": {"a": 1e999}}', "application/json", 400, "invalid_value",
     "personalisation"),
    ("reference NUL", body(reference="a\u0000"), "application/json", 400,
     "null_characters_not_allowed", "reference"),
    ("reference too long", body(reference="r" * 201), "application/json", 400, "max_length",
     "reference"),
    ("reference a list", body(reference=["r"]), "application/json", 400, "invalid", "reference"),
    ("send_at not a time", body(send_at="tomorrow"), "application/json", 400, "invalid",
     "send_at"),
    ("send_at a number", body(send_at=5), "application/json", 400, "invalid", "send_at"),
    ("send_at out of range", body(send_at="9999-12-31T23:59:59-23:00"), "application/json",
     400, "overflow", "send_at"),
    ("unknown slug", body(template="nope"), "application/json", 422, "template_not_found",
     "template"),
    ("slug with NUL", body(template="rec\u0000eipt"), "application/json", 422,
     "template_not_found", "template"),
    ("slug with a quote", body(template="receipt' OR 1=1 --"), "application/json", 422,
     "template_not_found", "template"),
    ("template id past 64 bits", body(template=2**70), "application/json", 422,
     "template_not_found", "template"),
    ("template id digits past 64 bits", body(template="9" * 30), "application/json", 422,
     "template_not_found", "template"),
    ("template id negative", body(template=-1), "application/json", 422, "template_not_found",
     "template"),
    ("unknown contact", body(to=..., contact=2**62), "application/json", 422,
     "contact_not_found", "contact"),
    ("not an address", body(to="not-an-address"), "application/json", 422, "invalid_address",
     "to"),
    ("CR/LF header injection", body(to="ada@example.com\r\nBcc: spy@evil.example"),
     "application/json", 422, "invalid_address", "to"),
    ("LF alone", body(to="ada@example.com\nX: y"), "application/json", 422, "invalid_address",
     "to"),
    ("NUL in the address", body(to="ada\u0000@example.com"), "application/json", 422,
     "invalid_address", "to"),
    ("surrogate in the address", b'{"template": "receipt", "to": "\\ud800@example.com"}',
     "application/json", 422, "invalid_address", "to"),
    ("display name", body(to="Ada <ada@example.com>"), "application/json", 422,
     "invalid_address", "to"),
    ("two addresses", body(to="ada@example.com, bob@example.com"), "application/json", 422,
     "invalid_address", "to"),
    ("empty address", body(to=""), "application/json", 422, "invalid_address", "to"),
    ("a huge address", body(to="a" * 100_000 + "@example.com"), "application/json", 422,
     "invalid_address", "to"),
    ("send_at long past", body(send_at="2000-01-01T00:00:00Z"), "application/json", 422,
     "send_at_in_past", "send_at"),
    ("send_at too far", body(send_at=_in(31)), "application/json", 422, "send_at_too_far",
     "send_at"),
    ("text/plain", body(), "text/plain", 415, "unsupported_media_type", ""),
    ("a form", b"template=receipt&to=ada%40example.com", "application/x-www-form-urlencoded",
     415, "unsupported_media_type", ""),
    ("multipart", b"--b\r\n\r\n--b--\r\n", "multipart/form-data; boundary=b", 415,
     "unsupported_media_type", ""),
    ("over 1 MB", body(reference="r" * (1024 * 1024)), "application/json", 413,
     "request_too_large", ""),
]  # fmt: skip


def assert_error_shape(answer, status: int, code: str, field: str | None = None) -> dict:
    assert answer.status_code == status, answer.content[:500]
    assert answer["Content-Type"].startswith("application/json")
    errors = answer.json()["errors"]
    assert errors, answer.content
    for error in errors:
        assert set(error) == {"code", "field", "message"}
        assert isinstance(error["message"], str) and error["message"]
    first = errors[0]
    assert first["code"] == code, errors
    if field is not None:
        assert first["field"] == field, errors
    return first


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code", "field"),
    [case[1:] for case in POSTS],
    ids=[case[0] for case in POSTS],
)
def test_a_bad_post_is_refused_in_the_error_shape_and_stores_nothing(
    template, client, raw, content_type, status, code, field
):
    contacts = Contact.objects.count()
    answer = client.generic(
        "POST", URL, raw, content_type=content_type, HTTP_IDEMPOTENCY_KEY="key-1"
    )
    assert_error_shape(answer, status, code, field)
    assert Notification.objects.count() == 0
    assert MessageRequest.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0  # a refusal is not remembered
    assert Contact.objects.count() == contacts


def test_the_good_body_of_the_table_is_accepted(template, client):
    """The table's bodies differ from this one by the one thing they test."""
    answer = client.generic("POST", URL, body(), content_type="application/json")
    assert answer.status_code == 202, answer.content


@pytest.mark.parametrize("value", [10**30, -(10**30), 1.5e308, "\u2603 \U0001f600", None, True])
def test_odd_but_storable_personalisation_is_accepted(template, client, value):
    answer = client.post(URL, {**GOOD, "personalisation": {"v": value}}, format="json")
    assert answer.status_code == 202, answer.content
    # (jsonb keeps numbers as decimals: 1.5e308 comes back as the integer it equals)
    assert MessageRequest.objects.get().personalisation["v"] == pytest.approx(value)


@pytest.mark.parametrize(
    ("key", "code"),
    [("k" * 256, "invalid_idempotency_key"), ("a\tb", "invalid_idempotency_key"),
     ("", "invalid_idempotency_key"), ("caf\u00e9", "invalid_idempotency_key")],
    ids=["too long", "a tab", "empty", "not ASCII"],
)  # fmt: skip
def test_a_bad_idempotency_key_is_refused(template, client, key, code):
    answer = client.post(URL, GOOD, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert_error_shape(answer, 400, code, "Idempotency-Key")
    assert Notification.objects.count() == 0


def test_a_key_of_255_printable_characters_is_taken(template, client):
    answer = client.post(URL, GOOD, format="json", HTTP_IDEMPOTENCY_KEY="~ !" * 85)
    assert answer.status_code == 202, answer.content


def test_a_body_over_the_site_limit_is_refused_in_the_error_shape(template, client, settings):
    """config.request_limits refuses before any view runs; under /api/ in the error shape."""
    settings.MAX_REQUEST_BYTES = 10
    answer = client.generic("POST", URL, body(), content_type="application/json")
    assert_error_shape(answer, 413, "request_too_large", "")
    assert Notification.objects.count() == 0


# (id, method, path, status, code)
OTHERS = [
    ("unknown path", "GET", "/api/v1/nope", 404, "not_found"),
    ("unknown path, POST", "POST", "/api/v1/messages/1/send", 404, "not_found"),
    ("trailing slash", "GET", "/api/v1/messages/", 404, "not_found"),
    ("unknown message", "GET", "/api/v1/messages/999999", 404, "not_found"),
    ("id past 64 bits", "GET", "/api/v1/messages/99999999999999999999999", 404, "not_found"),
    ("id not a number", "GET", "/api/v1/messages/abc", 404, "not_found"),
    ("PUT the list", "PUT", "/api/v1/messages", 405, "method_not_allowed"),
    ("DELETE the list", "DELETE", "/api/v1/messages", 405, "method_not_allowed"),
    ("PATCH a message", "PATCH", "/api/v1/messages/1", 405, "method_not_allowed"),
    ("POST a message", "POST", "/api/v1/messages/1", 405, "method_not_allowed"),
    ("bad status", "GET", "/api/v1/messages?status=lost", 400, "invalid_choice"),
    ("limit 0", "GET", "/api/v1/messages?limit=0", 400, "min_value"),
    ("limit 101", "GET", "/api/v1/messages?limit=101", 400, "max_value"),
    ("limit text", "GET", "/api/v1/messages?limit=ten", 400, "invalid"),
    ("bad since", "GET", "/api/v1/messages?since=yesterday", 400, "invalid"),
    ("bad cursor", "GET", "/api/v1/messages?cursor=abc", 400, "invalid_cursor"),
    ("forged cursor", "GET", "/api/v1/messages?cursor=aWQ6LTE", 400, "invalid_cursor"),
    ("NUL cursor", "GET", "/api/v1/messages?cursor=%00", 400, "null_characters_not_allowed"),
    ("cursor past 64 bits", "GET", "/api/v1/messages?cursor=aWQ6OTk5OTk5OTk5OTk5OTk5OTk5OQ",
     400, "invalid_cursor"),
    ("unknown filter", "GET", "/api/v1/messages?referance=x", 400, "unknown_field"),
    ("NUL reference", "GET", "/api/v1/messages?reference=%00", 400,
     "null_characters_not_allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [case[1:] for case in OTHERS],
    ids=[case[0] for case in OTHERS],
)
def test_other_wrong_requests_are_refused_in_the_error_shape(
    template, client, method, path, status, code
):
    answer = client.generic(method, path, b"{}", content_type="application/json")
    assert_error_shape(answer, status, code)


def test_a_template_filter_of_any_text_finds_nothing_rather_than_failing(template, client):
    for ref in ["nope", "a\u0000b", "9" * 40, "-1"]:
        answer = client.get(URL, {"template": ref})
        assert answer.status_code == 200, answer.content
        assert answer.json()["results"] == []


def test_a_campaign_message_is_not_found_by_the_api(client):
    campaign_row = NotificationFactory(campaign=CampaignFactory())
    answer = client.get(f"{URL}/{campaign_row.pk}")
    assert_error_shape(answer, 404, "not_found")


def test_an_unsupported_accept_is_a_406_in_the_shape(template, client):
    answer = client.get(URL, HTTP_ACCEPT="application/xml")
    assert answer.status_code == 406
    assert answer.json()["errors"][0]["code"] == "not_acceptable"

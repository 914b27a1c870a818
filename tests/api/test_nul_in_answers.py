"""An answer may echo what the client sent (a key, a time zone it named). A NUL there is
answered as U+FFFD, so an answer that is kept for its Idempotency-Key (PostgreSQL stores no NUL
in jsonb) is, and is replayed the same, never a 500 (found by the contract tests with more examples:
POST /api/v1/contacts/bulk with a time zone of "\\u0000x")."""

import pytest

from campaigns.models import IdempotencyRecord
from tests.api.helpers import api_client
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("path", "body", "status", "echo"),
    [
        (
            "/api/v1/contacts/bulk",
            {"contacts": [{"email": "a@example.com", "time_zone": "\x00x"}]},
            422,
            "message",
        ),
        (
            "/api/v1/contacts/bulk",
            {"contacts": [{"email": "a@example.com", "time_zone": "\x00x"}],
             "skip_invalid_rows": True},
            200,
            "message",
        ),
        (
            "/api/v1/contacts/bulk",
            {"contacts": [{"email": "a@example.com", "attributes": {"\x00k": 1}}]},
            422,
            "field",
        ),
        ("/api/v1/contacts/bulk", {"contacts": [{"email": "a@example.com", "\x00": 1}]}, 422,
         "field"),
        ("/api/v1/contacts", {"email": "a@example.com", "time_zone": "\x00x"}, 422, "message"),
        ("/api/v1/contacts", {"email": "a@example.com", "\x00": 1}, 422, "field"),
        ("/api/v1/jobs", {"template": "statement", "rows": [{"to": "a@example.com", "\x00": 1}]},
         422, "field"),
    ],
)  # fmt: skip
def test_a_nul_echoed_is_answered_as_a_replacement_and_kept_for_its_key(path, body, status, echo):
    TemplateFactory(slug="statement")
    client = api_client()
    first = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="nul-1")
    assert first.status_code == status, first.content
    problems = first.json().get("errors") or first.json()["invalid_rows"]
    assert "\x00" not in first.content.decode()
    assert any("\ufffd" in problem[echo] for problem in problems), problems
    if status < 300:  # (a refusal is not kept: the request may be mended and sent again)
        assert IdempotencyRecord.objects.filter(key="nul-1").exists()
        again = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="nul-1")
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert again["Idempotent-Replayed"] == "true"

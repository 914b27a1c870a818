"""A field the schema says is text takes text only: a number where text is due is a 400
naming the field (as any wrong type is), not its digits saved as text (DRF's CharField would
take `0` as "0"). One field (campaigns.api.serializers.TextField) for every input that holds
text."""

import pytest

from campaigns.models import ContactList
from tests.api.helpers import api_client
from tests.factories import CampaignFactory, ContactFactory, ContactListFactory
from tracking.models import CallbackEndpoint

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def made(empty_broker) -> dict:
    """One of each resource the requests below name."""
    return {
        "list": ContactListFactory(name="News", description="Monthly").pk,
        "contact": ContactFactory().pk,
        "campaign": CampaignFactory().pk,
        "webhook": CallbackEndpoint.objects.create(
            url="https://crm.example.com/hooks", event_types=["message.sent"], secret="whsec_x"
        ).pk,
    }


# (method, path, body without the field, the text field): {id} is the made resource's id.
CASES = [
    ("post", "/api/v1/lists", {}, "name"),
    ("post", "/api/v1/lists", {"name": "Other"}, "description"),
    ("patch", "/api/v1/lists/{list}", {}, "name"),
    ("patch", "/api/v1/lists/{list}", {}, "description"),
    ("post", "/api/v1/contacts/{contact}/unsubscribe", {}, "reason"),
    ("post", "/api/v1/contacts/{contact}/suppress", {"status": "bounced"}, "reason"),
    ("post", "/api/v1/messages", {"template": "x", "to": "ada@example.com"}, "reference"),
    ("post", "/api/v1/campaigns/{campaign}/schedule", {"local_time": "2030-01-31T09"}, "time_zone"),
    ("post", "/api/v1/campaigns/{campaign}/schedule", {}, "local_time"),
    ("post", "/api/v1/webhooks", {"event_types": ["message.sent"]}, "url"),
    (
        "post",
        "/api/v1/webhooks",
        {"url": "https://crm.example.com/hooks", "event_types": ["message.sent"]},
        "description",
    ),
    ("patch", "/api/v1/webhooks/{webhook}", {}, "url"),
    ("patch", "/api/v1/webhooks/{webhook}", {}, "description"),
    ("patch", "/api/v1/webhooks/{webhook}", {}, "event_types"),
]  # fmt: skip


@pytest.mark.parametrize("number", [0, 12.5])
@pytest.mark.parametrize(("method", "path", "body", "field"), CASES)
def test_a_number_for_text_is_refused(made, method, path, body, field, number):
    client = api_client()
    value = [number] if field == "event_types" else number
    answer = getattr(client, method)(path.format(**made), {**body, field: value}, format="json")
    assert answer.status_code == 400, answer.content
    fields = [problem["field"] for problem in answer.json()["errors"]]
    assert any(name.split(".")[0] == field for name in fields), answer.content


def test_a_list_keeps_its_text_when_a_number_is_sent(made):
    client = api_client()
    answer = client.patch(f"/api/v1/lists/{made['list']}", {"description": 0}, format="json")
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["code"] == "invalid"
    assert ContactList.objects.get(pk=made["list"]).description == "Monthly"

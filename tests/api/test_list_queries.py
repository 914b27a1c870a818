"""Every list refuses a query parameter it does not know (a typo, `?statuss=sent`, must not
answer the whole unfiltered list as if it had been read), and one given empty (`?limit=`,
which DRF reads as left out) or a whole number written otherwise (`?limit=5.0`), in the one
error shape."""

import pytest

from tests.api.helpers import api_client
from tests.factories import CampaignFactory
from tracking.models import CallbackEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

LISTS = [
    "/api/v1/contacts",
    "/api/v1/lists",
    "/api/v1/templates",
    "/api/v1/campaigns",
    "/api/v1/messages",
    "/api/v1/events",
    "/api/v1/jobs",
    "/api/v1/webhooks",
    "/api/v1/webhooks/{webhook}/deliveries",
]


@pytest.mark.parametrize("path", LISTS)
def test_an_unknown_query_parameter_is_refused(path):
    webhook = CallbackEndpoint.objects.create(
        url="https://crm.example.com/hooks", event_types=["message.sent"], secret="whsec_x"
    )
    answer = api_client().get(path.format(webhook=webhook.pk), {"colour": "red"})
    assert answer.status_code == 400, answer.content
    assert answer.json()["errors"] == [
        {"code": "unknown_field", "field": "colour", "message": "Unknown field."}
    ]


@pytest.mark.parametrize("path", LISTS)
def test_an_empty_query_parameter_is_refused(path):
    webhook = CallbackEndpoint.objects.create(
        url="https://crm.example.com/hooks", event_types=["message.sent"], secret="whsec_x"
    )
    client = api_client()
    assert client.get(path.format(webhook=webhook.pk), {"limit": "5"}).status_code == 200
    answer = client.get(path.format(webhook=webhook.pk) + "?limit=&cursor=")
    assert answer.status_code == 400, answer.content
    assert answer.json()["errors"] == [
        {"code": "blank", "field": name, "message": "Give a value, or leave the parameter out."}
        for name in ("cursor", "limit")
    ]


@pytest.mark.parametrize("limit", ["5.0", "5. ", " 5", "0x5", "5e0", "٥"])
def test_a_whole_number_written_otherwise_is_refused(limit):
    answer = api_client().get("/api/v1/contacts", {"limit": limit})
    assert answer.status_code == 400, answer.content
    assert answer.json()["errors"] == [
        {"code": "invalid", "field": "limit", "message": "A valid integer is required."}
    ]
    assert api_client().get("/api/v1/events", {"campaign": "3.0"}).status_code == 400


def test_a_report_refuses_an_empty_time_zone():
    campaign = CampaignFactory()
    answer = api_client().get(f"/api/v1/campaigns/{campaign.pk}/report?time_zone=")
    assert answer.status_code == 400, answer.content
    assert answer.json()["errors"][0]["code"] == "blank"

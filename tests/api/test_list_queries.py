"""Every list refuses a query parameter it does not know (a typo, `?statuss=sent`, must not
answer the whole unfiltered list as if it had been read), in the one error shape."""

import pytest

from tests.api.helpers import api_client
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

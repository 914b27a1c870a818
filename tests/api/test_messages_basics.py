"""POST /api/v1/messages end to end in-process (tasks eager), through the real SES backend
talking to the local endpoint."""

import pytest

from campaigns.models import Campaign, Contact, MessageRequest, Notification
from tests.api.helpers import api_client
from tests.factories import ContactFactory, TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def template():
    return TemplateFactory(
        slug="receipt",
        subject="Order {{ order }}",
        html="<p>Hello {{ first_name }}, order {{ order }} is on its way.</p>",
        text="Hello {{ first_name }}, order {{ order }} is on its way.",
    )


def test_a_message_is_accepted_durable_and_sent_with_its_personalisation(
    template, ses, eager_celery
):
    client = api_client()
    answer = client.post(
        "/api/v1/messages",
        {
            "template": "receipt",
            "to": "Ada@Example.com",
            "personalisation": {"first_name": "Ada", "order": "A-17"},
            "reference": "order-17",
        },
        format="json",
    )
    assert answer.status_code == 202, answer.content
    message = Notification.objects.get(pk=answer.json()["id"])
    assert message.status == Notification.Status.SENT
    assert message.contact.email == "ada@example.com"
    assert message.campaign.kind == Campaign.Kind.TRANSACTIONAL
    assert MessageRequest.objects.get(pk=message.pk).reference == "order-17"
    [sent] = ses.messages()
    assert "Order A-17" in str(sent)
    assert "Hello Ada" in str(sent)

    shown = client.get(f"/api/v1/messages/{message.pk}").json()
    assert shown["status"] == "sent"
    assert shown["reference"] == "order-17"


def test_one_contact_gets_every_message_sent_to_them(template, ses, eager_celery):
    contact = ContactFactory(first_name="Grace")
    client = api_client()
    ids = [
        client.post(
            "/api/v1/messages",
            {"template": template.pk, "contact": contact.pk, "personalisation": {"order": n}},
            format="json",
        ).json()["id"]
        for n in range(3)
    ]
    assert len(set(ids)) == 3
    assert Notification.objects.filter(pk__in=ids, status="sent").count() == 3
    assert ses.stats()["recipients"] == 3
    assert Contact.objects.count() == 1


def test_without_a_key_the_answer_is_401_in_the_error_shape(template):
    from rest_framework.test import APIClient

    answer = APIClient().post("/api/v1/messages", {"template": "receipt"}, format="json")
    assert answer.status_code == 401
    [error] = answer.json()["errors"]
    assert set(error) == {"code", "field", "message"}

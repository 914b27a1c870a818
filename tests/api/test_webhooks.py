"""/api/v1/webhooks: endpoints made, read, changed, rotated, deleted; their delivery log."""

import pytest
from django.utils import timezone

from tests.api.helpers import api_client
from tests.factories import EventFactory
from tracking import callbacks
from tracking.models import CallbackDelivery, CallbackEndpoint

pytestmark = pytest.mark.django_db

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def allow_private(settings):
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = True


def create(client, **fields):
    body = {"url": URL, "event_types": ["message.bounced"], **fields}
    return client.post("/api/v1/webhooks", body, format="json")


def test_create_shows_the_secret_once_then_never(allow_private):
    client = api_client(scopes=["webhooks:write", "webhooks:read"])
    answer = create(client, description="CRM")
    assert answer.status_code == 201, answer.content
    made = answer.json()
    assert made["secret"].startswith("whsec_") and made["event_types"] == ["message.bounced"]
    endpoint = CallbackEndpoint.objects.get()
    assert endpoint.secret == made["secret"] and endpoint.created_by_key_id == client.key.pk

    got = client.get(f"/api/v1/webhooks/{made['id']}").json()
    assert "secret" not in got and got["url"] == URL
    listed = client.get("/api/v1/webhooks").json()
    assert [w["id"] for w in listed["results"]] == [made["id"]] and listed["next"] is None
    assert "secret" not in listed["results"][0]


def test_scopes():
    reader = api_client(scopes=["webhooks:read"])
    assert create(reader).status_code == 403
    assert api_client(scopes=["messages:read"]).get("/api/v1/webhooks").status_code == 403


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1/hook", "url_refused"),
        ("http://10.0.0.8/hook", "url_refused"),
        ("http://[::1]/hook", "url_refused"),
        ("http://169.254.169.254/", "url_refused"),
        ("http://localhost:8000/hook", "url_refused"),
        ("javascript:alert(1)", "url_refused"),
        ("http://a\r\nb/", "url_refused"),
        ("http://a\x00b/", "null_characters_not_allowed"),
    ],
)
def test_private_targets_are_refused_in_the_one_shape(url, code):
    answer = create(api_client(scopes=["webhooks:write"]), url=url)
    assert answer.status_code == (400 if "\x00" in url else 422), answer.content
    assert answer.json()["errors"][0]["code"] == code
    assert answer.json()["errors"][0]["field"] == "url"
    assert not CallbackEndpoint.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"url": URL, "event_types": ["message.nope"]},
        {"url": URL, "event_types": []},
        {"url": URL, "event_types": "message.sent"},
        {"url": URL, "event_types": [["x"]]},
        {"url": 10**30, "event_types": ["message.sent"]},
        {"url": URL, "event_types": ["message.sent"], "extra": 1},
        [],
        "=1+1",
    ],
)
def test_bad_bodies_are_4xx_never_500(body, allow_private):
    answer = api_client(scopes=["webhooks:write"]).post("/api/v1/webhooks", body, format="json")
    assert answer.status_code in (400, 422), answer.content
    assert answer.json()["errors"]


def test_update_disable_enable_and_delete(allow_private):
    client = api_client(scopes=["webhooks:write", "webhooks:read"])
    made = create(client).json()
    path = f"/api/v1/webhooks/{made['id']}"
    answer = client.patch(
        path, {"event_types": ["message.opened"], "enabled": False}, format="json"
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["event_types"] == ["message.opened"]
    assert answer.json()["enabled"] is False and answer.json()["disabled_reason"]
    answer = client.patch(path, {"enabled": True}, format="json")
    assert answer.json()["enabled"] is True and answer.json()["disabled_reason"] == ""
    assert client.patch(path, {"url": "http://10.0.0.1/"}, format="json").status_code == 200
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404
    assert client.get("/api/v1/webhooks/99999999999999999999").status_code == 404


def test_update_refuses_a_private_url(settings):
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = True
    client = api_client(scopes=["webhooks:write"])
    made = create(client).json()
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = False
    answer = client.patch(
        f"/api/v1/webhooks/{made['id']}", {"url": "http://127.0.0.1:1/"}, format="json"
    )
    assert answer.status_code == 422 and answer.json()["errors"][0]["code"] == "url_refused"
    assert CallbackEndpoint.objects.get().url == URL


def test_rotate_secret_keeps_the_old_one_for_the_overlap(allow_private):
    client = api_client(scopes=["webhooks:write"])
    made = create(client).json()
    answer = client.post(f"/api/v1/webhooks/{made['id']}/rotate-secret")
    assert answer.status_code == 200, answer.content
    rotated = answer.json()
    endpoint = CallbackEndpoint.objects.get()
    assert rotated["secret"] == endpoint.secret != made["secret"]
    assert endpoint.previous_secret == made["secret"]
    assert endpoint.previous_secret_expires_at > timezone.now()


def test_deliveries_list_with_status_filter(allow_private):
    client = api_client(scopes=["webhooks:write", "webhooks:read"])
    made = create(client, event_types=["message.delivered"]).json()
    EventFactory(delivered=True)
    EventFactory(delivered=True)
    assert callbacks.callbacks_fan_out() == 2
    CallbackDelivery.objects.filter(pk=CallbackDelivery.objects.first().pk).update(
        status=CallbackDelivery.Status.FAILED
    )
    path = f"/api/v1/webhooks/{made['id']}/deliveries"
    page = client.get(path, {"limit": 1}).json()
    assert len(page["results"]) == 1 and page["next"]
    assert client.get(page["next"]).json()["next"] is None
    failed = client.get(path, {"status": "failed"}).json()["results"]
    assert [d["status"] for d in failed] == ["failed"]
    assert client.get(path, {"status": "nope"}).status_code == 400
    assert client.get("/api/v1/webhooks/0/deliveries").status_code == 404


def test_idempotent_create(allow_private):
    client = api_client(scopes=["webhooks:write"])
    body = {"url": URL, "event_types": ["message.sent"]}
    first = client.post("/api/v1/webhooks", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = client.post("/api/v1/webhooks", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert CallbackEndpoint.objects.count() == 1

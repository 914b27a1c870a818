"""Callback endpoints in the admin: the secret shown once, rotation, enabling again, the
delivery log and its "Retry now" (POST after a confirmation, CSRF-checked)."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from tests.factories import EventFactory
from tracking import callbacks
from tracking.models import CallbackDelivery, CallbackEndpoint

pytestmark = pytest.mark.django_db

BASE = "/admin/tracking/callbackendpoint/"
URL = "http://127.0.0.1:9/hook"


def _staff(*perms: str, superuser: bool = False, csrf: bool = False) -> Client:
    user = User.objects.create_user(
        username=f"user{User.objects.count()}", password="x", is_staff=True, is_superuser=superuser
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="tracking", codename__in=perms)
    )
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def allow_private(settings):
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = True


def test_create_shows_the_secret_once():
    client = _staff(superuser=True)
    answer = client.post(f"{BASE}add/", {"url": URL, "event_types": ["message.bounced"]})
    assert answer.status_code == 200
    endpoint = CallbackEndpoint.objects.get()
    assert endpoint.secret in answer.content.decode()
    page = client.get(f"{BASE}{endpoint.pk}/change/").content.decode()
    assert endpoint.secret not in page and "Rotate secret" in page and "Delivery log" in page
    assert endpoint.secret not in client.get(BASE).content.decode()


def test_a_private_target_is_refused_with_the_reason(settings):
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = False
    answer = _staff(superuser=True).post(
        f"{BASE}add/", {"url": "http://169.254.169.254/", "event_types": ["message.sent"]}
    )
    assert answer.status_code == 200 and "public addresses only" in answer.content.decode()
    assert not CallbackEndpoint.objects.exists()


def test_rotate_after_a_confirmation():
    endpoint = callbacks.endpoint_create(url=URL, event_types=["message.sent"])
    old = endpoint.secret
    client = _staff(superuser=True)
    confirm = client.get(f"{BASE}{endpoint.pk}/rotate/")
    assert confirm.status_code == 200 and "Yes, rotate" in confirm.content.decode()
    endpoint.refresh_from_db()
    assert endpoint.secret == old  # a GET changes nothing
    answer = client.post(f"{BASE}{endpoint.pk}/rotate/")
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.previous_secret == old
    assert endpoint.secret in answer.content.decode()


def test_a_disabled_endpoint_shows_why_and_is_enabled_again():
    endpoint = callbacks.endpoint_create(url=URL, event_types=["message.sent"])
    callbacks.endpoint_disable(endpoint, reason="Every delivery failed since then; last: HTTP 500")
    client = _staff(superuser=True)
    assert "last: HTTP 500" in client.get(BASE).content.decode()
    page = client.get(f"{BASE}{endpoint.pk}/change/").content.decode()
    assert "Enable again" in page and "last: HTTP 500" in page
    client.post(f"{BASE}{endpoint.pk}/enable/")
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.disabled_reason == ""


def test_delivery_log_and_retry_now_needs_a_post_with_csrf():
    endpoint = callbacks.endpoint_create(url=URL, event_types=["message.delivered"])
    EventFactory(delivered=True)
    callbacks.callbacks_fan_out()
    delivery = CallbackDelivery.objects.get()
    CallbackDelivery.objects.update(
        status=CallbackDelivery.Status.FAILED, last_error="HTTP 500", attempts=9
    )
    client = _staff(superuser=True, csrf=True)
    log = client.get(f"{BASE}{endpoint.pk}/deliveries/")
    assert log.status_code == 200
    assert delivery.event_id in log.content.decode() and "Retry now" in log.content.decode()
    retry = f"{BASE}{endpoint.pk}/deliveries/{delivery.pk}/retry/"
    assert "Yes, retry now" in client.get(retry).content.decode()
    assert client.post(retry).status_code == 403  # no CSRF token
    assert CallbackDelivery.objects.get().status == CallbackDelivery.Status.FAILED
    token = client.get(retry).cookies["csrftoken"].value
    client.post(retry, {"csrfmiddlewaretoken": token})
    row = CallbackDelivery.objects.get()
    assert row.status == CallbackDelivery.Status.PENDING
    assert row.next_attempt_at <= timezone.now() + timedelta(seconds=1)


def test_permissions():
    endpoint = callbacks.endpoint_create(url=URL, event_types=["message.sent"])
    viewer = _staff("view_callbackendpoint")
    assert viewer.get(f"{BASE}{endpoint.pk}/deliveries/").status_code == 200
    assert viewer.post(f"{BASE}{endpoint.pk}/rotate/").status_code == 403
    assert viewer.get(f"{BASE}add/").status_code == 403
    assert _staff().get(f"{BASE}{endpoint.pk}/deliveries/").status_code == 403


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_endpoint_is_made_and_its_secret_rotated_in_the_browser(page, live_server):
    """As a marketer's colleague would: the add form (URL and event types ticked), the secret
    shown once, then Rotate secret asks first and shows the new one."""
    page.goto(f"{live_server.url}{BASE}add/")
    page.fill("input[name=url]", URL)
    page.check("input[name=event_types][value='message.bounced']")
    page.check("input[name=event_types][value='message.complained']")
    page.click("text=Create the endpoint")
    endpoint = CallbackEndpoint.objects.get()
    assert endpoint.event_types == ["message.bounced", "message.complained"]
    assert page.get_by_label("Signing secret").input_value() == endpoint.secret  # once, here
    page.click("text=I have copied it")
    assert endpoint.secret not in page.content()
    page.click("text=Rotate secret")
    assert endpoint.secret not in page.content()  # the confirmation changes nothing yet
    page.click("text=Yes, rotate")
    endpoint.refresh_from_db()
    assert endpoint.previous_secret
    assert page.get_by_label("Signing secret").input_value() == endpoint.secret

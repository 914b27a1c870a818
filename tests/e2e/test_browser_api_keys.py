"""An API key's life in a real browser (Debian's chromium): made in the admin with its scopes,
its secret shown once and copied, used against the API, listed, and revoked after a
confirmation, after which the API refuses it. And the browsable API, used with the admin's
session instead of a key."""

import json
import os
import urllib.error
import urllib.request

import pytest

from campaigns.models import ApiKey, Notification
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = os.environ.get("MAILWRIGHT_SCREENSHOTS")  # a directory: keep screenshots to look at


def _shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/apikey-{name}.png", full_page=True)


def _api_get(live_server, secret: str) -> tuple[int, dict]:
    url = f"{live_server.url}/api/v1/messages/999999"  # (http, the test server)
    headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


def test_a_key_is_made_copied_used_and_revoked(page, live_server):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(f"{live_server.url}/admin/campaigns/apikey/")
    page.click("text=Add API key")
    page.fill("#id_name", "Shop receipts")
    page.check("input[name=scopes][value='messages:send']")
    page.check("input[name=scopes][value='messages:read']")
    assert "Send transactional messages" in page.locator(".field-scopes").inner_text()
    page.check("#id_test")
    _shot(page, "1-form")
    page.click("input[type=submit][value='Create the key']")

    secret = page.input_value("#apikey-secret")
    assert secret.startswith("mw_test_")
    assert "never shown again" in page.locator("#apikey-once").inner_text()
    page.click("#apikey-copy")
    page.wait_for_function("document.getElementById('apikey-copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    _shot(page, "2-created")

    key = ApiKey.objects.get()
    assert _api_get(live_server, secret)[0] == 404  # accepted: no such message

    page.click("text=I have copied it")
    page.goto(f"{live_server.url}/admin/campaigns/apikey/")
    row = page.locator("#result_list tbody tr", has_text="Shop receipts")
    text = row.inner_text()
    assert key.prefix in text and "test" in text and "messages:read, messages:send" in text
    assert secret.split("_", 3)[3] not in page.content()
    _shot(page, "3-list")

    row.locator("a", has_text="Shop receipts").click()
    page.click("#apikey-revoke")
    assert "cannot be undone" in page.locator("#content-main").inner_text()
    _shot(page, "4-confirm")
    assert ApiKey.objects.get().revoked_at is None
    page.click("#apikey-revoke-confirm")
    assert "Revoked" in page.locator(".messagelist").inner_text()
    assert page.locator("#apikey-revoke").count() == 0  # nothing left to revoke
    _shot(page, "5-revoked")

    assert ApiKey.objects.get().revoked_at is not None
    status, body = _api_get(live_server, secret)
    assert status == 403 and body["errors"][0]["code"] == "api_key_revoked"


def test_a_staff_user_sends_and_reads_with_the_browsable_api(page, live_server, ses, eager_celery):
    """The admin's session is enough (no key), and the browsable API's own form carries the
    session's CSRF token."""
    TemplateFactory(slug="receipt", subject="Order {{ order }}")
    page.goto(f"{live_server.url}/api/v1/messages")
    body = {"template": "receipt", "to": "ada@example.com", "personalisation": {"order": "7"}}
    page.fill("#id__content", json.dumps(body))
    with page.expect_navigation():
        page.click("form button:has-text('POST')")
    shown = page.locator(".response-info").inner_text()
    assert "HTTP 202 Accepted" in shown, shown
    message = Notification.objects.get()
    assert f'"id": {message.pk}' in shown
    assert message.request.api_key_id is None  # sent by a person, not a key

    page.goto(f"{live_server.url}/api/v1/messages/{message.pk}")
    shown = page.locator(".response-info").inner_text()
    assert "HTTP 200 OK" in shown and '"status": "sent"' in shown, shown
    _shot(page, "6-browsable")
    assert ses.stats()["recipients"] == 1

"""API keys in the admin: made with scopes, shown whole once and nowhere else (not stored,
logged, put in a message or the session), listed by prefix, revoked after a confirmation;
the ApiKey model permissions decide who may."""

import logging

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.apikeys import SCOPES, api_key_check, api_key_create
from campaigns.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)

ADD = "/admin/campaigns/apikey/add/"
LIST = "/admin/campaigns/apikey/"


def _staff(*perms: str, superuser: bool = False) -> Client:
    name = f"user{User.objects.count()}"
    user = User.objects.create_user(
        username=name, password="x", is_staff=True, is_superuser=superuser
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="campaigns", codename__in=perms)
    )
    client = Client()
    client.force_login(user)
    return client


def _create(client: Client, **fields):
    data = {"name": "Shop receipts", "scopes": ["messages:send", "messages:read"], **fields}
    return client.post(ADD, data)


def _secret_in(html: str) -> str:
    start = html.index('id="apikey-secret" value="') + len('id="apikey-secret" value="')
    return html[start : html.index('"', start)]


def test_the_form_offers_every_scope_with_its_description():
    page = _staff(superuser=True).get(ADD).content.decode()
    for scope, description in SCOPES.items():
        assert f'value="{scope}"' in page and description in page
    assert 'name="test"' in page and 'name="expires_at_0"' in page


def test_a_key_is_shown_whole_once_and_kept_nowhere(caplog):
    client = _staff(superuser=True)
    with caplog.at_level(logging.DEBUG):
        answer = _create(client, test="on")
    assert answer.status_code == 200
    html = answer.content.decode()
    secret = _secret_in(html)
    assert secret.startswith("mw_test_") and html.count(secret) == 1
    assert "never shown again" in html
    assert "no-store" in answer["Cache-Control"]
    key = ApiKey.objects.get()
    assert api_key_check(secret) == key
    assert (key.name, key.scopes, key.test) == (
        "Shop receipts",
        ["messages:read", "messages:send"],
        True,
    )
    assert key.created_by.is_superuser and key.expires_at is None

    # Nowhere else: no column, no log line, no admin history, no session, no later page.
    bare = secret.split("_", 3)[3]
    for record in caplog.records:
        assert bare not in record.getMessage()
    entry = LogEntry.objects.get()
    assert bare not in f"{entry.object_repr} {entry.change_message}"
    for session in Session.objects.all():
        assert bare not in str(session.get_decoded())
    assert bare not in "".join(str(v) for v in ApiKey.objects.values_list().get())
    for url in (LIST, f"{LIST}{key.pk}/change/"):
        page = client.get(url).content.decode()
        assert key.prefix in page and bare not in page


def test_an_expiry_must_be_in_the_future_and_is_kept():
    client = _staff(superuser=True)
    refused = _create(client, expires_at_0="2020-01-01", expires_at_1="00:00:00")
    assert refused.status_code == 200 and "Choose a time in the future" in refused.content.decode()
    assert not ApiKey.objects.exists()
    later = timezone.now() + timezone.timedelta(days=30)
    _create(client, expires_at_0=later.strftime("%Y-%m-%d"), expires_at_1="12:00:00")
    assert ApiKey.objects.get().expires_at.date() == later.date()


def test_a_key_needs_a_name_and_a_scope():
    client = _staff(superuser=True)
    answer = client.post(ADD, {"name": "", "scopes": []})
    assert answer.status_code == 200 and "apikey-secret" not in answer.content.decode()
    assert answer.content.decode().count("This field is required") == 2
    assert client.post(ADD, {"name": "x", "scopes": ["messages:delete"]}).status_code == 200
    assert not ApiKey.objects.exists()


def test_the_list_shows_each_key_without_its_secret():
    live = api_key_create(name="Receipts", scopes=["messages:send"])
    test = api_key_create(name="CI", scopes=["jobs:send", "jobs:read"], test=True)
    ApiKey.objects.filter(pk=test.key.pk).update(revoked_at=timezone.now())
    page = _staff(superuser=True).get(LIST).content.decode()
    for issued in (live, test):
        assert issued.key.prefix in page and issued.key.name in page
        assert issued.secret.split("_", 3)[3] not in page
    for column in ("Mode", "Scopes", "Created", "Expires", "Last used", "Revoked"):
        assert column in page
    rows = {
        issued.key.prefix: next(row for row in page.split("<tr") if issued.key.prefix in row)
        for issued in (live, test)
    }
    today = timezone.localtime().strftime("%Y-%m-%d")
    assert '<td class="field-mode">live</td>' in rows[live.key.prefix]
    assert '<td class="field-revoked">no</td>' in rows[live.key.prefix]
    assert '<td class="field-expires">never</td>' in rows[live.key.prefix]
    assert '<td class="field-mode">test</td>' in rows[test.key.prefix]
    assert f'<td class="field-revoked">{today} ' in rows[test.key.prefix]
    assert '<td class="field-scopes_shown">jobs:read, jobs:send</td>' in rows[test.key.prefix]


def test_a_staff_user_with_the_model_permissions_makes_and_revokes_keys():
    client = _staff("add_apikey", "view_apikey", "change_apikey")
    assert client.get(LIST).status_code == 200
    secret = _secret_in(_create(client).content.decode())
    key = ApiKey.objects.get()
    assert secret.startswith("mw_live_")
    confirm = client.get(f"{LIST}{key.pk}/revoke/")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    assert ApiKey.objects.get().revoked_at is None  # asking is not revoking
    assert client.post(f"{LIST}{key.pk}/revoke/").status_code == 302
    assert ApiKey.objects.get().revoked_at is not None
    assert LogEntry.objects.filter(change_message="Revoked.").count() == 1
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/v1/messages/1").json()["errors"][0]["code"] == "api_key_revoked"


def test_without_the_permissions_there_is_nothing_to_see_or_do():
    key = api_key_create(name="Receipts", scopes=["messages:send"]).key
    nobody = _staff("view_campaign")
    assert nobody.get(LIST).status_code == 403
    assert nobody.get(ADD).status_code == 403
    assert nobody.post(ADD, {"name": "x", "scopes": ["messages:send"]}).status_code == 403
    assert nobody.post(f"{LIST}{key.pk}/revoke/").status_code == 403
    viewer = _staff("view_apikey")
    page = viewer.get(f"{LIST}{key.pk}/change/").content.decode()
    assert "apikey-revoke" not in page
    assert viewer.post(f"{LIST}{key.pk}/revoke/").status_code == 403
    assert viewer.get(ADD).status_code == 403
    assert ApiKey.objects.get().revoked_at is None and ApiKey.objects.count() == 1


def test_the_revoke_action_asks_first():
    keys = [api_key_create(name=f"k{n}", scopes=["messages:send"]).key for n in range(3)]
    client = _staff(superuser=True)
    chosen = {"action": "revoke_selected", "_selected_action": [keys[0].pk, keys[1].pk]}
    confirm = client.post(LIST, chosen)
    assert confirm.status_code == 200
    assert (
        keys[0].prefix in confirm.content.decode()
        and keys[2].prefix not in confirm.content.decode()
    )
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()
    done = client.post(LIST, {**chosen, "apply": "yes"}, follow=True)
    assert "Revoked" in done.content.decode()
    assert set(ApiKey.objects.filter(revoked_at__isnull=False).values_list("pk", flat=True)) == {
        keys[0].pk,
        keys[1].pk,
    }


def test_only_the_name_can_be_changed_and_nothing_deleted():
    issued = api_key_create(name="Receipts", scopes=["messages:send"])
    key = issued.key
    client = _staff(superuser=True)
    answer = client.post(
        f"{LIST}{key.pk}/change/",
        {"name": "Receipts (shop)", "scopes": '["webhooks:write"]', "prefix": "mw_live_00000000"},
    )
    assert answer.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.scopes, key.prefix) == (
        "Receipts (shop)",
        ["messages:send"],
        issued.key.prefix,
    )
    assert client.get(f"{LIST}{key.pk}/delete/").status_code == 403
    assert "delete_selected" not in client.get(LIST).content.decode()

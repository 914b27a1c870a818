"""Who may call the API: a key (401 when it is not one of ours, 403 when it may no longer be
used or lacks the scope) or a staff user's session with the model permissions (the browsable
API); every refusal in the one error shape, with a stable code."""

import hashlib
import time

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.apikeys import api_key_create, api_key_revoke
from campaigns.models import ApiKey, Notification
from tests.api.helpers import api_client
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/messages"


def _refusal(answer, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.content
    body = answer.json()
    assert list(body) == ["errors"]
    [error] = body["errors"]
    assert set(error) == {"code", "field", "message"}
    assert error["code"] == code, error
    assert error["field"] == "" and error["message"]
    return error


def _with(authorization: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


def _get(client):
    """A GET the key's scopes allow: 404 (no such message) means the key was accepted."""
    return client.get(f"{URL}/999999")


# -- 401: no key, or not one of ours --------------------------------------------------------


def test_no_credentials_is_401_with_the_bearer_challenge():
    answer = APIClient().get(f"{URL}/1")
    _refusal(answer, 401, "not_authenticated")
    assert answer["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer nope",
        "Bearer mw_live_00000000_" + "x" * 43,  # well formed, no such key
        "Bearer mw_prod_0123abcd_secret",  # not a mode we make
        "Bearer mw_live_0123ABCD_secret",  # not a prefix we make (upper-case hex)
        "Bearer mw_live_0123\x00bcd_secret",  # a NUL PostgreSQL cannot compare: not a 500
        "Bearer mw_live_" + "f" * 5000 + "_secret",  # far longer than any prefix
        "Bearer ",
        "Bearer",
    ],
)
def test_a_key_that_is_not_ours_is_401(authorization):
    answer = _with(authorization).get(f"{URL}/1")
    _refusal(answer, 401, "invalid_api_key")
    assert answer["WWW-Authenticate"] == "Bearer"


def test_a_real_prefix_with_another_secret_is_401():
    client = api_client()
    prefix = client.key.prefix
    _refusal(_get(_with(f"Bearer {prefix}_{'A' * 43}")), 401, "invalid_api_key")
    _refusal(_get(_with(f"Bearer {prefix}_")), 401, "invalid_api_key")
    assert _get(client).status_code == 404  # the real one still works


@pytest.mark.parametrize("scheme", ["Basic", "Token", "Api-Key", "Bearer:"])
def test_a_real_key_under_another_scheme_is_401(scheme):
    secret = api_client().secret
    _refusal(_get(_with(f"{scheme} {secret}")), 401, "invalid_api_key")
    _refusal(_get(_with(secret)), 401, "invalid_api_key")  # no scheme at all


def test_the_scheme_is_case_insensitive():
    secret = api_client().secret
    assert _get(_with(f"bearer {secret}")).status_code == 404
    assert _get(_with(f"BEARER  {secret} ")).status_code == 404


# -- 403: ours, but not usable for this --------------------------------------------------------


def test_a_revoked_key_is_403_at_once_and_without_a_challenge():
    client = api_client()
    assert _get(client).status_code == 404  # used (and cached) before the revocation
    assert api_key_revoke(key=client.key) is True
    answer = _get(client)
    _refusal(answer, 403, "api_key_revoked")
    assert "WWW-Authenticate" not in answer
    assert api_key_revoke(key=client.key) is False  # already


def test_an_expired_key_is_403():
    client = api_client(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    _refusal(_get(client), 403, "api_key_expired")


def test_a_key_expires_while_it_is_cached(settings):
    settings.API_KEY_CACHE_SECONDS = 60
    client = api_client(expires_at=timezone.now() + timezone.timedelta(seconds=1))
    assert _get(client).status_code == 404
    # The expiry is checked on every request against the cached copy: no wait for the cache.
    time.sleep(max(0.0, (client.key.expires_at - timezone.now()).total_seconds()) + 0.01)
    _refusal(_get(client), 403, "api_key_expired")


def test_a_key_revoked_by_another_process_is_refused_within_the_cache_delay(settings):
    settings.API_KEY_CACHE_SECONDS = 1
    client = api_client()
    assert _get(client).status_code == 404
    # Another web process revokes it: this process's copy is not told.
    ApiKey.objects.filter(pk=client.key.pk).update(revoked_at=timezone.now())
    started = timezone.now()
    while _get(client).status_code == 404:
        assert (timezone.now() - started).total_seconds() < 3  # 1 s, and slack for a busy box
        time.sleep(0.05)
    _refusal(_get(client), 403, "api_key_revoked")


def test_a_missing_scope_is_403_and_names_the_scope():
    template = TemplateFactory(slug="welcome")
    reader = api_client(scopes=["messages:read"])
    error = _refusal(
        reader.post(URL, {"template": "welcome", "to": "a@example.com"}, format="json"),
        403,
        "missing_scope",
    )
    assert "messages:send" in error["message"]
    sender = api_client(scopes=["messages:send"])
    _refusal(_get(sender), 403, "missing_scope")
    nothing = api_client(scopes=[])
    _refusal(_get(nothing), 403, "missing_scope")
    assert not Notification.objects.exists() and template.pk


def test_a_method_no_view_answers_is_405_not_a_scope_refusal():
    answer = api_client().put(f"{URL}/1", {}, format="json")
    _refusal(answer, 405, "method_not_allowed")


# -- the key itself -----------------------------------------------------------------------------


def test_options_is_answered_to_a_key_with_the_scope_of_a_view_without_get():
    """OPTIONS takes GET's scope; an action (POST /jobs/{id}/cancel) has none, and was refused
    to every key, one with every scope included (found by the contract tests' probe)."""
    path = "/api/v1/jobs/1/cancel"
    answer = api_client(scopes=["jobs:send"]).options(path)
    assert answer.status_code == 200, answer.content
    assert answer["Allow"] == "POST, OPTIONS"
    _refusal(api_client(scopes=["jobs:read"]).options(path), 403, "missing_scope")
    assert api_client(scopes=["messages:read"]).options(URL).status_code == 200


def test_a_key_is_kept_only_as_its_digest():
    issued = api_key_create(name="shop", scopes=["messages:send"], test=True)
    # (The secret is base64url: it may hold underscores itself.)
    *prefix_parts, secret = issued.secret.split("_", 3)
    prefix = "_".join(prefix_parts)
    assert prefix == issued.key.prefix and prefix.startswith("mw_test_")
    assert len(secret) >= 43  # 256 bits, base64url
    row = ApiKey.objects.get(pk=issued.key.pk)
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM campaigns_apikey WHERE id = %s", [row.pk])
        stored = " ".join(str(value) for value in cursor.fetchone())
    assert secret not in stored and issued.secret not in stored


def test_a_secret_with_underscores_in_it_works():
    # base64url: about half of all secrets hold an "_", which also separates the prefix.
    client = next(
        c
        for c in (api_client(scopes=["messages:read"]) for _ in range(200))
        if "_" in c.secret.split("_", 3)[3]
    )
    assert _get(client).status_code == 404


def test_unknown_scopes_are_refused_when_a_key_is_made():
    with pytest.raises(ValueError, match="unknown scopes: messages:delete"):
        api_key_create(name="x", scopes=["messages:send", "messages:delete"])
    assert not ApiKey.objects.exists()


# -- a staff user's session (the browsable API) --------------------------------------------------


def _session(*, perms=(), staff=True) -> APIClient:
    user = User.objects.create_user(
        username=f"someone{User.objects.count()}", password="x", is_staff=staff
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="campaigns", codename__in=perms)
    )
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def receipt():
    return TemplateFactory(slug="receipt", subject="Order {{ order }}")


def test_a_staff_session_with_the_permissions_sends_and_reads(receipt, ses, eager_celery):
    client = _session(perms=["add_notification", "view_notification"])
    answer = client.post(
        URL, {"template": "receipt", "to": "ada@example.com", "personalisation": {"order": "7"}},
        format="json",
    )  # fmt: skip
    assert answer.status_code == 202, answer.content
    message_id = answer.json()["id"]
    shown = client.get(f"{URL}/{message_id}")
    assert shown.status_code == 200 and shown.json()["status"] == "sent"
    # The browsable API, as a browser asks for it.
    page = client.get(f"{URL}/{message_id}", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert b"Message Detail" in page.content
    # A session's message belongs to no key.
    assert Notification.objects.get(pk=message_id).request.api_key_id is None


def test_a_staff_session_without_the_permission_is_403(receipt):
    viewer = _session(perms=["view_notification"])
    error = _refusal(
        viewer.post(URL, {"template": "receipt", "to": "a@example.com"}, format="json"),
        403,
        "permission_denied",
    )
    assert "campaigns.add_notification" in error["message"]
    _refusal(_session(perms=[]).get(f"{URL}/1"), 403, "permission_denied")
    assert not Notification.objects.exists()


def test_a_session_that_is_not_staff_is_403_whatever_its_permissions():
    client = _session(perms=["add_notification", "view_notification"], staff=False)
    _refusal(client.get(f"{URL}/1"), 403, "permission_denied")


def test_an_anonymous_session_is_401():
    client = APIClient()
    client.get("/admin/login/")  # a session cookie, no user
    _refusal(client.get(f"{URL}/1"), 401, "not_authenticated")
    page = client.get(f"{URL}/1", HTTP_ACCEPT="text/html")  # the browsable API says so too
    assert page.status_code == 401 and page["Content-Type"].startswith("text/html")


def test_a_session_post_needs_the_csrf_token(receipt):
    user = User.objects.create_superuser(username="boss", password="x")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    answer = client.post(URL, {"template": "receipt", "to": "a@example.com"}, format="json")
    error = _refusal(answer, 403, "permission_denied")
    assert "CSRF" in error["message"]
    assert not Notification.objects.exists()

"""The lean route of POST /api/v1/messages (campaigns.api.direct): what it takes, what it
leaves to Django, and that it answers exactly as the DRF view does (status, body, headers),
whatever the request. Every other test under tests/api goes through it too (the `lean_route`
fixture routes the test clients as config.wsgi routes production)."""

import io
import json
import logging
import threading
from datetime import timedelta

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test import RequestFactory
from django.utils import timezone

import config.wsgi
from campaigns.api import direct, views
from campaigns.apikeys import api_key_revoke
from campaigns.models import Contact, IdempotencyRecord, MessageRequest, Notification
from tests.api.helpers import api_client
from tests.api.test_messages_errors import GOOD, POSTS, assert_error_shape
from tests.conftest import call_wsgi
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/messages"


@pytest.fixture
def template():
    return TemplateFactory(slug="receipt", subject="Order {{ order }}", html="<p>{{ order }}</p>")


@pytest.fixture
def client():
    client = api_client()
    client.raise_request_exception = False  # a 500 must show as one, not as a test error
    return client


def headers_of(answer) -> dict:
    return {k: v for k, v in answer.items() if k != "Content-Length"}


def both(lean_route, send) -> tuple:
    """`send()` through the lean route, then through Django's stack alone."""
    before = lean_route.answered
    lean = send()
    assert lean_route.answered == before + 1, "the lean route did not answer"
    lean_route.enabled = False
    try:
        plain = send()
    finally:
        lean_route.enabled = True
    assert lean_route.answered == before + 1
    return lean, plain


def assert_same(lean, plain) -> None:
    assert lean.status_code == plain.status_code, (lean.content[:300], plain.content[:300])
    assert lean.content == plain.content
    assert headers_of(lean) == headers_of(plain)


# The error table's requests that the lean route takes (the rest are the fall-through tests').
# (An empty body: the test client sends no Content-Type with it.)
LEAN_POSTS = [c for c in POSTS if c[1] and c[2] == "application/json" and c[3] != 413]


@pytest.mark.parametrize(
    ("raw", "content_type"), [case[1:3] for case in LEAN_POSTS], ids=[c[0] for c in LEAN_POSTS]
)
def test_the_lean_route_answers_a_bad_body_exactly_as_the_view(
    template, client, lean_route, raw, content_type
):
    lean, plain = both(
        lean_route,
        lambda: client.generic(
            "POST", URL, raw, content_type=content_type, HTTP_IDEMPOTENCY_KEY="k1"
        ),  # fmt: skip
    )
    assert_same(lean, plain)
    assert lean.status_code in (400, 422)
    assert not Notification.objects.exists()


def _key_client(**fields):
    c = api_client(**fields)
    c.raise_request_exception = False
    return c


KEYS = {
    "no Bearer": lambda: ("Basic abc", None),
    "Bearer alone": lambda: ("Bearer ", None),
    "not a key": lambda: ("Bearer mw_live_zzzz", None),
    "unknown prefix": lambda: ("Bearer mw_live_0123abcd_secret", None),
    "NUL": lambda: ("Bearer mw_live_0123abcd_se\x00cret", None),
    "CR/LF": lambda: ("Bearer mw_live_0123abcd_se\r\ncret", None),
    "wrong secret": lambda: ("Bearer " + _key_client().secret + "x", None),
    "expired": lambda: (
        "Bearer " + _key_client(expires_at=timezone.now() - timedelta(seconds=1)).secret,
        None,
    ),
    "revoked": lambda: ("Bearer " + _revoked().secret, None),
    "no messages:send": lambda: ("Bearer " + _key_client(scopes=["messages:read"]).secret, None),
}


def _revoked():
    c = _key_client()
    api_key_revoke(key=c.key)
    return c


@pytest.mark.parametrize("case", list(KEYS))
def test_the_lean_route_refuses_keys_exactly_as_the_view(template, lean_route, case):
    header, _ = KEYS[case]()
    c = _key_client()
    c.credentials(HTTP_AUTHORIZATION=header)
    lean, plain = both(lean_route, lambda: c.post(URL, GOOD, format="json"))
    assert_same(lean, plain)
    assert lean.status_code in (401, 403)
    if lean.status_code == 401:
        assert lean["WWW-Authenticate"] == "Bearer"
    assert_error_shape(lean, lean.status_code, lean.json()["errors"][0]["code"])
    assert not Notification.objects.exists()


def test_the_rate_limit_answers_429_with_retry_after_on_both_routes(
    template, client, lean_route, settings
):
    settings.API_RATE_LIMIT_PER_SECOND = 0.001  # one request, then ~17 minutes to the next
    settings.API_RATE_LIMIT_BURST = 1
    assert client.post(URL, GOOD, format="json").status_code == 202
    lean, plain = both(lean_route, lambda: client.post(URL, GOOD, format="json"))
    assert_same(lean, plain)
    assert_error_shape(lean, 429, "rate_limited", "")
    assert int(lean["Retry-After"]) >= 1
    assert Notification.objects.count() == 1


def test_an_accepted_message_is_answered_as_the_view_answers_it(template, client, lean_route):
    lean, plain = both(lean_route, lambda: client.post(URL, GOOD, format="json"))
    assert (lean.status_code, plain.status_code) == (202, 202)
    assert headers_of(lean) == headers_of(plain)
    first, second = lean.json(), plain.json()
    assert first.keys() == second.keys() == {"id", "status"}
    assert Notification.objects.get(pk=first["id"]).status == first["status"] == "created"
    assert MessageRequest.objects.filter(pk__in=[first["id"], second["id"]]).count() == 2


def test_an_idempotent_replay_and_a_reused_key_are_answered_as_the_view(
    template, client, lean_route
):
    first = client.post(URL, GOOD, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 202
    replay, plain = both(
        lean_route, lambda: client.post(URL, GOOD, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    )
    assert_same(replay, plain)
    assert replay.json() == first.json() and replay["Idempotent-Replayed"] == "true"
    other = {**GOOD, "to": "bob@example.com"}
    reused, plain = both(
        lean_route, lambda: client.post(URL, other, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    )
    assert_same(reused, plain)
    assert_error_shape(reused, 409, "idempotency_key_reused", "Idempotency-Key")
    assert Notification.objects.count() == 1


# (id, what the client sends beyond the key and a good JSON body): Django answers these.
FALL_THROUGH = [
    ("a query string", {"QUERY_STRING": "format=json"}),
    ("Accept: text/html", {"HTTP_ACCEPT": "text/html"}),
    ("Accept: application/xml", {"HTTP_ACCEPT": "application/xml"}),
    ("Accept with a quality", {"HTTP_ACCEPT": "application/json; q=0.9"}),
    ("a cookie", {"HTTP_COOKIE": "sessionid=abc"}),
    ("text/plain", {"CONTENT_TYPE": "text/plain"}),
    ("JSON in latin-1", {"CONTENT_TYPE": "application/json; charset=latin-1"}),
    ("JSON with another parameter", {"CONTENT_TYPE": "application/json; x=1"}),
    ("no Content-Length", {"CONTENT_LENGTH": ""}),
    ("a Content-Length that is not a number", {"CONTENT_LENGTH": "12a"}),
    ("a Transfer-Encoding", {"HTTP_TRANSFER_ENCODING": "chunked"}),
    ("no Authorization", {"HTTP_AUTHORIZATION": ""}),
]


@pytest.mark.parametrize(
    ("extra",), [c[1:] for c in FALL_THROUGH], ids=[c[0] for c in FALL_THROUGH]
)
def test_what_the_lean_route_does_not_take_goes_to_django_untouched(template, extra):
    raw = json.dumps(GOOD).encode()
    environ = RequestFactory().generic(
        "POST", URL, raw, content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {_key_client().secret}",
    ).environ  # fmt: skip
    environ.update(extra)
    assert direct.messages_direct(environ) is None
    assert environ["wsgi.input"].read() == raw  # nothing read: Django reads it whole


def test_a_body_over_the_views_limit_goes_to_django(template, client, lean_route):
    big = json.dumps({**GOOD, "reference": "r" * (1024 * 1024)}).encode()
    answer = client.generic("POST", URL, big, content_type="application/json")
    assert lean_route.answered == 0
    assert_error_shape(answer, 413, "request_too_large", "")


def test_a_staff_session_goes_to_django(template, admin_client, lean_route):
    answer = admin_client.post(URL, GOOD, content_type="application/json")
    assert answer.status_code == 202, answer.content
    assert lean_route.answered == 0


def test_the_other_methods_and_paths_go_to_django(template, client, lean_route):
    assert client.get(URL).status_code == 200
    assert client.post(f"{URL}/", GOOD, format="json").status_code == 404
    assert client.put(URL, GOOD, format="json").status_code == 405
    assert lean_route.answered == 0


def test_an_unexpected_failure_is_djangos_500_logged_without_the_body(
    template, client, lean_route, monkeypatch, caplog
):
    def fail(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views, "message_create", fail)
    with caplog.at_level(logging.INFO):
        lean, plain = both(lean_route, lambda: client.post(URL, GOOD, format="json"))
    assert (lean.status_code, plain.status_code) == (500, 500)
    assert lean.content == plain.content
    assert "ada@example.com" not in caplog.text and "A-17" not in caplog.text
    assert not Notification.objects.exists()


def test_a_refusal_is_logged_as_djangos_handler_logs_it(template, client, lean_route, caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        lean, plain = both(lean_route, lambda: client.post(URL, {**GOOD, "to": "x"}, format="json"))
    assert (lean.status_code, plain.status_code) == (422, 422)
    lines = [r.getMessage() for r in caplog.records if r.name == "django.request"]
    assert lines == ["Unprocessable Entity: /api/v1/messages"] * 2


def test_no_address_or_personalisation_reaches_the_logs(template, client, lean_route, caplog):
    secret = "s3cr3t-personal"
    with caplog.at_level(logging.DEBUG):
        for to in ("ada@example.com", "bad\r\naddress@example.com", "x" * 400):
            client.post(URL, {**GOOD, "to": to, "personalisation": {"p": secret}}, format="json")
        client.generic("POST", URL, b'{"to": "ada@example.com", ' + secret.encode(),
                       content_type="application/json")  # fmt: skip
    assert lean_route.answered == 4
    assert "ada@example.com" not in caplog.text and secret not in caplog.text


# --- production routing ---------------------------------------------------------------------


def test_config_wsgi_routes_the_post_through_the_lean_route(template, monkeypatch):
    """config.wsgi.application as granian calls it: the view's class is never reached."""
    monkeypatch.setattr(views.MessageListCreate, "post", lambda *a: pytest.fail("Django ran"))
    c = _key_client()
    environ = RequestFactory().post(
        URL, json.dumps(GOOD), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {c.secret}", HTTP_IDEMPOTENCY_KEY="w1",
    ).environ  # fmt: skip
    status, headers, content = call_wsgi(config.wsgi.application, environ)
    assert status == 202, content
    assert headers["Content-Length"] == str(len(content))
    assert headers["Content-Type"] == "application/json"
    assert Notification.objects.get(pk=json.loads(content)["id"]).contact.email == (
        "ada@example.com"
    )
    assert IdempotencyRecord.objects.filter(key="w1").exists()


def test_config_wsgi_hands_what_the_lean_route_does_not_take_to_django(template):
    environ = RequestFactory().post(
        URL, json.dumps(GOOD), content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {_key_client().secret}",
    ).environ  # fmt: skip
    status, _, content = call_wsgi(config.wsgi.application, environ)
    assert status == 415
    assert json.loads(content)["errors"][0]["code"] == "unsupported_media_type"


def test_the_wrapper_passes_other_requests_on(template):
    calls = []

    def django(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return WSGIHandler()(environ, start_response)

    app = direct.messages_wsgi(django)
    environ = RequestFactory().get(URL).environ
    status, _, _ = call_wsgi(app, environ)
    assert (status, calls) == (401, [URL])


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_with_one_key_through_the_lean_route_make_one_message(template):
    """Eight threads, one Idempotency-Key, config.wsgi.application: one message, one answer."""
    c = _key_client()
    environ = RequestFactory().post(
        URL, json.dumps(GOOD), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {c.secret}", HTTP_IDEMPOTENCY_KEY="same",
    ).environ  # fmt: skip
    raw = environ["wsgi.input"].read()
    answers, barrier = [], threading.Barrier(8)

    def post():
        from django.db import connection

        own = {**environ, "wsgi.input": io.BytesIO(raw)}
        barrier.wait()
        try:
            answers.append(call_wsgi(config.wsgi.application, own, close_connections=True))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for status, _, _ in answers} == {202}
    assert len({content for _, _, content in answers}) == 1
    assert Notification.objects.count() == 1 == Contact.objects.count()

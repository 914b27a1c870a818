"""The lean route's connection health check (campaigns.api.direct): a connection that answered
this thread's last 202 less than HEALTH_CHECK_IDLE_SECONDS ago is not checked again before
the next message (the check's SELECT 1 was a round trip per message); an idler one is.

The trade-off, shown on a real PostgreSQL backend terminated between two requests: within the
second, the dropped connection answers one request 500 with nothing stored, and the next is
accepted on a new connection; after it, the check finds the drop and the request is accepted."""

import io
import json
import time

import pytest
from django.db import connection

from campaigns.api import direct
from campaigns.apikeys import api_key_create
from campaigns.models import Notification
from config.wsgi import application
from tests.api.helpers import other_connection
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def secret(settings):
    settings.API_RATE_LIMIT_PER_SECOND = 0
    TemplateFactory(slug="receipt", subject="Order {{ order }}", html="<p>{{ order }}</p>")
    return api_key_create(name="tests", scopes=["messages:send"]).secret


def post(secret: str, n: int) -> int:
    """One POST through the WSGI application as the server calls it (the lean route, and
    its end of request: Django's test client skips the connections' per-request handling)."""
    body = json.dumps({"template": "receipt", "to": f"m{n}@example.com"}).encode()
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/api/v1/messages", "QUERY_STRING": "",
        "SERVER_NAME": "testserver", "SERVER_PORT": "80", "HTTP_HOST": "testserver",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": f"Bearer {secret}",
    }  # fmt: skip
    statuses = []
    answer = application(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        b"".join(answer)
    finally:
        if hasattr(answer, "close"):  # the server's job (a list has nothing to close)
            answer.close()
    return int(statuses[0].split()[0])


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def terminate(pid: int) -> None:
    """PostgreSQL drops the connection (as a restart or an idle timeout would), from another
    connection; waits until the backend is gone."""
    with other_connection(autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
        for _ in range(200):
            if not other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                return
            time.sleep(0.01)
    raise AssertionError("the backend did not go")


def sent_to() -> list[str]:
    return sorted(Notification.objects.values_list("contact__email", flat=True))


# (The backend's pid is read before the first POST: a query of the test's between two
# requests would be the check itself.)


def test_a_connection_that_just_answered_is_not_checked_again(secret):
    pid = backend_pid()
    assert post(secret, 1) == 202
    terminate(pid)
    # Within the second: not checked, so the dropped connection fails the message's statement.
    assert post(secret, 2) == 500
    # The broken connection was replaced at the end of that request; nothing of it stored.
    assert post(secret, 3) == 202
    assert sent_to() == ["m1@example.com", "m3@example.com"]


def test_an_idle_connection_is_checked_and_replaced(secret, monkeypatch):
    monkeypatch.setattr(direct, "HEALTH_CHECK_IDLE_SECONDS", 0.05)
    pid = backend_pid()
    assert post(secret, 1) == 202
    terminate(pid)
    time.sleep(0.1)
    assert post(secret, 2) == 202  # checked: a new connection, no 500
    assert sent_to() == ["m1@example.com", "m2@example.com"]

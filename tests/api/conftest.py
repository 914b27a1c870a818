"""Fixtures the API tests share."""

import pytest
from django.db import connection
from django.test.client import ClientHandler

from campaigns.api.direct import messages_direct
from tests.conftest import _forget_broker_state


@pytest.fixture
def empty_broker():
    """No queued task, ready message or drain flag of another test, before and after."""
    _forget_broker_state()
    yield
    _forget_broker_state()


@pytest.fixture
def failing_commit():
    """A deferred constraint trigger: it runs at COMMIT, after everything the request wrote,
    and refuses it: the latest point at which a transaction can fail. Yields the function
    that removes it (a test may go on without it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_commit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected failure at commit'; END $$;"
            "CREATE CONSTRAINT TRIGGER test_refuse_commit AFTER INSERT ON campaigns_notification "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_refuse_commit();"
        )

    def remove():
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER IF EXISTS test_refuse_commit ON campaigns_notification;"
                "DROP FUNCTION IF EXISTS test_refuse_commit();"
            )

    yield remove
    remove()


class LeanRoute:
    """The test clients' requests as config.wsgi routes them in production: POST
    /api/v1/messages through the lean route (campaigns.api.direct) first, Django's stack for
    what it does not take. `answered` counts the requests it answered; `enabled = False` sends
    every request to Django (to compare the two)."""

    def __init__(self) -> None:
        self.enabled = True
        self.answered = 0


@pytest.fixture(autouse=True)
def lean_route(monkeypatch) -> LeanRoute:
    route = LeanRoute()
    django_response = ClientHandler.get_response

    def get_response(handler, request):
        forced = (
            getattr(request, "_force_auth_user", None) is not None
            or getattr(request, "_force_auth_token", None) is not None
        )
        if route.enabled and not forced:
            answered = messages_direct(request.environ)
            if answered is not None:
                route.answered += 1
                return answered[1]
        return django_response(handler, request)

    monkeypatch.setattr(ClientHandler, "get_response", get_response)
    return route

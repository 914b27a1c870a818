"""A 500 under /api/ answers in the API's one error shape (JSON), the rest of the site keeps
Django's HTML page, and both are logged as Django logs them (the path and the exception's
type, never its text). The failure is a real database error (a trigger refusing a write)
through Django's whole handler and the production middleware stack."""

import logging
from contextlib import contextmanager

import pytest
from django.db import DatabaseError, connection
from django.test import Client

from tests.api.helpers import api_client
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db


@contextmanager
def writes_refused(table: str):
    """Every INSERT into `table` fails in PostgreSQL, quoting the row (as a constraint or a
    trigger's message may): what reaches the log must not be that text."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_row() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused %', row_to_json(NEW)::text; END $$;"
            f"CREATE TRIGGER test_refuse_row BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_row();"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DROP TRIGGER test_refuse_row ON {table}; DROP FUNCTION test_refuse_row();"
            )


def test_a_500_under_the_api_is_json_in_the_error_shape(caplog):
    TemplateFactory(slug="receipt", subject="Hello", html="<p>Hi</p>")
    client = api_client()
    client.raise_request_exception = False  # answer as the site does, not raise in the test
    with writes_refused("campaigns_messagerequest"), caplog.at_level(logging.ERROR):
        answer = client.post(
            "/api/v1/messages",
            {"template": "receipt", "to": "secret.person@private.example"},
            format="json",
        )
    assert answer.status_code == 500
    assert answer["Content-Type"] == "application/json"
    assert answer.json() == {
        "errors": [
            {
                "code": "server_error",
                "field": "",
                "message": answer.json()["errors"][0]["message"],
            }
        ]
    }
    assert "Retry" in answer.json()["errors"][0]["message"]
    [logged] = [r for r in caplog.records if r.name == "django.request"]
    assert logged.getMessage() == "Internal Server Error: /api/v1/messages"
    assert issubclass(logged.exc_info[0], DatabaseError)  # the database's own error
    assert logged.status_code == 500


def test_a_500_elsewhere_keeps_djangos_html_page(admin_user, caplog):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    with writes_refused("campaigns_contactlist"), caplog.at_level(logging.ERROR):
        answer = client.post("/admin/campaigns/contactlist/add/", {"name": "Secret list"})
    assert answer.status_code == 500
    assert answer["Content-Type"].startswith("text/html")
    assert b"Server Error (500)" in answer.content
    [logged] = [r for r in caplog.records if r.name == "django.request"]
    assert logged.getMessage() == "Internal Server Error: /admin/campaigns/contactlist/add/"


def test_an_unknown_path_under_the_api_is_still_a_404_in_the_shape():
    # (handler500 is the site's: the API's own 404s stay its catch-all's.)
    answer = api_client().get("/api/v1/nothing-here")
    assert answer.status_code == 404
    assert answer.json()["errors"][0]["code"] == "not_found"

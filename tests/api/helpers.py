"""Shared by the API tests: keys and a client that sends them, and a second database
connection beside Django's (another transaction, a watcher)."""

import psycopg
from django.db import connection
from rest_framework.test import APIClient

from campaigns.apikeys import SCOPES, api_key_create


def api_client(*, scopes=tuple(SCOPES), test: bool = False, **key_fields) -> APIClient:
    """A DRF test client carrying a new key's secret; the key is `client.key`."""
    issued = api_key_create(name="tests", scopes=scopes, test=test, **key_fields)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    client.key = issued.key
    client.secret = issued.secret
    return client


def post_message(client, **fields) -> int:
    """POST /api/v1/messages with the template slug `reset` (the recovery tests' template) and
    `fields`; the accepted message's id (asserting the 202)."""
    answer = client.post("/api/v1/messages", {"template": "reset", **fields}, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def other_connection(*, autocommit: bool = False) -> psycopg.Connection:
    """A psycopg connection to the test database, outside Django's (its own transactions)."""
    params = connection.get_connection_params()
    keys = ("dbname", "user", "password", "host", "port")
    return psycopg.connect(**{k: params[k] for k in keys if k in params}, autocommit=autocommit)

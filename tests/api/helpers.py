"""Shared by the API tests: keys and a client that sends them."""

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

"""What the key check costs each request: at most one indexed query (none while the key's
copy is cached), and last_used_at written once a minute, not once a request."""

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.apikeys import LAST_USED_PRECISION, api_key_cache_clear
from campaigns.models import ApiKey
from tests.api.helpers import api_client
from tests.conftest import plan_nodes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def unthrottled(settings):
    settings.API_RATE_LIMIT_PER_SECOND = 0  # these tests count queries, not requests
    api_key_cache_clear()
    yield
    api_key_cache_clear()


def _key_queries(queries, verb: str) -> list[str]:
    return [
        q["sql"] for q in queries if q["sql"].startswith(verb) and "campaigns_apikey" in q["sql"]
    ]


@pytest.mark.parametrize("cache_seconds", [0, 5])
def test_a_hundred_requests_in_a_minute_write_last_used_once(settings, cache_seconds):
    settings.API_KEY_CACHE_SECONDS = cache_seconds
    client = api_client(scopes=["messages:read"])
    assert client.key.last_used_at is None
    with CaptureQueriesContext(connection) as queries:
        for _ in range(100):
            assert client.get("/api/v1/messages/999999").status_code == 404
    [update] = _key_queries(queries, "UPDATE")
    assert '"last_used_at"' in update
    used = ApiKey.objects.get(pk=client.key.pk).last_used_at
    assert timezone.now() - used < LAST_USED_PRECISION
    # One indexed lookup a request without the cache, one in all with it.
    assert len(_key_queries(queries, "SELECT")) == (100 if cache_seconds == 0 else 1)

    # A minute later (moved back rather than waited for), the next request writes it again.
    ApiKey.objects.filter(pk=client.key.pk).update(last_used_at=used - LAST_USED_PRECISION)
    api_key_cache_clear()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            client.get("/api/v1/messages/999999")
    assert len(_key_queries(queries, "UPDATE")) == 1
    assert ApiKey.objects.get(pk=client.key.pk).last_used_at > used


def test_the_lookup_is_one_query_on_the_prefix_index(settings):
    settings.API_KEY_CACHE_SECONDS = 0
    ApiKey.objects.bulk_create(
        ApiKey(name="filler", prefix=f"mw_live_{n:08x}", secret_hash="0" * 64) for n in range(3000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE campaigns_apikey")
    client = api_client(scopes=["messages:read"])
    client.get("/api/v1/messages/999999")  # last_used_at written: the next ones only read
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/messages/999999").status_code == 404
    [lookup] = _key_queries(queries, "SELECT")
    assert "ORDER BY" not in lookup
    assert not _key_queries(queries, "UPDATE")
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {lookup}")
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    scans = [node for node in plan_nodes(plan[0]["Plan"]) if "Scan" in node["Node Type"]]
    assert [node["Node Type"] for node in scans] == ["Index Scan"], scans
    assert re.search(r"prefix", scans[0]["Index Name"]), scans[0]

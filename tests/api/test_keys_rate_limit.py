"""The per-key rate limit, counted in the real Redis: 429 with Retry-After in the one error
shape, keys counted apart, and requests let through (a warning, ids only) while Redis is away
rather than refused or failed."""

import logging
import os
import time

import pytest
import redis
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from campaigns.api.throttling import api_rate_limit_reset, api_rate_limit_take
from tests.api.helpers import api_client

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/messages/999999"  # allowed to a messages:read key, and answered 404


def _forget_counts():
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    stale = list(client.scan_iter("ratelimit:api:*"))
    if stale:
        client.delete(*stale)


@pytest.fixture(autouse=True)
def fresh_counts():
    _forget_counts()
    api_rate_limit_reset()
    yield
    api_rate_limit_reset()


def _limited(answer) -> int:
    """The 429's Retry-After, after checking the answer is one."""
    assert answer.status_code == 429, answer.content
    [error] = answer.json()["errors"]
    assert set(error) == {"code", "field", "message"}
    assert error["code"] == "rate_limited" and error["field"] == ""
    assert answer["Retry-After"].isdigit(), answer["Retry-After"]
    return int(answer["Retry-After"])


def test_beyond_the_burst_a_key_is_refused_429(settings):
    settings.API_RATE_LIMIT_PER_SECOND = 0.2  # slow enough that nothing refills meanwhile
    settings.API_RATE_LIMIT_BURST = 3
    client = api_client(scopes=["messages:read"])
    assert [client.get(URL).status_code for _ in range(3)] == [404] * 3
    assert 1 <= _limited(client.get(URL)) <= 5
    # Another key has its own count.
    assert api_client(scopes=["messages:read"]).get(URL).status_code == 404


def test_after_retry_after_the_key_may_go_again(settings):
    settings.API_RATE_LIMIT_PER_SECOND = 1
    settings.API_RATE_LIMIT_BURST = 1
    client = api_client(scopes=["messages:read"])
    assert client.get(URL).status_code == 404
    retry_after = _limited(client.get(URL))
    assert retry_after == 1  # under a second away, said in whole seconds
    time.sleep(retry_after)
    assert client.get(URL).status_code == 404


def test_retry_after_says_how_long_in_whole_seconds(settings):
    settings.API_RATE_LIMIT_PER_SECOND = 0.1  # one request every 10 s
    settings.API_RATE_LIMIT_BURST = 1
    client = api_client(scopes=["messages:read"])
    assert client.get(URL).status_code == 404
    assert 9 <= _limited(client.get(URL)) <= 10
    # A refused request takes nothing: asking again does not push the time further out.
    assert 9 <= _limited(client.get(URL)) <= 10


def test_the_default_limit_lets_a_burst_of_a_hundred_through(settings):
    assert settings.API_RATE_LIMIT_PER_SECOND == 100 and settings.API_RATE_LIMIT_BURST == 0
    # Counted directly: the test client is slower than 100 requests a second.
    waits = [api_rate_limit_take(who="key:0") for _ in range(120)]
    assert waits[:100] == [0.0] * 100  # one second's worth at once
    refused = [wait for wait in waits[100:] if wait > 0]
    assert refused and all(wait <= 0.01 for wait in refused)  # then one every 10 ms


def test_a_staff_session_is_limited_as_a_key_is(settings):
    settings.API_RATE_LIMIT_PER_SECOND = 1
    settings.API_RATE_LIMIT_BURST = 1
    client = APIClient()
    client.force_login(User.objects.create_superuser(username="boss", password="x"))
    assert client.get(URL).status_code == 404
    _limited(client.get(URL))


def test_while_redis_is_away_requests_go_through_with_a_warning(settings, redis_server, caplog):
    settings.API_RATE_LIMIT_PER_SECOND = 1
    settings.API_RATE_LIMIT_BURST = 1
    client = api_client(scopes=["messages:read"])
    assert client.get(URL).status_code == 404
    _limited(client.get(URL))

    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="campaigns.api.throttling"):
        codes = [client.get(URL).status_code for _ in range(5)]
    assert codes == [404] * 5  # never a 500, never a 429 the limiter cannot back
    warnings = [r.getMessage() for r in caplog.records if r.name == "campaigns.api.throttling"]
    assert len(warnings) == 1, warnings  # then left alone for a while, not logged per request
    assert f"key:{client.key.pk}" in warnings[0]
    assert client.key.prefix not in warnings[0] and "redis://" not in warnings[0]

    redis_server.start()
    api_rate_limit_reset()  # (rather than wait out REDIS_RETRY_SECONDS)
    codes = [client.get(URL).status_code for _ in range(3)]
    assert 429 in codes, codes  # counted again


def test_a_redis_that_hangs_costs_one_request_its_timeout(settings, caplog):
    settings.API_RATE_LIMIT_PER_SECOND = 1
    settings.API_RATE_LIMIT_BURST = 1
    client = api_client(scopes=["messages:read"])
    assert client.get(URL).status_code == 404
    admin = redis.Redis.from_url(os.environ["REDIS_URL"])
    admin.client_pause(5000, all=True)  # Redis takes commands and answers none
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="campaigns.api.throttling"):
            codes = [client.get(URL).status_code for _ in range(5)]
        elapsed = time.monotonic() - started
    finally:
        admin.client_unpause()
    assert codes == [404] * 5
    assert elapsed < 1.5, elapsed  # the first waited REDIS_TIMEOUT_SECONDS, the rest not at all
    [warning] = [r.getMessage() for r in caplog.records if r.name == "campaigns.api.throttling"]
    assert "TimeoutError" in warning and f"key:{client.key.pk}" in warning

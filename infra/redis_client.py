"""The one Redis client factory: which Redis (REDIS_URL, else a Redis broker) and a client per
URL and timeout, shared by the process's threads."""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings

_clients: dict[tuple[str, float], redis.Redis] = {}
_thread_clients = threading.local()


def redis_url() -> str | None:
    """REDIS_URL, else CELERY_BROKER_URL when that is Redis; None without Redis (the demo)."""
    url = getattr(settings, "REDIS_URL", "") or ""
    if url:
        return url
    broker = getattr(settings, "CELERY_BROKER_URL", "") or ""
    return broker if broker.startswith(("redis://", "rediss://")) else None


def redis_client(*, timeout: float) -> redis.Redis | None:
    """This process's client of the Redis (None without one), whose commands fail after
    `timeout` seconds: each caller picks how long a sick Redis may hold it up. redis-py
    rebuilds its pool after a fork, so a client made before one is safe."""
    url = redis_url()
    if url is None:
        return None
    client = _clients.get((url, timeout))
    if client is None:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        _clients[url, timeout] = client
    return client


def redis_thread_client(shared: redis.Redis) -> redis.Redis:
    """This thread's own connection to `shared`'s Redis. A client on a shared pool checks each
    pooled connection for stray data before every command (three more system calls, see
    docs/PERFORMANCE.md); the threads that push on every request are few and long-lived (the
    web server's), so one connection each is cheap. One per shared client (each has its own
    timeout: the API's rate limit and ready list use two)."""
    key = (os.getpid(), id(shared))  # a fork's child must not share its parent's socket
    clients = _thread_clients.__dict__.setdefault("clients", {})
    client = clients.get(key)
    if client is None:
        client = clients[key] = redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=shared.connection_pool.connection_class,
                **shared.connection_pool.connection_kwargs,
            ),
            single_connection_client=True,
        )
    return client


def redis_thread_client_drop() -> None:
    """Forget this thread's connections (after an error): the next command reconnects."""
    _thread_clients.__dict__.clear()


def redis_clients_reset() -> None:
    """Forget this process's clients (tests, changed settings)."""
    _clients.clear()


class ScriptCall:
    """A Lua script's EVALSHA with the same keys and arguments each time, on a
    single-connection client (redis_thread_client's), packed once: redis-py's command
    machinery (the encoding of each argument, its retry and response plumbing) cost ~100 µs a
    call where the round trip itself costs ~30 µs (docs/PERFORMANCE.md). What the client's
    own call does on the way is kept (script_run_packed)."""

    def __init__(self, client: redis.Redis, script, keys: list, args: list) -> None:
        self.client = client
        self.script = script
        self.args = args
        self._packed = script_packed(client, script, keys, args)

    def __call__(self):
        return script_run_packed(self.client, self.script, self._packed)


def script_packed(client: redis.Redis, script, keys: list, args: list):
    """`script`'s EVALSHA with these keys and arguments, as `client`'s connection sends it."""
    return client.connection.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)


def script_run(client: redis.Redis, script, keys: list, args: list):
    """`script` with these keys and arguments on a single-connection client, without
    redis-py's command machinery (ScriptCall's, packed for this call)."""
    return script_run_packed(client, script, script_packed(client, script, keys, args))


def script_run_packed(client: redis.Redis, script, packed):
    """A packed EVALSHA on a single-connection client, doing what the client's own call does
    on the way: the health check, the script loaded when Redis does not have it (NOSCRIPT:
    restarted, flushed), and a dropped connection raised as redis.ConnectionError with the
    socket closed (the caller's to handle, as the client's clients here retry nothing: the
    next call connects again)."""
    connection = client.connection
    try:
        return _send(connection, packed)
    except redis.exceptions.NoScriptError:
        client.script_load(script.script)
    return _send(connection, packed)


def _send(connection, packed):
    connection.send_packed_command(packed)
    return connection.read_response()

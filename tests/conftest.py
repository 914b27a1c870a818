"""Fixtures for real components: the local SES endpoint as a process, a real Celery worker
process, and Celery in eager mode for in-process tests that want the whole send path."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SesEndpoint:
    """The local SES v2 endpoint, and what it accepted."""

    def __init__(self, url: str):
        self.url = url

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the local endpoint, http)
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local)
            return json.loads(response.read() or b"null")

    def reset(self) -> None:
        self._call("POST", "/_local/reset", {})

    def faults(self, **faults) -> None:
        self._call("POST", "/_local/faults", faults)

    def stats(self, **query) -> dict:
        qs = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in query.items())
        return self._call("GET", "/_local/stats" + (f"?{qs}" if qs else ""))

    def messages(self, limit: int = 10_000, **query) -> list[dict]:
        qs = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in query.items())
        return self._call("GET", f"/_local/messages?limit={limit}" + (f"&{qs}" if qs else ""))


@pytest.fixture(scope="session")
def ses_endpoint(tmp_path_factory):
    """Starts `python -m seslocal` and points boto3 at it the standard way."""
    port = _free_port()
    db = tmp_path_factory.mktemp("seslocal") / "ses.sqlite3"
    process = subprocess.Popen(
        [sys.executable, "-m", "seslocal", "--host", "127.0.0.1", "--port", str(port),
         "--db", str(db)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    line = process.stdout.readline()
    assert "listening" in line, f"seslocal did not start: {line!r}"
    url = f"http://127.0.0.1:{port}"
    previous = os.environ.get("AWS_ENDPOINT_URL_SESV2")
    os.environ["AWS_ENDPOINT_URL_SESV2"] = url
    from campaigns.ses import ses_client

    ses_client.cache_clear()
    yield SesEndpoint(url)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)
    if previous is None:
        os.environ.pop("AWS_ENDPOINT_URL_SESV2", None)
    else:
        os.environ["AWS_ENDPOINT_URL_SESV2"] = previous
    ses_client.cache_clear()


@pytest.fixture
def ses(ses_endpoint):
    """The endpoint, emptied and without faults, for one test."""
    ses_endpoint.reset()
    ses_endpoint.faults(throttle=0, error_5xx=0, latency_ms=0)
    yield ses_endpoint
    ses_endpoint.faults(throttle=0, error_5xx=0, latency_ms=0)


@pytest.fixture
def eager_celery(settings):
    """Run tasks inline (in-process tests of the whole path; the e2e tests use a worker)."""
    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager = False
    app.conf.task_eager_propagates = False


def _test_database_url() -> str:
    """DATABASE_URL, but naming the test database pytest-django created."""
    params = connection.settings_dict
    return (
        f"postgres://{params['USER']}:{params['PASSWORD'] or ''}@{params['HOST']}:"
        f"{params['PORT']}/{params['NAME']}"
    )


class WorkerProcess:
    def __init__(self, process: subprocess.Popen, log: Path):
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def celery_worker_process(ses, tmp_path, transactional_db):
    """A real `celery worker` process on the test database and Redis, sending to `ses`."""
    from config.celery import app

    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
        "AWS_ENDPOINT_URL_SESV2": ses.url,
        "LOG_LEVEL": "DEBUG",
    }
    with app.connection_for_write() as conn:  # no task of an earlier test may linger
        for queue in ("transactional", "bulk", "periodic"):
            conn.default_channel.queue_purge(queue)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q",
             "transactional,bulk,periodic", "--concurrency", "2", "--loglevel", "DEBUG",
             "--without-gossip", "--without-mingle", "-n", f"test-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    worker = WorkerProcess(process, log)
    deadline = time.monotonic() + 60
    while "ready." not in worker.output():
        assert process.poll() is None, f"worker died:\n{worker.output()}"
        assert time.monotonic() < deadline, f"worker not ready:\n{worker.output()}"
        time.sleep(0.2)
    yield worker
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(predicate, *, timeout: float = 60, interval: float = 0.2, message: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {message}")
        time.sleep(interval)


# Generated (hypothesis) tests run the same examples on every run, so CI cannot flake on a
# new example; `--hypothesis-profile=explore` searches further by hand.
from hypothesis import settings as hypothesis_settings  # noqa: E402

hypothesis_settings.register_profile("default", derandomize=True, deadline=None)
hypothesis_settings.register_profile("explore", max_examples=2000, deadline=None)
hypothesis_settings.load_profile("default")

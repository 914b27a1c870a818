"""Fixtures for real components: the local SES endpoint as a process, a real Celery worker
process, Celery in eager mode for in-process tests that want the whole send path, and a
logged-in admin page in Debian's chromium (Playwright; never a downloaded browser)."""

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection, connections

ROOT = Path(__file__).resolve().parent.parent

# The markers a test gets from the fixtures it uses (registered in pyproject.toml), so that
# `make test-fast` leaves out every test that starts a worker or a browser, or restarts a
# service, without each test having to say so.
FIXTURE_MARKERS = {
    "celery_worker_process": "worker",
    "celery_workers": "worker",
    "page": "browser",
    "redis_server": "slow",
    "postgres_server": "slow",
}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)
        # Generated (hypothesis) tests run hundreds of examples each: seconds apiece.
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker("slow")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SesEndpoint:
    """The local SES v2 endpoint, and what it accepted."""

    def __init__(self, url: str, log: Path | None = None):
        self.url = url
        self.log = log  # what it wrote to stderr (its log lines)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the local endpoint, http)
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local)
            return json.loads(response.read() or b"null")

    def reset(self) -> None:
        """Forget everything, once the calls still on their way have landed: a worker a test
        stopped may have left calls waiting out injected latency, which would otherwise be
        counted (or refused for a template the reset removed) in the next test."""
        deadline = time.monotonic() + 10
        while self._call("GET", "/_local/health")["sends_in_progress"]:
            assert time.monotonic() < deadline, "the endpoint's calls never finished"
            time.sleep(0.05)
        self._call("POST", "/_local/reset", {})

    def faults(self, **faults) -> None:
        self._call("POST", "/_local/faults", faults)

    def stats(self, **query) -> dict:
        qs = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in query.items())
        return self._call("GET", "/_local/stats" + (f"?{qs}" if qs else ""))

    def messages(self, limit: int = 10_000, **query) -> list[dict]:
        qs = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in query.items())
        return self._call("GET", f"/_local/messages?limit={limit}" + (f"&{qs}" if qs else ""))


@contextlib.contextmanager
def seslocal_running(folder: Path, *args: str):
    """`python -m seslocal` (with `args`) on a free port, its database and log in `folder`,
    and boto3 pointed at it the standard way until the block ends."""
    port = _free_port()
    db, log = folder / "ses.sqlite3", folder / "seslocal.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "seslocal", "--host", "127.0.0.1", "--port", str(port),
             "--db", str(db), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    line = process.stdout.readline()
    assert "listening" in line, f"seslocal did not start: {line!r}\n{log.read_text()}"
    url = f"http://127.0.0.1:{port}"
    previous = os.environ.get("AWS_ENDPOINT_URL_SESV2")
    os.environ["AWS_ENDPOINT_URL_SESV2"] = url
    from campaigns.ses import ses_client_reset

    ses_client_reset()
    try:
        yield SesEndpoint(url, log)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL_SESV2", None)
        else:
            os.environ["AWS_ENDPOINT_URL_SESV2"] = previous
        ses_client_reset()


@pytest.fixture(scope="session")
def ses_endpoint(tmp_path_factory):
    """Starts `python -m seslocal` and points boto3 at it the standard way."""
    with seslocal_running(tmp_path_factory.mktemp("seslocal")) as endpoint:
        yield endpoint


@pytest.fixture
def ses(ses_endpoint):
    """The endpoint, emptied and without faults, for one test."""
    ses_endpoint.reset()
    ses_endpoint.faults(throttle=0, error_5xx=0, latency_ms=0)
    yield ses_endpoint
    ses_endpoint.faults(throttle=0, error_5xx=0, latency_ms=0)


@pytest.fixture(params=["http", "boto3"])
def ses_kind(request, settings, ses):
    """The test runs through each SES client: the lean HTTP one and plain boto3."""
    from campaigns.ses import ses_client_reset

    settings.SES_CLIENT = request.param
    ses_client_reset()
    yield request.param
    ses_client_reset()


@pytest.fixture
def ses_unreachable(monkeypatch):
    """SES at a local port nobody listens on, for this test (clients built afresh before and
    after): every call fails as unreachable."""
    from campaigns.ses import ses_client_reset

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", f"http://127.0.0.1:{port}")
    ses_client_reset()
    yield
    monkeypatch.undo()
    ses_client_reset()


@pytest.fixture
def eager_celery(settings):
    """Run tasks inline (in-process tests of the whole path; the e2e tests use a worker)."""
    from campaigns.ready import DRAIN_FLAG_KEY, READY_KEY
    from config.celery import app

    # A drain flag an earlier test left (it lives DRAIN_FLAG_MS) would hold back the drain a
    # message posted here enqueues: this test's messages would never be sent.
    if os.environ.get("REDIS_URL"):
        _redis().delete(READY_KEY, DRAIN_FLAG_KEY)
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

    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
        "AWS_ENDPOINT_URL_SESV2": ses.url,
        "LOG_LEVEL": "DEBUG",
    }
    _forget_broker_state()  # no task, unacked message or send-rate state of an earlier test
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
    stop_process(process)


def stop_process(process: subprocess.Popen, *, grace: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def call_wsgi(application, environ: dict, *, close_connections: bool = False):
    """Call a WSGI application as a server would (granian): (status, headers, body).

    As Django's test client does, the request signals may not close the database connection
    holding the test's transaction, nor may the WSGI fast routes (infra.wsgi_direct) when
    they close a response; `close_connections` lets them (a transactional test)."""
    from unittest import mock

    from django.core import signals
    from django.db import close_old_connections

    started = {}

    def start_response(status, response_headers):
        started.update(status=int(status.split()[0]), headers=dict(response_headers))

    closer = close_old_connections if close_connections else lambda: None
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        with mock.patch("infra.wsgi_direct.close_old_connections", closer):
            iterable = application(environ, start_response)
            try:
                body = b"".join(iterable)
            finally:
                if hasattr(iterable, "close"):  # the server's job (a list has nothing to close)
                    iterable.close()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    return started["status"], started["headers"], body


def wait_for(predicate, *, timeout: float = 60, interval: float = 0.2, message=""):
    """predicate()'s first true value, polled; AssertionError with `message` (a string, or a
    callable asked at the timeout, for the state then) if none comes within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting: {message() if callable(message) else message}"
            )
        time.sleep(interval)


# Generated (hypothesis) tests run the same examples on every run, so CI cannot flake on a
# new example; `--hypothesis-profile=explore` searches further by hand.
from hypothesis import settings as hypothesis_settings  # noqa: E402

hypothesis_settings.register_profile("default", derandomize=True, deadline=None)
hypothesis_settings.register_profile("explore", max_examples=2000, deadline=None)
hypothesis_settings.load_profile("default")
# Derandomised runs keep no example database; what Hypothesis still caches (constants read
# from the source, Unicode tables) goes to the system's temporary folder, not the tree.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "mailwright-hypothesis")
)


# -- fault injection: several worker processes that can be killed, and a restartable Redis ----


def _child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (the prefork pool's processes, for a worker), from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid …": comm may hold spaces or parentheses, so split after it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


class KillableWorker(WorkerProcess):
    """A `celery worker` in its own session (process group), so all of it can be SIGKILLed."""

    def __init__(self, process: subprocess.Popen, log: Path, name: str):
        super().__init__(process, log)
        self.name = name

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def pool_pids(self) -> list[int]:
        return _child_pids(self.process.pid)

    def _inspect(self, method: str) -> list[dict] | None:
        """Its answer to a Celery control query; None if it did not answer (not connected,
        or the broker cannot be reached from here right now)."""
        import redis
        from kombu.exceptions import OperationalError

        from config.celery import app

        # A connection of its own, not one from the app's pool: a pooled one may point at a
        # Redis that has been restarted since ("Connection closed by server").
        try:
            with app.connection_for_write() as connection:
                inspector = app.control.inspect(
                    destination=[self.name], timeout=2.0, limit=1, connection=connection
                )
                return (getattr(inspector, method)() or {}).get(self.name)
        except (OSError, redis.RedisError, OperationalError):
            return None

    def active(self) -> list[dict]:
        """The tasks its pool processes are running (with `worker_pid` and `args`)."""
        return self._inspect("active") or []

    def idle(self) -> bool:
        """Answering, and nothing running, nothing reserved, no retry waiting for its
        countdown."""
        return all(self._inspect(method) == [] for method in ("active", "reserved", "scheduled"))

    def kill_pids(self, pids) -> None:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the whole worker, main process and pool alike (a machine dying)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


_worker_names = itertools.count(1)


class CeleryWorkers:
    """Starts real worker processes on the test database, Redis and `ses` (each may be killed)."""

    def __init__(self, ses_url: str, tmp_path: Path):
        self.ses_url = ses_url
        self.tmp_path = tmp_path
        self.workers: list[KillableWorker] = []

    def start(
        self,
        *,
        concurrency: int = 2,
        env: dict | None = None,
        queues: str = "transactional,bulk,periodic",
    ) -> KillableWorker:
        index = len(self.workers) + 1
        name = f"fault{next(_worker_names)}-{os.getpid()}@test"  # unique in the session
        log = self.tmp_path / f"worker{index}.log"
        worker_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": _test_database_url(),
            "AWS_ENDPOINT_URL_SESV2": self.ses_url,
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q",
                 queues, "--concurrency", str(concurrency),
                 "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-n", name],
                cwd=ROOT, env=worker_env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        worker = KillableWorker(process, log, name)
        self.workers.append(worker)
        wait_for(
            lambda: "ready." in worker.output() or not worker.alive,
            timeout=60,
            interval=0.1,
            message=f"worker {name} ready",
        )
        assert worker.alive, f"worker died:\n{worker.output()}"
        return worker

    def live(self) -> list[KillableWorker]:
        return [worker for worker in self.workers if worker.alive]

    def quiescent(self) -> bool:
        """No task queued, running, reserved or waiting for a retry countdown, in any live
        worker: whatever is still `created` or `sending` now has no batch that will touch it."""
        return _queued("bulk") == 0 and all(worker.idle() for worker in self.live())

    def wait_quiescent(self, *, timeout: float = 60) -> None:
        # Twice in a row: a message can be between the queue and a worker for an instant.
        wait_for(
            lambda: self.quiescent() and self.quiescent(),
            timeout=timeout,
            interval=0.5,
            message="workers idle\n" + "\n".join(w.output()[-3000:] for w in self.live()),
        )

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.output()[-5000:]}" for w in self.workers)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.alive:
                worker.stop()


def _redis():
    import redis

    return redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5)


def _queued(queue: str) -> int:
    return _redis().llen(queue)


def _ready() -> int:
    """Messages on the ready list (campaigns.ready): handed off, no worker has taken them."""
    from campaigns.ready import READY_KEY

    return _redis().llen(READY_KEY)


def _forget_broker_state() -> None:
    """Empty the queues, the messages killed workers had taken (kombu keeps them `unacked` for
    the visibility timeout, an hour), the ready list of messages (campaigns.ready) and the
    send-rate state: nothing carries over."""
    from config.celery import app

    with app.connection_for_write() as conn:
        for queue in ("transactional", "bulk", "periodic", "callbacks"):
            conn.default_channel.queue_purge(queue)
    from campaigns.ready import DRAIN_FLAG_KEY, READY_KEY

    client = _redis()
    stale = [
        "unacked", "unacked_index", READY_KEY, DRAIN_FLAG_KEY, *client.scan_iter("ratelimit:*")
    ]  # fmt: skip
    client.delete(*stale)


@pytest.fixture
def celery_workers(ses, tmp_path, transactional_db):
    """A factory of real worker processes (`celery_workers.start(concurrency=…, env=…)`), all
    stopped at the end; each can be SIGKILLed whole or pool process by pool process."""
    _forget_broker_state()
    workers = CeleryWorkers(ses.url, tmp_path)
    yield workers
    workers.stop_all()
    _forget_broker_state()


class RedisServer:
    """The Redis scripts/with-services.sh started, stopped and started again on the same port
    with the same settings (no persistence: a restart loses every queued message)."""

    def __init__(self):
        self.client = _redis()
        config = {}
        for key in ("port", "bind", "dir", "pidfile", "logfile"):
            config.update(self.client.config_get(key))
        self.config = config

    def running(self) -> bool:
        try:
            return bool(_redis().ping())
        except Exception:  # noqa: BLE001 (any failure means not answering)
            return False

    def stop(self) -> None:
        import redis

        # The server closes the connection as it goes.
        with contextlib.suppress(redis.ConnectionError):
            self.client.shutdown(nosave=True)
        wait_for(lambda: not self.running(), timeout=10, message="redis stopped")

    def start(self) -> None:
        config = self.config
        subprocess.run(
            ["redis-server", "--port", config["port"], "--bind", config["bind"] or "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "yes",
             "--pidfile", config["pidfile"], "--dir", config["dir"],
             "--logfile", config["logfile"]],
            check=True,
        )  # fmt: skip
        wait_for(self.running, timeout=10, message="redis started")


@pytest.fixture
def redis_server():
    """The test session's Redis, restartable; left running whatever the test did."""
    server = RedisServer()
    yield server
    if not server.running():
        server.start()


@contextlib.contextmanager
def redis_buffer(pattern: str):
    """The tracking buffer's Redis, with the keys matching `pattern` deleted before and after
    (a test's records never leak into the next)."""
    from infra import queue

    client = queue.buffer_client()
    assert client is not None, "the tests run with Redis (scripts/with-services.sh)"

    def forget():
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)

    forget()
    try:
        yield client
    finally:
        forget()


def unanalyzed_campaign(n: int, **fields) -> list:
    """A new campaign's `n` notifications (and contacts), written in bulk as a campaign start
    writes them, with no ANALYZE since: the planner knows nothing of them. PostgreSQL only
    (skips the test elsewhere)."""
    from campaigns.models import Contact, Notification
    from tests.factories import CampaignFactory, NotificationFactory

    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL plan")
    campaign = CampaignFactory()
    tag = next(_unanalyzed)
    contacts = Contact.objects.bulk_create(
        Contact(email=f"plan{tag}-{i}@example.org") for i in range(n)
    )
    return Notification.objects.bulk_create(
        NotificationFactory.build(campaign=campaign, contact=contact, **fields)
        for contact in contacts
    )


_unanalyzed = itertools.count()


def plan_nodes(plan: dict) -> list[dict]:
    """Every node of a PostgreSQL EXPLAIN (FORMAT JSON) plan, the root first."""
    return [plan, *(node for child in plan.get("Plans", []) for node in plan_nodes(child))]


class PostgresServer:
    """The PostgreSQL cluster scripts/with-services.sh started, restarted in place (its
    options kept): every connection to it is dropped, as in a failover or a crash."""

    def __init__(self):
        with connection.cursor() as cursor:
            cursor.execute("SHOW data_directory")
            self.data_directory = cursor.fetchone()[0]
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        candidates = [Path(bindir) / "pg_ctl", Path("/usr/lib/postgresql/15/bin/pg_ctl")]
        self.pg_ctl = next((str(c) for c in candidates if c.exists()), "pg_ctl")

    def restart(self) -> None:
        log = str(Path(self.data_directory).parent / "log")  # where the script sends it
        command = [self.pg_ctl, "-D", self.data_directory, "-l", log, "-m", "fast", "-w", "restart"]
        if os.getuid() == 0:  # the cluster runs as postgres (it refuses root)
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)


@pytest.fixture
def postgres_server(transactional_db):
    return PostgresServer()


# Playwright's own server-side code talks to the page from another thread than Django's
# async-unsafe check expects; the test itself touches the database only between steps.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture
def page(live_server, admin_user):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "password")
        page.click("input[type=submit]")
        yield page
        # Queries the test made while Playwright ran opened a connection in Playwright's
        # context (Django keys connections by context), which pytest-django does not close:
        # it stayed open to the end of the run, and the test database could not be dropped.
        # Closed here, inside that context (after the `with`, it is another one: tried).
        connections.close_all()
        browser.close()

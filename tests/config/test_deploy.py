"""Deployment defaults: https only in production (`check --deploy` clean, the server behind the
TLS proxy), the demo still on plain http with an access log free of addresses and tokens,
login throttling, request size limits, docker-compose.yml's exposure, and the production
image without the local SES endpoint."""

import http.client
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from datetime import timedelta

import pytest
import yaml
from django.utils import timezone
from setuptools import find_packages

from tests.config.test_web_server import _image_environment
from tests.conftest import ROOT, _free_port, stop_process, wait_for

HOST = "mail.example.test"
# A token and an address as they would appear in URLs: neither may reach a log.
TOKEN = "AbCdEf0123456789-_tokenVALUE.xyz"
ADDRESS = "ada.lovelace@example.com"


def base_environment() -> dict[str, str]:
    """The process environment without any of the app's settings (the tests' own included)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    return {name: os.environ[name] for name in keep if name in os.environ}


def production_environment(**overrides: str) -> dict[str, str]:
    """What docker-compose.yml gives the app, with nothing listening behind the URLs."""
    return {
        **base_environment(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_BEHIND_TLS_PROXY": "1",
        "DATABASE_URL": "postgres://mailwright:pw@127.0.0.1:9/mailwright",
        "CELERY_BROKER_URL": "redis://:pw@127.0.0.1:9/0",
        "TRACKING_BASE_URL": f"https://{HOST}",
        "TRACKING_BUFFER": "false",
        "ANYMAIL_WEBHOOK_SECRET": f"sns:{secrets.token_urlsafe(16)}",
        "SNS_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        **overrides,
    }


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def request(port, method, path, headers=None, body=b""):
    """One HTTP request, redirects not followed: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


# --- the production image -----------------------------------------------------------------------


BLOCK_DEV_TOOLS = """
import importlib, importlib.abc, pkgutil, sys

class NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("seslocal", "pybars", "pymeta"):
            raise ImportError(name + " is not in the production image")

sys.meta_path.insert(0, NotInTheImage())
# make demo's settings: refused outside DEBUG and a local SES endpoint (test_demo_settings.py).
DEV_ONLY = {"config.settings.demo"}
import django
django.setup()
import config.wsgi  # noqa
for package in ("config", "campaigns", "templates_app", "tracking"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if info.name in DEV_ONLY:
            continue
        importlib.import_module(info.name)
from django.core.management import call_command
call_command("check")
print("imported")
"""


@pytest.mark.slow
def test_the_image_leaves_seslocal_out_and_the_app_runs_without_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert not any(dep.startswith("pybars3") for dep in project["project"]["dependencies"])
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(where=str(ROOT), include=include)
    assert "config" in packages and "tracking" in packages
    assert not [p for p in packages if p.startswith(("seslocal", "tests"))]

    copied = re.findall(r"^COPY\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert copied and not [c for c in copied if c.startswith(("seslocal", "tests", "."))]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "seslocal" in ignored and "tests" in ignored

    # Every module of the app imports, and Django's checks pass, with neither importable.
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DEV_TOOLS],
        cwd=ROOT, env=production_environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr


# --- https only in production ----------------------------------------------------------------


@pytest.mark.slow
def test_check_deploy_is_clean_with_the_production_environment():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    # and it is these settings that make it so
    for variable, value, warning in [
        ("DJANGO_SSL_REDIRECT", "0", "security.W008"),
        ("DJANGO_HSTS_SECONDS", "0", "security.W004"),
        ("DJANGO_SECURE_COOKIES", "0", "security.W012"),
        ("DJANGO_HSTS_INCLUDE_SUBDOMAINS", "0", "security.W005"),
        ("DJANGO_HSTS_PRELOAD", "0", "security.W021"),
    ]:
        result = manage("check", "--deploy", env=production_environment(**{variable: value}))
        assert warning in result.stderr, variable


@pytest.mark.parametrize("value", ["-1", "ten", "1e3"])
def test_numeric_settings_refuse_nonsense(value):
    result = manage("check", env=production_environment(DJANGO_HSTS_SECONDS=value))
    assert result.returncode != 0 and "DJANGO_HSTS_SECONDS" in result.stderr


# --- request sizes ----------------------------------------------------------------------------


def settings_in(env: dict[str, str], *names: str) -> list[str]:
    """The named settings as the app reads them in `env`, as text."""
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps([str(getattr(s, n)) for n in {list(names)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_request_limits_come_from_the_environment():
    env = production_environment(
        DJANGO_MAX_REQUEST_BYTES="1000",
        DJANGO_DATA_UPLOAD_MAX_BYTES="2000",
        DJANGO_DATA_UPLOAD_MAX_FIELDS="30",
        DJANGO_FILE_UPLOAD_MEMORY_BYTES="4000",
    )
    names = [
        "MAX_REQUEST_BYTES", "DATA_UPLOAD_MAX_MEMORY_SIZE", "DATA_UPLOAD_MAX_NUMBER_FIELDS",
        "FILE_UPLOAD_MAX_MEMORY_SIZE",
    ]  # fmt: skip
    assert settings_in(env, *names) == ["1000", "2000", "30", "4000"]
    defaults = ["104857600", "2621440", "1000", "2621440"]
    assert settings_in(production_environment(), *names) == defaults
    env = production_environment(DJANGO_MAX_REQUEST_BYTES="0")
    assert "DJANGO_MAX_REQUEST_BYTES" in manage("check", env=env).stderr


@pytest.mark.django_db
def test_request_bodies_over_the_limit_are_refused(client, settings, tmp_path):
    settings.MAX_REQUEST_BYTES = 1000
    upload = tmp_path / "contacts.csv"
    upload.write_text("email\n" + "a@example.com\n" * 100)  # 1,406 bytes
    with upload.open("rb") as file:
        assert client.post("/admin/login/", {"file": file}).status_code == 413
    assert client.post("/admin/login/", {"username": "x"}).status_code == 200


# --- login throttling -------------------------------------------------------------------------

LOGIN = "/admin/login/?next=/admin/"
USERNAME = "ada_the_admin"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username=USERNAME, password="right-horse-battery", is_staff=True
    )


def login(client, password, username=USERNAME, **extra):
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


@pytest.mark.slow
def test_login_throttling_settings_come_from_the_environment():
    env = production_environment(
        LOGIN_FAILURE_LIMIT="7", LOGIN_COOLOFF_MINUTES="60", DJANGO_TRUSTED_PROXY_COUNT="2"
    )
    names = ("AXES_FAILURE_LIMIT", "AXES_COOLOFF_TIME", "TRUSTED_PROXY_COUNT")
    assert settings_in(env, *names) == ["7", "1:00:00", "2"]
    assert settings_in(production_environment(), *names) == ["5", "0:15:00", "1"]
    demo = production_environment(DJANGO_BEHIND_TLS_PROXY="0", DJANGO_TRUSTED_PROXY_COUNT="2")
    assert settings_in(demo, "TRUSTED_PROXY_COUNT") == ["0"]  # no proxy: the header is ignored


@pytest.mark.django_db
def test_a_correct_login_before_the_limit_works_and_clears_the_count(client, staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "wrong").status_code == 200  # the form again, with its error
    response = login(client, "right-horse-battery")
    assert (response.status_code, response["Location"]) == (302, "/admin/")
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "wrong")
    assert login(client, "right-horse-battery").status_code == 302  # counted from zero again


@pytest.mark.django_db
def test_repeated_failures_lock_the_username_and_address_out(
    client, staff, settings, caplog, admin_client
):
    caplog.set_level(logging.DEBUG)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "wrong")
    response = login(client, "right-horse-battery")  # even the right password
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still not logged in
    # Another address, or another username from this one, is not affected.
    assert login(client, "right-horse-battery", REMOTE_ADDR="10.0.0.2").status_code == 302
    client.logout()
    assert login(client, "x", username="grace").status_code == 200
    # Logs say it happened, never who or from where.
    assert "AXES" in caplog.text
    assert USERNAME not in caplog.text and "127.0.0.1" not in caplog.text
    # Nor does the admin show them, to anyone.
    assert "axes" not in admin_client.get("/admin/").content.decode().lower()
    assert admin_client.get("/admin/axes/accessattempt/").status_code == 404


@pytest.mark.django_db
def test_a_lockout_ends_after_the_cool_off(client, staff, settings):
    from axes.models import AccessAttempt  # (an app of the settings under test)

    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "wrong")
    assert login(client, "right-horse-battery").status_code == 429
    cool_off = settings.AXES_COOLOFF_TIME + timedelta(seconds=1)
    AccessAttempt.objects.update(attempt_time=timezone.now() - cool_off)
    assert login(client, "right-horse-battery").status_code == 302


@pytest.mark.django_db
def test_behind_the_proxy_the_address_is_the_one_the_proxy_saw(client, staff, settings):
    from axes.models import AccessAttempt

    settings.TRUSTED_PROXY_COUNT = 1
    # A client rotating forged X-Forwarded-For entries: the proxy appended its real address.
    for forged in range(settings.AXES_FAILURE_LIMIT):
        xff = f"198.51.100.{forged}, 203.0.113.7"
        login(client, "wrong", HTTP_X_FORWARDED_FOR=xff, REMOTE_ADDR="172.18.0.1")
    xff = "198.51.100.99, 203.0.113.7"
    locked = login(
        client, "right-horse-battery", HTTP_X_FORWARDED_FOR=xff, REMOTE_ADDR="172.18.0.1"
    )
    assert locked.status_code == 429
    assert AccessAttempt.objects.get().ip_address == "203.0.113.7"
    # Someone else behind the same proxy logs in.
    other = login(client, "right-horse-battery", HTTP_X_FORWARDED_FOR="203.0.113.8")
    assert other.status_code == 302


@pytest.mark.parametrize(
    ("xff", "count", "expected"),
    [
        ("203.0.113.7", 1, "203.0.113.7"),
        ("1.1.1.1, 203.0.113.7", 1, "203.0.113.7"),
        ("203.0.113.7, 10.0.0.5", 2, "203.0.113.7"),
        ("2001:db8::1", 1, "2001:db8::1"),
        ("", 1, "172.18.0.1"),  # no header: the proxy's address
        ("203.0.113.7", 2, "172.18.0.1"),  # fewer entries than proxies
        ("not-an-address", 1, "172.18.0.1"),
        ("203.0.113.7\r\nX-Evil: 1", 1, "172.18.0.1"),
        ("203.0.113.7", 0, "172.18.0.1"),  # not behind a proxy: the header is ignored
    ],
)
def test_client_ip(rf, settings, xff, count, expected):
    from config.proxy import client_ip

    settings.TRUSTED_PROXY_COUNT = count
    request = rf.get("/", HTTP_X_FORWARDED_FOR=xff, REMOTE_ADDR="172.18.0.1")
    assert client_ip(request) == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("username", "counted"),
    [
        (b"ada%0D%0AX-Evil:%201", True),
        (b"a" * 10_000, True),  # longer than axes can store: cut, not a 500
        (b"x" * 151, True),
        (b"%FF%FE", True),  # not UTF-8
        (b"%C0%AF", True),
        (b"ada%00", False),  # Django refuses a NUL before any password is checked
    ],
)
def test_hostile_usernames_fail_and_count_like_any_wrong_login(client, staff, username, counted):
    from axes.models import AccessAttempt

    body = b"username=" + username + b"&password=wrong"
    for _ in range(2):
        response = client.post(LOGIN, body, content_type="application/x-www-form-urlencoded")
        assert response.status_code == 200  # the form again, with its error
    assert AccessAttempt.objects.filter(failures_since_start=2).count() == int(counted)


# --- the demo ---------------------------------------------------------------------------------


def demo_environment(var_dir) -> dict[str, str]:
    import runpy

    demo = runpy.run_path(str(ROOT / "scripts" / "demo.py"))  # (its main() only runs as a script)
    return {**base_environment(), **demo["DEMO_ENV"], "MAILWRIGHT_VAR_DIR": str(var_dir)}


@pytest.mark.e2e
def test_the_demo_web_process_serves_http_and_logs_no_addresses_or_tokens(tmp_path):
    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile.demo").read_text().splitlines() if line
    )
    port = _free_port()
    command = procfile["web"].strip().replace("127.0.0.1:8000", f"127.0.0.1:{port}").split()
    assert command[:2] == ["python", "manage.py"] and "runserver" in command
    log = tmp_path / "web.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, *command[1:]],
            cwd=ROOT, env=demo_environment(tmp_path), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def answering():
            assert process.poll() is None, log.read_text()
            try:
                return request(port, "GET", "/admin/login/")
            except OSError:
                return None

        status, headers, body = wait_for(answering, timeout=60, message=log.read_text())
        # Plain http, no HSTS, cookies a browser sends over http.
        assert status == 200 and b"csrfmiddlewaretoken" in body
        assert "Strict-Transport-Security" not in headers
        assert "Secure" not in headers["Set-Cookie"]

        search = f"/admin/campaigns/contact/?q={ADDRESS}&o=1"
        assert request(port, "GET", search)[0] == 302  # to the login page
        assert request(port, "GET", f"/t/o/{TOKEN}.gif?utm_source={ADDRESS}")[0] == 200
        request(port, "GET", f"/t/c/{TOKEN}/3")
        request(port, "GET", f"/t/u/{TOKEN}")
        request(port, "POST", f"/t/c/{TOKEN}/0?e={ADDRESS}")  # 405: Django's warning names the path
        request(port, "GET", f"/nowhere/?q={ADDRESS}")  # 404, ditto
        wait_for(lambda: "GET /admin/campaigns/contact/ HTTP/1.1" in log.read_text(), timeout=10)
    finally:
        stop_process(process)
    output = log.read_text()
    assert "GET /t/o/… HTTP/1.1" in output and "GET /t/c/… HTTP/1.1" in output
    assert "Not Found: /nowhere/" in output
    assert TOKEN not in output and ADDRESS not in output, output
    assert "?q=" not in output and "utm_source" not in output


def test_request_paths_are_redacted_in_every_request_log(caplog):
    caplog.set_level(logging.INFO)
    server = logging.getLogger("django.server")
    server.info('"%s" %s %s', f"GET /admin/x/?q={ADDRESS} HTTP/1.1", "200", "10")
    server.info('"%s" %s %s', f"GET /t/c/{TOKEN}/2 HTTP/1.1", "302", "0")
    server.info('"%s" %s %s', f"GET http://h/t/u/{TOKEN}?a=b HTTP/1.1", "200", "5")
    server.warning("code %d, message %s", 400, f"Bad request syntax ('GET /t/o/{TOKEN}.gif\r\n')")
    server.info(f"raw /t/o/{TOKEN}.gif?q={ADDRESS}")
    logging.getLogger("django.request").warning("Not Found: %s", f"/t/u/{TOKEN}")
    text = caplog.text
    assert TOKEN not in text and ADDRESS not in text
    assert "GET /admin/x/ HTTP/1.1" in text and "GET /t/c/… HTTP/1.1" in text
    assert "Not Found: /t/u/…" in text and "raw /t/o/…" in text


# --- docker-compose.yml -------------------------------------------------------------------------


def compose_file() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_publishes_only_on_loopback():
    published = []
    for name, service in compose_file()["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", name
            else:
                assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", str(port)), (name, port)
            published.append(name)
    assert sorted(published) == ["track", "web"]  # nothing else is published at all


def test_compose_redis_needs_a_password_and_the_app_sends_it():
    services = compose_file()["services"]
    command = services["redis"]["command"]
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?")  # required: compose refuses to start without
    assert services["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD")
    urls = [
        value
        for service in services.values()
        for value in (service.get("environment") or {}).values()
        if isinstance(value, str) and value.startswith("redis://")
    ]
    assert urls and all(re.match(r"redis://:\$\{REDIS_PASSWORD:\?[^}]*\}@", u) for u in urls)
    for name in ("web", "track"):
        assert services[name]["environment"]["DJANGO_BEHIND_TLS_PROXY"].endswith("1}")


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.slow
def test_compose_file_validates_and_requires_its_secrets():
    secrets_env = {
        "DJANGO_SECRET_KEY": "k", "POSTGRES_PASSWORD": "p", "REDIS_PASSWORD": "r",
        "ANYMAIL_WEBHOOK_SECRET": "a:b", "TRACKING_BASE_URL": "https://x",
        "DJANGO_ALLOWED_HOSTS": "x", "SNS_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:t",
    }  # fmt: skip
    for missing in [None, *secrets_env]:
        env = {**base_environment(), **{k: v for k, v in secrets_env.items() if k != missing}}
        result = subprocess.run(
            ["docker-compose", "config"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if missing is None:
            assert result.returncode == 0, result.stderr
            assert "redis://:r@redis:6379/0" in result.stdout
        else:
            assert result.returncode != 0 and missing in result.stderr


# --- behind the TLS proxy ------------------------------------------------------------------------


@pytest.fixture
def production_server(tmp_path):
    """granian as the image runs it, with the production environment and a small body limit."""
    port = _free_port()
    (tmp_path / "static").mkdir()
    env = production_environment(
        **{
            **_image_environment(),  # the Dockerfile's GRANIAN_* (no access log among them)
            "GRANIAN_HOST": "127.0.0.1",
            "GRANIAN_PORT": str(port),
            "GRANIAN_WORKERS": "1",
            "GRANIAN_STATIC_PATH_MOUNT": str(tmp_path / "static"),
            "DJANGO_MAX_REQUEST_BYTES": "1000",
        }
    )
    log = tmp_path / "web.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "granian", "config.wsgi:application"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def answering():
        assert process.poll() is None, log.read_text()
        try:
            return request(port, "GET", "/t/o/x.gif", {"Host": HOST})[0] == 301
        except OSError:
            return False

    try:
        wait_for(answering, timeout=60, message=f"granian did not start:\n{log.read_text()}")
        yield port, env, log
    finally:  # (started or not)
        stop_process(process)


@pytest.mark.e2e
def test_the_production_server_is_https_only_behind_the_proxy(production_server):
    port, env, log = production_server
    https = {"Host": HOST, "X-Forwarded-Proto": "https"}

    # Plain http, the tracking fast routes included, is redirected; through the proxy it is served.
    for path in (f"/t/o/{TOKEN}.gif", f"/t/c/{TOKEN}/0", "/admin/login/"):
        status, headers, _ = request(port, "GET", path, {"Host": HOST})
        assert (status, headers["Location"]) == (301, f"https://{HOST}{path}")
    status, headers, body = request(port, "GET", f"/t/o/{TOKEN}.gif", https)
    assert (status, headers["Content-Type"], body[:6]) == (200, "image/gif", b"GIF89a")

    status, headers, _ = request(port, "GET", "/admin/login/", https)
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert "Secure" in headers["Set-Cookie"] and "csrftoken" in headers["Set-Cookie"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"

    # SNS posts over https through the proxy: the webhook answers (here: no credentials, 401)
    # rather than redirecting, which SNS would not follow.
    webhook = "/webhooks/anymail/amazon_ses/tracking/"
    sns = {"X-Amz-Sns-Message-Type": "Notification", "Content-Type": "text/plain"}
    assert request(port, "POST", webhook, {"Host": HOST, **sns}, b"{}")[0] == 301
    assert request(port, "POST", webhook, {**https, **sns}, b"{}")[0] == 401

    # A body over DJANGO_MAX_REQUEST_BYTES is refused before anything reads it.
    status, _, _ = request(port, "POST", "/admin/login/", https, b"x" * 1001)
    assert status == 413

    # docker-compose.yml's health check, as the container runs it.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in ("web", "track"):
        command = compose["services"][service]["healthcheck"]["test"]
        assert command[:2] == ["CMD", "python"]
        result = subprocess.run([sys.executable, *command[2:]], env=env, timeout=30, check=False)
        assert result.returncode == 0

    # No access log (tracking URLs carry tokens), and none can be switched on by the deployment.
    output = log.read_text()
    assert TOKEN not in output and "GET /" not in output
    for text in ((ROOT / "Dockerfile").read_text(), (ROOT / "docker-compose.yml").read_text()):
        assert "GRANIAN_LOG_ACCESS" not in text and "--access-log" not in text

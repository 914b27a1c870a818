"""seslocal answers only requests that name this machine: a web page cannot reach it through a
name of its own (DNS rebinding) nor post to it from another site through the browser."""

import http.client
import json
import os
import subprocess
import sys

import pytest

from seslocal import serve_in_thread
from tests.conftest import ROOT, _free_port


@pytest.fixture(scope="module")
def server():
    srv, url = serve_in_thread(db=":memory:", allowed_hosts=["seslocal.test"])
    yield srv.server_address[1]
    srv.stop()


def request(port: int, method: str, path: str, headers: dict, body: bytes | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        # skip_host: the Host header is the test's to set (or to leave out)
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            values = value if isinstance(value, list) else [value]
            for one in values:
                connection.putheader(name, one)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8025", "localhost", "LOCALHOST:1", "[::1]:8025", "seslocal.test"],
)
def test_local_names_and_configured_hosts_are_answered(server, host):
    status, body = request(server, "GET", "/_local/health", {"Host": host})
    assert status == 200 and json.loads(body)["ok"] is True


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",  # a rebound name
        "evil.example:8025",
        "127.0.0.1.evil.example",
        "localhost.",
        "0.0.0.0:8025",  # browsers sent requests to 0.0.0.0 to reach local services
        "evil.example@127.0.0.1",
        "127.0.0.1 evil.example",
        "127.0.0.1/x",
        "",
        ["127.0.0.1", "evil.example"],  # two Host headers
        None,  # none at all
    ],
)
def test_other_hosts_are_refused_before_anything_is_done(server, host):
    headers = {} if host is None else {"Host": host}
    status, body = request(server, "POST", "/_local/faults", headers, b'{"throttle": 1}')
    assert status == 403 and b"host" in body.lower()
    status, body = request(server, "GET", "/_local/faults", {"Host": "127.0.0.1"})
    assert json.loads(body)["throttle"] == 0  # the refused request changed nothing


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://127.0.0.1:8025", 200),  # its own page
        ("http://localhost:3000", 200),
        ("https://evil.example", 403),  # a page elsewhere posting through the browser
        ("http://127.0.0.1.evil.example", 403),
        ("null", 403),  # a sandboxed frame, e.g. a message's HTML shown here
        ("file://", 403),
        (["http://127.0.0.1", "https://evil.example"], 403),
    ],
)
def test_cross_site_requests_are_refused(server, origin, status):
    headers = {"Host": "127.0.0.1", "Origin": origin}
    assert request(server, "POST", "/_local/reset", headers, b"{}")[0] == status


def test_the_api_is_guarded_too(server):
    signed = {"Host": "evil.example", "Authorization": "AWS4-HMAC-SHA256 Credential=x"}
    status, _ = request(server, "GET", "/v2/email/account", signed)
    assert status == 403


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_the_cli_takes_allowed_hosts_from_flag_or_environment(how):
    port = _free_port()
    names = "ses.internal, other.internal"
    flag = ["--allowed-hosts", names] if how == "flag" else []
    process = subprocess.Popen(
        [sys.executable, "-m", "seslocal", "--port", str(port), "--db", ":memory:", *flag],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "SESLOCAL_ALLOWED_HOSTS": names if how == "environment" else ""},
    )  # fmt: skip
    try:
        assert "listening" in process.stdout.readline()
        assert request(port, "GET", "/_local/health", {"Host": "other.internal:1"})[0] == 200
        assert request(port, "GET", "/_local/health", {"Host": "ses.internal"})[0] == 200
        assert request(port, "GET", "/_local/health", {"Host": "127.0.0.1"})[0] == 200
        assert request(port, "GET", "/_local/health", {"Host": "third.internal"})[0] == 403
    finally:
        process.terminate()
        process.wait(timeout=10)

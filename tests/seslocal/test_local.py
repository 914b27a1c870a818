"""seslocal's own surface: fault injection, stats, inspection pages, logging and the CLI."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from seslocal import serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
SESSION = boto3.session.Session()
SIMPLE = {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}}


def make_client(url):
    return SESSION.client("sesv2", endpoint_url=url, config=NO_RETRIES, **CREDENTIALS)


def local(url, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(url + path, data=data, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def fetch(url, path):
    with urllib.request.urlopen(url + path, timeout=10) as response:  # noqa: S310
        return response.read().decode()


@pytest.fixture(scope="module")
def server():
    srv, url = serve_in_thread(db=":memory:")
    yield url
    srv.stop()


@pytest.fixture
def url(server):
    local(server, "/_local/reset", {})
    return server


@pytest.fixture
def client(url):
    return make_client(url)


def send(client, to="a@example.com", headers=()):
    content = json.loads(json.dumps(SIMPLE))
    content["Simple"]["Headers"] = [{"Name": n, "Value": v} for n, v in headers]
    return client.send_email(
        FromEmailAddress="s@example.com", Destination={"ToAddresses": [to]}, Content=content
    )


# --- faults ----------------------------------------------------------------------------


def test_throttle_fault(client, url):
    assert local(url, "/_local/faults", {"throttle": 1.0}) == {
        "throttle": 1.0,
        "error_5xx": 0.0,
        "latency_ms": 0.0,
        "seed": None,
        "error_5xx_after_accept": False,
    }
    with pytest.raises(client.exceptions.TooManyRequestsException) as excinfo:
        send(client)
    response = excinfo.value.response
    assert response["Error"]["Code"] == "TooManyRequestsException"
    assert response["Error"]["Message"] == "Maximum sending rate exceeded."
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
    client.get_account()  # only send calls are affected
    stats = local(url, "/_local/stats")
    assert (stats["messages"], stats["throttled"], stats["calls"]["SendEmail"]) == (0, 1, 1)


def test_plain_5xx_records_nothing(client, url):
    local(url, "/_local/faults", {"error_5xx": 1.0, "seed": 3})
    seen = set()
    for _ in range(12):
        with pytest.raises(ClientError) as excinfo:
            send(client)
        response = excinfo.value.response
        seen.add((response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]))
    assert seen == {("InternalFailure", 500), ("ServiceUnavailable", 503)}
    stats = local(url, "/_local/stats")
    assert (stats["messages"], stats["errors_5xx"]) == (0, 12)


def test_5xx_after_accept_records_the_message(client, url):
    local(url, "/_local/faults", {"error_5xx": 1.0, "error_5xx_after_accept": True})
    with pytest.raises(ClientError) as excinfo:
        send(client, to="ambiguous@example.com")
    assert excinfo.value.response["Error"]["Code"] == "InternalFailure"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    stats = local(url, "/_local/stats")
    assert (stats["messages"], stats["recipients"], stats["errors_5xx"]) == (1, 1, 1)
    assert local(url, "/_local/messages?to=ambiguous@example.com")[0]["api"] == "SendEmail"


def test_fault_fractions_are_reproducible_with_a_seed(client, url):
    def outcomes():
        local(url, "/_local/faults", {"throttle": 0.4, "error_5xx": 0.2, "seed": 7})
        result = []
        for _ in range(30):
            try:
                send(client)
                result.append("ok")
            except ClientError as exc:
                result.append(exc.response["Error"]["Code"])
        return result

    first = outcomes()
    assert first == outcomes()
    assert {"ok", "TooManyRequestsException"} <= set(first)
    assert local(url, "/_local/stats")["throttled"] == 2 * first.count("TooManyRequestsException")


def test_latency_fault(client, url):
    local(url, "/_local/faults", {"latency_ms": 150})
    started = time.monotonic()
    send(client)
    assert time.monotonic() - started >= 0.15


def test_latency_overlaps_across_connections(url):
    """Calls are handled one at a time, but the injected latency is waited out before that,
    in parallel: 4 calls of 400 ms on 4 connections take ~400 ms, not 1.6 s."""
    local(url, "/_local/faults", {"latency_ms": 400})
    clients = [make_client(url) for _ in range(4)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(send, client) for client in clients]
        time.sleep(0.2)
        assert local(url, "/_local/health")["sends_in_progress"] == 4
        for future in futures:
            future.result()
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.2
    assert local(url, "/_local/health")["sends_in_progress"] == 0
    assert local(url, "/_local/stats")["calls"]["SendEmail"] == 4


def test_reset_restores_startup_faults(url):
    local(url, "/_local/faults", {"throttle": 0.5})
    local(url, "/_local/reset", {})
    assert local(url, "/_local/faults")["throttle"] == 0.0


@pytest.mark.parametrize(
    "body",
    [{"throttle": 2}, {"throttle": 0.7, "error_5xx": 0.7}, {"bogus": 1}, {"latency_ms": -1}],
)
def test_invalid_faults_are_refused(url, body):
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        local(url, "/_local/faults", body)
    assert excinfo.value.code == 400


def test_faults_and_rate_from_settings():
    srv, url = serve_in_thread(
        max_send_rate=5,
        enforce_rate=True,
        store_bodies=False,
    )
    try:
        client = make_client(url)
        with pytest.raises(client.exceptions.TooManyRequestsException):
            client.send_email(
                FromEmailAddress="s@example.com",
                Destination={"ToAddresses": [f"r{i}@example.com" for i in range(6)]},
                Content=SIMPLE,
            )
        client.send_email(
            FromEmailAddress="s@example.com",
            Destination={"ToAddresses": [f"r{i}@example.com" for i in range(5)]},
            Content=SIMPLE,
        )
        [message] = local(url, "/_local/messages")
        assert message["subject"] == "s" and message["text"] is None  # --no-bodies
        assert local(url, "/_local/stats")["throttled"] == 1
    finally:
        srv.stop()


# --- stats and listing -------------------------------------------------------------------


def test_stats_count_duplicates_overall_and_per_header(client, url):
    send(client, "a@example.com", [("X-Campaign", "1")])
    send(client, "b@example.com", [("X-Campaign", "1")])
    send(client, "A@Example.COM", [("X-Campaign", "2")])  # same mailbox, other case
    send(client, "b@example.com", [("X-Campaign", "1")])

    stats = local(url, "/_local/stats")
    assert {k: stats[k] for k in ("messages", "recipients", "distinct_recipients")} == {
        "messages": 4,
        "recipients": 4,
        "distinct_recipients": 2,
    }
    assert stats["duplicate_recipients"] == 2 and stats["duplicate_deliveries"] == 2
    assert stats["calls"] == {"SendEmail": 4}

    one = local(url, "/_local/stats?header=x-campaign:1")  # header names: any case
    assert (one["messages"], one["recipients"], one["distinct_recipients"]) == (3, 3, 2)
    assert one["duplicate_recipients"] == 1
    two = local(url, "/_local/stats?header=X-Campaign:2")
    assert (two["messages"], two["recipients"], two["duplicate_recipients"]) == (1, 1, 0)
    assert local(url, "/_local/stats?header=X-Campaign:3")["recipients"] == 0


def test_message_listing_filters(client, url):
    ids = [send(client, to)["MessageId"] for to in ("a@example.com", "b@example.com")]
    ids.append(send(client, "a@example.com", [("X-Campaign", "5")])["MessageId"])
    assert [m["message_id"] for m in local(url, "/_local/messages")] == ids[::-1]
    assert [m["message_id"] for m in local(url, "/_local/messages?limit=1")] == [ids[2]]
    to_a = local(url, "/_local/messages?to=A@example.com")
    assert [m["message_id"] for m in to_a] == [ids[2], ids[0]]
    tagged = local(url, "/_local/messages?header=X-Campaign:5&bodies=0")
    assert [m["message_id"] for m in tagged] == [ids[2]] and "text" not in tagged[0]


def test_reset_clears_everything(client, url):
    client.create_email_template(TemplateName="t", TemplateContent={"Subject": "x"})
    send(client)
    local(url, "/_local/reset", {})
    stats = local(url, "/_local/stats")
    assert stats["messages"] == stats["templates"] == stats["recipients"] == 0
    assert stats["calls"] == {}
    with pytest.raises(client.exceptions.NotFoundException):
        client.get_email_template(TemplateName="t")


# --- inspection pages ------------------------------------------------------------------


def test_inspection_pages(client, url):
    client.send_email(
        FromEmailAddress="s@example.com",
        Destination={"ToAddresses": ["page@example.com"]},
        Content={
            "Simple": {
                "Subject": {"Data": "Sale <now> & more"},
                "Body": {
                    "Text": {"Data": "text part"},
                    "Html": {"Data": "<p>html part</p><script>alert(1)</script>"},
                },
                "Headers": [{"Name": "X-Campaign", "Value": "77"}],
            }
        },
    )
    index = fetch(url, "/")
    assert "Sale &lt;now&gt; &amp; more" in index
    assert "page@example.com" in index
    message_id = local(url, "/_local/messages")[0]["message_id"]
    assert f"/_local/messages/{message_id}" in index

    page = fetch(url, f"/_local/messages/{message_id}")
    assert "X-Campaign" in page and "77" in page
    assert "<pre>text part</pre>" in page
    assert "<iframe sandbox=''" in page
    assert "<script>" not in page  # the HTML part is escaped into srcdoc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    with pytest.raises(urllib.error.HTTPError) as excinfo:
        fetch(url, "/_local/messages/nope")
    assert excinfo.value.code == 404
    assert local(url, "/_local/health") == {"ok": True, "sends_in_progress": 0}
    assert local(url, "/_local/config")["store_bodies"] is True


# --- logging ---------------------------------------------------------------------------

SECRET_ADDRESS = "secret.person@private-example.com"
SECRET_SUBJECT = "Confidential subject line"
SECRET_BODY = "Confidential body text"


def send_secrets(url):
    client = make_client(url)
    client.create_email_template(
        TemplateName="secret", TemplateContent={"Subject": "{{s}}", "Text": "{{b}}"}
    )
    data = json.dumps({"s": SECRET_SUBJECT, "b": SECRET_BODY})
    client.send_email(
        FromEmailAddress=f"Sender <{SECRET_ADDRESS}>",
        Destination={"ToAddresses": [SECRET_ADDRESS]},
        Content={
            "Simple": {"Subject": {"Data": SECRET_SUBJECT}, "Body": {"Text": {"Data": SECRET_BODY}}}
        },
    )
    client.send_bulk_email(
        FromEmailAddress=SECRET_ADDRESS,
        DefaultContent={"Template": {"TemplateName": "secret", "TemplateData": data}},
        BulkEmailEntries=[{"Destination": {"ToAddresses": [SECRET_ADDRESS]}}],
    )
    raw = f"From: {SECRET_ADDRESS}\r\nTo: {SECRET_ADDRESS}\r\nSubject: {SECRET_SUBJECT}\r\n\r\n"
    client.send_email(Content={"Raw": {"Data": (raw + SECRET_BODY).encode()}})
    with pytest.raises(client.exceptions.BadRequestException):
        client.send_email(
            FromEmailAddress=SECRET_ADDRESS,
            Destination={"ToAddresses": [SECRET_ADDRESS + " broken@"]},
            Content=SIMPLE,
        )
    local(url, "/_local/messages?to=" + urllib.request.quote(SECRET_ADDRESS))
    assert len(local(url, "/_local/messages?to=" + SECRET_ADDRESS)) == 3


def assert_no_secrets(text):
    for secret in (SECRET_ADDRESS, "secret.person", SECRET_SUBJECT, SECRET_BODY):
        assert secret not in text


def test_logs_carry_no_addresses_subjects_or_bodies(url, caplog):
    caplog.set_level(logging.DEBUG)
    send_secrets(url)
    seslocal_lines = [r.getMessage() for r in caplog.records if r.name.startswith("seslocal")]
    assert any(line.startswith("SendEmail 200") for line in seslocal_lines)
    assert any(line.startswith("SendBulkEmail 200") for line in seslocal_lines)
    assert any("error=BadRequestException" in line for line in seslocal_lines)
    assert_no_secrets("\n".join(seslocal_lines))


# --- the CLI ---------------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serves_logs_safely_and_stops_on_sigterm(tmp_path):
    port = free_port()
    db = tmp_path / "ses.sqlite3"
    stderr_path = tmp_path / "stderr.log"
    env = {**os.environ, "SESLOCAL_MAX_SEND_RATE": "14", "SESLOCAL_FAULTS": '{"latency_ms": 1}'}
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "seslocal", "--port", str(port), "--db", str(db)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        line = process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert line == f"seslocal listening on {url}\n"
        assert make_client(url).get_account()["SendQuota"]["MaxSendRate"] == 14.0
        assert local(url, "/_local/faults")["latency_ms"] == 1.0
        send_secrets(url)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    log = stderr_path.read_text()
    assert "SendBulkEmail 200" in log
    assert_no_secrets(log)
    assert db.exists()

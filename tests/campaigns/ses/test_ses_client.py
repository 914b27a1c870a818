"""The SES hand-off (campaigns.ses): both clients against the local endpoint and its faults,
and against tiny raw servers for what SES itself does not do on request (refuse connections,
cut answers short, answer junk); each failure is one of the four exceptions, results come back
by position, and the lean client's request is boto3's, signed as botocore signs it, and what
anymail built before it."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from unittest import mock

import boto3
import botocore.session
import pytest
from anymail.backends.amazon_ses import AmazonSESV2SendBulkEmailPayload, EmailBackend
from anymail.message import AnymailMessage
from botocore.config import Config
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from campaigns.ses import (
    BulkEntry,
    EntryResult,
    SesOutcomeUnknown,
    SesRejected,
    SesThrottled,
    SesUnreachable,
    ses_client,
    ses_client_reset,
    ses_template_ensure,
)
from campaigns.ses.boto import BotoSesClient
from campaigns.ses.http import HttpSesClient

KINDS = ["http", "boto3"]
FROM = "News <news@example.com>"
TEMPLATE = "tpl"
# botocore's service models loaded once for the module's many clients (~0.3 s each otherwise).
_BOTOCORE = botocore.session.get_session()


def make_client(kind: str, url: str, **config):
    """A client of `kind` on `url`, configured as the factory configures it (plus `config`)."""
    session = boto3.session.Session(botocore_session=_BOTOCORE, region_name="eu-west-1")
    boto3_client = session.client(
        "sesv2", endpoint_url=url, config=Config(**{**settings.SES_CLIENT_CONFIG, **config})
    )
    if kind == "boto3":
        return BotoSesClient(boto3_client)
    return HttpSesClient(boto3_client=boto3_client, credentials=session.get_credentials())


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


def entry(to: str, data: dict | str, *headers: tuple[str, str]) -> BulkEntry:
    return BulkEntry(to, data if isinstance(data, str) else json.dumps(data), headers)


def bulk(client, entries, **kwargs) -> list[EntryResult]:
    return client.send_bulk(
        from_address=kwargs.pop("from_address", FROM),
        template_name=kwargs.pop("template_name", TEMPLATE),
        entries=entries,
        **kwargs,
    )


def simple(client, **kwargs) -> str:
    params = {"from_address": FROM, "to": "r@example.com", "subject": "Hi", "text": "t", "html": ""}
    return client.send_simple(**{**params, **kwargs})


def assert_no_address(err: BaseException) -> None:
    """Nothing of an address in the exception, nor in the causes a traceback would show."""
    shown = []
    while err is not None:
        shown.append(f"{err} {err!r}")
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    assert "@" not in str(shown) and "neil" not in str(shown).lower(), shown


# -- against the local endpoint --------------------------------------------------------------


@pytest.fixture
def endpoint(ses, kind):
    """The local endpoint with the stored template, and a client of `kind` on it."""
    client = make_client(kind, ses.url)
    client.template_create(
        name=TEMPLATE, subject="Hi {{name}}", html="<p>{{name}}{{items.a.b}}</p>", text="{{name}}"
    )
    yield ses, client
    client.close()


def test_bulk_results_come_back_by_position(endpoint):
    """Entries SES refuses alone answer in their place, and every entry goes with its address
    exactly as given: two that a library would fold into one (case) stay two."""
    ses, client = endpoint
    results = bulk(
        client,
        [
            entry("Ann@EXAMPLE.COM", {"name": "Ann"}),
            entry("o'neil@example.ie", "{not json"),  # SES: INVALID_PARAMETER
            entry("b@example.ie", {"items": [1]}),  # the local endpoint: a rendering failure
            entry("ann@example.com", {"name": "Annie"}),
            entry("c@example.com", {"name": "Cy"}, ("List-Unsubscribe", "<https://t.example/u/c>")),
        ],
    )
    assert [r.status for r in results] == [
        "SUCCESS", "INVALID_PARAMETER", "FAILED", "SUCCESS", "SUCCESS"
    ]  # fmt: skip
    assert [r.accepted for r in results] == [True, False, False, True, True]
    assert all("@" not in r.error for r in results)
    assert results[1].error.startswith("Invalid ReplacementTemplateData")
    stored = {m["message_id"]: m for m in ses.messages()}
    assert len(stored) == 3
    by_position = [stored[r.message_id] for r in results if r.accepted]
    assert [(m["to"], m["subject"]) for m in by_position] == [
        (["Ann@EXAMPLE.COM"], "Hi Ann"),
        (["ann@example.com"], "Hi Annie"),
        (["c@example.com"], "Hi Cy"),
    ]
    assert {"name": "List-Unsubscribe", "value": "<https://t.example/u/c>"} in by_position[2][
        "headers"
    ]


def test_hostile_entry_data_costs_only_its_entry(endpoint):
    ses, client = endpoint
    results = bulk(
        client,
        [
            entry("a@example.com", '{"a": ' * 500 + "1" + "}" * 500),
            entry("b@example.com", '["not", "an", "object"]'),
            entry("c@example.com", {"name": "x" * 1_000_000}),
            entry("d@example.com", {"name": "D\r\nBcc: evil@example.com"}),
        ],
    )
    assert [r.status for r in results] == ["SUCCESS", "INVALID_PARAMETER", "SUCCESS", "SUCCESS"]
    stored = {m["message_id"]: m for m in ses.messages()}
    assert stored[results[3].message_id]["subject"] == "Hi D\r\nBcc: evil@example.com"
    assert stored[results[3].message_id]["recipients"] == ["d@example.com"]


def test_bulk_shared_headers_and_configuration_set(endpoint):
    ses, client = endpoint
    results = bulk(
        client,
        [entry("a@example.com", {"name": "A"}, ("List-Unsubscribe", "<https://t.example/u/a>"))],
        headers=[("X-Campaign", "7"), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")],
        configuration_set="events",
    )
    [message] = ses.messages()
    assert message["message_id"] == results[0].message_id
    assert message["configuration_set"] == "events"
    assert message["headers"] == [
        {"name": "X-Campaign", "value": "7"},
        {"name": "List-Unsubscribe-Post", "value": "List-Unsubscribe=One-Click"},
        {"name": "List-Unsubscribe", "value": "<https://t.example/u/a>"},
    ]


def test_simple_send_and_a_non_ascii_from(endpoint):
    ses, client = endpoint
    message_id = simple(
        client,
        from_address="Mailwright Démo <news@exämple.com>",
        to="Zoe@Example.com",
        subject="Grüße",
        text="Zoë",
        html="<p>Zoë</p>",
        headers=[("X-Campaign", "7")],
        configuration_set="events",
    )
    [message] = ses.messages()
    assert message["message_id"] == message_id
    assert message["from"] == "=?utf-8?q?Mailwright_D=C3=A9mo?= <news@xn--exmple-cua.com>"
    assert message["to"] == ["Zoe@Example.com"]
    assert (message["subject"], message["text"], message["html"]) == ("Grüße", "Zoë", "<p>Zoë</p>")
    assert message["headers"] == [{"name": "X-Campaign", "value": "7"}]
    assert message["configuration_set"] == "events"


def test_html_only_simple_send_has_no_text_part(endpoint):
    ses, client = endpoint
    simple(client, text="", html="<p>only</p>")
    [message] = ses.messages()
    assert (message["text"], message["html"]) == (None, "<p>only</p>")


def test_templates_are_created_once_and_the_quota_is_read(endpoint):
    ses, client = endpoint
    client.template_create(name=TEMPLATE, subject="other", html="other", text="")  # exists: kept
    assert bulk(client, [entry("a@example.com", {"name": "A"})])[0].accepted
    assert ses.messages()[0]["subject"] == "Hi A"
    assert client.send_quota().max_send_rate == 1000.0  # the local endpoint's default
    with pytest.raises(SesRejected) as err:  # the local endpoint refuses broken Handlebars
        client.template_create(name="broken", subject="{{#if a}}", html="x", text="")
    assert (err.value.code, err.value.status) == ("BadRequestException", 400)


def test_a_throttled_call_sent_nothing(endpoint):
    ses, client = endpoint
    ses.faults(throttle=1)
    with pytest.raises(SesThrottled) as err:
        bulk(client, [entry("a@example.com", {"name": "A"})])
    assert (err.value.code, err.value.status) == ("TooManyRequestsException", 429)
    with pytest.raises(SesThrottled):
        simple(client)
    assert ses.messages() == []


def test_a_5xx_is_outcome_unknown(endpoint):
    ses, client = endpoint
    ses.faults(error_5xx=1)
    for send in (
        lambda: bulk(client, [entry("a@example.com", {"name": "A"})]),
        lambda: simple(client),
    ):
        with pytest.raises(SesOutcomeUnknown) as err:
            send()
        assert err.value.status in (500, 503)
        assert err.value.code in ("InternalFailure", "ServiceUnavailable")
    assert ses.messages() == []


def test_a_5xx_after_accepting_is_outcome_unknown_and_was_sent(endpoint):
    """Why a 5xx is never retried: SES may have sent the messages already."""
    ses, client = endpoint
    ses.faults(error_5xx=1, error_5xx_after_accept=True)
    with pytest.raises(SesOutcomeUnknown):
        bulk(client, [entry("a@example.com", {"name": "A"}), entry("b@example.com", {"name": "B"})])
    assert sorted(m["to"][0] for m in ses.messages()) == ["a@example.com", "b@example.com"]


def test_no_answer_in_time_is_outcome_unknown(ses, kind):
    ses.faults(latency_ms=1500)
    client = make_client(kind, ses.url, read_timeout=0.5)
    with pytest.raises(SesOutcomeUnknown) as err:
        simple(client)
    assert err.value.code == "ReadTimeoutError"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"from_address": "news@example.com\r\nBcc: x@example.com"}, "InvalidFromAddress"),
        ({"template_name": "missing"}, "NotFoundException"),
        ({"to": "a@example.com\r\nBcc: evil@example.com"}, "BadRequestException"),
        ({"headers": [("X-Campaign", "7\r\nBcc: evil@example.com")]}, "BadRequestException"),
        ({"entry_header": ("List-Unsubscribe", "<x>\r\nBcc: evil@example.com")},
         "BadRequestException"),
        ({"count": 51}, "BadRequestException"),
        ({"count": 0}, "BadRequestException"),
        ({"to": "a\ud800@example.com"}, "SerializationException"),
        ({"from_address": "News <news@☃.example>"}, "InvalidFromAddress"),
        ({"from_address": "Zoë <a@example.com>, Bcc <evil@example.com>"}, "InvalidFromAddress"),
    ],
    ids=["from-crlf", "no-template", "to-crlf", "header-crlf", "entry-header-crlf", "51-entries",
         "no-entries", "lone-surrogate", "from-symbol-domain", "two-froms"],
)  # fmt: skip
def test_a_call_ses_refuses_whole_is_rejected_and_sent_nothing(endpoint, change, code):
    ses, client = endpoint
    change = dict(change)
    own = (change.pop("entry_header"),) if "entry_header" in change else ()
    to, count = change.pop("to", "a@example.com"), change.pop("count", 1)
    entries = [entry(to, {"name": "A"}, *own)] + [
        entry(f"r{i}@example.com", {}) for i in range(1, count)
    ]
    with pytest.raises(SesRejected) as err:
        bulk(client, entries[:count], **change)
    assert err.value.code == code
    assert err.value.status is None or 400 <= err.value.status < 500  # (None: refused here)
    assert_no_address(err.value)
    assert ses.messages() == []


# -- the factory and the settings ------------------------------------------------------------


@pytest.fixture
def fresh_client():
    ses_client_reset()
    yield
    ses_client_reset()


def test_one_client_per_process_of_the_configured_kind(ses, settings, kind, fresh_client):
    settings.SES_CLIENT = kind
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(ses_client())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in seen}) == 1
    assert type(seen[0]) is {"http": HttpSesClient, "boto3": BotoSesClient}[kind]
    # boto3's resolution of the endpoint: AWS_ENDPOINT_URL_SESV2 (set by the `ses` fixture).
    ses_template_ensure(name=TEMPLATE, subject="Hi {{name}}", html="<p>{{name}}</p>", text="")
    ses_template_ensure(name=TEMPLATE, subject="Hi {{name}}", html="<p>{{name}}</p>", text="")
    assert bulk(seen[0], [entry("a@example.com", {"name": "A"})])[0].accepted
    assert ses.stats()["calls"]["SendBulkEmail"] == 1
    ses_client_reset()
    assert ses_client() is not seen[0]


def test_an_unknown_kind_is_refused(settings, fresh_client):
    settings.SES_CLIENT = "smtp"
    with pytest.raises(ImproperlyConfigured):
        ses_client()


def test_the_setting_refuses_an_unknown_kind_at_start():
    env = {**os.environ, "SES_CLIENT": "botocore", "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "SES_CLIENT must be 'http' or 'boto3'" in result.stderr


def _send_in_child(queue) -> None:
    queue.put(ses_client().send_simple(from_address=FROM, to="r@example.com", subject="s",
                                       text="t", html=""))  # fmt: skip


def test_a_forked_child_gets_its_own_client_and_connection(settings, monkeypatch, fresh_client):
    """Two processes reading answers off one socket would take each other's message ids."""
    server = Recorder()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", server.url)
    settings.SES_CLIENT = "http"
    parent = ses_client()
    assert simple(parent) == "m-1"
    assert server.connections == 1
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_send_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=30) == "m-1"
    child.join(timeout=30)
    assert child.exitcode == 0
    assert server.connections == 2  # the child connected on its own
    assert simple(parent) == "m-1" and server.connections == 2  # the parent's is still its own
    server.close()


# -- against tiny raw servers ----------------------------------------------------------------


class TinyServer:
    """A local TCP server: each connection is handled by `_handle` in a thread of its own;
    `connections` counts them."""

    def __init__(self):
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        raise NotImplementedError

    @staticmethod
    def _read_request(reader) -> tuple[str, dict, bytes] | None:
        line = reader.readline()
        if not line:
            return None
        _method, path, _ = line.decode().split(" ", 2)
        headers = {}
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, value = line.decode().split(":", 1)
            headers[name.strip().lower()] = value.strip()
        return path, headers, reader.read(int(headers.get("content-length", 0)))

    def close(self):
        self.sock.close()


class Recorder(TinyServer):
    """Records each request and answers with a canned response."""

    def __init__(self, status=200, body=b'{"MessageId": "m-1"}', headers=()):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.answer = (status, body, headers)
        super().__init__()

    def _handle(self, conn):
        with conn:
            reader = conn.makefile("rb")
            while request := self._read_request(reader):
                self.requests.append(request)
                status, answer, extra = self.answer
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in extra)
                try:
                    conn.sendall(head.encode() + b"\r\n" + answer)
                except OSError:
                    return


class Scripted(TinyServer):
    """Answers each request with the next raw answer given, and closes the connection once
    they are all given."""

    def __init__(self, *answers: bytes):
        self.answers = list(answers)
        super().__init__()

    def _handle(self, conn):
        with conn:
            reader = conn.makefile("rb")
            while self.answers and self._read_request(reader):
                conn.sendall(self.answers.pop(0))


def _bulk_answer(*results: dict) -> bytes:
    return json.dumps({"BulkEmailEntryResults": list(results)}).encode()


def _http(status: int, body: bytes, *headers: str) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
    return (head + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + body


def test_no_connection_is_unreachable(kind):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens
    for url in (refused, "http://ses.nonexistent.invalid"):
        client = make_client(kind, url)
        with pytest.raises(SesUnreachable) as err:
            bulk(client, [entry("a@example.com", {})])
        assert err.value.code == "EndpointConnectionError"
        with pytest.raises(SesUnreachable):
            simple(client)
        with pytest.raises(SesUnreachable):
            client.send_quota()


def test_a_connection_closed_after_the_request_is_outcome_unknown(kind):
    class HangUp(TinyServer):
        def _handle(self, conn):
            with conn:
                self._read_request(conn.makefile("rb"))

    server = HangUp()
    with pytest.raises(SesOutcomeUnknown) as err:
        bulk(make_client(kind, server.url), [entry("a@example.com", {})])
    assert err.value.code == "ConnectionClosedError"
    server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",  # cut short
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n",
        _http(200, b"not json"),
        _http(200, b"[1, 2]"),
        _http(200, b"{}"),
        _http(200, _bulk_answer({"Status": "SUCCESS", "MessageId": "m-1"})),  # 1 result for 2
        _http(200, _bulk_answer({"MessageId": "m-1"}, {"MessageId": "m-2"})),  # no Status
        _http(200, b'{"BulkEmailEntryResults": "SUCCESS"}'),
        _http(200, b'{"BulkEmailEntryResults": [["SUCCESS"], ["SUCCESS"]]}'),
    ],
    ids=["not-http", "no-colon", "cut-short", "negative-length", "bad-chunk", "many-headers",
         "not-json", "not-an-object", "no-results", "fewer-results", "no-status",
         "results-a-string", "results-not-objects"],
)  # fmt: skip
def test_an_unreadable_answer_is_outcome_unknown(kind, answer):
    """SES got the request; what it answered cannot be read: maybe sent."""
    server = Scripted(answer)
    client = make_client(kind, server.url, read_timeout=5)
    with pytest.raises(SesOutcomeUnknown):
        bulk(client, [entry("a@example.com", {}), entry("b@example.com", {})])
    server.close()


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "code"),
    [
        (429, ["x-amzn-ErrorType: TooManyRequestsException:http://internal"], b"{}",
         SesThrottled, "TooManyRequestsException"),
        (400, [], b'{"__type": "com.amazon#Throttling", "message": "Daily message quota exceeded"}',
         SesThrottled, "Throttling"),
        (400, ["x-amzn-ErrorType: LimitExceededException"], b"{}", SesThrottled,
         "LimitExceededException"),
        (400, ["x-amzn-ErrorType: MessageRejected"],
         b'{"message": "Email address is not verified. The following identities failed the check'
         b" in region EU-WEST-1: o'neil@example.ie, Ann@EXAMPLE.COM\"}",
         SesRejected, "MessageRejected"),
        (403, ["x-amzn-ErrorType: SignatureDoesNotMatch"], b'{"message": "no"}', SesRejected,
         "SignatureDoesNotMatch"),
        (400, ["x-amzn-ErrorType: o'neil@example.ie"], b"{}", SesRejected, "400"),
        (500, [], b"not json", SesOutcomeUnknown, "500"),
        (503, ["x-amzn-ErrorType: ServiceUnavailable"], b"{}", SesOutcomeUnknown,
         "ServiceUnavailable"),
        (302, ["Location: http://elsewhere.example/"], b"", SesOutcomeUnknown, "302"),
        # A forwarding proxy's, never SES's: the proxy passed nothing on.
        (407, ['Proxy-Authenticate: Basic realm="p"'], b"<html>", SesUnreachable, "407"),
    ],
    ids=["429", "throttling", "limit-exceeded", "rejected-naming-addresses", "403",
         "address-as-code", "500-not-json", "503", "redirect", "proxy-407"],
)  # fmt: skip
def test_error_answers_are_the_four_exceptions(kind, status, headers, body, error, code):
    server = Recorder(status=status, body=body, headers=[h.split(": ", 1) for h in headers])
    client = make_client(kind, server.url)
    for send in (lambda: bulk(client, [entry("o'neil@example.ie", {})]), lambda: simple(client)):
        with pytest.raises(error) as err:
            send()
        assert type(err.value) is error
        assert (err.value.code, err.value.status) == (code, status)
        assert_no_address(err.value)
    server.close()


def test_entry_errors_are_blanked_and_kept_in_place(kind):
    server = Recorder(
        body=_bulk_answer(
            {"Status": "SUCCESS", "MessageId": "m-1"},
            {"Status": "MESSAGE_REJECTED", "Error": "o'neil@example.ie is on the suppression list"},
            {"Status": "ACCOUNT_THROTTLED"},
        )
    )
    results = bulk(
        make_client(kind, server.url),
        [entry("a@example.com", {}), entry("o'neil@example.ie", {}), entry("c@example.com", {})],
    )
    assert results == [
        EntryResult("SUCCESS", "m-1"),
        EntryResult("MESSAGE_REJECTED", None, "<address> is on the suppression list"),
        EntryResult("ACCOUNT_THROTTLED"),
    ]
    assert [r.retryable for r in results] == [False, False, True]
    server.close()


@pytest.mark.parametrize("method", ["bulk", "simple"])
def test_the_lean_client_sends_the_request_boto3_sends(method):
    server = Recorder(body=_bulk_answer({"Status": "SUCCESS", "MessageId": "m-1"}) if method ==
                      "bulk" else b'{"MessageId": "m-1"}')  # fmt: skip
    for kind in ("boto3", "http"):
        client = make_client(kind, server.url)
        if method == "bulk":
            bulk(client, [entry("o'neil@Example.IE", {"n": "é"}, ("List-Unsubscribe", "<u>"))],
                 headers=[("X-Campaign", "7")], configuration_set="events")  # fmt: skip
        else:
            simple(client, subject="Grüße", text="t", html="<p>h</p>", headers=[("X-C", "7")])
    (boto_path, boto_headers, boto_body), (path, headers, body) = server.requests
    assert path == boto_path
    assert json.loads(body) == json.loads(boto_body)
    assert headers["content-type"] == "application/json"
    for signed in (boto_headers, headers):
        assert signed["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
        assert "/eu-west-1/ses/aws4_request" in signed["authorization"]
    signed_headers = [
        h["authorization"].split("SignedHeaders=")[1].split(",")[0] for h in (boto_headers, headers)
    ]
    assert signed_headers[0] == signed_headers[1], signed_headers
    assert headers["user-agent"].startswith("mailwright/")  # the product, not a library
    assert "app/mailwright" in boto_headers["user-agent"]
    server.close()


@pytest.mark.parametrize("token", [None, "session  token/+="])
@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:4566", "https://email.eu-west-1.amazonaws.com", "https://h.example:443/p"],
)
def test_the_lean_client_signs_exactly_as_botocore_signs(endpoint, token):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    credentials = Credentials("AKID", "secret/key+", token)
    boto3_client = boto3.session.Session(
        botocore_session=_BOTOCORE, region_name="eu-west-1"
    ).client("sesv2", endpoint_url=endpoint)
    lean = HttpSesClient(boto3_client=boto3_client, credentials=credentials)
    path = lean._prefix + "/v2/email/outbound-bulk-emails"
    body = json.dumps({"BulkEmailEntries": [{"n": "é"}]}).encode()
    when = datetime(2026, 11, 30, 23, 59, 58, tzinfo=UTC)
    with mock.patch("campaigns.ses.http._utcnow", return_value=when):
        ours = lean._signed_headers(path, body)
    request = AWSRequest(
        method="POST",
        url=lean.endpoint_url + "/v2/email/outbound-bulk-emails",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        SigV4Auth(credentials, "ses", "eu-west-1").add_auth(request)
    assert ours == dict(request.headers.items())
    assert ours["X-Amz-Date"] == "20261130T235958Z"


def test_no_credentials_is_a_refusal_that_sent_nothing():
    server = Recorder()
    boto3_client = boto3.session.Session(
        botocore_session=_BOTOCORE, region_name="eu-west-1"
    ).client("sesv2", endpoint_url=server.url)
    with pytest.raises(SesRejected) as err:
        simple(HttpSesClient(boto3_client=boto3_client, credentials=None))
    assert err.value.code == "NoCredentialsError"
    assert server.requests == []
    server.close()


def test_the_lean_client_reads_every_http_framing_and_keeps_alive():
    def ok(n: int) -> bytes:
        return b'{"MessageId": "m-%d"}' % n

    first, rest = ok(2)[:5], ok(2)[5:]
    server = Scripted(
        _http(200, ok(1), "x-amzn-RequestId: r-1"),
        # Chunked (with an extension and a trailer), after an interim 100 Continue.
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x;x=1\r\n%s\r\n%x\r\n%s\r\n0\r\nT: 1\r\n\r\n" % (len(first), first, len(rest), rest),
        # The server closes after this one: the next call opens a new connection.
        _http(200, ok(3), "Connection: close"),
    )
    client = make_client("http", server.url)
    assert [simple(client) for _ in range(3)] == ["m-1", "m-2", "m-3"]
    assert server.connections == 1  # kept alive across the first three
    server.answers.append(_http(200, ok(4)))
    assert simple(client) == "m-4"
    assert server.connections == 2
    server.close()


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(kind):
    """A stale kept-alive connection must never make a send ambiguous."""

    class OneAnswerEach(TinyServer):  # closes each connection after one answer, unannounced
        def _handle(self, conn):
            with conn:
                if self._read_request(conn.makefile("rb")):
                    conn.sendall(_http(200, b'{"MessageId": "m-%d"}' % self.connections))

    server = OneAnswerEach()
    client = make_client(kind, server.url)
    assert simple(client) == "m-1"
    time.sleep(0.2)  # the server has closed its side
    assert simple(client) == "m-2"
    server.close()


def test_the_lean_client_keeps_one_connection_per_thread():
    server = Recorder()
    client = make_client("http", server.url)

    def three_calls():
        for _ in range(3):
            assert simple(client) == "m-1"

    threads = [threading.Thread(target=three_calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(server.requests) == 12
    assert server.connections == 4
    server.close()


# -- parity with anymail, which the product sent through before ------------------------------


@pytest.mark.parametrize(
    "from_address", ["News <news@example.com>", "Mailwright Démo <news@exämple.com>"]
)
def test_the_lean_bulk_request_is_what_anymail_built(from_address):
    """The same SendBulkEmail as anymail's AmazonSESV2SendBulkEmailPayload for the same plain
    recipients, headers and data, but for where the headers every message carries alike go:
    once, as the template's Headers (anymail repeats them in every entry), the same messages."""
    to = ["a@example.com", "first.last+tag@sub.example.org", "o'neil@example.ie"]
    data = {address: {"first_name": f"n{i}", "_t": f"tok{i}"} for i, address in enumerate(to)}
    own = {
        address: {"List-Unsubscribe": f"<https://t.example/u/{i}>"} for i, address in enumerate(to)
    }
    shared = {"X-Campaign": "7", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}

    message = AnymailMessage(from_email=from_address, to=to)
    message.template_id = TEMPLATE
    message.merge_global_data = {}
    message.merge_data = data
    message.merge_headers = own
    message.extra_headers = shared
    payload = AmazonSESV2SendBulkEmailPayload(message, {}, EmailBackend())
    payload.finalize_payload()
    theirs = payload.params

    server = Recorder(body=_bulk_answer(*[{"Status": "SUCCESS", "MessageId": "m"}] * 3))
    bulk(
        make_client("http", server.url),
        [BulkEntry(a, json.dumps(data[a]), tuple(own[a].items())) for a in to],
        from_address=from_address,
        headers=tuple(shared.items()),
    )
    ours = json.loads(server.requests[0][2])
    server.close()

    def effective(params: dict) -> list[tuple[dict, dict]]:
        """Each entry's data and its message's headers as SES makes them: the template's
        Headers, replaced by the entry's ReplacementHeaders of the same name."""
        template = params["DefaultContent"]["Template"]
        return [
            (
                json.loads(e["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"]),
                {
                    **{h["Name"].lower(): h["Value"] for h in template.get("Headers", [])},
                    **{h["Name"].lower(): h["Value"] for h in e.get("ReplacementHeaders", [])},
                },
            )
            for e in params.pop("BulkEmailEntries")
        ]  # fmt: skip

    assert [e["Destination"] for e in ours["BulkEmailEntries"]] == [
        e["Destination"] for e in theirs["BulkEmailEntries"]
    ]
    assert effective(ours) == effective(theirs)
    assert ours["DefaultContent"]["Template"].pop("Headers") == [
        {"Name": "X-Campaign", "Value": "7"},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
    ]
    assert ours == theirs

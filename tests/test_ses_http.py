"""The lean SES v2 send client: the request boto3 would send, and boto3's answers and errors."""

import json
import socket
import threading
import time
from datetime import UTC, datetime
from unittest import mock

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from django.conf import settings

from campaigns.ses_http import SesV2HttpClient

BULK = {
    "FromEmailAddress": "news@example.com",
    "DefaultContent": {"Template": {"TemplateName": "tpl", "TemplateData": "{}"}},
    "BulkEmailEntries": [
        {
            "Destination": {"ToAddresses": [f"r{i}@example.com"]},
            "ReplacementEmailContent": {
                "ReplacementTemplate": {"ReplacementTemplateData": json.dumps({"n": f"é{i}"})}
            },
            "ReplacementHeaders": [{"Name": "X-Campaign", "Value": "7"}],
        }
        for i in range(3)
    ],
}
RAW = {
    "FromEmailAddress": "news@example.com",
    "Destination": {"ToAddresses": ["r@example.com"]},
    "Content": {"Raw": {"Data": b"Subject: hi\r\n\r\nbody\r\n"}},
}


def _clients(url: str, **config):
    session = boto3.session.Session(
        region_name="eu-west-1", aws_access_key_id="AK", aws_secret_access_key="SK"
    )
    boto3_client = session.client(
        "sesv2",
        endpoint_url=url,
        config=boto3.session.Config(**{**settings.SES_CLIENT_CONFIG, **config}),
    )
    return boto3_client, SesV2HttpClient(
        boto3_client=boto3_client, credentials=session.get_credentials()
    )


class TinyServer:
    """A local TCP server: each connection is handled by `_handle` in a thread of its own;
    `connections` counts them."""

    def __init__(self):
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
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

    def close(self):
        self.sock.close()


class Recorder(TinyServer):
    """A tiny HTTP server that records each request and answers with a canned response."""

    def __init__(self, status=200, body=b'{"MessageId": "m-1"}', headers=(), delay=0.0):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.answer = (status, body, headers, delay)
        super().__init__()

    def _handle(self, conn):
        with conn:
            reader = conn.makefile("rb")
            while line := reader.readline():
                _method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, value = line.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", 0)))
                self.requests.append((path, headers, body))
                status, answer, extra, delay = self.answer
                time.sleep(delay)
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in extra)
                try:
                    conn.sendall(head.encode() + b"\r\n" + answer)
                except OSError:
                    return


@pytest.mark.parametrize(("method", "params"), [("send_bulk_email", BULK), ("send_email", RAW)])
def test_sends_the_request_boto3_sends(method, params):
    server = Recorder(body=b'{"BulkEmailEntryResults": [], "MessageId": "m-1"}')
    boto3_client, lean = _clients(server.url)
    getattr(boto3_client, method)(**params)
    getattr(lean, method)(**params)
    (boto_path, boto_headers, boto_body), (path, headers, body) = server.requests
    assert path == boto_path
    assert json.loads(body) == json.loads(boto_body)  # same JSON (blobs base64 too)
    assert headers["content-type"] == "application/json"
    # Signed like boto3 signs: SigV4 for service "ses" in the client's region.
    for signed in (boto_headers, headers):
        assert signed["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AK/")
        assert "/eu-west-1/ses/aws4_request" in signed["authorization"]
    signed_headers = [
        h["authorization"].split("SignedHeaders=")[1].split(",")[0] for h in (boto_headers, headers)
    ]
    assert signed_headers[0] == signed_headers[1], signed_headers
    server.close()


@pytest.mark.parametrize("token", [None, "session  token/+="])
@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:4566", "https://email.eu-west-1.amazonaws.com", "https://h.example:443/p"],
)
def test_signs_exactly_as_botocore_signs(endpoint, token):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    credentials = Credentials("AKID", "secret/key+", token)
    session = boto3.session.Session(region_name="eu-west-1")
    boto3_client = session.client("sesv2", endpoint_url=endpoint)
    lean = SesV2HttpClient(boto3_client=boto3_client, credentials=credentials)
    path = lean._prefix + "/v2/email/outbound-bulk-emails"
    body = json.dumps(BULK).encode()
    when = datetime(2026, 11, 30, 23, 59, 58, tzinfo=UTC)
    with mock.patch("campaigns.ses_http._utcnow", return_value=when):
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


def test_answers_come_back_parsed_with_response_metadata():
    server = Recorder(body=b'{"MessageId": "m-42"}', headers=[("x-amzn-RequestId", "req-1")])
    _, lean = _clients(server.url)
    answer = lean.send_email(**RAW)
    assert answer["MessageId"] == "m-42"
    assert answer["ResponseMetadata"] == {"HTTPStatusCode": 200, "RequestId": "req-1"}
    lean.send_email(**RAW)  # the kept-alive connection is reused
    server.close()


@pytest.mark.parametrize(
    ("status", "headers", "body", "code"),
    [
        (429, [("x-amzn-ErrorType", "TooManyRequestsException:http://x")], b"{}", "TooManyRequestsException"),  # noqa: E501
        (400, [], b'{"__type": "com.amazon#MessageRejected", "message": "no"}', "MessageRejected"),
        (500, [], b"not json", "500"),
    ],
)  # fmt: skip
def test_error_answers_raise_clienterror_as_boto3_does(status, headers, body, code):
    server = Recorder(status=status, body=body, headers=headers)
    boto3_client, lean = _clients(server.url)
    with pytest.raises(ClientError) as theirs:
        boto3_client.send_email(**RAW)
    with pytest.raises(ClientError) as ours:
        lean.send_email(**RAW)
    assert ours.value.response["Error"]["Code"] == theirs.value.response["Error"]["Code"] == code
    assert ours.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert ours.value.operation_name == "SendEmail"
    server.close()


def test_no_connection_is_an_endpoint_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens
    _, lean = _clients(url)
    with pytest.raises(EndpointConnectionError):
        lean.send_bulk_email(**BULK)


def test_no_answer_in_time_is_a_read_timeout():
    server = Recorder(delay=1.5)
    _, lean = _clients(server.url, read_timeout=0.5)
    with pytest.raises(ReadTimeoutError):
        lean.send_email(**RAW)
    server.close()


def test_connection_closed_mid_call_is_ambiguous_not_a_connection_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def accept_read_and_hang_up():
        conn, _ = sock.accept()
        conn.recv(65536)
        conn.close()

    threading.Thread(target=accept_read_and_hang_up, daemon=True).start()
    _, lean = _clients(url)
    with pytest.raises(ConnectionClosedError):
        lean.send_email(**RAW)
    sock.close()


class Scripted(TinyServer):
    """A server that answers each request with the next raw answer given."""

    def __init__(self, *answers: bytes):
        self.answers = list(answers)
        super().__init__()

    def _handle(self, conn):
        with conn:
            reader = conn.makefile("rb")
            while self.answers and (line := reader.readline()):
                headers = {}
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, value = line.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                reader.read(int(headers.get("content-length", 0)))
                conn.sendall(self.answers.pop(0))


def test_answers_in_every_http_framing_and_keep_alive():
    def ok(n: int) -> bytes:
        return b'{"MessageId": "m-%d"}' % n

    def sized(n: int, *headers: bytes) -> bytes:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(ok(n))
        return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + ok(n)

    first, rest = ok(2)[:5], ok(2)[5:]
    server = Scripted(
        sized(1, b"x-amzn-RequestId: r-1"),
        # Chunked (with an extension and a trailer), after an interim 100 Continue.
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x;x=1\r\n%s\r\n%x\r\n%s\r\n0\r\nT: 1\r\n\r\n" % (len(first), first, len(rest), rest),
        # The server closes after this one: the next call opens a new connection.
        sized(3, b"Connection: close"),
    )
    _, lean = _clients(server.url)
    answers = [lean.send_email(**RAW) for _ in range(3)]
    assert [a["MessageId"] for a in answers] == ["m-1", "m-2", "m-3"]
    assert answers[0]["ResponseMetadata"] == {"HTTPStatusCode": 200, "RequestId": "r-1"}
    assert server.connections == 1  # kept alive across the first three
    server.answers.append(sized(4))
    assert lean.send_email(**RAW)["MessageId"] == "m-4"
    assert server.connections == 2
    server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",  # cut short
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
    ],
)
def test_a_broken_answer_is_ambiguous(answer):
    """SES got the request; what it answered cannot be read: maybe sent (rows `unknown`)."""
    server = Scripted(answer)
    _, lean = _clients(server.url, read_timeout=2)
    with pytest.raises(ConnectionClosedError):
        lean.send_email(**RAW)
    server.close()

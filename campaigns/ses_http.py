"""A lean SES v2 client for the two send calls, in place of boto3's inside anymail's backend.

Why: on the bulk path botocore spent ~40% of a worker's CPU per SendBulkEmail (measured with
cProfile on 500-recipient batches): it re-serializes anymail's parameters through the API
model (~5 ms for 50 entries), emits a dozen events per call, rebuilds the User-Agent, parses
the answer through the model again. SendBulkEmail and SendEmail are REST-JSON calls whose
body *is* the parameters as JSON, so this client sends them as JSON (orjson), SigV4-signed
exactly as botocore signs it (tested against botocore), over one keep-alive connection per
thread (opened by http.client; the request written and the answer read here), and returns
the JSON answer as it comes. Everything else (credentials, region, endpoint resolution
including `AWS_ENDPOINT_URL_SESV2`, timeouts) comes from the boto3 client anymail opened, so
it is configured exactly as boto3 would be, and every other SES call keeps using boto3.

Errors are raised as the botocore exceptions boto3 would raise, so anymail wraps them the same
way and `campaigns.delivery.classify_send_error` reads them unchanged:
- an HTTP error answer → ClientError with the code and status, as botocore parses them;
- no connection made → EndpointConnectionError / ConnectTimeoutError (SES never saw it);
- a request sent without an answer → ReadTimeoutError / ConnectionClosedError (SES may have
  acted on it: the pipeline flags those rows `unknown`).
There are no retries here, as with SES_CLIENT_CONFIG's one attempt.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import http.client
import json
import select
import socket
import threading
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import orjson
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

# (operation name, HTTP path) of the calls this client makes; both are POSTs of JSON.
OPERATIONS = {
    "send_bulk_email": ("SendBulkEmail", "/v2/email/outbound-bulk-emails"),
    "send_email": ("SendEmail", "/v2/email/outbound-emails"),
}
SIGNING_NAME = "ses"  # SES v2 signs as "ses", like v1


def _json_default(value):
    # Blob members (SendEmail's Content.Raw.Data) travel base64-encoded, as botocore does.
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot send {type(value).__name__} to SES")


class SesV2HttpClient:
    """`send_bulk_email(**params)` and `send_email(**params)` with boto3's answers and errors."""

    def __init__(self, *, boto3_client, credentials) -> None:
        meta = boto3_client.meta
        self.endpoint_url = meta.endpoint_url.rstrip("/")
        self.region = meta.region_name
        self.credentials = credentials
        self.connect_timeout = meta.config.connect_timeout
        self.read_timeout = meta.config.read_timeout
        url = urlsplit(self.endpoint_url)
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._prefix = url.path  # an endpoint may sit under a path
        # The Host header (signed): the port only when it is not the scheme's own.
        default_port = 443 if self._https else 80
        self._canonical_host = (
            self._host if self._port == default_port else f"{self._host}:{self._port}"
        )
        self._local = threading.local()

    def __getattr__(self, name: str):
        if name not in OPERATIONS:
            raise AttributeError(name)
        operation, path = OPERATIONS[name]
        return lambda **params: self._call(operation, self._prefix + path, params)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- one call --------------------------------------------------------------------------

    def _call(self, operation: str, path: str, params: dict) -> dict:
        # orjson: ~0.3 ms → 15 µs for a 50-entry SendBulkEmail (20 kB), measured
        body = orjson.dumps(params, default=_json_default)
        headers = self._signed_headers(path, body)
        connection = self._connection()
        head = "".join(
            [
                f"POST {path} HTTP/1.1\r\nHost: {self._canonical_host}\r\n"
                f"Accept-Encoding: identity\r\nContent-Length: {len(body)}\r\n",
                *(f"{name}: {value}\r\n" for name, value in headers.items()),
                "\r\n",
            ]
        ).encode("latin-1")
        try:
            connection.sock.sendall(head + body)  # one write: no wait for Nagle between two
        except (TimeoutError, OSError) as err:
            # The request may be partly written: SES could have it. Drop the connection.
            self._drop()
            raise ConnectionClosedError(endpoint_url=self.endpoint_url) from err
        try:
            with connection.sock.makefile("rb") as reader:
                status, response_headers, data, will_close = _read_response(reader)
        except TimeoutError as err:
            self._drop()
            raise ReadTimeoutError(endpoint_url=self.endpoint_url) from err
        except (OSError, ValueError) as err:  # closed, cut short or not HTTP: SES may have it
            self._drop()
            raise ConnectionClosedError(endpoint_url=self.endpoint_url) from err
        if will_close:
            self._drop()
        error_type = response_headers.get("x-amzn-errortype", "")
        request_id = response_headers.get("x-amzn-requestid", "")
        metadata = {"HTTPStatusCode": status, "RequestId": request_id}
        if status >= 300:
            raise ClientError(_error_response(status, error_type, data, metadata), operation)
        parsed = orjson.loads(data) if data else {}  # 50 entries' answers: ~5x json's
        parsed["ResponseMetadata"] = metadata
        return parsed

    def _signed_headers(self, path: str, body: bytes) -> dict[str, str]:
        """The request's headers, SigV4-signed as botocore's SigV4Auth signs them.

        Written out for this client's one request shape (a POST of JSON, no query string):
        botocore's signer took ~0.8 ms a call (it rebuilds and re-parses the URL, sorts and
        normalises every header, derives the signing key with four HMACs), this ~40 µs.
        tests/test_ses_http.py checks it against botocore's, header for header.
        """
        credentials = self.credentials.get_frozen_credentials()
        stamp = _utcnow().strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers = {"Content-Type": "application/json", "X-Amz-Date": stamp}
        canonical_headers = (
            f"content-type:application/json\nhost:{self._canonical_host}\nx-amz-date:{stamp}\n"
        )
        signed = "content-type;host;x-amz-date"
        if credentials.token:
            headers["X-Amz-Security-Token"] = credentials.token
            canonical_headers += f"x-amz-security-token:{' '.join(credentials.token.split())}\n"
            signed += ";x-amz-security-token"
        canonical_request = (
            f"POST\n{quote(path, safe='/~')}\n\n{canonical_headers}\n{signed}\n"
            f"{hashlib.sha256(body).hexdigest()}"
        )
        scope = f"{day}/{self.region}/{SIGNING_NAME}/aws4_request"
        string_to_sign = (
            f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n"
            f"{hashlib.sha256(canonical_request.encode()).hexdigest()}"
        )
        key = _signing_key(credentials.secret_key, day, self.region, SIGNING_NAME)
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers

    # -- connections: one per thread, kept alive ------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and _dropped_by_peer(connection):
            # An idle keep-alive connection the server closed: reconnect *before* sending,
            # so a stale connection never turns a send into an ambiguous one.
            self._drop()
            connection = None
        if connection is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = cls(self._host, self._port, timeout=self.connect_timeout)
            try:
                connection.connect()
            except TimeoutError as err:
                raise ConnectTimeoutError(endpoint_url=self.endpoint_url) from err
            except OSError as err:
                raise EndpointConnectionError(endpoint_url=self.endpoint_url) from err
            connection.sock.settimeout(self.read_timeout)
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        self.close()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@functools.lru_cache(maxsize=8)
def _signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    """SigV4's derived key: the same for a whole day (four HMACs, once)."""
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _dropped_by_peer(connection: http.client.HTTPConnection) -> bool:
    """True if the idle connection's socket is readable: the peer closed it (or sent junk)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


_MAX_LINE = 65536  # as http.client: a longer status or header line is not HTTP


def _read_line(reader) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if not line:
        raise ConnectionError("the connection closed before the answer was complete")
    if len(line) > _MAX_LINE or not line.endswith(b"\n"):
        raise ValueError("an answer line is too long or cut short")
    return line


def _read_response(reader) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, {lower-cased header name: value}, body, whether the server closes the
    connection) of one HTTP/1.1 answer. Read here rather than by http.client, whose header
    parsing (the email package's parser) was ~0.36 ms of CPU a call, about as much as
    building the 50 entries. Bodies by Content-Length, chunked, or to the end of the
    connection; interim 1xx answers are skipped."""
    while True:
        version, _, rest = _read_line(reader).partition(b" ")
        if not version.startswith(b"HTTP/") or not rest[:3].isdigit():
            raise ValueError("not an HTTP answer")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        while (line := _read_line(reader)) not in (b"\r\n", b"\n"):
            name, colon, value = line.partition(b":")
            if not colon:
                raise ValueError("a header line without a colon")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if not 100 <= status < 200:
            break
    connection = headers.get("connection", "").lower()
    will_close = "close" in connection or (
        version == b"HTTP/1.0" and "keep-alive" not in connection
    )
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while size := int(_read_line(reader).split(b";", 1)[0].strip(), 16):
            chunks.append(_read_exactly(reader, size))
            _read_line(reader)  # the CRLF after the chunk
        while _read_line(reader) not in (b"\r\n", b"\n"):
            pass  # trailers
        return status, headers, b"".join(chunks), will_close
    if "content-length" in headers:
        return status, headers, _read_exactly(reader, int(headers["content-length"])), will_close
    if status in (204, 304):
        return status, headers, b"", will_close
    return status, headers, reader.read(), True  # delimited by the end of the connection


def _read_exactly(reader, size: int) -> bytes:
    if size < 0:
        raise ValueError("a negative length")
    data = reader.read(size)
    if len(data) < size:
        raise ConnectionError("the connection closed before the answer was complete")
    return data


def _error_response(status: int, error_type: str, data: bytes, metadata: dict) -> dict:
    """The error dict botocore's REST-JSON parser would build: the code from the
    x-amzn-ErrorType header (before any ':'), else the body's `__type` / `code`."""
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = error_type.split(":", 1)[0] or body.get("__type") or body.get("code") or ""
    code = code.rsplit("#", 1)[-1] or str(status)
    message = body.get("message") or body.get("Message") or ""
    return {"Error": {"Code": code, "Message": message}, "ResponseMetadata": metadata}

"""The lean SES client (SES_CLIENT=http): SendBulkEmail and SendEmail as plain HTTP.

Both calls are REST-JSON, so they go as JSON, SigV4-signed exactly as botocore signs them,
over one keep-alive connection per thread; everything else (credentials, region, endpoint,
timeouts, proxy, the rare calls) comes from the boto3 client it is given, so it is configured
exactly as boto3 is. Why: docs/decisions/0001-lean-ses-client.md. Every failure is one of the
four SesErrors (campaigns.ses.base); there are no retries.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import select
import socket
import threading
import urllib.request
from base64 import b64encode
from datetime import UTC, datetime
from importlib import metadata
from urllib.parse import quote, unquote, urlsplit

import orjson
from botocore.exceptions import BotoCoreError, NoCredentialsError, PartialCredentialsError
from django.core.exceptions import ImproperlyConfigured

from campaigns.ses import calls
from campaigns.ses.base import (
    SesOutcomeUnknown,
    SesRejected,
    SesUnreachable,
)
from campaigns.ses.boto import BotoSesClient
from infra.http_answers import answer_head, answer_line

# The HTTP path of each call this client makes (both POSTs of JSON).
PATHS = {
    "SendBulkEmail": "/v2/email/outbound-bulk-emails",
    "SendEmail": "/v2/email/outbound-emails",
}
SIGNING_NAME = "ses"  # SES v2 signs as "ses", like v1


def _user_agent() -> str:
    try:
        version = metadata.version("mailwright")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"mailwright/{version} (campaigns.ses.http)"


USER_AGENT = _user_agent()  # (not signed, as botocore does not sign its own)


class HttpSesClient(calls.SesClient):
    """The SesClient over plain HTTP; configured by (and delegating rare calls to) a boto3
    sesv2 client. Thread-safe: each thread has its own connection."""

    def __init__(self, *, boto3_client, credentials) -> None:
        meta = boto3_client.meta
        self.endpoint_url = meta.endpoint_url.rstrip("/")
        self.region = meta.region_name
        self.credentials = credentials
        self.connect_timeout = meta.config.connect_timeout
        self.read_timeout = meta.config.read_timeout
        self._boto = BotoSesClient(boto3_client)
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
        self._proxy, self._proxy_headers = _proxy(self.endpoint_url, meta.config.proxies)
        # Through a proxy, as botocore (urllib3's ProxyManager) does it: an https:// endpoint
        # through a CONNECT tunnel (the proxy sees neither the request nor the credentials);
        # an http:// one forwarded, the request sent to the proxy with the absolute URL as its
        # target and the proxy's credentials in each request's head.
        forwarding = self._proxy is not None and not self._https
        self._target = f"http://{self._canonical_host}" if forwarding else ""
        self._proxy_head = "".join(
            f"{name}: {value}\r\n" for name, value in self._proxy_headers.items() if forwarding
        )
        self._local = threading.local()

    # -- the interface ------------------------------------------------------------------------

    def _send(self, operation: str, params: dict) -> object:
        return self._call(operation, PATHS[operation], params)

    def template_create(self, *, name: str, subject: str, html: str, text: str) -> None:
        self._boto.template_create(name=name, subject=subject, html=html, text=text)

    def send_quota(self) -> calls.SendQuota:
        return self._boto.send_quota()

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- one call -----------------------------------------------------------------------------

    def _call(self, operation: str, path: str, params: dict) -> object:
        """POST `params` as JSON to `path`; the parsed answer, or a SesError."""
        path = self._prefix + path
        try:
            body = orjson.dumps(params)  # orjson: far cheaper than json (docs/PERFORMANCE.md)
        except TypeError:  # a lone surrogate, which UTF-8 cannot carry (nor SES's parser)
            raise SesRejected(
                f"{operation}: not sent: a value is not valid Unicode",
                code="SerializationException",
            ) from None
        headers = self._signed_headers(path, body)
        connection = self._connection(operation)
        head = "".join(
            [
                f"POST {self._target}{path} HTTP/1.1\r\nHost: {self._canonical_host}\r\n"
                f"User-Agent: {USER_AGENT}\r\n{self._proxy_head}"
                f"Accept-Encoding: identity\r\nContent-Length: {len(body)}\r\n",
                *(f"{name}: {value}\r\n" for name, value in headers.items()),
                "\r\n",
            ]
        ).encode("latin-1")
        try:
            connection.sock.sendall(head + body)  # one write: no wait for Nagle between two
        except OSError as err:
            # The request may be partly written: SES could have it. Drop the connection.
            self.close()
            raise SesOutcomeUnknown(
                f"{operation}: the connection broke while sending ({type(err).__name__})",
                code="ConnectionClosedError",
            ) from err
        try:
            with connection.sock.makefile("rb") as reader:
                status, response_headers, data, will_close = _read_response(reader)
        except TimeoutError as err:
            self.close()
            raise SesOutcomeUnknown(
                f"{operation}: no answer within {self.read_timeout} s", code="ReadTimeoutError"
            ) from err
        except (OSError, ValueError) as err:  # closed, cut short or not HTTP: SES may have it
            self.close()
            raise SesOutcomeUnknown(
                f"{operation}: the answer was cut short or is not HTTP ({type(err).__name__})",
                code="ConnectionClosedError",
            ) from err
        if will_close:
            self.close()
        if not 200 <= status < 300:
            raise _answer_error(operation, status, response_headers, data)
        try:
            return orjson.loads(data)  # orjson, as the request (docs/PERFORMANCE.md)
        except orjson.JSONDecodeError:
            raise SesOutcomeUnknown(
                f"{operation}: the answer is not JSON", code="UnreadableAnswer", status=status
            ) from None

    def _signed_headers(self, path: str, body: bytes) -> dict[str, str]:
        """The request's headers, SigV4-signed as botocore's SigV4Auth signs them.

        Written out for this client's one request shape (a POST of JSON, no query string):
        botocore's signer rebuilds and re-parses the URL, sorts and normalises every header and
        derives the signing key with four HMACs on every call (cost: docs/PERFORMANCE.md).
        tests/campaigns/ses/test_ses_client.py checks it against botocore's, header for header.
        """
        credentials = self._frozen_credentials()
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

    def _frozen_credentials(self):
        """The credentials now (a role's are refreshed by botocore as they expire). None at
        all is SES's own answer to an unsigned call, a refusal; a provider that cannot be
        reached (instance metadata, STS) means SES was not reached either."""
        if self.credentials is None:
            raise SesRejected("no AWS credentials were found", code="NoCredentialsError")
        try:
            return self.credentials.get_frozen_credentials()
        except (NoCredentialsError, PartialCredentialsError) as err:
            raise SesRejected("no usable AWS credentials", code=type(err).__name__) from None
        except BotoCoreError as err:
            raise SesUnreachable(
                f"the AWS credentials could not be fetched ({type(err).__name__})",
                code=type(err).__name__,
            ) from None

    # -- connections: one per thread, kept alive ----------------------------------------------

    def _connection(self, operation: str) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and _dropped_by_peer(connection):
            # An idle keep-alive connection the server closed: reconnect *before* sending,
            # so a stale connection never turns a send into an ambiguous one.
            self.close()
            connection = None
        if connection is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            if self._proxy is None:
                connection = cls(self._host, self._port, timeout=self.connect_timeout)
            else:
                connection = cls(*self._proxy, timeout=self.connect_timeout)
                if self._https:  # TLS with the endpoint (its name checked) inside the tunnel
                    connection.set_tunnel(
                        self._host,
                        self._port,
                        headers={"User-Agent": USER_AGENT, **self._proxy_headers},
                    )
            try:
                # TLS handshake and the proxy's CONNECT included: nothing is sent before them.
                connection.connect()
            except TimeoutError:
                connection.close()
                raise SesUnreachable(
                    f"{operation}: no connection within {self.connect_timeout} s",
                    code="ConnectTimeoutError",
                ) from None
            except OSError as err:  # refused, DNS, TLS, the proxy refusing the tunnel
                connection.close()
                via = " through the proxy" if self._proxy else ""
                raise SesUnreachable(
                    f"{operation}: no connection to SES{via} ({type(err).__name__})",
                    code="ProxyConnectionError" if self._proxy else "EndpointConnectionError",
                ) from None
            connection.sock.settimeout(self.read_timeout)
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.connection = connection
        return connection


def _proxy(
    endpoint_url: str, configured: dict[str, str] | None
) -> tuple[tuple[str, int] | None, dict[str, str]]:
    """The proxy botocore would send to `endpoint_url` through, as (host, port) or None, and
    the headers it would give it (Proxy-Authorization, from the proxy URL's user:password).

    botocore takes the client config's `proxies`, else the environment's unless the host is
    one NO_PROXY names (botocore.utils.get_environ_proxies: urllib's getproxies and
    proxy_bypass, lower-case variables first), then the entry for the endpoint's scheme."""
    url = urlsplit(endpoint_url)
    proxies = configured
    if not proxies:
        try:
            bypass = urllib.request.proxy_bypass(url.netloc)
        except (TypeError, socket.gaierror):  # as botocore: an odd host is not bypassed
            bypass = False
        proxies = {} if bypass else urllib.request.getproxies()
    proxy_url = proxies.get(url.scheme)
    if not proxy_url:
        return None, {}
    if not proxy_url.startswith(("http:", "https:")):  # "host:port", as botocore reads it
        proxy_url = ("http:" if proxy_url.startswith("//") else "http://") + proxy_url
    proxy = urlsplit(proxy_url)
    if proxy.scheme != "http" or not proxy.hostname:
        # TLS to the proxy itself (an https:// proxy URL) is not something http.client does;
        # going around the proxy instead would break the installation's egress rules.
        raise ImproperlyConfigured(
            "SES_CLIENT=http needs an http:// proxy (the tunnel to SES is TLS either way); "
            "use SES_CLIENT=boto3 for an https:// one."
        )
    headers = {}
    if proxy.username and proxy.password:  # botocore sends them only as a pair
        pair = f"{unquote(proxy.username)}:{unquote(proxy.password)}"
        headers["Proxy-Authorization"] = "Basic " + b64encode(pair.encode()).decode()
    return (proxy.hostname, proxy.port or 80), headers


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


_MAX_BODY = 16 * 1024 * 1024  # SES's answers are small; a bigger one is not SES


def _read_response(reader) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, {lower-cased header name: value}, body, whether the server closes the
    connection) of one HTTP/1.1 answer. Read here rather than by http.client, whose header
    parsing goes through the email package's parser, costing about as much as building the
    50 entries (docs/decisions/0001-lean-ses-client.md): the head by infra.http_answers, the
    body by Content-Length, chunked, or to the end of the connection."""
    version, status, headers = answer_head(reader)
    connection = headers.get("connection", "").lower()
    will_close = "close" in connection or (
        version == b"HTTP/1.0" and "keep-alive" not in connection
    )
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        total = 0
        while size := int(answer_line(reader).split(b";", 1)[0].strip(), 16):
            total += size
            if total > _MAX_BODY:
                raise ValueError("an answer too big to be SES's")
            chunks.append(_read_exactly(reader, size))
            answer_line(reader)  # the CRLF after the chunk
        while answer_line(reader) not in (b"\r\n", b"\n"):
            pass  # trailers
        return status, headers, b"".join(chunks), will_close
    if "content-length" in headers:
        return status, headers, _read_exactly(reader, int(headers["content-length"])), will_close
    if status in (204, 304):
        return status, headers, b"", will_close
    body = reader.read(_MAX_BODY + 1)  # delimited by the end of the connection
    if len(body) > _MAX_BODY:
        raise ValueError("an answer too big to be SES's")
    return status, headers, body, True


def _read_exactly(reader, size: int) -> bytes:
    if size < 0 or size > _MAX_BODY:
        raise ValueError("a negative length, or an answer too big to be SES's")
    data = reader.read(size)
    if len(data) < size:
        raise ConnectionError("the connection closed before the answer was complete")
    return data


def _answer_error(operation: str, status: int, headers: dict[str, str], data: bytes):
    """The SesError for an error answer, its code read as botocore's REST-JSON parser reads
    it: the x-amzn-ErrorType header (before any ':'), else the body's `__type` / `code`."""
    try:
        body = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = headers.get("x-amzn-errortype", "").split(":", 1)[0]
    code = code or _text(body.get("__type")) or _text(body.get("code"))
    code = code.rsplit("#", 1)[-1] or str(status)
    message = _text(body.get("message")) or _text(body.get("Message"))
    return calls.answer_error(operation=operation, code=code, status=status, message=message)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""

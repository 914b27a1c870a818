"""Both SES clients through a proxy, as the standard variables configure it: a real proxy
(written here: CONNECT tunnels and forwarded requests, counted) in front of the local
endpoint, over plain HTTP (forwarded, the absolute URL as the target) and over TLS (a CONNECT
tunnel to a TLS front of the endpoint); NO_PROXY goes around it; a proxy that refuses is
"unreachable" (nothing was sent); and the lean client picks the proxy botocore picks."""

import datetime
import http.client
import ipaddress
import select
import socket
import ssl
from base64 import b64encode
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.exceptions import ImproperlyConfigured

from campaigns.ses import SesUnreachable
from campaigns.ses.http import HttpSesClient
from tests.campaigns.ses.test_ses_client import (
    _BOTOCORE,
    KINDS,
    TinyServer,
    bulk,
    entry,
    make_client,
    simple,
)

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                   "no_proxy", "ALL_PROXY", "all_proxy")  # fmt: skip
CREDENTIALS = "mail:p@ss word"  # quoted in the proxy URL, as it must be
PROXY_USERINFO = "mail:p%40ss%20word"


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch):
    """Each test sets the variables it is about, and only those."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _read_head(reader) -> tuple[str, str, dict[str, str]] | None:
    line = reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, value = line.decode("latin-1").split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _splice(a: socket.socket, b: socket.socket, received: bytearray | None = None) -> None:
    """Copy bytes both ways until either side closes (what a into b carried is kept in
    `received`). One thread: an SSL socket must not be read and written from two."""
    while True:
        pending = [s for s in (a, b) if isinstance(s, ssl.SSLSocket) and s.pending()]
        readable = pending or select.select([a, b], [], [], 30)[0]
        if not readable:
            return
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            if sock is a and received is not None:
                received += data
            (b if sock is a else a).sendall(data)


class Proxy(TinyServer):
    """A forwarding HTTP proxy, as squid is one: CONNECT tunnels (their targets in `tunnels`)
    and requests with an absolute URL forwarded (`forwarded`: target, headers, body). With
    `credentials` it answers 407 to anything that does not carry them (`refused` counts)."""

    def __init__(self, credentials: str | None = None):
        self.expected = f"Basic {b64encode(credentials.encode()).decode()}" if credentials else None
        self.tunnels: list[str] = []
        self.forwarded: list[tuple[str, dict, bytes]] = []
        self.refused = 0
        super().__init__()

    def proxy_url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    def _handle(self, conn):
        with conn:
            reader = conn.makefile("rb")
            upstream = None
            while head := _read_head(reader):
                method, target, headers = head
                body = reader.read(int(headers.get("content-length", 0)))
                if self.expected and headers.get("proxy-authorization") != self.expected:
                    self.refused += 1
                    conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                 b'Proxy-Authenticate: Basic realm="t"\r\n'
                                 b"Content-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip
                    return
                if method == "CONNECT":
                    self.tunnels.append(target)
                    host, port = target.rsplit(":", 1)
                    try:
                        upstream = socket.create_connection((host, int(port)), timeout=5)
                    except OSError:
                        conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                        return
                    upstream.settimeout(None)
                    # (The client waits for this answer: nothing of its is in `reader` yet.)
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    with upstream:
                        _splice(conn, upstream)
                    return
                self.forwarded.append((target, headers, body))
                url = urlsplit(target)
                if upstream is None:
                    upstream = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                passed_on = {k: v for k, v in headers.items()
                             if k not in ("proxy-authorization", "connection")}  # fmt: skip
                upstream.request(method, url.path, body=body, headers=passed_on)
                answer = upstream.getresponse()
                data = answer.read()
                head = f"HTTP/1.1 {answer.status} {answer.reason}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in answer.getheaders()
                                if k.lower() not in ("content-length", "transfer-encoding",
                                                     "connection"))  # fmt: skip
                conn.sendall(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)


class TlsFront(TinyServer):
    """TLS in front of the local endpoint (which speaks plain HTTP), at https://127.0.0.1:port
    with a certificate of its own; what it decrypted and passed on is in `received`."""

    def __init__(self, upstream_url: str, cert: str, key: str):
        self.upstream = urlsplit(upstream_url)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.received = bytearray()
        super().__init__()
        self.url = f"https://127.0.0.1:{self.port}"

    def _handle(self, conn):
        try:
            conn = self.context.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()
            return
        with conn, socket.create_connection((self.upstream.hostname, self.upstream.port)) as up:
            _splice(conn, up, self.received)


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1: (its file, its key's file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ses.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


@pytest.fixture
def trusted(certificate, monkeypatch):
    """The test certificate trusted: by boto3 (AWS_CA_BUNDLE) and by the lean client, which
    takes OpenSSL's default trust (SSL_CERT_FILE)."""
    monkeypatch.setenv("AWS_CA_BUNDLE", certificate[0])
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    return certificate


def _assert_signed_for(endpoint_url: str, target: str, headers: dict, body: bytes) -> None:
    """The request's signature is over the endpoint's host (not the proxy's), as botocore
    would sign it for the endpoint."""
    assert headers["host"] == urlsplit(endpoint_url).netloc
    when = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    request = AWSRequest(
        method="POST", url=target, data=body, headers={"Content-Type": "application/json"}
    )
    credentials = boto3.session.Session(botocore_session=_BOTOCORE).get_credentials()
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        SigV4Auth(credentials, "ses", "eu-west-1").add_auth(request)
    assert headers["authorization"] == request.headers["Authorization"]


def _send_three(client) -> None:
    """A stored template (which the lean client leaves to boto3), a bulk send, a simple one."""
    client.template_create(name="tpl", subject="Hi {{name}}", html="<p>{{name}}</p>", text="t")
    [result] = bulk(client, [entry("a@example.com", {"name": "A"})])
    assert result.accepted
    assert simple(client)


def test_an_http_endpoint_is_reached_through_http_proxy(ses, kind, monkeypatch):
    """Forwarded, as botocore does it for http://: the absolute URL as the request target,
    the proxy's credentials in each request, the endpoint's host in Host and the signature."""
    proxy = Proxy(credentials=CREDENTIALS)
    monkeypatch.setenv("HTTP_PROXY", proxy.proxy_url(PROXY_USERINFO))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # not for an http:// endpoint
    client = make_client(kind, ses.url)
    _send_three(client)
    client.close()
    assert proxy.tunnels == [] and proxy.refused == 0
    targets = [target for target, _, _ in proxy.forwarded]
    assert targets == [
        f"{ses.url}/v2/email/templates",
        f"{ses.url}/v2/email/outbound-bulk-emails",
        f"{ses.url}/v2/email/outbound-emails",
    ]
    assert len(ses.messages()) == 2
    for target, headers, body in proxy.forwarded:
        _assert_signed_for(ses.url, target, headers, body)
    agents = [headers["user-agent"] for _, headers, _ in proxy.forwarded[1:]]
    if kind == "http":  # the two sends are the lean client's own
        assert all(agent.startswith("mailwright/") for agent in agents), agents
    else:
        assert all("app/mailwright" in agent for agent in agents), agents
    proxy.close()


def test_an_https_endpoint_is_reached_through_a_connect_tunnel(ses, kind, trusted, monkeypatch):
    """The https:// path, as against SES itself: one CONNECT, kept alive for every call,
    TLS with the endpoint inside it (its certificate checked), nothing in clear at the
    proxy; the endpoint sees the product's User-Agent and its own host."""
    proxy = Proxy(credentials=CREDENTIALS)
    front = TlsFront(ses.url, *trusted)
    monkeypatch.setenv("HTTPS_PROXY", proxy.proxy_url(PROXY_USERINFO))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # not for an https:// endpoint
    client = make_client(kind, front.url)
    simple(client)
    simple(client)
    client.close()
    host = f"127.0.0.1:{front.port}"
    assert proxy.tunnels == [host]  # one tunnel, kept alive
    assert proxy.forwarded == [] and proxy.refused == 0
    assert len(ses.messages()) == 2
    seen = front.received.decode("latin-1")
    assert seen.count(f"\r\nHost: {host}\r\n") == 2
    agent = "User-Agent: mailwright/" if kind == "http" else "app/mailwright"
    assert seen.count(agent) == 2
    proxy.close()
    front.close()


@pytest.mark.parametrize("variable", ["NO_PROXY", "no_proxy"])
@pytest.mark.parametrize("value", ["127.0.0.1", "ses.example, 127.0.0.1", "*"])
def test_no_proxy_goes_around_the_proxy(ses, kind, monkeypatch, variable, value):
    proxy = Proxy()
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, proxy.proxy_url())
    monkeypatch.setenv(variable, value)
    client = make_client(kind, ses.url)
    assert simple(client)
    client.close()
    assert proxy.connections == 0
    assert len(ses.messages()) == 1
    proxy.close()


def _refused_proxy_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("refusal", ["407", "connection refused", "wrong credentials"])
def test_a_proxy_that_refuses_is_unreachable(ses, kind, trusted, monkeypatch, scheme, refusal):
    """Nothing was sent, so the call may go again later: a 407 on a forwarded request (http)
    or on the CONNECT (https), and a proxy that takes no connection."""
    proxy = Proxy(credentials=CREDENTIALS)
    front = TlsFront(ses.url, *trusted)
    proxy_url = {
        "407": proxy.proxy_url(),
        "connection refused": _refused_proxy_url(),
        "wrong credentials": proxy.proxy_url("mail:wrong"),
    }[refusal]
    monkeypatch.setenv(f"{scheme.upper()}_PROXY", proxy_url)
    client = make_client(kind, ses.url if scheme == "http" else front.url)
    with pytest.raises(SesUnreachable):
        simple(client)
    with pytest.raises(SesUnreachable):
        bulk(client, [entry("a@example.com", {})], template_name="none")
    client.close()
    assert ses.messages() == []
    assert front.connections == 0 and proxy.forwarded == [] and proxy.tunnels == []
    assert proxy.refused == (0 if refusal == "connection refused" else 2)
    proxy.close()
    front.close()


@pytest.mark.parametrize(
    ("endpoint", "variables", "proxies"),
    [
        ("https://email.eu-west-1.amazonaws.com", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("https://email.eu-west-1.amazonaws.com", {"https_proxy": "proxy.internal:8080"}, None),
        ("https://email.eu-west-1.amazonaws.com",
         {"HTTPS_PROXY": "http://a:3128", "https_proxy": "http://u:p%3Aw@b:3128"}, None),
        ("https://email.eu-west-1.amazonaws.com", {"HTTP_PROXY": "http://p:3128"}, None),
        ("https://email.eu-west-1.amazonaws.com",
         {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".amazonaws.com"}, None),
        ("https://email.eu-west-1.amazonaws.com",
         {"HTTPS_PROXY": "http://p:3128", "no_proxy": "example.com,amazonaws.com"}, None),
        ("https://h.example:8443/p", {"HTTPS_PROXY": "http://u@p", "NO_PROXY": "h.example:443"},
         None),
        ("http://127.0.0.1:4566", {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "localhost"}, None),
        ("http://127.0.0.1:4566", {"HTTPS_PROXY": "http://p:3128"}, None),
        # The client config's proxies win over the environment, NO_PROXY included.
        ("https://email.eu-west-1.amazonaws.com", {"NO_PROXY": "*"},
         {"https": "http://u:pw@cfg:3128"}),
    ],
)  # fmt: skip
def test_the_lean_client_picks_the_proxy_botocore_picks(monkeypatch, endpoint, variables, proxies):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    boto3_client = boto3.session.Session(
        botocore_session=_BOTOCORE, region_name="eu-west-1"
    ).client("sesv2", endpoint_url=endpoint, config=Config(proxies=proxies))
    lean = HttpSesClient(boto3_client=boto3_client, credentials=None)
    # botocore's choice, read from its HTTP session (private, hence only in a test).
    proxy_config = boto3_client._endpoint.http_session._proxy_config
    proxy_url = proxy_config.proxy_url_for(endpoint)
    if proxy_url is None:
        assert lean._proxy is None
        return
    url = urlsplit(proxy_url)
    assert lean._proxy == (url.hostname, url.port or 80)
    assert lean._proxy_headers == proxy_config.proxy_headers_for(proxy_url)


def test_the_lean_client_refuses_a_proxy_it_cannot_speak_tls_to(monkeypatch):
    """Rather than go around it: an https:// proxy URL is for SES_CLIENT=boto3."""
    monkeypatch.setenv("HTTPS_PROXY", "https://p:3128")
    boto3_client = boto3.session.Session(
        botocore_session=_BOTOCORE, region_name="eu-west-1"
    ).client("sesv2", endpoint_url="https://email.eu-west-1.amazonaws.com")
    with pytest.raises(ImproperlyConfigured, match="http:// proxy"):
        HttpSesClient(boto3_client=boto3_client, credentials=None)

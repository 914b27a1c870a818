"""A real local HTTP receiver for callbacks: a threaded server recording each POST, answering
with the statuses it is told, optionally slowly or not until released."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DOCS = Path(__file__).resolve().parents[3] / "docs" / "API.md"


def documented_verify():
    """The verification snippet of docs/API.md, as documented: the tests verify with it."""
    text = DOCS.read_text()
    match = re.search(r"```python\n(import hashlib.*?def mailwright_verify.*?)```", text, re.S)
    assert match, "docs/API.md has no verification snippet"
    namespace: dict = {}
    exec(match.group(1), namespace)  # noqa: S102 (our own docs)
    return namespace["mailwright_verify"]


class Receiver:
    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []  # answered in turn; 200 once empty
        self.delay = 0.0
        self.hold = threading.Event()
        self.hold.set()  # cleared: requests wait until it is set again
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append(
                        {"headers": dict(self.headers), "body": body, "path": self.path}
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.hold.wait(60)
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/mailwright?x=1"

    def events(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


def tls_files(directory, host: str = "localhost") -> tuple[str, str]:
    """A self-signed certificate for `host` (as its subjectAltName) and its key, as PEM files:
    (cert path, key path). The certificate is its own authority: trust it to verify it."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = Path(directory) / "cert.pem", Path(directory) / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


class TlsReceiver(Receiver):
    """The receiver behind TLS, its certificate for `localhost`; `url` names it by that."""

    def __init__(self, directory):
        import ssl

        super().__init__()
        self.cert, key = tls_files(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://localhost:{self.server.server_port}/hooks/tls"

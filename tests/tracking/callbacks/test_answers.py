"""The callback POST's hand-written HTTP/1.1 exchange against a real local socket server that
answers with given bytes: what counts as delivered, and when a connection is kept or closed."""

import socket
import threading
import time

import pytest

from tests.factories import EventFactory
from tracking import callbacks
from tracking.models import CallbackDelivery, CallbackEndpoint

pytestmark = pytest.mark.django_db

D = CallbackDelivery.Status


class RawServer:
    """Reads each request (head + Content-Length body) and writes the next canned answer (a
    tuple: its parts, 50 ms apart); counts connections and requests."""

    def __init__(self, answers: list[bytes | tuple[bytes, ...]]):
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buffer[:length])
                buffer = buffer[length:]
                answer = self.answers.pop(0) if self.answers else b"HTTP/1.1 200 OK\r\n\r\n"
                parts = answer if isinstance(answer, tuple) else (answer,)
                for part in parts:
                    conn.sendall(part)
                    time.sleep(0.05 if len(parts) > 1 else 0)
                answer = b"".join(parts)
                if b"close" in answer.lower() or b"content-length" not in answer.lower():
                    return  # as a server that ends the body by closing

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(settings):
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = True
    servers = []

    def make(*answers: bytes) -> RawServer:
        server = RawServer(list(answers))
        servers.append(server)
        callbacks.endpoint_create(url=server.url, event_types=["message.delivered"])
        return server

    yield make
    for server in servers:
        server.close()


def deliver(count: int) -> list[tuple[str, int | None, str]]:
    """`count` events, each fanned out and delivered on its own (one claim each: a claim's rows
    are shared among posting threads, each with its own connection)."""
    for _ in range(count):
        EventFactory(delivered=True)
        callbacks.callbacks_fan_out()
        for endpoint_id in CallbackEndpoint.objects.values_list("pk", flat=True):
            callbacks.callbacks_deliver(endpoint_id=endpoint_id, budget=5)
    return list(
        CallbackDelivery.objects.order_by("pk").values_list("status", "last_status", "last_error")
    )


def test_the_request_is_one_signed_post_with_its_headers(raw, settings):
    server = raw()
    deliver(1)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hook HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Host"] == server.url.split("/")[2]
    assert headers["Content-Length"] == str(len(body))
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == callbacks.USER_AGENT
    assert headers["Mailwright-Event-Type"] == "message.delivered"
    delivery = CallbackDelivery.objects.get()
    assert headers["Mailwright-Event-Id"] == delivery.event_id
    secret = CallbackEndpoint.objects.get().secret
    stamp = int(headers["Mailwright-Signature"].split(",")[0][2:])
    assert headers["Mailwright-Signature"] == callbacks.signature_header(
        body, [secret], timestamp=stamp
    )


def test_a_content_length_answer_keeps_the_connection(raw):
    server = raw(*[b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"] * 3)
    assert {row[:2] for row in deliver(3)} == {(D.DELIVERED, 204)}
    assert server.connections == 1


def test_an_answer_in_pieces_is_read_whole_and_the_connection_kept(raw):
    pieces = (b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\nX-A: b\r\n\r\nhel", b"lo")
    server = raw(pieces, pieces)
    assert {row[:2] for row in deliver(2)} == {(D.DELIVERED, 200)}
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nbody until close",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0-until-close", "chunked"],
)
def test_answers_without_a_known_end_are_delivered_on_a_new_connection_each(raw, answer):
    server = raw(answer, answer)
    assert {row[:2] for row in deliver(2)} == {(D.DELIVERED, 200)}
    assert server.connections == 2


def test_an_interim_answer_is_skipped(raw):
    raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
    assert deliver(1) == [(D.DELIVERED, 202, "")]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"SMTP ready\r\n\r\n", "no answer: ValueError"),
        (b"HTTP/1.1 2xx Fine\r\n\r\n", "no answer: ValueError"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000, "no answer: ValueError"),
        (b"", "no answer: ConnectionError"),
    ],
    ids=["not-http", "bad-status", "endless-head", "closed"],
)
def test_a_broken_answer_is_a_failure_retried_later(raw, answer, error):
    # Twice: the first connection is new, so no second try on a fresh one.
    raw(answer, answer)
    assert deliver(1) == [(D.PENDING, None, error)]


def test_a_500_is_a_failure_with_its_status(raw):
    raw(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops")
    assert deliver(1) == [(D.PENDING, 500, "HTTP 500")]

"""infra.http_answers over a real socket pair: the head of an answer, and SocketReader giving
what a socket's makefile("rb") gives (lines, limits, the end of the connection)."""

import socket

import pytest

from infra.http_answers import SocketReader, answer_head

READERS = [SocketReader, lambda sock: sock.makefile("rb")]


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.mark.parametrize("reader", READERS, ids=["SocketReader", "makefile"])
def test_the_head_after_an_interim_answer_then_the_body(pair, reader):
    ours, theirs = pair
    theirs.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A:  b \r\n"
                   b"Content-Length: 5\r\n\r\nhello")  # fmt: skip
    r = reader(ours)
    assert answer_head(r) == (b"HTTP/1.1", 201, {"x-a": "b", "content-length": "5"})
    assert r.read(5) == b"hello"


@pytest.mark.parametrize("reader", READERS, ids=["SocketReader", "makefile"])
def test_lines_limits_and_the_end_of_the_connection_as_a_file_gives_them(pair, reader):
    ours, theirs = pair
    r = reader(ours)
    theirs.sendall(b"0123456789\nab")
    assert r.readline(4) == b"0123"  # the limit, no line end yet
    assert r.readline(100) == b"456789\n"
    theirs.sendall(b"c\n")
    assert r.readline() == b"abc\n"
    theirs.sendall(b"tail")
    theirs.shutdown(socket.SHUT_WR)
    assert r.readline(100) == b"tail"  # cut short by the end
    assert r.readline(100) == b""
    assert r.read(3) == b""


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"SMTP ready\r\n\r\n", ValueError),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", ValueError),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", ValueError),
        (b"HTTP/1.1 200 OK\r\n", ConnectionError),
    ],
    ids=["not-http", "no-colon", "long-line", "closed-early"],
)
def test_what_is_not_an_answer(pair, answer, error):
    ours, theirs = pair
    theirs.sendall(answer)
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(error):
        answer_head(SocketReader(ours))

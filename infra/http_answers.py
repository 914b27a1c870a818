"""An HTTP/1.x answer's status line and headers, read by hand from a socket's reader: for the
clients that write their requests on the socket themselves (the lean SES client,
campaigns.ses.http; the callbacks' POSTs, tracking.callbacks). http.client parses an answer's
headers through the email package's parser, which cost those clients about as much as the rest
of a call (docs/decisions/0001-lean-ses-client.md, docs/PERFORMANCE.md). Each caller reads the
body its own way: SES's whole, a callback's only when its length is known and small."""

MAX_LINE = 65536  # as http.client: a longer status or header line is not HTTP
MAX_HEADERS = 100  # as http.client


def answer_line(reader) -> bytes:
    """One line of the answer (with its line end); ConnectionError if the connection closed
    first, ValueError if it is too long or cut short."""
    line = reader.readline(MAX_LINE + 1)
    if not line:
        raise ConnectionError("the connection closed before the answer was complete")
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise ValueError("an answer line is too long or cut short")
    return line


def answer_head(reader) -> tuple[bytes, int, dict[str, str]]:
    """(HTTP version, status, {lower-cased header name: value}) of the next final answer on
    `reader` (a socket's makefile("rb")); interim 1xx answers are skipped. ValueError if it is
    not HTTP, ConnectionError if the connection closed first."""
    while True:
        version, _, rest = answer_line(reader).partition(b" ")
        if not version.startswith(b"HTTP/") or not rest[:3].isdigit():
            raise ValueError("not an HTTP answer")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        lines = 0
        while (line := answer_line(reader)) not in (b"\r\n", b"\n"):
            name, colon, value = line.partition(b":")
            lines += 1
            if not colon or lines > MAX_HEADERS:
                raise ValueError("a header line without a colon, or too many headers")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if not 100 <= status < 200:
            return version, status, headers


class SocketReader:
    """readline() and read() over a socket's recv, for answer_head and a body: what
    `sock.makefile("rb")` gives, without making a file object per answer (~6 µs of CPU, as much
    as reading the head). Bytes past what was asked stay in `buffer` (none on a connection
    with one request at a time)."""

    __slots__ = ("buffer", "sock")

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def readline(self, limit: int = -1) -> bytes:
        """The next line with its b"\\n", at most `limit` bytes (fewer at the end of the
        connection)."""
        buffer = self.buffer
        while True:
            end = buffer.find(b"\n") + 1
            if end or 0 <= limit <= len(buffer):
                end = min(end or limit, limit) if limit >= 0 else end
                self.buffer = buffer[end:]
                return buffer[:end]
            chunk = self.sock.recv(65536)
            if not chunk:
                self.buffer = b""
                return buffer
            buffer += chunk

    def read(self, size: int) -> bytes:
        """`size` bytes (fewer at the end of the connection)."""
        buffer = self.buffer
        while len(buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        self.buffer = buffer[size:]
        return buffer[:size]

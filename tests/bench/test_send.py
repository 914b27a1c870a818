"""The send benchmark's counts from the SES endpoint: seslocal's /_local/stats where it has one,
`unknown` where it has not (real SES, a proxy in front of seslocal), so the run still reports."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.send import UNKNOWN, endpoint_counts
from tests.conftest import _free_port

NOTHING_KNOWN = {"ses_calls": UNKNOWN, "duplicates": UNKNOWN, "missing": UNKNOWN}


@contextmanager
def endpoint(status: int, body: bytes) -> Iterator[str]:
    """An HTTP server answering every GET with `status` and `body`: its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_endpoint_without_local_stats_gives_unknown_counts():
    with endpoint(404, b'{"message": "not found"}') as url:
        assert endpoint_counts(ses_url=url, campaign_id=1, n=100) == NOTHING_KNOWN


def test_an_endpoint_answering_something_else_gives_unknown_counts():
    # Real SES answers an unsigned GET with an error page or a JSON of its own.
    with endpoint(200, b"<html>no</html>") as url:
        assert endpoint_counts(ses_url=url, campaign_id=1, n=100) == NOTHING_KNOWN
    with endpoint(200, b'{"message": "Missing Authentication Token"}') as url:
        assert endpoint_counts(ses_url=url, campaign_id=1, n=100) == NOTHING_KNOWN


def test_an_endpoint_that_does_not_answer_gives_unknown_counts():
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    assert endpoint_counts(ses_url=url, campaign_id=1, n=100) == NOTHING_KNOWN


def test_seslocal_gives_the_counts(ses):
    # No message carries this campaign's header: no calls, every recipient missing.
    counts = endpoint_counts(ses_url=ses.url, campaign_id=999_999, n=3)
    assert counts == {"ses_calls": {}, "duplicates": 0, "missing": 3}

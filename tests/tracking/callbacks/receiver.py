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

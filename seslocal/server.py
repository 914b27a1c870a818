"""HTTP front end: SES v2 REST-JSON routes under ``/v2/``, inspection under ``/_local/``.

``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive (botocore reuses connections),
so every response carries a Content-Length. Connections are served in parallel, calls one at
a time (``SesLocalServer.handling``). Logging is one line per API call with ids and
counts only -- never an email address, subject or body, and never a query string. Only
requests naming this machine in their Host (and Origin, if any) are answered: a web page
cannot reach it through a name of its own (DNS rebinding) or post to it from elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from . import handlebars, pages
from .errors import SesError
from .events import DEFAULT_TOPIC_ARN, EventPublisher, EventsConfig
from .faults import FaultConfig
from .ses import CallContext, SesBackend, Settings
from .store import Store, split_header_filter

logger = logging.getLogger("seslocal")

DEFAULT_DB = os.path.join("var", "seslocal.sqlite3")
MAX_BODY = 64 * 1024 * 1024  # SES caps messages at 40 MB; anything bigger is a client bug

_TEMPLATE_PATH = r"^/v2/email/templates/(?P<name>[^/]+)/?$"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), op)
    for method, pattern, op in (
        ("POST", r"^/v2/email/outbound-emails/?$", "SendEmail"),
        ("POST", r"^/v2/email/outbound-bulk-emails/?$", "SendBulkEmail"),
        ("POST", r"^/v2/email/templates/?$", "CreateEmailTemplate"),
        ("GET", r"^/v2/email/templates/?$", "ListEmailTemplates"),
        ("GET", _TEMPLATE_PATH, "GetEmailTemplate"),
        ("PUT", _TEMPLATE_PATH, "UpdateEmailTemplate"),
        ("DELETE", _TEMPLATE_PATH, "DeleteEmailTemplate"),
        ("GET", r"^/v2/email/account/?$", "GetAccount"),
    )
]
SEND_OPERATIONS = frozenset({"SendEmail", "SendBulkEmail"})  # the calls faults apply to
# Host names always answered; the address listened on, and --allowed-hosts, add to them.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (names, never answered)
# What a browser or boto3 sends: a name or an address, and a port. Anything else (userinfo,
# paths, spaces) is refused rather than parsed.
_HOST_HEADER = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?\Z")
_ORIGIN_HEADER = re.compile(r"https?://(?P<host>[^/?#\s]+)\Z")
_MESSAGE_PATH = re.compile(r"^/_local/messages/(?P<id>[^/]+?)(?P<ext>\.json|\.eml)?$")


def _route(method: str, path: str) -> tuple[str | None, dict[str, str]]:
    for route_method, pattern, op in ROUTES:
        match = pattern.match(path)
        if match and route_method == method:
            return op, {k: unquote(v) for k, v in match.groupdict().items()}
    return None, {}


class InProgress:
    """How many send calls have arrived and not yet been answered (waiting out injected
    latency included): `/_local/health` shows it, so a test harness can wait for the calls
    of a sender it stopped to land before it resets the endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        with self._lock:
            self.count += 1
        try:
            yield
        finally:
            with self._lock:
                self.count -= 1


class SesLocalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        backend: SesBackend,
        db: str,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.db = db
        names = (
            name.strip().lower().strip("[]") for name in (*LOCAL_HOSTS, address[0], *allowed_hosts)
        )
        self.allowed_hosts = frozenset(names) - _WILDCARD_ADDRESSES
        self.thread: threading.Thread | None = None
        # Held while a call is handled, after its request is read: one connection's thread
        # works at a time. Otherwise each SQLite row written (a step that releases the GIL)
        # let another connection's thread take the interpreter, and the writer waited to get
        # it back, every row. With 8 connections busy, alternating runs of 100k recipients
        # spent 0.071-0.084 CPU s per 1,000 with it against 0.106-0.124 without. Threads
        # still read requests, wait out injected latency and sit idle on keep-alive
        # connections in parallel.
        self.handling = threading.Lock()
        self.sends = InProgress()
        super().__init__(address, Handler)
        if backend.settings.events is not None:
            self._events_start(backend.settings.events)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def _events_start(self, config: EventsConfig) -> None:
        """Publish SES events of what is accepted (seslocal.events), with the signing
        certificate served here: from the address listened on, or 127.0.0.1 on a wildcard."""
        host, port = self.server_address[:2]
        host = "127.0.0.1" if host in _WILDCARD_ADDRESSES else host
        host = f"[{host}]" if ":" in host else host
        self.backend.events = EventPublisher(config, base_url=f"http://{host}:{port}")
        logger.info(
            "publishing SES events topic=%s delay_s=%s retries=%d",
            config.topic_arn,
            config.delay,
            config.retries,
        )

    def stop(self) -> None:
        """Stop serving and close the database (for servers from ``serve_in_thread``)."""
        self.shutdown()
        self.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.backend.events is not None:
            self.backend.events.stop()
        self.backend.store.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "seslocal/1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the ACK of
    # the headers, which the client delays by ~40 ms: keep-alive calls would crawl.
    disable_nagle_algorithm = True
    server: SesLocalServer

    # --- plumbing --------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # our own one-line-per-call log replaces the access log (which has paths)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # http.server's own messages can quote the request line; keep only the status.
        code = args[0] if args and isinstance(args[0], int) else ""
        logger.debug("http: %s %s", format.split("%", 1)[0].strip(), code)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            size = int(length)
            if size > MAX_BODY:
                raise SesError("BadRequestException", "Request body too large.", 413)
            return self.rfile.read(size) if size > 0 else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
        self._respond(status, orjson.dumps(obj), headers=headers)

    def _host_allowed(self) -> bool:
        """One Host header naming an allowed host, and no Origin naming another (a page
        elsewhere posting here through the browser; "null" from sandboxed frames included)."""
        hosts = self.headers.get_all("Host") or []
        match = _HOST_HEADER.match(hosts[0]) if len(hosts) == 1 else None
        if match is None or match["name"].lower().strip("[]") not in self.server.allowed_hosts:
            return False
        origins = self.headers.get_all("Origin") or []
        if not origins:
            return True
        origin = _ORIGIN_HEADER.match(origins[0]) if len(origins) == 1 else None
        if origin is None:
            return False
        match = _HOST_HEADER.match(origin["host"])
        return match is not None and match["name"].lower().strip("[]") in self.server.allowed_hosts

    def _handle(self, method: str) -> None:
        received = time.time()  # the request line and headers are in: the call has arrived
        if not self._host_allowed():
            self.close_connection = True  # its body, if any, is left unread
            self._json(403, {"message": "This host is not served here (see --allowed-hosts)."})
            logger.warning("refused a request for a host not allowed")
            return
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            body = self._read_body()
        except (ValueError, SesError):
            self.close_connection = True  # we could not find the end of the request
            self._json(400, {"message": "Unreadable request body."})
            return
        api = url.path.startswith("/v2/")
        send = api and _route(method, url.path)[0] in SEND_OPERATIONS
        with self.server.sends.track() if send else contextlib.nullcontext():
            if send:
                self.server.backend.faults.delay()  # before the lock: slow calls overlap
            with self.server.handling:  # one call handled at a time (SesLocalServer.handling)
                if api:
                    self._api(method, url.path, query, body, received)
                    return
                try:
                    self._local(method, url.path, query, body)
                except Exception as exc:
                    logger.error("local endpoint failed: %s", type(exc).__name__)
                    self._json(500, {"error": f"internal error: {type(exc).__name__}"})

    # --- SES API ---------------------------------------------------------------------

    def _api(
        self, method: str, path: str, query: dict[str, str], raw_body: bytes, received: float
    ) -> None:
        started = time.perf_counter()
        backend = self.server.backend
        op, params = _route(method, path)
        request_id = str(uuid.uuid4())
        ctx = CallContext(api=op or "Unknown", received=received)
        error_code = None
        try:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("AWS4-HMAC-SHA256 ") or "Credential=" not in auth:
                raise SesError(
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token: seslocal expects a SigV4-signed request "
                    "(any credentials are accepted).",
                )
            if op is None:
                raise SesError("UnknownOperationException", f"No SES v2 operation at {method}.")
            ctx.counters.append(f"call:{op}")
            payload: dict[str, Any] = {}
            if method in ("POST", "PUT") and raw_body.strip():
                try:
                    payload = orjson.loads(raw_body)  # (~2.5x json's on a bulk call)
                except ValueError:
                    raise SesError("SerializationException", "Request body is not JSON.") from None
                if not isinstance(payload, dict):
                    raise SesError("SerializationException", "Request body must be an object.")
            result = self._dispatch(backend, op, params, query, payload, ctx)
            status = 200
        except SesError as exc:
            status, result, error_code = exc.status, exc.body(), exc.code
        except Exception as exc:
            # Type and place only: an exception's text could quote message data.
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            logger.error(
                "%s internal error %s at %s:%s request_id=%s",
                op,
                type(exc).__name__,
                os.path.basename(frame.filename),
                frame.lineno,
                request_id,
            )
            status, result, error_code = 500, {"message": "Internal failure."}, "InternalFailure"
        finally:
            if ctx.counters:
                try:
                    backend.store.bump(*ctx.counters)
                except Exception:  # never let bookkeeping hide the real answer
                    logger.exception("could not update counters")
        headers = [("x-amzn-RequestId", request_id)]
        if error_code:
            headers.append(("x-amzn-ErrorType", error_code))
        self._json(status, result, headers)
        extras = " ".join(f"{k}={v}" for k, v in ctx.log.items())
        logger.info(
            "%s %d%s request_id=%s ms=%.1f%s",
            ctx.api,
            status,
            f" error={error_code}" if error_code else "",
            request_id,
            (time.perf_counter() - started) * 1000,
            f" {extras}" if extras else "",
        )

    @staticmethod
    def _dispatch(
        backend: SesBackend,
        op: str,
        params: dict[str, str],
        query: dict[str, str],
        payload: dict[str, Any],
        ctx: CallContext,
    ) -> dict[str, Any]:
        if op == "SendEmail":
            return backend.send_email(payload, ctx)
        if op == "SendBulkEmail":
            return backend.send_bulk_email(payload, ctx)
        if op == "GetAccount":
            return backend.get_account(ctx)
        if op == "CreateEmailTemplate":
            return backend.create_email_template(payload, ctx)
        if op == "ListEmailTemplates":
            return backend.list_email_templates(query, ctx)
        if op == "GetEmailTemplate":
            return backend.get_email_template(params["name"], ctx)
        if op == "UpdateEmailTemplate":
            return backend.update_email_template(params["name"], payload, ctx)
        if op == "DeleteEmailTemplate":
            return backend.delete_email_template(params["name"], ctx)
        raise SesError("UnknownOperationException", f"Unknown operation {op}.")

    # --- inspection ------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        s = self.server.backend.settings
        return {
            "db": self.server.db,
            "max_send_rate": s.max_send_rate,
            "max_24_hour_send": s.max_24_hour_send,
            "enforce_send_rate": s.enforce_rate,
            "store_bodies": s.store_bodies,
            "events": s.events is not None,
        }

    def _local(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        backend = self.server.backend
        store = backend.store
        try:
            header = split_header_filter(query["header"]) if query.get("header") else None
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        if method == "GET" and path == "/":
            messages = store.list_messages(limit=50, bodies=False)
            page = pages.index_page(
                store.stats(), messages, backend.faults.config.to_obj(), self._config()
            )
            self._respond(200, page, "text/html; charset=utf-8")
        elif (
            method == "GET"
            and backend.events is not None
            and path == backend.events.signer.cert_path
        ):
            self._respond(200, backend.events.signer.pem, "application/x-pem-file")
        elif method == "GET" and path == "/_local/events":
            events = backend.events
            self._json(200, events.stats() if events is not None else {"enabled": False})
        elif method == "GET" and path == "/_local/health":
            self._json(200, {"ok": True, "sends_in_progress": self.server.sends.count})
        elif method == "GET" and path == "/_local/config":
            self._json(200, self._config())
        elif method == "GET" and path == "/_local/stats":
            stats = store.stats(header)
            stats["header"] = query.get("header") or None
            self._json(200, stats)
        elif method == "GET" and path == "/_local/messages":
            try:
                limit = max(1, min(int(query.get("limit") or 50), 10000))
            except ValueError:
                self._json(400, {"error": "limit must be an integer"})
                return
            bodies = query.get("bodies", "1") not in ("0", "false", "no")
            messages = store.list_messages(limit, query.get("to") or None, header, bodies)
            self._json(200, messages)
        elif method == "GET" and (match := _MESSAGE_PATH.match(path)):
            found = store.get_message(unquote(match["id"]))
            if found is None:
                self._json(404, {"error": "no such message"})
                return
            message, raw = found
            if match["ext"] == ".json":
                message["raw"] = raw.decode("utf-8", "replace") if raw is not None else None
                self._json(200, message)
            elif match["ext"] == ".eml":
                if raw is None:
                    self._json(404, {"error": "no raw MIME stored for this message"})
                else:
                    self._respond(200, raw, "message/rfc822")
            else:
                page = pages.message_page(message, raw, backend.settings.store_bodies)
                self._respond(200, page, "text/html; charset=utf-8")
        elif method == "POST" and path == "/_local/reset":
            backend.reset()
            logger.info("reset")
            self._json(200, {"ok": True})
        elif method == "GET" and path == "/_local/faults":
            self._json(200, backend.faults.config.to_obj())
        elif method == "POST" and path == "/_local/faults":
            try:
                config = FaultConfig.from_json(body.decode("utf-8") or "{}")
            except (ValueError, UnicodeDecodeError) as exc:
                self._json(400, {"error": str(exc)})
                return
            backend.faults.set(config)
            logger.info("faults set: %s", json.dumps(config.to_obj()))
            self._json(200, config.to_obj())
        else:
            self._json(404, {"error": "not found"})


# --- starting ------------------------------------------------------------------------------


def make_server(
    host: str = "127.0.0.1",
    port: int = 8025,
    db: str = DEFAULT_DB,
    settings: Settings | None = None,
    allowed_hosts: Sequence[str] = (),
) -> SesLocalServer:
    store = Store(db)
    try:
        return SesLocalServer((host, port), SesBackend(store, settings), db, allowed_hosts)
    except BaseException:
        store.close()
        raise


def serve_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    db: str = ":memory:",
    settings: Settings | None = None,
    allowed_hosts: Sequence[str] = (),
    **options: Any,
) -> tuple[SesLocalServer, str]:
    """Start a server in a daemon thread; returns ``(server, url)``. Stop with
    ``server.stop()``. ``options`` are :class:`Settings` fields (``max_send_rate``,
    ``max_24_hour_send``, ``store_bodies``, ``enforce_rate``, ``faults`` as a dict or
    :class:`~seslocal.faults.FaultConfig`)."""
    if isinstance(options.get("faults"), dict):
        options["faults"] = FaultConfig.from_obj(options["faults"])
    if isinstance(options.get("events"), dict):
        options["events"] = EventsConfig(**options["events"])
    server = make_server(host, port, db, settings or Settings(**options), allowed_hosts)
    server.thread = threading.Thread(
        target=server.serve_forever, name=f"seslocal-{server.server_address[1]}", daemon=True
    )
    server.thread.start()
    return server, server.url


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m seslocal", description="Local Amazon SES v2 endpoint."
    )
    parser.add_argument("--host", default=env("SESLOCAL_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("SESLOCAL_PORT", "8025")))
    parser.add_argument(
        "--db", default=env("SESLOCAL_DB", DEFAULT_DB), help="SQLite file or :memory:"
    )
    parser.add_argument(
        "--max-send-rate",
        type=float,
        default=float(env("SESLOCAL_MAX_SEND_RATE", "1000")),
        help="MaxSendRate reported by GetAccount (recipients per second)",
    )
    parser.add_argument(
        "--max-24-hour-send",
        type=float,
        default=float(env("SESLOCAL_MAX_24_HOUR_SEND", "50000000")),
        help="Max24HourSend reported by GetAccount (not enforced)",
    )
    parser.add_argument(
        "--enforce-send-rate",
        action="store_true",
        default=_env_flag("SESLOCAL_ENFORCE_SEND_RATE", False),
        help="answer 429 when recipients/s exceed --max-send-rate",
    )
    parser.add_argument(
        "--faults", default=env("SESLOCAL_FAULTS", ""), help='JSON, e.g. {"throttle": 0.1}'
    )
    parser.add_argument(
        "--no-bodies",
        dest="store_bodies",
        action="store_false",
        default=_env_flag("SESLOCAL_STORE_BODIES", True),
        help="store metadata only and skip rendering text/HTML bodies (benchmarks)",
    )
    parser.add_argument(
        "--allowed-hosts",
        default=env("SESLOCAL_ALLOWED_HOSTS", ""),
        help="comma-separated host names answered besides localhost, 127.0.0.1, ::1 and --host",
    )
    parser.add_argument(
        "--events-webhook",
        default=env("SESLOCAL_EVENTS_WEBHOOK", ""),
        help="publish SES events (Send, Delivery, Bounce, Complaint) as SNS notifications to "
        "this URL (credentials as user:password@ in it, as in an SNS subscription)",
    )
    parser.add_argument(
        "--events-topic-arn",
        default=env("SESLOCAL_EVENTS_TOPIC_ARN", DEFAULT_TOPIC_ARN),
        help="the SNS TopicArn the notifications carry",
    )
    parser.add_argument(
        "--events-delay",
        type=float,
        default=float(env("SESLOCAL_EVENTS_DELAY", "1")),
        help="seconds between a send and its delivery event",
    )
    parser.add_argument(
        "--events-retries",
        type=int,
        default=int(env("SESLOCAL_EVENTS_RETRIES", "3")),
        help="how many times a failed post is retried (after 1, 2, 4… s) before it is dropped",
    )
    parser.add_argument("--log-level", default=env("SESLOCAL_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        faults = FaultConfig.from_json(args.faults)
    except ValueError as exc:
        print(f"seslocal: bad --faults: {exc}", file=sys.stderr)
        return 2
    events = None
    if args.events_webhook:
        try:
            events = EventsConfig(
                webhook=args.events_webhook,
                topic_arn=args.events_topic_arn,
                delay=args.events_delay,
                retries=args.events_retries,
            )
        except ValueError as exc:
            print(f"seslocal: bad --events-*: {exc}", file=sys.stderr)
            return 2
    settings = Settings(
        events=events,
        max_send_rate=args.max_send_rate,
        max_24_hour_send=args.max_24_hour_send,
        store_bodies=args.store_bodies,
        enforce_rate=args.enforce_send_rate,
        faults=faults,
    )
    allowed_hosts = [name for name in args.allowed_hosts.split(",") if name.strip()]
    server = make_server(args.host, args.port, args.db, settings, allowed_hosts)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.thread = threading.Thread(target=server.serve_forever, name="seslocal", daemon=True)
    server.thread.start()
    print(f"seslocal listening on {server.url}", flush=True)
    threading.Thread(target=handlebars.preload, name="seslocal-preload", daemon=True).start()
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0

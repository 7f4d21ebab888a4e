"""The HTTP server of `sqlml serve` and `run_server`, the CLI's entry point.

Why the standard library's ThreadingHTTPServer: one thread per keep-alive connection is
enough here, because onnxruntime releases the GIL while it scores, so connections score in
parallel; what remains per request is HTTP parsing, JSON and numpy (benchmarks/bench_serve.py).
Responses are written in one send with TCP_NODELAY, so keep-alive clients never wait on
Nagle's algorithm.

Threads: the accept loop, one per client connection, the catalog/config poller
(`ModelPool.refresh`), the request-log writer and the shadow scorer. None of them holds the
database open (see sqlml.serving.models).
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlml.errors import SqlmlError
from sqlml.online import KEY, OnlineSignature
from sqlml.serving.config import Limits
from sqlml.serving.models import (
    DatabaseBusy,
    DatabaseFile,
    ModelPool,
    Selection,
    online_signatures,
)
from sqlml.serving.requestlog import RequestLog, key_text, sample
from sqlml.serving.rest import (
    Batch,
    HttpError,
    PredictRequest,
    Route,
    decode_inputs,
    dumps,
    encode_predict,
    metadata_document,
    parse_predict,
    parse_route,
    status_document,
)
from sqlml.serving.shadow import ShadowJob, ShadowRunner

log = logging.getLogger("sqlml.serve")

START_RETRY_SECONDS = 10.0  # how long start waits for a database locked by someone else


class Server:
    """`sqlml serve` as an object: `start()` returns once it listens; `stop()` drains it.

    Used by `run_server` (blocking) and by tests (in-process, ephemeral port).
    """

    def __init__(
        self,
        database: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8501,
        config: str | Path | None = None,
        **limits: Any,
    ):
        self.limits = Limits.from_options(**limits)
        self.database = Path(database)
        if not self.database.is_file():
            raise SqlmlError(f"database {self.database} does not exist")
        self.host, self.port = host, port
        self.db = DatabaseFile(self.database)
        self.pool = ModelPool(self.db, Path(config) if config else None)
        self.requestlog = RequestLog(
            self.db,
            flush_seconds=self.limits.log_flush_seconds,
            flush_rows=self.limits.log_flush_rows,
            max_rows=self.limits.log_max_rows,
        )
        self.shadow = ShadowRunner(self.requestlog, self.limits.shadow_queue)
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._inflight = 0
        self._inflight_lock = threading.Condition()
        self._random = random.Random()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Server:
        """Read the catalog and config (errors raise here), bind, start the threads."""
        deadline = time.monotonic() + START_RETRY_SECONDS
        while True:
            try:
                self.pool.refresh(force=True, strict=True)
                break
            except DatabaseBusy as error:
                if time.monotonic() > deadline:
                    raise SqlmlError(f"cannot start: {error}") from None
                time.sleep(0.2)
        handler = type("Handler", (_Handler,), {"app": self, "timeout": self.limits.timeout})
        self._httpd = _HTTPServer((self.host, self.port), handler, self.limits.max_connections)
        self.port = self._httpd.server_address[1]
        self.requestlog.start()
        self.shadow.start()
        accept = lambda: self._httpd.serve_forever(poll_interval=0.1)  # noqa: E731 - quick stop
        for target, name in ((accept, "accept"), (self._poll, "poll")):
            thread = threading.Thread(target=target, name=f"sqlml-serve-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        models = ", ".join(f"{n}@{r.latest}" for n, r in sorted(self.pool.state.models.items()))
        log.info("sqlml serve: %s on %s (models: %s)", self.database, self.url, models or "none")
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait(self) -> None:
        """Block until `stop()` (Ctrl-C in the main thread interrupts the wait)."""
        while not self._stopped.wait(0.5):
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish, close idle connections, score the
        queued shadow jobs and write the request log."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            deadline = time.monotonic() + timeout
            with self._inflight_lock:
                while self._inflight and time.monotonic() < deadline:
                    self._inflight_lock.wait(0.05)
            self._httpd.close_connections()
        for thread in self._threads:
            thread.join(timeout)
        self.shadow.stop(timeout)
        self.requestlog.stop(timeout)
        log.info(
            "sqlml serve stopped: %d log rows written, %d dropped; shadow: %d scored, "
            "%d failed, %d dropped",
            self.requestlog.written,
            self.requestlog.dropped,
            self.shadow.scored,
            self.shadow.failed,
            self.shadow.dropped,
        )
        self._stopped.set()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _poll(self) -> None:
        while not self._stopping.wait(self.limits.poll_interval):
            try:
                self.pool.refresh()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("refreshing the catalog failed; retrying at the next poll")

    # -- requests -----------------------------------------------------------------------------
    def begin(self) -> None:
        with self._inflight_lock:
            self._inflight += 1

    def end(self) -> None:
        with self._inflight_lock:
            self._inflight -= 1
            self._inflight_lock.notify_all()

    def predict(self, route: Route, request: PredictRequest) -> tuple[bytes, dict, Any]:
        """Score one request: (response body, headers, work to run after responding)."""
        selection = self.pool.select(route)
        servable = selection.servable
        signature = servable.signature(request.signature_name)
        settings = selection.routes.logging
        logging_on = settings is not None and settings.sample_rate > 0
        batch = decode_inputs(
            request,
            signature,
            servable.ref,
            max_instances=self.limits.max_instances,
            nan_for_null=servable.nan_for_null,
            extra_field=settings.key_column if logging_on and settings else None,
        )
        try:
            raw = servable.predict(batch.arrays, batch.n)
        except Exception as error:
            if type(error).__name__ == "InvalidArgument":  # onnxruntime: inputs it refuses
                raise HttpError(
                    400, f"model {servable.ref}: the model refused the inputs: {error}"
                ) from None
            log.exception("model %s failed", servable.ref)
            raise HttpError(500, f"model {servable.ref} failed: {error}") from None
        outputs = servable.online(raw, batch.n)
        if signature.keyed:
            outputs[KEY] = batch.arrays[KEY]
        body = encode_predict(outputs, signature, request.row_format)
        headers = {"X-Model-Version": str(servable.number)}
        if not (logging_on or (selection.default_route and selection.routes.shadow)):
            return body, headers, None
        return body, headers, lambda: self._after(selection, batch, raw, signature.keyed)

    def _after(self, selection: Selection, batch: Batch, raw: dict, keyed: bool) -> None:
        """Logging and shadow scoring, run once the response is sent."""
        now = time.time()
        routes = selection.routes
        keys = batch.values.get(KEY) if keyed else batch.extra
        if keys is not None:
            keys = [key_text(k) for k in keys]
        inputs = {k: v for k, v in batch.values.items() if k != KEY}
        settings = routes.logging
        if settings is not None and settings.sample_rate > 0:
            rows = sample(settings.sample_rate, batch.n, keys)
            self.requestlog.add(selection.servable, rows, keys, inputs, raw, now)
        shadow = routes.shadow
        if (
            selection.default_route
            and shadow is not None
            and self._random.random() < routes.shadow_rate
        ):
            arrays = {k: v for k, v in batch.arrays.items() if k != KEY}
            self.shadow.submit(
                ShadowJob(shadow, selection.servable.ref, batch.n, arrays, inputs, keys, now)
            )

    def status(self, route: Route) -> bytes:
        routes, numbers = self.pool.describe(route)
        return dumps(status_document([(n, self.pool.failure(routes.versions[n])) for n in numbers]))

    def metadata(self, route: Route) -> bytes:
        routes, numbers = self.pool.describe(route)
        version = routes.versions[numbers[0]]  # unpinned: the latest, as TF Serving
        signatures = [
            s for s in online_signatures(version).values() if isinstance(s, OnlineSignature)
        ]
        return dumps(metadata_document(version.name, version.version, signatures))


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap and a way to close idle keep-alive sockets."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int):
        self.max_connections = max_connections
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections.add(request)
        if full:
            with contextlib.suppress(OSError):
                request.sendall(
                    _response(503, dumps({"error": "too many connections; retry"}), close=True)
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _response(
    status: int, body: bytes, headers: dict[str, str] | None = None, *, close: bool = False
) -> bytes:
    phrase = HTTPStatus(status).phrase
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Handler(BaseHTTPRequestHandler):
    """TF Serving's routes; every answer is JSON, written in one send."""

    protocol_version = "HTTP/1.1"
    server_version = "sqlml-serve"
    disable_nagle_algorithm = True
    app: Server  # set per server
    _body_read = True

    # -- dispatch -----------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def _not_allowed(self) -> None:
        # HEAD answers carry no body on the wire: close rather than desynchronize the client
        self._body_read = "Content-Length" not in self.headers and self.command != "HEAD"
        self._error(HttpError(405, f"{self.command} is not supported", {"Allow": "GET, POST"}))

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed  # noqa: N815

    def _handle(self, method: str) -> None:
        self._body_read = method == "GET" and "Content-Length" not in self.headers
        after = None
        self.app.begin()
        try:
            route = parse_route(method, self.path)
            if method == "POST":
                body = self._read_body()
                request = parse_predict(body)
                payload, headers, after = self.app.predict(route, request)
            elif route.action == "metadata":
                payload, headers = self.app.metadata(route), {}
            else:
                payload, headers = self.app.status(route), {}
            self._send(200, payload, headers)
        except HttpError as error:
            self._error(error)
        except Exception as error:  # noqa: BLE001 - a bug must not kill the connection thread
            log.exception("unexpected error on %s %s", method, self.path)
            self._error(HttpError(500, f"internal error: {type(error).__name__}: {error}"))
        finally:
            self.app.end()
        if after is not None:
            try:
                after()
            except Exception:  # noqa: BLE001 - logging/shadow never fail a request
                log.exception("request logging or shadow scoring failed")

    def _read_body(self) -> bytes:
        """The body, within limits: 411 without a length, 413 before reading a big one, 408
        when the client stalls mid-body."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise HttpError(411, "send the body with a Content-Length (chunked is not supported)")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._body_read = True  # nothing follows
            raise HttpError(411, "a POST needs a Content-Length header")
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            raise HttpError(400, f"invalid Content-Length {length_header[:40]!r}") from None
        limit = self.app.limits.max_body_bytes
        if length > limit:
            raise HttpError(413, f"request body of {length} bytes exceeds the limit of {limit}")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise HttpError(
                408, f"the request body did not arrive within {self.timeout} s"
            ) from None
        if len(body) < length:
            raise HttpError(400, f"the body ended after {len(body)} of {length} bytes")
        self._body_read = True
        return body

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        limit = self.app.limits.max_body_bytes
        if length > limit:
            self._body_read = False
            self._error(
                HttpError(413, f"request body of {length} bytes exceeds the limit of {limit}")
            )
            return False
        return super().handle_expect_100()

    # -- output -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        if self.request_version == "HTTP/1.0" and not self.close_connection:
            headers = {**headers, "Connection": "keep-alive"}
        self.wfile.write(_response(status, body, headers, close=self.close_connection))

    def _error(self, error: HttpError) -> None:
        if not self._body_read:  # the unread body would be taken for the next request
            self.close_connection = True
        try:
            self._send(error.status, dumps({"error": error.message}), error.headers)
        except OSError:
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, headers too long...) as JSON too."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.write(
                _response(code, dumps({"error": message or HTTPStatus(code).phrase}), close=True)
            )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        log.debug("%s - %s", self.address_string(), format % args)


def run_server(
    database: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8501,
    config: str | Path | None = None,
    **limits: Any,
) -> None:
    """Serve the models of `database` until Ctrl-C (or SIGTERM); `limits` are
    `sqlml.serving.Limits` fields (max_body_bytes, max_instances, timeout, ...)."""
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    server = Server(database, host=host, port=port, config=config, **limits)
    server.start()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.wait()
    except KeyboardInterrupt:
        log.info("stopping (Ctrl-C)")
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

"""The fake Intuit as a real HTTP server on a loopback port, in a background thread.

Serves ``FakeIntuit.wsgi_app`` with wsgiref and one thread per connection.
Faults that lose the answer are done to the socket: "reset" closes it with
an RST (SO_LINGER 0), "timeout" holds it for ``fake.timeout_seconds`` and
then closes it. A "trickle" writes the whole answer one byte at a time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import struct
import sys
import threading
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from .errors import DropConnection, Trickle

if TYPE_CHECKING:
    from .fake import FakeIntuit


class Writer(Protocol):
    """Anything with ``write(text)`` and ``flush()``: a file, ``sys.stdout``, a command's
    ``self.stdout``."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


class _ServerHandler(ServerHandler):
    request_handler: _RequestHandler
    http_version = "1.1"
    _trickled = 0  # bytes of a "trickle" answer written so far

    def _write(self, data: bytes) -> None:
        # Every byte of the answer (status line and headers too) goes through here.
        trickle = self.result  # type: ignore[attr-defined]  # set by wsgiref's run()
        if not isinstance(trickle, Trickle):
            super()._write(data)
            return
        if not self._trickled:  # one byte per segment: no Nagle coalescing
            with contextlib.suppress(OSError):
                sock = self.request_handler.connection
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            if self._trickled:
                trickle.sleep(trickle.pause)
            self.stdout.write(data[i : i + 1])
            self.stdout.flush()
            self._trickled += 1

    def close(self) -> None:
        # Known only now, and forgotten by wsgiref's close(): whether the answer said how
        # long it is. Without a Content-Length its end is the end of the connection.
        headers = self.headers  # type: ignore[attr-defined]  # set by wsgiref.start_response
        self.request_handler.sized = headers is not None and "Content-Length" in headers
        super().close()

    def handle_error(self) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, DropConnection) and not self.headers_sent:  # type: ignore[attr-defined]
            self.request_handler.drop = exc
            return
        super().handle_error()

    def log_exception(self, exc_info) -> None:
        # wsgiref prints tracebacks to stderr; keep them, they are bugs in the fake.
        super().log_exception(exc_info)


class _RequestHandler(WSGIRequestHandler):
    drop: DropConnection | None = None
    sized = False  # the last answer had a Content-Length
    # HTTP/1.1 with keep-alive, as Intuit answers: a client that reuses its connections
    # pays one TCP handshake, not one per call. An idle connection is closed after this.
    protocol_version = "HTTP/1.1"
    timeout = 60

    def setup(self) -> None:
        super().setup()
        # wsgiref writes the head and the body apart: with Nagle's algorithm, a kept-alive
        # connection would wait for the client's delayed ACK (40 ms) between the two.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = self.server
        assert isinstance(server, _ThreadingWSGIServer)
        server.opened(self.connection)

    def handle(self) -> None:
        # BaseHTTPRequestHandler's loop: requests one after another on the connection.
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        # wsgiref's handle(), with a ServerHandler that can drop the connection.
        self.drop = None
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, OSError):
            self.close_connection = True  # idle past the timeout, or the client went away
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            self.close_connection = True
            return
        if not self.parse_request():
            self.close_connection = True
            return
        handler = _ServerHandler(
            self.rfile,
            self.wfile,  # type: ignore[arg-type]  # a socket file: typeshed says BufferedIOBase
            self.get_stderr(),
            self.get_environ(),
            multithread=True,
        )
        handler.request_handler = self
        handler.run(self.server.get_app())  # type: ignore[attr-defined]  # a WSGIServer
        if self.drop is not None:
            self.close_connection = True
            self._drop_connection(self.drop)
        elif not self.sized:
            self.close_connection = True

    def _drop_connection(self, drop: DropConnection) -> None:
        sock = self.connection
        if drop.kind == "timeout":
            drop.sleep(drop.seconds)
        else:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        try:
            sock.close()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    fake: FakeIntuit | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def opened(self, sock: socket.socket) -> None:
        """A client connected: count it (``fake.connections``), keep it to close on stop."""
        with self._open_lock:
            self._open.add(sock)
        if self.fake is not None:
            with self.fake._lock:
                self.fake.connections += 1

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every kept-alive connection (a stopped fake answers nobody)."""
        with self._open_lock:
            open_now, self._open = list(self._open), set()
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError)):
            return  # the client went away, or we dropped the connection on purpose
        super().handle_error(request, client_address)


class FakeIntuitServer:
    """Serve ``fake`` over HTTP on ``host:port`` (port 0: a free one) in a daemon thread.

    While running, ``fake.base_url`` is the server's URL, so ``fake.discovery_url``
    and the other URLs point at it; ``stop()`` restores the previous one.
    """

    def __init__(self, fake: FakeIntuit, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake
        self.host = host
        self.port = port
        self._httpd: _ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._previous_base_url: str | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        host = self.host if self.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self) -> FakeIntuitServer:
        if self._httpd is not None:
            return self
        httpd = _ThreadingWSGIServer((self.host, self.port), _RequestHandler)
        httpd.set_app(self.fake.wsgi_app)
        httpd.fake = self.fake
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.fake._interrupt.clear()
        self._previous_base_url = self.fake.base_url
        self.fake.base_url = self.url
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-intuit:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.fake._interrupt.set()  # wake sleeping "timeout" faults and latencies
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        self.fake._interrupt.clear()  # the sleepers are awake; later sleeps sleep again
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._previous_base_url is not None:
            self.fake.base_url = self._previous_base_url

    def serve_forever(self) -> None:
        """Block until Ctrl-C (for the command line)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> FakeIntuitServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._httpd is not None else "stopped"
        return f"<FakeIntuitServer {state}>"


def describe(fake: FakeIntuit, out: Writer) -> None:
    """Print where the fake is and the ``QB_OAUTH`` setting that points a site at it."""
    out.write(f"Fake Intuit ({fake.environment}) serving at {fake.base_url}\n")
    out.write(f"Discovery URL: {fake.discovery_url_for(fake.environment)}\n")
    out.write(f"Redirect URIs: {', '.join(fake.redirect_uris) or '(none)'}\n")
    if fake.webhook_url:
        out.write(f"Webhooks to: {fake.webhook_url} (send one from {fake.base_url}/_fake/)\n")
    out.write("Companies:\n")
    for company in fake.companies:
        out.write(f"  {company.realm_id}  {company.name}\n")
    out.write("QB_OAUTH = " + json.dumps(fake.qb_oauth_settings(), indent=4) + "\n")
    out.write("Press Ctrl-C to stop.\n")
    out.flush()

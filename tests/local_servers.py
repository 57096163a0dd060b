"""Small HTTP servers on 127.0.0.1 for tests that need a host other than the fake Intuit.

``RecordingServer`` answers every request with a fixed status, body and headers
and remembers what it received (method, path, headers), so a test can tell
whether a bearer token reached it. It is not Intuit and not qb_oauth: it plays
a stranger's host, or a discovery document the fake cannot serve.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    at: float = 0.0


@dataclass
class RecordingServer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    host: str = "127.0.0.1"
    received: list[Received] = field(default_factory=list)
    #: Statuses (and delays in seconds) for the first requests, before ``status`` applies.
    statuses: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    #: Or a function of what was received that picks the status.
    answer: Callable[[Received], int] | None = None

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.received.append(
                    Received(self.command, self.path, headers, body, time.monotonic())
                )
                if server.answer is not None:
                    status = server.answer(server.received[-1])
                else:
                    status = server.statuses.pop(0) if server.statuses else server.status
                if server.delays:
                    time.sleep(server.delays.pop(0))
                self.send_response(status)
                for name, value in server.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str = "/", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    @property
    def authorizations(self) -> list[str | None]:
        """The Authorization header of each request received (None where there was none)."""
        return [r.headers.get("authorization") for r in self.received]

    def json(self, data: dict) -> RecordingServer:
        self.body = json.dumps(data).encode()
        return self

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

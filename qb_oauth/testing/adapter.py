"""In-process transport: a ``requests`` adapter that calls the fake's WSGI app directly.

No socket is opened, yet the caller's code goes through ``requests`` exactly
as it would to Intuit: headers, bodies, status codes, timeouts (a "timeout"
fault raises ``ReadTimeout``) and connection errors (a "reset" fault raises
``ConnectionError``). A "trickle" takes as long as it would over a socket:
the adapter sleeps the pause times the answer's size, then answers.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from .errors import DropConnection, Trickle

if TYPE_CHECKING:
    from .fake import FakeIntuit


class FakeIntuitAdapter(BaseAdapter):
    """Mount on a session for ``fake.base_url``: ``session.mount(fake.base_url, adapter)``."""

    def __init__(self, fake: FakeIntuit) -> None:
        super().__init__()
        self.fake = fake

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        parts = urlsplit(request.url)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif hasattr(body, "read"):
            body = body.read()
        elif not isinstance(body, bytes):  # an iterable of chunks
            body = b"".join(c.encode("utf-8") if isinstance(c, str) else c for c in body)
        environ = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(parts.path or "/").encode("utf-8").decode("latin-1"),
            "QUERY_STRING": parts.query,
            "SERVER_NAME": parts.hostname or "fake-intuit.test",
            "SERVER_PORT": str(parts.port or (443 if parts.scheme == "https" else 80)),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": parts.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
            "qb_fake.inprocess": True,
        }
        for name, value in request.headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif key != "CONTENT_LENGTH":
                environ["HTTP_" + key] = value
        captured: dict = {}

        def start_response(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers

        try:
            chunks = self.fake.wsgi_app(environ, start_response)
        except DropConnection as drop:
            if drop.kind == "timeout":
                raise requests.exceptions.ReadTimeout(
                    f"Read timed out (fake Intuit, {request.method} {parts.path})",
                    request=request,
                ) from None
            raise requests.exceptions.ConnectionError(
                ConnectionResetError(104, "Connection reset by peer"), request=request
            ) from None
        content = b"".join(chunks)
        status_text = captured["status"]
        if isinstance(chunks, Trickle):
            chunks.sleep(chunks.pause * _answer_size(status_text, captured["headers"], content))

        response = requests.Response()
        response.status_code = int(status_text.split(" ", 1)[0])
        response.reason = status_text.split(" ", 1)[1] if " " in status_text else ""
        response.headers = CaseInsensitiveDict(captured["headers"])
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = io.BytesIO(content)
        response._content = content
        response._content_consumed = True  # type: ignore[attr-defined]  # as requests does
        response.url = request.url
        response.request = request
        response.connection = self  # type: ignore[assignment]  # requests reads .close() only
        return response

    def close(self) -> None:
        pass


def _answer_size(status: str, headers: list[tuple[str, str]], body: bytes) -> int:
    """Bytes of the answer on the wire: status line, headers, blank line, body."""
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return len(head.encode("latin-1")) + len(body)


_patch_lock = threading.Lock()


@contextlib.contextmanager
def mounted(fake: FakeIntuit) -> Iterator[FakeIntuitAdapter]:
    """Route every ``requests`` call to ``fake.base_url`` into the fake while active.

    Patches ``requests.Session.__init__`` so each session created meanwhile
    (including the ones ``requests.get``/``requests.request`` make, and
    subclasses such as intuit-oauth's ``AuthClient``) mounts the adapter for
    ``fake.base_url`` only. Sessions that existed before are not touched.
    Nests; restores on exit.
    """
    adapter = FakeIntuitAdapter(fake)
    with _patch_lock:
        original = requests.Session.__init__

        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.mount(fake.base_url.rstrip("/") + "/", adapter)

        requests.Session.__init__ = __init__  # type: ignore[method-assign]
    try:
        yield adapter
    finally:
        with _patch_lock:
            requests.Session.__init__ = original  # type: ignore[method-assign]

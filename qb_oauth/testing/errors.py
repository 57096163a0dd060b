"""What the fake Intuit hands its callers and the transports that run it, besides answers.

Its exceptions, and the body of a "trickle" fault. Its own module so that the
fake, the in-process adapter and the HTTP server all import it, and none of
them imports another to get it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable


class FakeIntuitError(Exception):
    """An error the fake's authorization page would show (instead of redirecting)."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


class DropConnection(Exception):
    """Raised by ``wsgi_app`` when the answer must be lost: "reset" or "timeout".

    The server closes the socket (after ``seconds`` for a timeout); the
    in-process adapter raises the matching ``requests`` exception at once.
    """

    def __init__(self, kind: str, seconds: float = 0.0, sleep=None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.seconds = seconds
        self.sleep = sleep or time.sleep


class Trickle(list):
    """What ``wsgi_app`` returns for a "trickle" fault: the body, and ``pause`` between bytes.

    The server writes the whole answer (status line, headers, body) one byte
    at a time with ``pause`` seconds between bytes; the in-process adapter
    sleeps ``pause`` times the answer's size, then answers. To any other WSGI
    server it is the plain body.
    """

    def __init__(self, chunks: Iterable[bytes], pause: float, sleep=None) -> None:
        super().__init__(chunks)
        self.pause = pause
        self.sleep = sleep or time.sleep

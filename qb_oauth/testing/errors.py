"""What the fake Intuit raises: to its callers, and to the transports that run it.

Its own module so that the fake, the in-process adapter and the HTTP server
all import it, and none of them imports another to get it.
"""

from __future__ import annotations

import time


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

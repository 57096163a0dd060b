"""A deadline for a whole HTTP call, not only for each socket read.

``requests`` (urllib3) applies its timeout to the connect and to each read of
the socket: an answer that trickles in a byte at a time never times out, and
a refresh holding the row's lease could outlive the lease (another worker
would then refresh with the same token). Within :func:`call_deadline`, every
connection that qb_oauth's adapter hands out is watched by one watchdog
thread, which shuts the socket down when the deadline passes; the blocked
read then fails at once and the caller sees an ordinary connection error.

No library we found bounds a whole call (urllib3's ``Timeout(total=…)``
still bounds each read only), hence this small module.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["CallDeadline", "DeadlineAdapter", "call_deadline"]


class _Watch:
    __slots__ = ("cancelled", "conn", "deadline", "owner")

    def __init__(self, deadline: float, conn: Any, owner: CallDeadline) -> None:
        self.deadline = deadline
        self.conn = conn
        self.owner = owner
        self.cancelled = False


class _Watchdog:
    """One daemon thread that shuts down the sockets of calls past their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._cancelled = 0

    def watch(self, watch: _Watch) -> None:
        with self._cond:
            heapq.heappush(self._heap, (watch.deadline, next(self._seq), watch))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="qb_oauth-call-deadline", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._cond.notify()

    def cancel(self, watches: list[_Watch]) -> None:
        """Forget finished calls. Entries are dropped when they reach the top of the heap,
        or all at once when most of the heap is finished calls: memory stays proportional
        to the calls in flight, not to the calls made within one deadline."""
        with self._cond:
            for watch in watches:
                watch.cancelled = True
                watch.conn = None
            self._cancelled += len(watches)
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled = max(0, self._cancelled - 1)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _deadline, _seq, watch = heapq.heappop(self._heap)
                conn = watch.conn
            if not watch.cancelled:
                watch.owner.expired = True
                _shut_down(conn)

    def _after_fork(self) -> None:
        # The thread does not survive a fork (django-q2 forks its workers): start afresh.
        self._cond = threading.Condition()
        self._heap = []
        self._thread = None
        self._cancelled = 0


def _shut_down(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        # The plain socket's shutdown, also for an SSL socket: it ends the blocked read
        # in the other thread without touching the SSL object that thread is using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._after_fork)

_local = threading.local()


class CallDeadline:
    """The deadline of the calls made inside one :func:`call_deadline` block."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self._watches: list[_Watch] = []

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _watch(self, conn: Any) -> None:
        watch = _Watch(self.deadline, conn, self)
        self._watches.append(watch)
        _WATCHDOG.watch(watch)

    def _close(self) -> None:
        if self._watches:
            _WATCHDOG.cancel(self._watches)
            self._watches = []


@contextlib.contextmanager
def call_deadline(seconds: float) -> Iterator[CallDeadline]:
    """Bound every HTTP call made through :class:`DeadlineAdapter` inside the block to
    ``seconds`` of wall time in all (connect, send, wait and read together)."""
    previous = getattr(_local, "current", None)
    current = CallDeadline(seconds)
    _local.current = current
    try:
        yield current
    finally:
        current._close()
        _local.current = previous


class _DeadlinePoolMixin:
    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        current: CallDeadline | None = getattr(_local, "current", None)
        if current is not None:
            current._watch(conn)
        return conn


class _DeadlineHTTPConnectionPool(_DeadlinePoolMixin, HTTPConnectionPool):
    pass


class _DeadlineHTTPSConnectionPool(_DeadlinePoolMixin, HTTPSConnectionPool):
    pass


_POOL_CLASSES = {"http": _DeadlineHTTPConnectionPool, "https": _DeadlineHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections honour :func:`call_deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOL_CLASSES)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
        return manager

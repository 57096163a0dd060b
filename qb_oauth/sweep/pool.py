"""A bounded pool of worker threads that streams candidates from a lazy source."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable

from django.db import connections

from .claims import Candidate
from .stats import FAILED_OTHER

logger = logging.getLogger("qb_oauth.tasks")


def _safe(fn: Callable[[Candidate], str], candidate: Candidate) -> str:
    try:
        return fn(candidate)
    except Exception:  # a bug or a database error must not stop the sweep
        logger.exception("Sweep: connection %s failed unexpectedly.", candidate.pk)
        return FAILED_OTHER


_STOP = object()


def run_concurrently(
    candidates: Iterable[Candidate],
    fn: Callable[[Candidate], str],
    on_outcome: Callable[[Candidate, str], None],
    concurrency: int,
) -> None:
    """Run ``fn`` over ``candidates``, ``concurrency`` at a time, streaming.

    ``candidates`` is consumed lazily through a bounded queue (twice the
    concurrency), so an iterator that claims batches as it goes keeps memory
    flat. ``on_outcome`` is called under a lock. Worker threads close their
    database connections when they finish. With ``concurrency`` 1 everything
    runs in the calling thread (and its transaction).
    """
    if concurrency <= 1:
        for candidate in candidates:
            on_outcome(candidate, _safe(fn, candidate))
        return
    work: queue.Queue = queue.Queue(maxsize=concurrency * 2)
    lock = threading.Lock()

    def worker() -> None:
        try:
            while True:
                item = work.get()
                if item is _STOP:
                    return
                outcome = _safe(fn, item)
                with lock:
                    on_outcome(item, outcome)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=worker, name=f"qb-sweep-{i}", daemon=True)
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    try:
        for candidate in candidates:
            work.put(candidate)
    finally:
        for _thread in threads:
            work.put(_STOP)
        for thread in threads:
            thread.join()

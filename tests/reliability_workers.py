"""Code that runs in the worker processes of tests/test_reliability.py.

Each process sets up Django on the test's own database (passed by name, see
tests/workers.py) and points QB_OAUTH at the fake Intuit the test serves over
HTTP. Two kinds of process:

* :func:`refresh_until_killed`: refreshes some connections at once, one
  thread each, and is killed with SIGKILL by the test at a chosen moment.
* :func:`serve`: a long-lived worker fed over a multiprocessing queue. It
  keeps a fixed pool of threads (each with its own database connection) that
  run the actions of a race at given moments, and answers "get" requests
  (get_access_token for a list of connections, one after the other).

:class:`SlotPool` is also used by the test process itself, so a race mixes
threads of the test process with threads of the workers.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from datetime import timedelta

from .workers import setup_django


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as err:  # reported to the test, which judges it
        return ("error", type(err).__name__, str(err)[:300])


# -- actions --------------------------------------------------------------------------


def op_get(pk, _arg=None):
    from qb_oauth import tokens
    from qb_oauth.models import QuickBooksConnection

    return tokens.get_access_token(QuickBooksConnection.objects.get(pk=pk))


def op_force(pk, _arg=None):
    from qb_oauth import tokens
    from qb_oauth.models import QuickBooksConnection

    conn = QuickBooksConnection.objects.get(pk=pk)
    return tokens.refresh(conn, force=True).access_token


def op_expire(pk, _arg=None):
    """Time passes on our side: the stored access token is now expired."""
    from django.utils import timezone

    from qb_oauth.models import QuickBooksConnection

    QuickBooksConnection.objects.filter(pk=pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=1)
    )


OPS = {"get": op_get, "force": op_force, "expire": op_expire}


class SlotPool:
    """``size`` long-lived threads; each runs the actions given to it, at their moments.

    An action is ``(action_id, pk, op, arg, delay)``: run ``op`` on connection
    ``pk`` ``delay`` seconds after the batch's ``start_at`` (epoch seconds, so
    that several processes start together). A slot runs its actions in order;
    one that is late starts at once.
    """

    def __init__(self, size: int, extra_ops: dict | None = None) -> None:
        self.ops = {**OPS, **(extra_ops or {})}
        self._inboxes = [queue.Queue() for _ in range(size)]
        self._done: queue.Queue = queue.Queue()
        self._threads = [
            threading.Thread(target=self._loop, args=(inbox,), daemon=True)
            for inbox in self._inboxes
        ]
        for t in self._threads:
            t.start()

    @property
    def size(self) -> int:
        return len(self._inboxes)

    def _loop(self, inbox: queue.Queue) -> None:
        from django.db import connections

        try:
            while True:
                job = inbox.get()
                if job is None:
                    return
                start_at, actions = job
                results = []
                for action_id, pk, op, arg, delay in sorted(actions, key=lambda a: a[4]):
                    pause = start_at + delay - time.time()
                    if pause > 0:
                        time.sleep(pause)
                    began = time.monotonic()
                    outcome = _outcome(self.ops[op], pk, arg)
                    results.append((action_id, outcome, time.monotonic() - began))
                self._done.put(results)
        finally:
            connections.close_all()

    def run(self, start_at: float, per_slot: list[list[tuple]]) -> list[tuple]:
        """Run ``per_slot[i]`` on slot ``i``; returns every action's (id, outcome, seconds)."""
        assert len(per_slot) <= self.size
        for inbox, actions in zip(self._inboxes, per_slot, strict=False):
            inbox.put((start_at, actions))
        results = []
        for _ in per_slot:
            results.extend(self._done.get())
        return results

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for t in self._threads:
            t.join(30)


# -- processes --------------------------------------------------------------------------


def serve(db_name, qb_oauth, slots, tasks, results):
    """A long-lived worker: ("race", start_at, per_slot) and ("get", pks) tasks until None."""
    setup_django(db_name, qb_oauth)
    from django.db import connections

    pool = SlotPool(slots)
    results.put(("ready", os.getpid()))
    try:
        while True:
            task = tasks.get()
            if task is None:
                return
            if task[0] == "race":
                _kind, start_at, per_slot = task
                results.put(("race", pool.run(start_at, per_slot)))
            elif task[0] == "get":
                results.put(("get", [(pk, _outcome(op_get, pk)) for pk in task[1]]))
            else:
                results.put(("error", f"unknown task {task[0]!r}"))
    finally:
        pool.close()
        connections.close_all()


def refresh_until_killed(db_name, qb_oauth, pks, started):
    """Refresh every connection of ``pks`` at once (one thread each); the test kills us.

    Reports nothing: what happened is read from the database and the fake.
    """
    setup_django(db_name, qb_oauth)
    from qb_oauth import tokens
    from qb_oauth.models import QuickBooksConnection

    conns = [QuickBooksConnection.objects.get(pk=pk) for pk in pks]
    threads = [threading.Thread(target=_outcome, args=(tokens.get_access_token, c)) for c in conns]
    started.put(os.getpid())
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Not killed in time: stay alive so the test sees the mistake, not a clean exit.
    time.sleep(120)

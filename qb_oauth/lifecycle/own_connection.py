"""Writes that must not join the caller's transaction.

Tokens written inside the caller's transaction would be rolled back with it,
and a rotated refresh token rolled back is a connection lost: Intuit killed
the old value when it issued the new one. So when the caller holds a
transaction, the lifecycle runs and commits on a database connection of its
own (in a helper thread), and the caller waits for it. SQLite is the
exception: it has one writer at a time, so there the lifecycle writes inside
the caller's transaction (docs/usage.md, "Inside a transaction").
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.db import transaction

from ..conf import qb_settings

F = TypeVar("F", bound=Callable[..., Any])


def inside_callers_transaction() -> bool:
    """Whether the caller holds a transaction open (``atomic()``, ``ATOMIC_REQUESTS``).

    A test case's own wrapping transaction does not count: Django's test cases
    mark it, and the database is the test's alone.
    """
    conn = transaction.get_connection()
    if conn.vendor == "sqlite":
        return False
    return conn.in_atomic_block and not all(
        getattr(block, "_from_testcase", False) for block in conn.atomic_blocks
    )


def run_on_own_connection(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``func`` in a helper thread on a database connection of its own; wait for it."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        from django.db import connection, connections

        try:
            if connection.vendor == "postgresql":
                # If the caller's transaction holds the row's lock, fail instead of waiting
                # for a transaction that waits for us.
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT set_config('lock_timeout', %s, false)",
                        [f"{int(qb_settings.wait_limit * 1000)}ms"],
                    )
            outcome["result"] = func(*args, **kwargs)
        except BaseException as err:  # handed to the caller's thread
            outcome["error"] = err
        finally:
            connections.close_all()

    worker = threading.Thread(target=run, name="qb_oauth-own-connection", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def committed_independently(func: F) -> F:
    """Decorator: run ``func`` on its own connection when called inside a transaction."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if inside_callers_transaction():
            return run_on_own_connection(func, *args, **kwargs)
        return func(*args, **kwargs)

    return cast(F, wrapper)

"""The threads of one process that find a token expired at once follow one of them.

The first thread refreshes (through the lease, which also guards against other
processes); the others wait on an in-process event instead of polling the
database, and take the tokens the leader stored, without a query. A leader's
outage is raised again in its followers rather than retried by each in turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from ..conf import qb_settings
from ..exceptions import IntuitUnavailable, QuickBooksError
from ..models import QuickBooksConnection
from ..redact import holds_tokens

#: The columns ``get_access_token`` reads, and a leader hands to its followers.
LOADED_FIELDS = (
    "state",
    "access_token",
    "access_token_expires_at",
    "token_version",
    "last_used_at",
    "last_error_at",
    "tokens_unreadable_at",
)


class Flight:
    """One in-process refresh of a connection that other threads wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        #: The leader's stored row (:data:`LOADED_FIELDS`) once its refresh returned.
        self.values: dict[str, Any] | None = None


_flights: dict[tuple[str, int], Flight] = {}
_flights_lock = threading.Lock()


def _key(connection: QuickBooksConnection) -> tuple[str, int]:
    return (connection._state.db or "default", connection.pk)


def current(connection: QuickBooksConnection) -> Flight | None:
    """The refresh of ``connection`` another thread of this process is making, if any."""
    return _flights.get(_key(connection))


def apply(connection: QuickBooksConnection, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(connection, name, value)


@holds_tokens
def follow(flight: Flight, connection: QuickBooksConnection) -> bool:
    """Wait for another thread's refresh of ``connection``; True if it left a fresh token."""
    if not flight.done.wait(qb_settings.wait_limit):
        raise IntuitUnavailable("Another thread is refreshing this connection; try again.")
    error = flight.error
    if isinstance(error, QuickBooksError):
        raise type(error)(str(error), intuit_tid=error.intuit_tid, status=error.status)
    if flight.values is None:
        return False
    apply(connection, flight.values)
    connection.raise_for_state()
    return not connection.access_token_expired(qb_settings.REFRESH_MARGIN, timezone.now())


@holds_tokens
def once_per_process(
    connection: QuickBooksConnection,
    refresh: Callable[[QuickBooksConnection], Any],
    *,
    first: Callable[[], None] | None = None,
) -> None:
    """``refresh(connection)``, with the threads of this process that ask at once coalesced.

    ``first`` runs once for the flight, in the leader, before it refreshes.
    """
    key = _key(connection)
    with _flights_lock:
        flight = _flights.get(key)
        leader = flight is None
        if leader:
            flight = _flights[key] = Flight()
    assert flight is not None
    if leader:
        try:
            if first is not None:
                first()
            refresh(connection)
            flight.values = {name: getattr(connection, name) for name in LOADED_FIELDS}
        except BaseException as err:
            flight.error = err
            raise
        finally:
            with _flights_lock:
                _flights.pop(key, None)
            flight.done.set()
        return
    if follow(flight, connection):
        return
    row = QuickBooksConnection.objects.filter(pk=connection.pk).values(*LOADED_FIELDS).get()
    apply(connection, row)
    connection.raise_for_state()
    if connection.access_token_expired(qb_settings.REFRESH_MARGIN, timezone.now()):
        refresh(connection)

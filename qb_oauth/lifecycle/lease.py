"""The row lease: at most one refresh of a connection at a time, across machines.

Intuit rotates refresh tokens and the old value may die the moment a new one
is issued, so two workers refreshing one connection with the same refresh
token can cost the connection. The lock is a **lease on the row**: a
conditional ``UPDATE … SET refresh_lease_owner=<me>,
refresh_lease_expires_at=<now + ttl> WHERE pk=… AND (lease is free or
expired)``. We chose it over ``SELECT … FOR UPDATE`` held across the call to
Intuit because:

* it holds on PostgreSQL *and* SQLite (where ``select_for_update`` is a
  no-op), since a single conditional UPDATE is atomic on both;
* no database transaction stays open while Intuit answers: the tokens are
  then written in one short transaction;
* a worker killed mid-refresh leaves a lease that expires by itself.

Both the expiry written and the one compared are the database's clock
(``Now()``): machines whose clocks disagree cannot take a live lease from
each other. The others poll the row until the holder's work is done; if it
failed with an outage they raise :class:`~qb_oauth.exceptions.IntuitUnavailable`
too rather than hammering Intuit one after another.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.db import Error as DatabaseError
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, Value
from django.db.models.functions import Now
from django.utils import timezone

from ..conf import qb_settings
from ..exceptions import IntuitUnavailable
from ..models import QuickBooksConnection

logger = logging.getLogger("qb_oauth.tokens")

#: The lease columns, which a write made after the lease ran out must not touch.
LEASE_FIELDS = ("refresh_lease_owner", "refresh_lease_expires_at")

FREE, TAKEOVER = "free", "takeover"

_POLL_START = 0.01
_POLL_MAX = 0.05


def db_now_plus(delta: timedelta) -> ExpressionWrapper:
    """The database's clock plus ``delta``, as an expression for a query."""
    return ExpressionWrapper(
        Now() + Value(delta, output_field=DurationField()), output_field=DateTimeField()
    )


def _ttl() -> timedelta:
    return timedelta(seconds=qb_settings.REFRESH_LEASE_TTL)


@dataclass
class Lease:
    """A caller's turn at a connection: ``acquired``, or the row another holder left."""

    owner: str
    acquired: bool
    row: QuickBooksConnection | None = None
    #: Taken over from a holder whose lease ran out (paused or killed mid-refresh).
    takeover: bool = False
    #: ``time.monotonic()`` before the lease was taken: it ends no earlier than this + TTL.
    taken_at: float = 0.0
    #: A background store of Intuit's answer holds (and renews) the lease now.
    handed_over: bool = False

    def seconds_left(self) -> float:
        return self.taken_at + qb_settings.REFRESH_LEASE_TTL - time.monotonic()


def _rows():
    return QuickBooksConnection.objects


def try_lease(pk: int, owner: str) -> str | None:
    """Take the row's lease if it is free (:data:`FREE`) or expired (:data:`TAKEOVER`)."""
    values = {"refresh_lease_owner": owner, "refresh_lease_expires_at": db_now_plus(_ttl())}
    if _rows().filter(pk=pk, refresh_lease_expires_at__isnull=True).update(**values):
        return FREE
    if _rows().filter(pk=pk, refresh_lease_expires_at__lt=Now()).update(**values):
        return TAKEOVER
    return None


def renew(pk: int, owner: str) -> None:
    """Extend ``owner``'s lease by a whole TTL from now (the database's now)."""
    _rows().filter(pk=pk, refresh_lease_owner=owner).update(
        refresh_lease_expires_at=db_now_plus(_ttl())
    )


def release(pk: int, owner: str) -> None:
    """Give ``owner``'s lease back. A failure is logged: the lease expires by itself, and
    the error that brought the caller here matters more."""
    try:
        _rows().filter(pk=pk, refresh_lease_owner=owner).update(
            refresh_lease_owner="", refresh_lease_expires_at=None
        )
    except DatabaseError as err:
        logger.warning("Could not release the lease of connection %s (%s).", pk, type(err).__name__)


def acquire_or_wait(
    connection: QuickBooksConnection,
    done: Callable[[QuickBooksConnection], bool],
) -> Lease:
    """Take the row's lease, or wait until ``done(row)`` says another holder did the work.

    Returns a lease that is ``acquired`` (the caller must release it), or not
    acquired with the row that satisfied ``done``. Raises
    :class:`IntuitUnavailable` when the holder failed or took longer than
    ``2 × HTTP_TIMEOUT + 5`` s.
    """
    owner = uuid.uuid4().hex
    baseline_error_at = connection.last_error_at
    deadline = time.monotonic() + qb_settings.wait_limit
    delay = _POLL_START
    lease_free = True
    while True:
        # Try the UPDATE only when the lease looked free or expired at the last read.
        taken_at = time.monotonic()
        taken = try_lease(connection.pk, owner) if lease_free else None
        if taken:
            return Lease(owner, True, takeover=taken == TAKEOVER, taken_at=taken_at)
        row = _rows().get(pk=connection.pk)
        if done(row):
            return Lease(owner, False, row)
        # Only a hint of when to try again: the UPDATE above decides, on the database's clock.
        expires = row.refresh_lease_expires_at
        lease_free = expires is None or expires < timezone.now()
        if row.last_error_at != baseline_error_at and lease_free:
            raise IntuitUnavailable(
                f"A concurrent refresh failed: {row.last_error or 'Intuit unavailable'}"
            )
        if time.monotonic() > deadline:
            raise IntuitUnavailable("Another worker is refreshing this connection; try again.")
        time.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 1.5, _POLL_MAX)

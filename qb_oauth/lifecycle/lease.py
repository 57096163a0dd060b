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

import functools
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import Error as DatabaseError
from django.db import connections, router
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
    """A caller's turn at a connection: ``acquired`` (with the row as it is under the lease,
    when the database could read it in the same statement), or the row another holder
    left."""

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


#: The database's clock, and that clock plus some seconds, in each dialect that can take a
#: lease and read the row in one statement (``UPDATE … RETURNING``).
_CLOCKS = {
    "postgresql": ("STATEMENT_TIMESTAMP()", "STATEMENT_TIMESTAMP() + %s * INTERVAL '1 second'"),
    "sqlite": (
        "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW')",
        "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW', '+' || %s || ' seconds')",
    ),
}


#: Not read under the lease: a refresh needs the refresh token, not the access or id
#: token (whether an access token is stored is read as ``qb_has_access_token``).
_NOT_READ = ("access_token", "id_token")


def _read_fields() -> list[Any]:
    return [f for f in QuickBooksConnection._meta.concrete_fields if f.name not in _NOT_READ]


@functools.cache
def _lease_sql(alias: str) -> str:
    """``UPDATE … RETURNING``: take a free or expired lease and read the row in one
    statement. Which case it was is told by the owner written (``.f`` free, ``.t``
    taken over), the one thing RETURNING cannot say about the row before."""
    db = connections[alias]
    now, later = _CLOCKS[db.vendor]
    meta = QuickBooksConnection._meta
    q = db.ops.quote_name
    owner, expires = q("refresh_lease_owner"), q("refresh_lease_expires_at")
    columns = ", ".join(q(str(f.column)) for f in _read_fields())
    return (
        f"UPDATE {q(meta.db_table)} SET {owner} = CASE WHEN {expires} IS NULL THEN %s "  # noqa: S608 - names are ours
        f"ELSE %s END, {expires} = {later} WHERE {q(str(meta.pk.column))} = %s AND "
        f"({expires} IS NULL OR {expires} < {now}) "
        f"RETURNING {columns}, {q('access_token')} IS NOT NULL"
    )


@functools.cache
def _readers(alias: str) -> tuple[list[str], list[tuple[list[Any], Any]]]:
    """The attribute names of the columns RETURNING gives, and the converters (with their
    column) that turn each raw value into the model's (decrypting the refresh token)."""
    db = connections[alias]
    table = QuickBooksConnection._meta.db_table
    readers = []
    for f in _read_fields():
        column = f.get_col(table)
        readers.append((db.ops.get_db_converters(column) + f.get_db_converters(db), column))
    return [f.attname for f in _read_fields()], readers


def _as_row(alias: str, raw: tuple[Any, ...]) -> QuickBooksConnection:
    """The row RETURNING gave, as a connection whose access and id tokens are deferred."""
    names, readers = _readers(alias)
    db = connections[alias]
    values = []
    for value, (converters, column) in zip(raw[:-1], readers, strict=True):
        for convert in converters:
            value = convert(value, column, db)
        values.append(value)
    row = QuickBooksConnection.from_db(alias, names, values)
    row.qb_has_access_token = bool(raw[-1])  # type: ignore[attr-defined]  # as with_token_presence() names it
    return row


def try_lease(pk: int, owner: str) -> tuple[str, QuickBooksConnection | None] | None:
    """Take the row's lease if it is free (:data:`FREE`) or expired (:data:`TAKEOVER`).

    Returns ``(how, row)``, the row as it is under the new lease where the database
    can say so in the same statement (PostgreSQL, SQLite: ``UPDATE … RETURNING``), else
    None for the row; or None when the lease is held.
    """
    alias = router.db_for_write(QuickBooksConnection)
    db = connections[alias]
    if db.vendor in _CLOCKS:
        params: list[Any] = [f"{owner}.f", f"{owner}.t", qb_settings.REFRESH_LEASE_TTL, pk]
        with db.cursor() as cursor:
            cursor.execute(_lease_sql(alias), params)
            raw = cursor.fetchone()
        if raw is None:
            return None
        row = _as_row(alias, raw)
        return (TAKEOVER if row.refresh_lease_owner.endswith(".t") else FREE), row
    values = {"refresh_lease_owner": f"{owner}.f", "refresh_lease_expires_at": db_now_plus(_ttl())}
    if _rows().filter(pk=pk, refresh_lease_expires_at__isnull=True).update(**values):
        return FREE, None
    values["refresh_lease_owner"] = f"{owner}.t"
    if _rows().filter(pk=pk, refresh_lease_expires_at__lt=Now()).update(**values):
        return TAKEOVER, None
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
            how, row_now = taken
            suffix = ".t" if how == TAKEOVER else ".f"
            return Lease(
                owner + suffix, True, row=row_now, takeover=how == TAKEOVER, taken_at=taken_at
            )
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

"""What a token answer writes, and how a write that holds one is never dropped.

Intuit's answer is stored in one statement with everything it carries: the
access token, the (possibly rotated) refresh token and both expiries. A write
the database refuses (a deadlock, a failover, a trigger, a full disk) is
retried with exponential backoff and jitter (tenacity) for as long as the
caller allows (a refresh: while its lease lasts); after that
:func:`store_later` keeps the answer in memory and writes it from a
background thread as soon as the database takes it, for as long as the
process lives. docs/reliability.md has the table of these unlucky paths.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import Error as DatabaseError
from django.db import connections, router, transaction
from django.db.models import Field, Q
from django.db.models.expressions import CombinedExpression
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random,
)

from ..client import TokenResponse
from ..models import ConnectionEvent, ConnectionState, QuickBooksConnection
from ..redact import holds_tokens

logger = logging.getLogger("qb_oauth.tokens")

T = TypeVar("T")


def _expiry(now: datetime, seconds: int | None) -> datetime | None:
    return None if seconds is None else now + timedelta(seconds=int(seconds))


@holds_tokens
def token_fields(tokens: TokenResponse, now: datetime) -> dict[str, Any]:
    """The columns a successful answer of the token endpoint writes, lease ended."""
    fields: dict[str, Any] = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "access_token_expires_at": _expiry(now, tokens.expires_in),
        "refresh_token_expires_at": _expiry(now, tokens.refresh_token_expires_in),
        "last_refreshed_at": now,
        **QuickBooksConnection.backoff_success_values(),
        "state": ConnectionState.ACTIVE,
        "tokens_unreadable_at": None,
        "refresh_lease_owner": "",
        "refresh_lease_expires_at": None,
        # QuerySet.update() does not apply auto_now.
        "updated_at": now,
    }
    if tokens.refresh_token_hard_expires_in is not None:
        fields["refresh_token_hard_expires_at"] = _expiry(now, tokens.refresh_token_hard_expires_in)
    if tokens.id_token:
        fields["id_token"] = tokens.id_token
    return fields


def copy_row(connection: QuickBooksConnection, row: QuickBooksConnection) -> None:
    """Give ``connection`` every column ``row`` holds (the caller's object is updated in
    place); a column ``row`` did not load is left as ``connection`` has it."""
    deferred = row.get_deferred_fields()
    for f in QuickBooksConnection._meta.concrete_fields:
        if f.attname not in deferred:
            setattr(connection, f.attname, getattr(row, f.attname))


def _note_retry(pk: int | None, what: str, error: BaseException | None) -> None:
    logger.warning(
        "Storing %s of connection %s failed (%s); retrying.",
        what,
        pk if pk is not None else "(new)",
        type(error).__name__,  # the class only: a database message may quote the row
    )
    db = transaction.get_connection()
    if not db.in_atomic_block:
        db.close_if_unusable_or_obsolete()  # a failover left it broken: reconnect


def _retrying(seconds: float, pk: int | None, what: str) -> Retrying:
    def before_sleep(state: RetryCallState) -> None:
        _note_retry(pk, what, state.outcome.exception() if state.outcome else None)

    return Retrying(
        retry=retry_if_exception_type(DatabaseError),
        stop=stop_after_delay(max(0.0, seconds)),
        wait=wait_exponential(multiplier=0.05, max=2.0) + wait_random(0, 0.05),
        before_sleep=before_sleep,
        reraise=True,
    )


def store(write: Callable[[], T], *, seconds: float, pk: int | None, what: str) -> T:
    """Run ``write`` (one short transaction), retrying database errors for ``seconds``; the
    last error is raised when they run out."""
    try:  # the usual case, without building the retries
        return write()
    except DatabaseError as error:
        if seconds <= 0:
            raise
        _note_retry(pk, what, error)
    for attempt in _retrying(seconds, pk, what):
        with attempt:
            return write()
    raise AssertionError("unreachable")  # pragma: no cover - reraise=True


def store_later(
    write: Callable[[], bool],
    *,
    pk: int,
    what: str,
    renew: Callable[[], Any] | None = None,
) -> None:
    """Keep retrying ``write`` in a background thread for as long as the process lives.

    ``write`` must be safe to run at any later moment: it writes only over the token
    version it read, so a newer grant or refresh is never overwritten. ``renew``, run
    before each attempt, extends the refresh lease the answer was obtained under, so that
    no other worker refreshes with the (now dead) stored token meanwhile.
    """

    def run() -> None:
        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(DatabaseError),
                stop=stop_never,
                wait=wait_exponential(multiplier=0.5, max=30.0) + wait_random(0, 0.5),
                before_sleep=lambda _state: connections.close_all(),
            ):
                with attempt:
                    if renew is not None:
                        with contextlib.suppress(DatabaseError):
                            renew()
                    stored = write()
            if stored:
                logger.warning("Stored %s of connection %s late: nothing was lost.", what, pk)
            else:
                logger.warning(
                    "Dropped the late %s of connection %s: newer tokens were stored meanwhile.",
                    what,
                    pk,
                )
        except Exception:  # pragma: no cover - the thread must never die silently
            logger.exception("Connection %s: the background store of %s failed.", pk, what)
        finally:
            connections.close_all()

    threading.Thread(target=run, name=f"qb_oauth-store-{pk}", daemon=True).start()


def write_tokens_and_event(
    pk: int,
    values: dict[str, Any],
    *,
    owner: str,
    version: int,
    event: dict[str, Any],
) -> bool:
    """Write ``values`` over row ``pk`` while ``owner`` holds its lease or its tokens are
    still ``version``, and append ``event`` (a ``ConnectionEvent``'s fields), in one short
    transaction; whether the row was written.

    On PostgreSQL it is one statement (an ``UPDATE`` inside a ``WITH`` whose ``INSERT``
    appends the event only for the row written), so a refresh touches the database as
    seldom as a plain ``save()`` would; on SQLite the same two writes, prepared once, in a
    transaction; elsewhere the ORM's. ``values`` may hold ``F("token_version") + 1``,
    written as the increment it is.
    """
    db = connections[router.db_for_write(QuickBooksConnection)]
    if db.vendor not in ("postgresql", "sqlite"):
        with transaction.atomic(using=db.alias):
            held = Q(refresh_lease_owner=owner) | Q(token_version=version)
            if not QuickBooksConnection.objects.filter(pk=pk).filter(held).update(**values):
                return False
            ConnectionEvent.objects.create(connection_id=pk, **event)
        return True
    update_params, event_params = _params(db, pk, values, owner=owner, version=version, event=event)
    update, insert_stored, insert = _statements(db.alias, tuple(values), tuple(event))
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute(
                f"WITH stored AS ({update}) {insert_stored}", update_params + event_params
            )
            return cursor.fetchone() is not None
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        cursor.execute(update, update_params)
        if cursor.fetchone() is None:
            return False
        cursor.execute(insert, [pk, *event_params])
        return True


@functools.cache
def _statements(
    alias: str, names: tuple[str, ...], event_names: tuple[str, ...]
) -> tuple[str, str, str]:
    """The ``UPDATE`` of the row and the ``INSERT`` of its event for these columns (cached:
    a refresh writes the same columns every time): the insert that reads the row's id from
    the update's ``stored`` (PostgreSQL's one statement), and the one given it (SQLite)."""
    q = connections[alias].ops.quote_name
    meta, event_meta = QuickBooksConnection._meta, ConnectionEvent._meta
    assignments = []
    for name in names:
        column = q(str(_field(meta, name).column))
        if name == "token_version":  # F("token_version") + 1: the increment it is
            assignments.append(f"{column} = {column} + 1")
        else:
            assignments.append(f"{column} = %s")
    pk = q(str(meta.pk.column))
    update = (
        f"UPDATE {q(meta.db_table)} SET {', '.join(assignments)} "  # noqa: S608 - names are ours
        f"WHERE {pk} = %s AND ({q('refresh_lease_owner')} = %s OR {q('token_version')} = %s) "
        f"RETURNING {pk} AS id"
    )
    columns = ", ".join(q(str(_field(event_meta, n).column)) for n in ("connection", *event_names))
    placeholders = ", ".join(["%s"] * len(event_names))
    into = f"INSERT INTO {q(event_meta.db_table)} ({columns})"  # noqa: S608 - names are ours
    return (
        update,
        f"{into} SELECT id, {placeholders} FROM stored RETURNING 1",  # noqa: S608
        f"{into} VALUES (%s, {placeholders})",
    )


def _field(meta: Any, name: str) -> Field:
    field = meta.get_field(name)
    assert isinstance(field, Field)
    return field


def _prepared(field: Field, value: Any, db: Any) -> Any:
    # An aware datetime goes to PostgreSQL as it is (what the field would do, in a tenth
    # of the time); everything else, the encrypted tokens first, through the field.
    if db.vendor == "postgresql" and isinstance(value, datetime) and value.tzinfo is not None:
        return value
    return field.get_db_prep_save(value, db)


def _params(
    db: Any, pk: int, values: dict[str, Any], *, owner: str, version: int, event: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    meta, event_meta = QuickBooksConnection._meta, ConnectionEvent._meta
    for name, value in values.items():
        if isinstance(value, CombinedExpression) and name != "token_version":
            raise ValueError(f"only token_version may be an expression, not {name}")
    update = [
        _prepared(_field(meta, name), value, db)
        for name, value in values.items()
        if name != "token_version"
    ]
    update += [pk, owner, version]
    return update, [_prepared(_field(event_meta, n), v, db) for n, v in event.items()]

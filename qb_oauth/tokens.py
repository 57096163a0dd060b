"""The lifecycle of a connection's tokens: the only code that writes tokens.

Single-flight refresh
---------------------
Intuit rotates refresh tokens and the old value may die the moment a new one
is issued, so two workers refreshing one connection with the same refresh
token can cost the connection. :func:`refresh` therefore lets exactly one
caller talk to Intuit at a time, however many threads and processes ask.

The lock is a **lease on the row**: a conditional ``UPDATE … SET
refresh_lease_owner=<me>, refresh_lease_expires_at=<now + ttl> WHERE pk=…
AND (lease is free or expired)``. We chose it over ``SELECT … FOR UPDATE``
held across the call to Intuit because:

* it holds on PostgreSQL *and* SQLite (where ``select_for_update`` is a
  no-op), since a single conditional UPDATE is atomic on both;
* no database transaction stays open while Intuit answers (up to
  ``HTTP_TIMEOUT``): the tokens are then written in one short transaction;
* a worker killed mid-refresh leaves a lease that expires by itself, instead
  of relying on the database noticing a dead connection.

The holder re-reads the row once it has the lease and does nothing if another
caller refreshed in the meantime (expiry re-checked under the lock). The
others poll the row until the tokens change, then return them; if the holder
failed with an outage they raise :class:`IntuitUnavailable` too rather than
hammering Intuit one after another.

Intuit's answer is stored in one statement with everything it carries: the
access token, the (possibly rotated) refresh token and both expiries. It is
stored while the holder still holds the lease, or, if its lease ran out, as
long as nobody stored tokens since it read them (``token_version``): then it
is the newest refresh token Intuit issued. Otherwise a reconnect (a new
grant) or a later refresh stored newer tokens, and those are kept.

``invalid_grant`` is trusted only after re-reading the stored refresh token:
if another process stored a newer one, it is used once before the connection
is marked ``reauth_required``.

The one window that cannot be closed: Intuit issued a rotated refresh token
and the answer never reached the database (the worker killed before the
commit, or the answer lost on the wire). The new token is lost, the stored one
is dead, and the user must reconnect.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import client, signals
from .conf import qb_settings
from .exceptions import (
    ConnectionNotActive,
    IntuitError,
    IntuitUnavailable,
    QuickBooksError,
    RealmMismatch,
    ReauthorizationRequired,
)
from .models import ConnectionEvent, ConnectionState, EventKind, QuickBooksConnection

logger = logging.getLogger("qb_oauth.tokens")

#: How often ``last_used_at`` is written by :func:`get_access_token` at most.
USED_AT_GRANULARITY = timedelta(minutes=10)

_POLL_START = 0.01
_POLL_MAX = 0.05

_LOADED_FIELDS = (
    "state",
    "access_token",
    "access_token_expires_at",
    "token_version",
    "last_used_at",
    "last_error_at",
)


def _now() -> datetime:
    return timezone.now()


def _lease_ttl() -> timedelta:
    return timedelta(seconds=qb_settings.REFRESH_LEASE_TTL)


def _wait_limit() -> float:
    return qb_settings.HTTP_TIMEOUT * 2 + 5


def _qs():
    return QuickBooksConnection.objects


def _send_on_commit(signal, connection: QuickBooksConnection, **kwargs: Any) -> None:
    """Send ``signal`` once the change commits. A failing receiver is logged, never raised:
    the tokens are stored by then, and the caller still gets them."""

    def send() -> None:
        for receiver, result in signal.send_robust(
            sender=QuickBooksConnection, connection=connection, **kwargs
        ):
            if isinstance(result, Exception):
                logger.error(
                    "A receiver of a qb_oauth signal failed: %r raised %s",
                    receiver,
                    type(result).__name__,
                    exc_info=result,
                )

    transaction.on_commit(send)


def _inside_callers_transaction() -> bool:
    """Whether the caller holds a transaction open (``atomic()``, ``ATOMIC_REQUESTS``).

    A test case's own wrapping transaction does not count: Django's test cases
    mark it, and the database is the test's alone.
    """
    conn = transaction.get_connection()
    if conn.vendor == "sqlite":
        # One writer at a time: another connection would wait for the caller's own
        # transaction to end. On SQLite the lifecycle writes inside it (docs/usage.md).
        return False
    return conn.in_atomic_block and not all(
        getattr(block, "_from_testcase", False) for block in conn.atomic_blocks
    )


def _on_own_connection(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run ``func`` in a helper thread, on a database connection of its own.

    Tokens written inside the caller's transaction would be rolled back with
    it, and a rotated refresh token rolled back is a connection lost: Intuit
    killed the old value when it issued the new one. So when the caller holds
    a transaction, the lifecycle runs and commits on its own connection, and
    the caller waits for it.
    """
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
                        [f"{int(_wait_limit() * 1000)}ms"],
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


def _committed_independently(func: Callable) -> Callable:
    """Decorator: run ``func`` on its own connection when called inside a transaction."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _inside_callers_transaction():
            return _on_own_connection(func, *args, **kwargs)
        return func(*args, **kwargs)

    return wrapper


def record_event(
    connection: QuickBooksConnection | int,
    kind: str,
    detail: str = "",
    *,
    intuit_tid: str | None = None,
    actor=None,
) -> ConnectionEvent:
    """Append an event to a connection's history. ``detail`` must never hold a token."""
    pk = connection if isinstance(connection, int) else connection.pk
    return ConnectionEvent.objects.create(
        connection_id=pk,
        kind=kind,
        detail=detail[:2000],
        intuit_tid=intuit_tid or "",
        actor=actor if getattr(actor, "is_authenticated", False) else None,
    )


def _expiry(now: datetime, seconds: int | None) -> datetime | None:
    return None if seconds is None else now + timedelta(seconds=int(seconds))


def _token_fields(tokens: client.TokenResponse, now: datetime) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "access_token_expires_at": _expiry(now, tokens.expires_in),
        "refresh_token_expires_at": _expiry(now, tokens.refresh_token_expires_in),
        "last_refreshed_at": now,
        "consecutive_failures": 0,
        "last_error": "",
        "last_error_at": None,
        "next_attempt_at": None,
        "state": ConnectionState.ACTIVE,
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


def _apply(connection: QuickBooksConnection, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(connection, name, value)


# -- connect ---------------------------------------------------------------------


@_committed_independently
def connect(
    *,
    user,
    code: str,
    realm_id: str,
    redirect_uri: str,
    scopes: list[str] | None = None,
) -> tuple[QuickBooksConnection, bool]:
    """Exchange a callback's code and store the connection (create or update).

    Returns ``(connection, created)``. Raises before anything is stored when
    Intuit refuses the code or cannot be reached. The company name is read
    from the Accounting API; if that fails, the tokens are stored anyway (the
    code cannot be exchanged twice) with an empty name.
    """
    environment = qb_settings.ENVIRONMENT
    tokens = client.exchange_code(code=code, redirect_uri=redirect_uri)
    intuit_user_id = ""
    if tokens.id_token:
        claims = client.verify_id_token(tokens.id_token)
        if claims.realm_id and str(claims.realm_id) != str(realm_id):
            _revoke_quietly(tokens.refresh_token)
            raise RealmMismatch("The id token names another company than the callback.")
        intuit_user_id = claims.sub
    company_name = ""
    try:
        info = client.company_info(tokens.access_token, realm_id, environment)
        company_name = str(info.get("CompanyName") or info.get("LegalName") or "")[:255]
    except IntuitError as err:
        if err.status in (401, 403):
            # The token does not cover the realm the callback names (a realmId changed
            # on the way, or the wrong environment): store nothing, end the new grant.
            _revoke_quietly(tokens.refresh_token)
            raise RealmMismatch(
                f"The new token does not cover company {realm_id} in {environment}.",
                intuit_tid=err.intuit_tid,
                status=err.status,
            ) from None
        logger.warning(
            "Connected realm %s but could not read its name: %s", realm_id, err.describe()
        )
    except QuickBooksError as err:
        # Intuit's API is down: the code is spent, so keep the tokens; the name comes later.
        logger.warning(
            "Connected realm %s but could not read its name: %s", realm_id, err.describe()
        )

    now = _now()
    values = _token_fields(tokens, now)
    # A new grant: its hard expiry is the one Intuit sent now (or unknown), and any
    # expiry warning sent for the previous grant no longer applies.
    values.setdefault("refresh_token_hard_expires_at", None)
    values["expiry_warning_sent_at"] = None
    values["scopes"] = " ".join(scopes or qb_settings.SCOPES)[:500]
    if company_name:
        values["company_name"] = company_name
    if intuit_user_id:
        values["intuit_user_id"] = intuit_user_id[:255]
    with transaction.atomic():
        connection, created = (
            _qs()
            .select_for_update()
            .get_or_create(
                user=user,
                realm_id=str(realm_id),
                environment=environment,
                defaults={"connected_at": now},
            )
        )
        if not created:
            values["connected_at"] = now
        values["token_version"] = F("token_version") + 1
        _qs().filter(pk=connection.pk).update(**values)
        connection.refresh_from_db()
        record_event(
            connection,
            EventKind.CONNECTED if created else EventKind.RECONNECTED,
            f"Company {company_name or realm_id} ({environment}).",
            intuit_tid=tokens.intuit_tid,
            actor=user,
        )
        _send_on_commit(signals.connection_created, connection, created=created, user=user)
    return connection, created


# -- use ---------------------------------------------------------------------------


def _revoke_quietly(token: str) -> None:
    try:
        client.revoke_token(token)
    except QuickBooksError as err:
        logger.warning("Could not revoke an unused grant: %s", err.describe())


def _raise_for_state(connection: QuickBooksConnection) -> None:
    if connection.state == ConnectionState.REAUTH_REQUIRED:
        raise ReauthorizationRequired("This QuickBooks connection must be reconnected by its user.")
    if connection.state == ConnectionState.DISCONNECTED:
        raise ConnectionNotActive("This QuickBooks connection is disconnected.")


def get_access_token(connection: QuickBooksConnection) -> str:
    """A valid access token for ``connection``.

    While the stored token is more than ``REFRESH_MARGIN`` from expiry this is
    one query and no network. Otherwise it refreshes through :func:`refresh`,
    which calls Intuit at most once however many callers ask at once.
    """
    flight = _flights.get(_flight_key(connection))
    if flight is not None and _follow(flight, connection):
        return connection.access_token  # another thread of this process just refreshed
    row = _qs().filter(pk=connection.pk).values(*_LOADED_FIELDS).get()
    _apply(connection, row)
    _raise_for_state(connection)
    now = _now()
    if not connection.access_token_expired(qb_settings.REFRESH_MARGIN, now):
        last_used = row["last_used_at"]
        if last_used is None or now - last_used > USED_AT_GRANULARITY:
            _mark_used(connection.pk, now)
            connection.last_used_at = now
        return connection.access_token
    last_used = row["last_used_at"]
    stale = last_used is None or now - last_used > USED_AT_GRANULARITY
    _refresh_once_per_process(connection, mark_used_at=now if stale else None)
    return connection.access_token


class _Flight:
    """One in-process refresh of a connection that other threads wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        #: The leader's stored row (``_LOADED_FIELDS``) once its refresh returned.
        self.values: dict[str, Any] | None = None


_flights: dict[tuple[str, int], _Flight] = {}
_flights_lock = threading.Lock()


def _flight_key(connection: QuickBooksConnection) -> tuple[str, int]:
    return (connection._state.db or "default", connection.pk)


def _follow(flight: _Flight, connection: QuickBooksConnection) -> bool:
    """Wait for another thread's refresh of ``connection``; True if it left a fresh token.

    The leader hands over what it committed, so a follower needs no query. A
    leader's :class:`QuickBooksError` is raised again here: an outage is not
    retried by every waiting thread in turn.
    """
    if not flight.done.wait(_wait_limit()):
        raise IntuitUnavailable("Another thread is refreshing this connection; try again.")
    error = flight.error
    if isinstance(error, QuickBooksError):
        raise type(error)(str(error), intuit_tid=error.intuit_tid, status=error.status)
    if flight.values is None:
        return False
    _apply(connection, flight.values)
    _raise_for_state(connection)
    return not connection.access_token_expired(qb_settings.REFRESH_MARGIN, _now())


def _refresh_once_per_process(
    connection: QuickBooksConnection, mark_used_at: datetime | None = None
) -> None:
    """:func:`refresh`, with the threads of one process that ask at once coalesced.

    The first thread refreshes (through the lease, which also guards against
    other processes); the others wait on an in-process event instead of
    polling the database, and take the tokens the leader stored (:func:`_follow`).
    """
    key = _flight_key(connection)
    with _flights_lock:
        flight = _flights.get(key)
        leader = flight is None
        if leader:
            flight = _flights[key] = _Flight()
    if leader:
        try:
            if mark_used_at is not None:  # once for the flight, not once per thread
                _mark_used(connection.pk, mark_used_at)
                connection.last_used_at = mark_used_at
            refresh(connection)
            flight.values = {name: getattr(connection, name) for name in _LOADED_FIELDS}
        except BaseException as err:
            flight.error = err
            raise
        finally:
            with _flights_lock:
                _flights.pop(key, None)
            flight.done.set()
        return
    if _follow(flight, connection):
        return
    row = _qs().filter(pk=connection.pk).values(*_LOADED_FIELDS).get()
    _apply(connection, row)
    _raise_for_state(connection)
    if connection.access_token_expired(qb_settings.REFRESH_MARGIN, _now()):
        refresh(connection)


@_committed_independently
def _mark_used(pk: int, now: datetime) -> None:
    # Its own commit: a row the caller's transaction wrote would stay locked until
    # that transaction ends, and the refresh that follows runs on another connection.
    _qs().filter(pk=pk).update(last_used_at=now)


@dataclass
class _Lease:
    owner: str
    acquired: bool
    row: QuickBooksConnection | None = None
    #: Taken over from a holder whose lease ran out (paused or killed mid-refresh).
    takeover: bool = False


_FREE, _TAKEOVER = "free", "takeover"


def _try_lease(pk: int, owner: str) -> str | None:
    """Take the row's lease if it is free (``"free"``) or expired (``"takeover"``)."""
    now = _now()
    values = {"refresh_lease_owner": owner, "refresh_lease_expires_at": now + _lease_ttl()}
    if _qs().filter(pk=pk, refresh_lease_expires_at__isnull=True).update(**values):
        return _FREE
    if _qs().filter(pk=pk, refresh_lease_expires_at__lt=now).update(**values):
        return _TAKEOVER
    return None


def _release(pk: int, owner: str) -> None:
    _qs().filter(pk=pk, refresh_lease_owner=owner).update(
        refresh_lease_owner="", refresh_lease_expires_at=None
    )


def _acquire_or_wait(
    connection: QuickBooksConnection,
    done: Callable[[QuickBooksConnection], bool],
) -> _Lease:
    """Take the row's lease, or wait until ``done(row)`` says another holder did the work.

    Returns a lease that is ``acquired`` (the caller must release it), or not
    acquired with the row that satisfied ``done``.
    """
    owner = uuid.uuid4().hex
    baseline_error_at = connection.last_error_at
    deadline = time.monotonic() + _wait_limit()
    delay = _POLL_START
    lease_free = True
    while True:
        # Try the UPDATE only when the lease looked free or expired at the last read.
        taken = _try_lease(connection.pk, owner) if lease_free else None
        if taken:
            return _Lease(owner, True, takeover=taken == _TAKEOVER)
        row = _qs().get(pk=connection.pk)
        if done(row):
            return _Lease(owner, False, row)
        lease_free = row.refresh_lease_expires_at is None or row.refresh_lease_expires_at < _now()
        if row.last_error_at != baseline_error_at and lease_free:
            raise IntuitUnavailable(
                f"A concurrent refresh failed: {row.last_error or 'Intuit unavailable'}"
            )
        if time.monotonic() > deadline:
            raise IntuitUnavailable("Another worker is refreshing this connection; try again.")
        time.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 1.5, _POLL_MAX)


@_committed_independently
def refresh(
    connection: QuickBooksConnection, force: bool = False, *, actor=None
) -> QuickBooksConnection:
    """Refresh ``connection``'s tokens at Intuit, single-flight (see the module's docstring).

    Without ``force`` nothing happens when the stored access token is still
    more than ``REFRESH_MARGIN`` from expiry. With ``force`` a refresh happens
    unless another caller refreshed since ``connection`` was loaded.

    Raises :class:`ReauthorizationRequired` (the user must reconnect),
    :class:`IntuitUnavailable` (nothing stored changed; try later) or
    :class:`ConnectionNotActive`. ``connection`` is updated in place.
    """
    if connection.environment != qb_settings.ENVIRONMENT:
        # Its tokens belong to the other environment's keys: Intuit would answer
        # invalid_grant, and the connection would be marked lost for a setting.
        raise IntuitError(
            f"This connection belongs to the {connection.environment} environment; this site "
            f"is configured for {qb_settings.ENVIRONMENT} (QB_OAUTH['ENVIRONMENT'])."
        )
    baseline_version = connection.token_version
    margin = qb_settings.REFRESH_MARGIN

    def done(row: QuickBooksConnection) -> bool:
        if row.state != ConnectionState.ACTIVE:
            return True
        if row.token_version != baseline_version:
            return force or not row.access_token_expired(margin)
        return False

    lease = _acquire_or_wait(connection, done)
    if not lease.acquired:
        _copy_row(connection, lease.row)
        _raise_for_state(connection)
        return connection
    stored = False
    try:
        row = _qs().get(pk=connection.pk)
        if done(row) or (not force and not row.access_token_expired(margin)):
            _copy_row(connection, row)
            _raise_for_state(connection)
            return connection
        if not row.refresh_token:
            _raise_for_state(row)
            raise ReauthorizationRequired("This QuickBooks connection has no refresh token.")
        stored = _refresh_holding_lease(
            connection, row, lease.owner, actor=actor, takeover=lease.takeover
        )
        return connection
    finally:
        if not stored:  # storing new tokens ended the lease in the same statement
            _release(connection.pk, lease.owner)


def _copy_row(connection: QuickBooksConnection, row: QuickBooksConnection) -> None:
    for f in QuickBooksConnection._meta.concrete_fields:
        setattr(connection, f.attname, getattr(row, f.attname))


def _refresh_holding_lease(connection, row, owner: str, *, actor=None, takeover=False) -> bool:
    """Call Intuit and store its answer. True when new tokens were stored (which also
    ends the lease); False when newer tokens stored by someone else were kept."""
    used = row.refresh_token
    version = row.token_version
    try:
        try:
            tokens = client.refresh_tokens(used)
        except ReauthorizationRequired as refused:
            # Another process may have stored a newer refresh token (a
            # reconnect, or a refresh whose lease outlived ours): try it once.
            latest = _qs().get(pk=row.pk)
            if not latest.refresh_token or latest.refresh_token == used:
                if takeover:
                    # The previous holder may hold Intuit's answer (a rotated token)
                    # and still store it: its pause is no proof the grant is gone.
                    # Count an outage now; the next attempt decides.
                    raise IntuitUnavailable(
                        "Intuit refused the refresh token right after an interrupted "
                        "refresh; checking again on the next attempt.",
                        intuit_tid=refused.intuit_tid,
                    ) from None
                raise
            logger.info("Refresh of connection %s: retrying with a newer refresh token.", row.pk)
            used, version = latest.refresh_token, latest.token_version
            tokens = client.refresh_tokens(used)
    except ReauthorizationRequired as err:
        if _mark_reauth_required(connection, version, err, actor=actor):
            raise
        return False  # newer tokens were stored meanwhile: the grant is alive
    except QuickBooksError as err:
        _record_failure(connection, err, actor=actor)
        raise

    now = _now()
    values = _token_fields(tokens, now)
    values["token_version"] = F("token_version") + 1
    rotated = tokens.refresh_token != used
    with transaction.atomic():
        # Stored while we hold the lease, or while nobody else stored tokens since we
        # read them: then this answer holds the newest refresh token Intuit issued.
        # Otherwise a reconnect (a new grant) or a later refresh wrote newer ones.
        written = (
            _qs()
            .filter(pk=row.pk)
            .filter(Q(refresh_lease_owner=owner) | Q(token_version=version))
            .update(**values)
        )
        if not written:
            fresh = _qs().get(pk=row.pk)
            _copy_row(connection, fresh)
            _raise_for_state(connection)
            return False
        if used == row.refresh_token:
            # Nobody wrote tokens since ``row`` was read under the lease: the stored
            # row is ``row`` with these values, no need to read it back.
            _apply(row, {k: v for k, v in values.items() if k != "token_version"})
            row.token_version = version + 1
            fresh = row
        else:  # the retry with a newer token: read back what is stored
            fresh = _qs().get(pk=row.pk)
        record_event(
            row.pk,
            EventKind.REFRESHED,
            "New refresh token issued." if rotated else "Access token renewed.",
            intuit_tid=tokens.intuit_tid,
            actor=actor,
        )
        _send_on_commit(signals.tokens_refreshed, fresh, rotated=rotated)
    _copy_row(connection, fresh)
    return True


def _mark_reauth_required(connection, version: int, err: QuickBooksError, *, actor=None) -> bool:
    """Mark the connection ``reauth_required`` unless newer tokens were stored since
    ``version`` (then copy those and return False)."""
    now = _now()
    with transaction.atomic():
        changed = (
            _qs()
            .filter(pk=connection.pk, token_version=version)
            .update(
                state=ConnectionState.REAUTH_REQUIRED,
                last_error=err.describe()[:2000],
                last_error_at=now,
                consecutive_failures=F("consecutive_failures") + 1,
                next_attempt_at=None,
                updated_at=now,
            )
        )
        if not changed:
            # Someone stored newer tokens meanwhile: their grant is alive.
            fresh = _qs().get(pk=connection.pk)
            _copy_row(connection, fresh)
            return False
        fresh = _qs().get(pk=connection.pk)
        record_event(
            connection.pk,
            EventKind.REAUTH_REQUIRED,
            "Intuit answered invalid_grant.",
            intuit_tid=err.intuit_tid,
            actor=actor,
        )
        _send_on_commit(signals.reauthorization_required, fresh, reason="invalid_grant")
    _copy_row(connection, fresh)
    logger.warning("Connection %s needs reconnecting: %s", connection.pk, err.describe())
    return True


def backoff_delay(failures: int) -> float:
    """Seconds the sweep waits after ``failures`` consecutive outages (exponential, capped)."""
    if failures <= 0:
        return 0.0
    return min(qb_settings.BACKOFF_MAX, qb_settings.BACKOFF_BASE * 2 ** min(failures - 1, 30))


def _record_failure(connection, err: QuickBooksError, *, actor=None) -> None:
    """Count an outage: nothing about the tokens changes."""
    now = _now()
    failures = (
        _qs().filter(pk=connection.pk).values_list("consecutive_failures", flat=True).get() + 1
    )
    with transaction.atomic():
        _qs().filter(pk=connection.pk).update(
            consecutive_failures=F("consecutive_failures") + 1,
            last_error=err.describe()[:2000],
            last_error_at=now,
            next_attempt_at=now + timedelta(seconds=backoff_delay(failures)),
            updated_at=now,
        )
        record_event(
            connection.pk,
            EventKind.REFRESH_FAILED,
            err.describe(),
            intuit_tid=err.intuit_tid,
            actor=actor,
        )
    connection.consecutive_failures = failures
    connection.last_error = err.describe()[:2000]
    connection.last_error_at = now
    logger.warning("Refresh of connection %s failed: %s", connection.pk, err.describe())


# -- revoke and disconnect ------------------------------------------------------------


_CLEARED = {
    "access_token": None,
    "refresh_token": None,
    "id_token": None,
    "access_token_expires_at": None,
    "refresh_token_expires_at": None,
    "refresh_token_hard_expires_at": None,
    "refresh_lease_owner": "",
    "refresh_lease_expires_at": None,
    "next_attempt_at": None,
    "consecutive_failures": 0,
    "state": ConnectionState.DISCONNECTED,
}


@_committed_independently
def revoke(
    connection: QuickBooksConnection, *, actor=None, by: str = "user"
) -> QuickBooksConnection:
    """Revoke the grant at Intuit, then drop the tokens and mark the connection disconnected.

    If Intuit cannot be reached, :class:`IntuitUnavailable` is raised and the
    tokens are kept, so the user can try again.
    """

    def done(row: QuickBooksConnection) -> bool:
        return row.state == ConnectionState.DISCONNECTED

    lease = _acquire_or_wait(connection, done)
    if not lease.acquired:
        _copy_row(connection, lease.row)
        return connection
    try:
        row = _qs().get(pk=connection.pk)
        token = row.refresh_token or row.access_token
        if token:
            client.revoke_token(token)
        with transaction.atomic():
            _qs().filter(pk=row.pk).update(
                **_CLEARED, token_version=F("token_version") + 1, updated_at=_now()
            )
            fresh = _qs().get(pk=row.pk)
            record_event(row.pk, EventKind.REVOKED, f"Revoked by {by}.", actor=actor)
            _send_on_commit(signals.connection_disconnected, fresh, by=by)
        _copy_row(connection, fresh)
        return connection
    finally:
        _release(connection.pk, lease.owner)


@_committed_independently
def disconnected_at_intuit(connection: QuickBooksConnection, *, actor=None) -> bool:
    """Handle Intuit's Disconnect URL for ``connection``: confirm, then drop the tokens.

    A link can be forged, so the grant is checked first with a forced refresh:
    only when Intuit answers ``invalid_grant`` (the grant is gone) are the
    tokens dropped and the connection marked disconnected. Returns whether it
    was. Raises :class:`IntuitUnavailable` when Intuit cannot confirm.
    """
    if connection.state == ConnectionState.ACTIVE and connection.refresh_token:
        try:
            refresh(connection, force=True, actor=actor)
        except ReauthorizationRequired:
            pass
        else:
            return False
    if connection.state == ConnectionState.DISCONNECTED and not connection.refresh_token:
        return True
    with transaction.atomic():
        _qs().filter(pk=connection.pk).update(
            **_CLEARED, token_version=F("token_version") + 1, updated_at=_now()
        )
        fresh = _qs().get(pk=connection.pk)
        record_event(
            connection.pk,
            EventKind.DISCONNECTED_AT_INTUIT,
            "The user disconnected the app inside QuickBooks.",
            actor=actor,
        )
        _send_on_commit(signals.connection_disconnected, fresh, by="intuit")
    _copy_row(connection, fresh)
    return True


# -- checks and maintenance -------------------------------------------------------------


def check_connection(connection: QuickBooksConnection, *, actor=None) -> str:
    """Read CompanyInfo through :meth:`~QuickBooksConnection.api_session` and record the result.

    Returns the company name; raises the :class:`QuickBooksError` met.
    """
    try:
        with connection.api_session(actor=actor) as session:
            response = session.get(f"companyinfo/{connection.realm_id}")
            info = session.json_or_raise(response, "CompanyInfo").get("CompanyInfo") or {}
        name = str(info.get("CompanyName") or info.get("LegalName") or "")
    except QuickBooksError as err:
        record_event(
            connection,
            EventKind.CHECK_FAILED,
            err.describe(),
            intuit_tid=err.intuit_tid,
            actor=actor,
        )
        raise
    if name and name != connection.company_name:
        _qs().filter(pk=connection.pk).update(company_name=name[:255])
        connection.company_name = name[:255]
    record_event(connection, EventKind.CHECKED, f"Company {name or '(no name)'}.", actor=actor)
    return name


@_committed_independently
def reencrypt_all(batch_size: int = 200) -> int:
    """Re-encrypt every stored token with the first key of ``FERNET_KEYS``.

    Each row is rewritten only if its tokens did not change meanwhile
    (``token_version``), so a refresh running at the same time never loses
    its new tokens to this job. Returns the number of rows rewritten.
    """
    count = 0
    ids = list(_qs().values_list("pk", flat=True).order_by("pk"))
    for start in range(0, len(ids), batch_size):
        for row in (
            _qs()
            .filter(pk__in=ids[start : start + batch_size])
            .only("pk", "access_token", "refresh_token", "id_token", "token_version")
        ):
            for _attempt in range(5):
                written = (
                    _qs()
                    .filter(pk=row.pk, token_version=row.token_version)
                    .update(
                        access_token=row.access_token,
                        refresh_token=row.refresh_token,
                        id_token=row.id_token,
                    )
                )
                if written:
                    count += 1
                    break
                row = (
                    _qs()
                    .only("pk", "access_token", "refresh_token", "id_token", "token_version")
                    .get(pk=row.pk)
                )
    return count

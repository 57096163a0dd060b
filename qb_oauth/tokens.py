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

A store that the database refuses (a deadlock, a failover, a full disk) is
retried with backoff while the lease lasts; after that the answer is kept in
memory and written by a background thread as soon as the database takes it,
for as long as the process lives (still only over the version it read).

The one window that cannot be closed: Intuit issued a rotated refresh token
and the answer never reached the database (the worker killed before the
commit, or the answer lost on the wire). The new token is lost, the stored one
is dead, and the user must reconnect. docs/reliability.md measures it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import Error as DatabaseError
from django.db import connections, transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q, Value
from django.db.models.functions import Now
from django.utils import timezone
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random,
)

from . import client, signals
from .conf import qb_settings
from .exceptions import (
    ConnectionNotActive,
    CredentialsMismatch,
    ImproperlyConfigured,
    IntuitError,
    IntuitUnavailable,
    QuickBooksError,
    RealmMismatch,
    ReauthorizationRequired,
    TokensNotSaved,
    TokensUnreadable,
)
from .fields import is_unreadable
from .models import (
    TOKEN_COLUMNS,
    ConnectionEvent,
    ConnectionState,
    EventKind,
    QuickBooksConnection,
)
from .redact import holds_tokens

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
    "tokens_unreadable_at",
)

#: The lease columns, which a write made after the lease ran out must not touch.
_LEASE_FIELDS = ("refresh_lease_owner", "refresh_lease_expires_at")


def _now() -> datetime:
    return timezone.now()


def _lease_ttl() -> timedelta:
    return timedelta(seconds=qb_settings.REFRESH_LEASE_TTL)


def _db_now_plus(delta: timedelta) -> ExpressionWrapper:
    """The database's clock plus ``delta``: leases and checks are timed by the database, so
    machines whose clocks disagree cannot break single flight."""
    return ExpressionWrapper(
        Now() + Value(delta, output_field=DurationField()), output_field=DateTimeField()
    )


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


@holds_tokens
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


def _apply(connection: QuickBooksConnection, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(connection, name, value)


# -- storing what Intuit answered ---------------------------------------------------


def _store_retrying(seconds: float, pk: int | None, what: str) -> Retrying:
    """Retries of a write that holds Intuit's answer: every database error, with
    exponential backoff and jitter, for ``seconds`` in all."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "Storing %s of connection %s failed (%s); retrying.",
            what,
            pk if pk is not None else "(new)",
            type(error).__name__,  # the class only: a database message may quote the row
        )
        db = transaction.get_connection()
        if not db.in_atomic_block:
            db.close_if_unusable_or_obsolete()  # a failover left it broken: reconnect

    return Retrying(
        retry=retry_if_exception_type(DatabaseError),
        stop=stop_after_delay(max(0.0, seconds)),
        wait=wait_exponential(multiplier=0.05, max=2.0) + wait_random(0, 0.05),
        before_sleep=before_sleep,
        reraise=True,
    )


def _store(write: Callable[[], Any], *, seconds: float, pk: int | None, what: str) -> Any:
    """Run ``write`` (one short transaction), retrying database errors for ``seconds``."""
    for attempt in _store_retrying(seconds, pk, what):
        with attempt:
            return write()
    raise AssertionError("unreachable")  # pragma: no cover - reraise=True


def _store_later(
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


def _renew_lease(pk: int, owner: str) -> None:
    _qs().filter(pk=pk, refresh_lease_owner=owner).update(
        refresh_lease_expires_at=_db_now_plus(_lease_ttl())
    )


# -- credentials and unreadable rows -------------------------------------------------------


def _check_credentials(connection: QuickBooksConnection) -> None:
    """Refuse a connection whose tokens belong to other keys than the configured ones.

    Intuit would answer ``invalid_grant`` (or refuse a revocation), and the connection
    would be marked lost for a setting. Its state is left as it is.
    """
    environment = connection.environment
    if environment and environment != qb_settings.ENVIRONMENT:
        raise CredentialsMismatch(
            f"This connection belongs to the {environment} environment; this site "
            f"is configured for {qb_settings.ENVIRONMENT} (QB_OAUTH['ENVIRONMENT'])."
        )
    issued_to = connection.client_id
    if issued_to and issued_to != (qb_settings.CLIENT_ID or ""):
        raise CredentialsMismatch(
            f"This connection was made with the keys of another Intuit app (client id "
            f"{issued_to}); this site is configured with client id "
            f"{qb_settings.CLIENT_ID} (QB_OAUTH['CLIENT_ID'])."
        )


_UNREADABLE_TEXT = (
    "No key of FERNET_KEYS decrypts the stored tokens: restore the key that encrypted them, "
    "or the user must reconnect."
)


def _flag_unreadable(pk: int, *, actor=None) -> TokensUnreadable:
    """Flag a row whose tokens no key opens (once: an event and an ERROR naming its pk) and
    count a failure with backoff, so the sweep retries it rarely. Returns the error to raise.
    """
    now = _now()
    failures = _qs().filter(pk=pk).values_list("consecutive_failures", flat=True).first() or 0
    with transaction.atomic():
        first = (
            _qs().filter(pk=pk, tokens_unreadable_at__isnull=True).update(tokens_unreadable_at=now)
        )
        _qs().filter(pk=pk).update(
            consecutive_failures=F("consecutive_failures") + 1,
            last_error=_UNREADABLE_TEXT,
            last_error_at=now,
            next_attempt_at=now + timedelta(seconds=backoff_delay(failures + 1)),
            updated_at=now,
        )
        if first:
            record_event(pk, EventKind.TOKENS_UNREADABLE, _UNREADABLE_TEXT, actor=actor)
    if first:
        logger.error("Connection %s: %s", pk, _UNREADABLE_TEXT)
    return TokensUnreadable(f"The tokens of connection {pk} cannot be decrypted.")


@holds_tokens
def _readable_again(pk: int) -> bool:
    """Unflag a flagged row whose tokens all decrypt again (the key was restored)."""
    values = _qs().filter(pk=pk).values(*TOKEN_COLUMNS).first() or {}
    if any(is_unreadable(value) for value in values.values()):
        return False
    if _qs().filter(pk=pk, tokens_unreadable_at__isnull=False).update(tokens_unreadable_at=None):
        logger.info("Connection %s: its tokens can be decrypted again.", pk)
    return True


# -- connect ---------------------------------------------------------------------


@_committed_independently
@holds_tokens
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
    code cannot be exchanged twice) with an empty name. A database that
    refuses the write is retried for a while; if it still refuses, the new
    grant is revoked and :class:`TokensNotSaved` raised (nothing changed).
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
        company_name = client.company_name(info)[:255]
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
    values["disconnect_checked_at"] = None
    values["client_id"] = (qb_settings.CLIENT_ID or "")[:255]
    values["scopes"] = " ".join(scopes or qb_settings.SCOPES)[:500]
    if company_name:
        values["company_name"] = company_name
    if intuit_user_id:
        values["intuit_user_id"] = intuit_user_id[:255]

    def write() -> tuple[QuickBooksConnection, bool]:
        with transaction.atomic():
            connection, created = (
                _qs()
                .select_for_update()
                .defer(*TOKEN_COLUMNS)  # the old tokens may be unreadable: never needed
                .get_or_create(
                    user=user,
                    realm_id=str(realm_id),
                    environment=environment,
                    defaults={"connected_at": now},
                )
            )
            row_values = dict(values, token_version=F("token_version") + 1)
            if not created:
                row_values["connected_at"] = now
            _qs().filter(pk=connection.pk).update(**row_values)
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

    try:
        return _store(write, seconds=_wait_limit(), pk=None, what="a new connection")
    except DatabaseError as err:
        logger.error(
            "Could not store the new connection to realm %s (%s): the grant is revoked, "
            "the user is asked to connect again.",
            realm_id,
            type(err).__name__,
        )
        _revoke_quietly(tokens.refresh_token)
        raise TokensNotSaved("The new connection could not be saved; nothing changed.") from None


# -- use ---------------------------------------------------------------------------


@holds_tokens
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


@holds_tokens
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
    if is_unreadable(row["access_token"]):
        raise _flag_unreadable(connection.pk)
    if row["tokens_unreadable_at"] is not None and _readable_again(connection.pk):
        connection.tokens_unreadable_at = None
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


@holds_tokens
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


@holds_tokens
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
    """Write ``last_used_at`` (a hint for the sweep), on its own commit, never waiting.

    It runs on a connection of its own when the caller holds a transaction, and that
    transaction may hold the row's lock (``select_for_update``): the write skips a
    locked row instead of waiting for it. A hint missed now is written next time.
    """
    db = transaction.get_connection()
    if db.vendor == "postgresql":
        table = db.ops.quote_name(QuickBooksConnection._meta.db_table)
        with db.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET last_used_at = %s WHERE id = "  # noqa: S608 - names are ours
                f"(SELECT id FROM {table} WHERE id = %s FOR UPDATE SKIP LOCKED)",
                [now, pk],
            )
        return
    _qs().filter(pk=pk).update(last_used_at=now)


@dataclass
class _Lease:
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


_FREE, _TAKEOVER = "free", "takeover"


def _try_lease(pk: int, owner: str) -> str | None:
    """Take the row's lease if it is free (``"free"``) or expired (``"takeover"``).

    Both the expiry written and the one compared are the database's clock.
    """
    values = {"refresh_lease_owner": owner, "refresh_lease_expires_at": _db_now_plus(_lease_ttl())}
    if _qs().filter(pk=pk, refresh_lease_expires_at__isnull=True).update(**values):
        return _FREE
    if _qs().filter(pk=pk, refresh_lease_expires_at__lt=Now()).update(**values):
        return _TAKEOVER
    return None


def _release(pk: int, owner: str) -> None:
    try:
        _qs().filter(pk=pk, refresh_lease_owner=owner).update(
            refresh_lease_owner="", refresh_lease_expires_at=None
        )
    except DatabaseError as err:
        # The lease expires by itself; the error that brought us here matters more.
        logger.warning("Could not release the lease of connection %s (%s).", pk, type(err).__name__)


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
        taken_at = time.monotonic()
        taken = _try_lease(connection.pk, owner) if lease_free else None
        if taken:
            return _Lease(owner, True, takeover=taken == _TAKEOVER, taken_at=taken_at)
        row = _qs().get(pk=connection.pk)
        if done(row):
            return _Lease(owner, False, row)
        # Only a hint of when to try again: the UPDATE above decides, on the database's clock.
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

    Raises :class:`ReauthorizationRequired` (the user must reconnect; its
    subclass :class:`TokensUnreadable` when no key decrypts the stored tokens),
    :class:`IntuitUnavailable` (nothing stored changed; try later),
    :class:`CredentialsMismatch` (tokens of another environment or Intuit app),
    :class:`TokensNotSaved` (the database refused Intuit's answer) or
    :class:`ConnectionNotActive`. ``connection`` is updated in place.
    """
    _check_credentials(connection)
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
        _check_credentials(row)
        if is_unreadable(row.refresh_token):
            raise _flag_unreadable(row.pk, actor=actor)
        if not row.refresh_token:
            _raise_for_state(row)
            raise ReauthorizationRequired("This QuickBooks connection has no refresh token.")
        stored = _refresh_holding_lease(connection, row, lease, actor=actor)
        return connection
    finally:
        if not stored and not lease.handed_over:  # storing tokens ended the lease already
            _release(connection.pk, lease.owner)


def _copy_row(connection: QuickBooksConnection, row: QuickBooksConnection) -> None:
    for f in QuickBooksConnection._meta.concrete_fields:
        setattr(connection, f.attname, getattr(row, f.attname))


@holds_tokens
def _refresh_holding_lease(connection, row, lease: _Lease, *, actor=None) -> bool:
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
            if latest.token_version == version and latest.refresh_lease_owner != lease.owner:
                # Our lease ran out while we were at Intuit and another caller took it
                # over: it may have rotated the token, and may still store its answer.
                raise IntuitUnavailable(
                    "Intuit refused the refresh token while another caller held the lease; "
                    "checking again on the next attempt.",
                    intuit_tid=refused.intuit_tid,
                ) from None
            if not latest.refresh_token or latest.refresh_token == used:
                if lease.takeover:
                    # The previous holder may hold Intuit's answer (a rotated token)
                    # and still store it: its pause is no proof the grant is gone.
                    # Count an outage now; the next attempt decides.
                    raise IntuitUnavailable(
                        "Intuit refused the refresh token right after an interrupted "
                        "refresh; checking again on the next attempt.",
                        intuit_tid=refused.intuit_tid,
                    ) from None
                raise
            if is_unreadable(latest.refresh_token):
                raise _flag_unreadable(row.pk, actor=actor) from None
            logger.info("Refresh of connection %s: retrying with a newer refresh token.", row.pk)
            used, version = latest.refresh_token, latest.token_version
            tokens = client.refresh_tokens(used)
    except (TokensUnreadable, ImproperlyConfigured):
        raise  # not Intuit's answer about this grant: nothing to count against it
    except ReauthorizationRequired as err:
        if _mark_reauth_required(connection, version, err, owner=lease.owner, actor=actor):
            raise
        return False  # newer tokens were stored meanwhile: the grant is alive
    except QuickBooksError as err:
        _record_failure(connection, err, actor=actor)
        raise
    return _store_refreshed(connection, row, lease, tokens, used=used, version=version, actor=actor)


@holds_tokens
def _store_refreshed(
    connection, row, lease: _Lease, tokens: client.TokenResponse, *, used, version, actor=None
) -> bool:
    """Store Intuit's refresh answer: retried while the lease lasts, then in the background.

    Written while we hold the lease, or while nobody else stored tokens since we read
    them (``version``): then this answer holds the newest refresh token Intuit issued.
    Otherwise a reconnect (a new grant) or a later refresh wrote newer ones, kept.
    """
    now = _now()
    values = _token_fields(tokens, now)
    values["token_version"] = F("token_version") + 1
    if not row.client_id:
        values["client_id"] = (qb_settings.CLIENT_ID or "")[:255]  # these keys work for it
    rotated = tokens.refresh_token != used

    def write(condition: Q, fields: dict[str, Any]) -> QuickBooksConnection | None:
        with transaction.atomic():
            if not _qs().filter(pk=row.pk).filter(condition).update(**fields):
                return None
            if used == row.refresh_token and condition is held:
                # Nobody wrote tokens since ``row`` was read under the lease: the stored
                # row is ``row`` with these values, no need to read it back.
                _apply(row, {k: v for k, v in fields.items() if k != "token_version"})
                row.token_version = version + 1
                fresh = row
            else:  # the retry with a newer token, or a late store: read back what is stored
                fresh = _qs().get(pk=row.pk)
            record_event(
                row.pk,
                EventKind.REFRESHED,
                "New refresh token issued." if rotated else "Access token renewed.",
                intuit_tid=tokens.intuit_tid,
                actor=actor,
            )
            _send_on_commit(signals.tokens_refreshed, fresh, rotated=rotated)
            return fresh

    held = Q(refresh_lease_owner=lease.owner) | Q(token_version=version)
    try:
        fresh = _store(
            lambda: write(held, values),
            seconds=lease.seconds_left() - 1.0,
            pk=row.pk,
            what="refreshed tokens",
        )
    except DatabaseError as err:
        logger.error(
            "Connection %s: Intuit issued new tokens, but the database refused to store them "
            "while the refresh lease lasted (%s). They are kept in memory and written as soon "
            "as the database accepts them, while this process lives.",
            row.pk,
            type(err).__name__,
        )
        # The answer goes on holding the lease: nobody refreshes with the dead stored token.
        lease.handed_over = True
        _store_later(
            lambda: write(held, values) is not None,
            pk=row.pk,
            what="refreshed tokens",
            renew=lambda: _renew_lease(row.pk, lease.owner),
        )
        raise TokensNotSaved(
            "Intuit issued new tokens but the database refused them; they are stored as soon "
            "as it accepts them."
        ) from None
    if fresh is None:
        fresh = _qs().get(pk=row.pk)
        _copy_row(connection, fresh)
        _raise_for_state(connection)
        return False
    _copy_row(connection, fresh)
    return True


def _mark_reauth_required(
    connection, version: int, err: QuickBooksError, *, owner: str, actor=None
) -> bool:
    """Mark the connection ``reauth_required`` unless newer tokens were stored since
    ``version`` (then copy those and return False), or our lease was taken over (then
    the other holder may still store a rotated token: :class:`IntuitUnavailable`)."""
    now = _now()
    with transaction.atomic():
        changed = (
            _qs()
            .filter(pk=connection.pk, token_version=version, refresh_lease_owner=owner)
            .update(
                state=ConnectionState.REAUTH_REQUIRED,
                last_error=err.describe()[:2000],
                last_error_at=now,
                consecutive_failures=F("consecutive_failures") + 1,
                next_attempt_at=None,
                updated_at=now,
            )
        )
        fresh = _qs().get(pk=connection.pk)
        if not changed:
            _copy_row(connection, fresh)
            if fresh.token_version != version:
                return False  # someone stored newer tokens meanwhile: their grant is alive
            raise IntuitUnavailable(
                "Intuit refused the refresh token while another caller held the lease; "
                "checking again on the next attempt.",
                intuit_tid=err.intuit_tid,
            ) from None
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
    "tokens_unreadable_at": None,
    "disconnect_checked_at": None,
    "state": ConnectionState.DISCONNECTED,
}


def _clear(
    pk: int, version: int, kind: str, detail: str, *, by: str, actor=None
) -> QuickBooksConnection | None:
    """Drop the tokens and mark the connection disconnected, only over ``version``: a
    reconnect that committed meanwhile keeps its new grant. Retried (then kept in memory)
    like a store of tokens: the grant is already gone at Intuit."""

    def write(fields: dict[str, Any]) -> QuickBooksConnection | None:
        with transaction.atomic():
            if not _qs().filter(pk=pk, token_version=version).update(**fields):
                return None
            fresh = _qs().get(pk=pk)
            record_event(pk, kind, detail, actor=actor)
            _send_on_commit(signals.connection_disconnected, fresh, by=by)
            return fresh

    fields = dict(_CLEARED, token_version=F("token_version") + 1, updated_at=_now())
    try:
        return _store(lambda: write(fields), seconds=_wait_limit(), pk=pk, what="a disconnect")
    except DatabaseError:
        late = {k: v for k, v in fields.items() if k not in _LEASE_FIELDS}
        _store_later(lambda: write(late) is not None, pk=pk, what="a disconnect")
        raise TokensNotSaved(
            "The grant ended at Intuit, but the database refused the change; it is stored as "
            "soon as the database accepts it."
        ) from None


@_committed_independently
@holds_tokens
def revoke(
    connection: QuickBooksConnection, *, actor=None, by: str = "user"
) -> QuickBooksConnection:
    """Revoke the grant at Intuit, then drop the tokens and mark the connection disconnected.

    If Intuit cannot be reached, :class:`IntuitUnavailable` is raised and the
    tokens are kept, so the user can try again. A connection of another
    environment or Intuit app raises :class:`CredentialsMismatch` (these keys
    cannot revoke it). Tokens that no key decrypts cannot be revoked at Intuit:
    they are dropped here, and the event says so.
    """
    _check_credentials(connection)

    def done(row: QuickBooksConnection) -> bool:
        return row.state == ConnectionState.DISCONNECTED

    lease = _acquire_or_wait(connection, done)
    if not lease.acquired:
        _copy_row(connection, lease.row)
        return connection
    try:
        row = _qs().get(pk=connection.pk)
        _check_credentials(row)
        detail = f"Revoked by {by}."
        if is_unreadable(row.refresh_token) or is_unreadable(row.access_token):
            detail = (
                f"Disconnected by {by}; not revoked at Intuit: no key of FERNET_KEYS "
                "decrypts the tokens (the grant ends when the user removes the app in "
                "QuickBooks, or after 100 days unused)."
            )
        else:
            token = row.refresh_token or row.access_token
            if token:
                client.revoke_token(token)
        fresh = _clear(row.pk, row.token_version, EventKind.REVOKED, detail, by=by, actor=actor)
        _copy_row(connection, fresh if fresh is not None else _qs().get(pk=row.pk))
        return connection
    finally:
        _release(connection.pk, lease.owner)


def _claim_disconnect_check(pk: int) -> bool:
    """Whether this visit of the Disconnect URL may ask Intuit: at most one check per
    connection per ``DISCONNECT_CHECK_INTERVAL``, timed by the database's clock."""
    interval = timedelta(seconds=qb_settings.DISCONNECT_CHECK_INTERVAL)
    due = Q(disconnect_checked_at__isnull=True) | Q(
        disconnect_checked_at__lt=_db_now_plus(-interval)
    )
    return bool(_qs().filter(pk=pk).filter(due).update(disconnect_checked_at=Now()))


@_committed_independently
@holds_tokens
def disconnected_at_intuit(connection: QuickBooksConnection, *, actor=None) -> bool:
    """Handle Intuit's Disconnect URL for ``connection``: confirm, then drop the tokens.

    A link can be forged, so an active grant is checked first with a forced
    refresh, at most once per ``DISCONNECT_CHECK_INTERVAL`` (later visits answer
    from that check): only when Intuit answers ``invalid_grant`` (the grant is
    gone) are the tokens dropped. A connection that is not active but still
    holds a refresh token is revoked at Intuit first. A reconnect that commits
    meanwhile is never dropped. Returns whether the connection is now
    disconnected. Raises :class:`IntuitUnavailable` when Intuit cannot confirm,
    :class:`TokensUnreadable` when no key decrypts the tokens (nothing changes).
    """
    row = _qs().get(pk=connection.pk)
    _check_credentials(row)
    if row.state == ConnectionState.DISCONNECTED and not row.refresh_token:
        _copy_row(connection, row)
        return True
    if is_unreadable(row.refresh_token):
        raise _flag_unreadable(row.pk, actor=actor)
    version = row.token_version
    if row.state == ConnectionState.ACTIVE and row.refresh_token:
        if not _claim_disconnect_check(row.pk):
            _copy_row(connection, row)
            return False  # checked a moment ago and found alive: a repeated (or forged) visit
        try:
            refresh(row, force=True, actor=actor)
        except TokensUnreadable:
            raise
        except ReauthorizationRequired:
            pass  # the grant is gone: marked reauth_required over ``version``
        except QuickBooksError:
            _qs().filter(pk=row.pk).update(disconnect_checked_at=None)  # unconfirmed: ask again
            raise
        else:
            _copy_row(connection, row)
            return False
    elif row.refresh_token:
        # Not active (e.g. reauth_required), yet the grant may be alive at Intuit: end it.
        client.revoke_token(row.refresh_token)
    fresh = _clear(
        row.pk,
        version,
        EventKind.DISCONNECTED_AT_INTUIT,
        "The user disconnected the app inside QuickBooks.",
        by="intuit",
        actor=actor,
    )
    if fresh is None:  # a reconnect committed meanwhile: its new grant stays
        _copy_row(connection, _qs().get(pk=row.pk))
        return False
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
        name = client.company_name(info)
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


@dataclass
class ReencryptResult:
    """What :func:`reencrypt_all` did."""

    rewritten: int = 0
    #: pks of rows that no key of ``FERNET_KEYS`` decrypts: flagged, left as they are.
    unreadable: list[int] = field(default_factory=list)


@_committed_independently
@holds_tokens
def reencrypt_all(batch_size: int = 200) -> ReencryptResult:
    """Re-encrypt every stored token with the first key of ``FERNET_KEYS``.

    Each row is rewritten only if its tokens did not change meanwhile
    (``token_version``), so a refresh running at the same time never loses
    its new tokens to this job. A row that no key decrypts is left as it is
    (its ciphertext intact, should the key come back), flagged and reported;
    the others go on.
    """
    result = ReencryptResult()
    columns = ("pk", *TOKEN_COLUMNS, "token_version", "tokens_unreadable_at")
    ids = list(_qs().values_list("pk", flat=True).order_by("pk"))
    for start in range(0, len(ids), batch_size):
        for row in _qs().filter(pk__in=ids[start : start + batch_size]).only(*columns):
            for _attempt in range(5):
                if any(is_unreadable(getattr(row, name)) for name in TOKEN_COLUMNS):
                    _flag_unreadable(row.pk)
                    result.unreadable.append(row.pk)
                    break
                written = (
                    _qs()
                    .filter(pk=row.pk, token_version=row.token_version)
                    .update(
                        access_token=row.access_token,
                        refresh_token=row.refresh_token,
                        id_token=row.id_token,
                        tokens_unreadable_at=None,
                    )
                )
                if written:
                    result.rewritten += 1
                    break
                row = _qs().only(*columns).get(pk=row.pk)
    return result

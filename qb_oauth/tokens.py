"""The lifecycle of a connection's tokens: the only code that writes tokens.

This module tells the story: :func:`connect` (a callback's code becomes a
connection), :func:`get_access_token` (use, refreshing when needed),
:func:`refresh` (single-flight across threads, processes and machines),
:func:`revoke`, and :func:`disconnected_at_intuit` (Intuit's Disconnect URL).
How each step is made safe lives in :mod:`qb_oauth.lifecycle`: the row lease,
the in-process flight, the escape from the caller's transaction, the stores
that keep Intuit's answer when the database refuses it, unreadable rows. The
guarantees, and the one window that cannot be closed, are in
docs/reliability.md.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import Error as DatabaseError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import client, signals
from .backoff import backoff_delay
from .conf import qb_settings
from .events import record_event, send_on_commit
from .exceptions import (
    IntuitError,
    QuickBooksError,
    RealmMismatch,
    ReauthorizationRequired,
    TokensNotSaved,
    TokensUnreadable,
)
from .fields import is_unreadable
from .keys import ReencryptResult, reencrypt_all
from .lifecycle import ending, flight, unreadable, usage
from .lifecycle import lease as leases
from .lifecycle.own_connection import committed_independently
from .lifecycle.refresh import refresh_holding_lease
from .lifecycle.store import copy_row, store, token_fields
from .models import TOKEN_COLUMNS, ConnectionState, EventKind, QuickBooksConnection, owner_key
from .redact import holds_tokens

__all__ = [
    "ReencryptResult",
    "backoff_delay",
    "check_connection",
    "connect",
    "disconnected_at_intuit",
    "get_access_token",
    "record_event",
    "reencrypt_all",
    "refresh",
    "revoke",
]

logger = logging.getLogger("qb_oauth.tokens")

#: How often ``last_used_at`` is written by :func:`get_access_token` at most.
USED_AT_GRANULARITY = timedelta(minutes=10)


def _rows():
    return QuickBooksConnection.objects


# -- connect ---------------------------------------------------------------------


@committed_independently
@holds_tokens
def connect(
    *,
    user,
    code: str,
    realm_id: str,
    redirect_uri: str,
    scopes: list[str] | None = None,
    owner=None,
) -> tuple[QuickBooksConnection, bool]:
    """Exchange a callback's code and store the connection (create or update).

    ``user`` is who consented; ``owner`` what the connection belongs to (default:
    ``user``; see docs/ownership.md). A realm the owner already has in this
    environment is that row again, with the new tokens, whoever of its members
    consented: ``user`` then records the latest. Returns ``(connection, created)``.

    Raises before anything is stored when Intuit refuses the code or cannot be
    reached. The company name is read from the Accounting API; if that fails,
    the tokens are stored anyway (the code cannot be exchanged twice) with an
    empty name. A database that refuses the write is retried for a while; if it
    still refuses, the new grant is revoked and :class:`TokensNotSaved` raised (nothing changed).
    """
    environment = qb_settings.ENVIRONMENT
    owner_type, owner_id = owner_key(user if owner is None else owner)
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

    now = timezone.now()
    values = token_fields(tokens, now)
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
                _rows()
                .select_for_update()
                .defer(*TOKEN_COLUMNS)  # the old tokens may be unreadable: never needed
                .get_or_create(
                    owner_content_type=owner_type,
                    owner_object_id=owner_id,
                    realm_id=str(realm_id),
                    environment=environment,
                    defaults={"connected_at": now, "user": user},
                )
            )
            row_values = dict(values, token_version=F("token_version") + 1)
            if not created:
                row_values["connected_at"] = now
                row_values["user"] = user  # who consented, last: the event's actor too
            _rows().filter(pk=connection.pk).update(**row_values)
            connection.refresh_from_db()
            record_event(
                connection,
                EventKind.CONNECTED if created else EventKind.RECONNECTED,
                f"Company {company_name or realm_id} ({environment}).",
                intuit_tid=tokens.intuit_tid,
                actor=user,
            )
            send_on_commit(signals.connection_created, connection, created=created, user=user)
            return connection, created

    try:
        return store(write, seconds=qb_settings.wait_limit, pk=None, what="a new connection")
    except DatabaseError as err:
        logger.error(
            "Could not store the new connection to realm %s (%s): the grant is revoked, "
            "the user is asked to connect again.",
            realm_id,
            type(err).__name__,
        )
        _revoke_quietly(tokens.refresh_token)
        raise TokensNotSaved("The new connection could not be saved; nothing changed.") from None


@holds_tokens
def _revoke_quietly(token: str) -> None:
    try:
        client.revoke_token(token)
    except QuickBooksError as err:
        logger.warning("Could not revoke an unused grant: %s", err.describe())


# -- use ---------------------------------------------------------------------------


@holds_tokens
def get_access_token(connection: QuickBooksConnection) -> str:
    """A valid access token for ``connection``.

    While the stored token is more than ``REFRESH_MARGIN`` from expiry this is
    one query and no network. Otherwise it refreshes through :func:`refresh`,
    which calls Intuit at most once however many callers ask at once.
    """
    current = flight.current(connection)
    if current is not None and flight.follow(current, connection):
        return connection.access_token  # another thread of this process just refreshed
    row = _rows().filter(pk=connection.pk).values(*flight.LOADED_FIELDS).get()
    flight.apply(connection, row)
    connection.raise_for_state()
    if is_unreadable(row["access_token"]):
        raise unreadable.flag(connection.pk)
    if row["tokens_unreadable_at"] is not None and unreadable.readable_again(connection.pk):
        connection.tokens_unreadable_at = None
    now = timezone.now()
    stale = row["last_used_at"] is None or now - row["last_used_at"] > USED_AT_GRANULARITY
    if not connection.access_token_expired(qb_settings.REFRESH_MARGIN, now):
        if stale:
            _mark_used(connection, now)
        return connection.access_token
    flight.once_per_process(
        connection,
        refresh,
        first=(lambda: _mark_used(connection, now)) if stale else None,  # once per flight
    )
    return connection.access_token


def _mark_used(connection: QuickBooksConnection, now: datetime) -> None:
    usage.write_used_at(connection.pk, now)
    connection.last_used_at = now


# -- refresh -----------------------------------------------------------------------


@committed_independently
def refresh(
    connection: QuickBooksConnection, force: bool = False, *, actor: Any = None
) -> QuickBooksConnection:
    """Refresh ``connection``'s tokens at Intuit, single-flight (:mod:`qb_oauth.lifecycle.lease`).

    Without ``force`` nothing happens when the stored access token is still
    more than ``REFRESH_MARGIN`` from expiry. With ``force`` a refresh happens
    unless another caller refreshed since ``connection`` was loaded: the holder
    re-reads the row once it has the lease and does nothing if another caller
    refreshed in the meantime (expiry re-checked under the lock).

    Raises :class:`ReauthorizationRequired` (the user must reconnect; its
    subclass :class:`TokensUnreadable` when no key decrypts the stored tokens),
    :class:`IntuitUnavailable` (nothing stored changed; try later),
    :class:`CredentialsMismatch` (tokens of another environment or Intuit app),
    :class:`TokensNotSaved` (the database refused Intuit's answer) or
    :class:`ConnectionNotActive`. ``connection`` is updated in place.
    """
    connection.raise_for_keys()
    baseline_version = connection.token_version
    margin = qb_settings.REFRESH_MARGIN

    def done(row: QuickBooksConnection) -> bool:
        if row.state != ConnectionState.ACTIVE:
            return True
        if row.token_version != baseline_version:
            return force or not row.access_token_expired(margin)
        return False

    lease = leases.acquire_or_wait(connection, done)
    if not lease.acquired:
        assert lease.row is not None
        copy_row(connection, lease.row)
        connection.raise_for_state()
        return connection
    stored = False
    try:
        # The row as it is under the lease: read by the statement that took it, where the
        # database can (lease.try_lease), else now.
        row = lease.row if lease.row is not None else _rows().get(pk=connection.pk)
        if done(row) or (not force and not row.access_token_expired(margin)):
            copy_row(connection, row)
            connection.raise_for_state()
            return connection
        row.raise_for_keys()
        if is_unreadable(row.refresh_token):
            raise unreadable.flag(row.pk, actor=actor)
        if not row.refresh_token:
            row.raise_for_state()
            raise ReauthorizationRequired("This QuickBooks connection has no refresh token.")
        stored = refresh_holding_lease(connection, row, lease, actor=actor)
        return connection
    finally:
        if not stored and not lease.handed_over:  # storing tokens ended the lease already
            leases.release(connection.pk, lease.owner)


# -- revoke and disconnect ------------------------------------------------------------


@committed_independently
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
    connection.raise_for_keys()

    def done(row: QuickBooksConnection) -> bool:
        return row.state == ConnectionState.DISCONNECTED

    lease = leases.acquire_or_wait(connection, done)
    if not lease.acquired:
        assert lease.row is not None  # a lease not acquired always carries the row
        copy_row(connection, lease.row)
        return connection
    try:
        row = lease.row if lease.row is not None else _rows().get(pk=connection.pk)
        row.raise_for_keys()
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
        fresh = ending.clear(
            row.pk, row.token_version, EventKind.REVOKED, detail, by=by, actor=actor
        )
        copy_row(connection, fresh if fresh is not None else _rows().get(pk=row.pk))
        return connection
    finally:
        leases.release(connection.pk, lease.owner)


@committed_independently
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
    row = _rows().get(pk=connection.pk)
    row.raise_for_keys()
    if row.state == ConnectionState.DISCONNECTED and not row.refresh_token:
        copy_row(connection, row)
        return True
    if is_unreadable(row.refresh_token):
        raise unreadable.flag(row.pk, actor=actor)
    version = row.token_version
    if row.state == ConnectionState.ACTIVE and row.refresh_token:
        if not ending.claim_disconnect_check(row.pk):
            copy_row(connection, row)
            return False  # checked a moment ago and found alive: a repeated (or forged) visit
        try:
            refresh(row, force=True, actor=actor)
        except TokensUnreadable:
            raise
        except ReauthorizationRequired:
            pass  # the grant is gone: marked reauth_required over ``version``
        except QuickBooksError:
            _rows().filter(pk=row.pk).update(disconnect_checked_at=None)  # unconfirmed: ask again
            raise
        else:
            copy_row(connection, row)
            return False
    elif row.refresh_token:
        # Not active (e.g. reauth_required), yet the grant may be alive at Intuit: end it.
        client.revoke_token(row.refresh_token)
    fresh = ending.clear(
        row.pk,
        version,
        EventKind.DISCONNECTED_AT_INTUIT,
        "The user disconnected the app inside QuickBooks.",
        by="intuit",
        actor=actor,
    )
    if fresh is None:  # a reconnect committed meanwhile: its new grant stays
        copy_row(connection, _rows().get(pk=row.pk))
        return False
    copy_row(connection, fresh)
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
        _rows().filter(pk=connection.pk).update(company_name=name[:255])
        connection.company_name = name[:255]
    record_event(connection, EventKind.CHECKED, f"Company {name or '(no name)'}.", actor=actor)
    return name

"""The refresh a lease holder makes: the call to Intuit, its refusals, and the store.

``invalid_grant`` is trusted only after re-reading the stored refresh token:
if another process stored a newer one, it is used once. It is not trusted at
all right after taking a lease over (the previous holder may hold Intuit's
answer, a rotated token, and still store it), nor by a holder whose own
lease was taken over: both count an outage, and the next attempt decides.

Intuit's answer is stored while the holder still holds the lease, or, if its
lease ran out, as long as nobody stored tokens since it read them
(``token_version``): then it is the newest refresh token Intuit issued.
Otherwise a reconnect (a new grant) or a later refresh stored newer tokens,
and those are kept.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import Error as DatabaseError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .. import client, signals
from ..conf import qb_settings
from ..events import record_event, send_on_commit
from ..exceptions import (
    ImproperlyConfigured,
    IntuitUnavailable,
    QuickBooksError,
    ReauthorizationRequired,
    TokensNotSaved,
    TokensUnreadable,
)
from ..fields import is_unreadable
from ..models import ConnectionState, EventKind, QuickBooksConnection
from ..redact import holds_tokens
from . import lease as leases
from . import unreadable
from .flight import apply
from .store import copy_row, store, store_later, token_fields, write_tokens_and_event

logger = logging.getLogger("qb_oauth.tokens")

_LEASE_TAKEN = (
    "Intuit refused the refresh token while another caller held the lease; "
    "checking again on the next attempt."
)


def _rows():
    return QuickBooksConnection.objects


@holds_tokens
def refresh_holding_lease(
    connection: QuickBooksConnection,
    row: QuickBooksConnection,
    lease: leases.Lease,
    *,
    actor: Any = None,
) -> bool:
    """Call Intuit with ``row``'s refresh token and store its answer.

    True when new tokens were stored (which also ends the lease); False when
    newer tokens stored by someone else were kept. ``connection`` is updated.
    """
    used = row.refresh_token
    version = row.token_version
    try:
        try:
            tokens = client.refresh_tokens(used)
        except ReauthorizationRequired as refused:
            # Another process may have stored a newer refresh token (a
            # reconnect, or a refresh whose lease outlived ours): try it once.
            latest = _rows().get(pk=row.pk)
            if latest.token_version == version and latest.refresh_lease_owner != lease.owner:
                # Our lease ran out while we were at Intuit and another caller took it
                # over: it may have rotated the token, and may still store its answer.
                raise IntuitUnavailable(_LEASE_TAKEN, intuit_tid=refused.intuit_tid) from None
            if not latest.refresh_token or latest.refresh_token == used:
                if lease.takeover:
                    raise IntuitUnavailable(
                        "Intuit refused the refresh token right after an interrupted "
                        "refresh; checking again on the next attempt.",
                        intuit_tid=refused.intuit_tid,
                    ) from None
                raise
            if is_unreadable(latest.refresh_token):
                raise unreadable.flag(row.pk, actor=actor) from None
            logger.info("Refresh of connection %s: retrying with a newer refresh token.", row.pk)
            used, version = latest.refresh_token, latest.token_version
            tokens = client.refresh_tokens(used)
    except (TokensUnreadable, ImproperlyConfigured):
        raise  # not Intuit's answer about this grant: nothing to count against it
    except ReauthorizationRequired as err:
        if mark_reauth_required(connection, version, err, owner=lease.owner, actor=actor):
            raise
        return False  # newer tokens were stored meanwhile: the grant is alive
    except QuickBooksError as err:
        record_failure(connection, err, actor=actor)
        raise
    return store_refreshed(connection, row, lease, tokens, used=used, version=version, actor=actor)


@holds_tokens
def store_refreshed(
    connection: QuickBooksConnection,
    row: QuickBooksConnection,
    lease: leases.Lease,
    tokens: client.TokenResponse,
    *,
    used: str,
    version: int,
    actor: Any = None,
) -> bool:
    """Store Intuit's refresh answer: retried while the lease lasts, then in the background
    (:func:`~qb_oauth.lifecycle.store.store_later`), which holds the lease meanwhile."""
    now = timezone.now()
    values = token_fields(tokens, now)
    values["token_version"] = F("token_version") + 1
    if not row.client_id:
        values["client_id"] = (qb_settings.CLIENT_ID or "")[:255]  # these keys work for it
    rotated = tokens.refresh_token != used
    event = {
        "kind": EventKind.REFRESHED,
        "at": now,
        "detail": "New refresh token issued." if rotated else "Access token renewed.",
        "intuit_tid": tokens.intuit_tid or "",
        "actor_id": actor.pk if getattr(actor, "is_authenticated", False) else None,
    }

    def write() -> QuickBooksConnection | None:
        if not write_tokens_and_event(
            row.pk, values, owner=lease.owner, version=version, event=event
        ):
            return None
        if used == row.refresh_token:
            # Nobody wrote tokens since ``row`` was read under the lease: the stored
            # row is ``row`` with these values, no need to read it back.
            apply(row, {k: v for k, v in values.items() if k != "token_version"})
            row.token_version = version + 1
            fresh = row
        else:  # the retry with a newer token: read back what is stored
            fresh = _rows().get(pk=row.pk)
        send_on_commit(signals.tokens_refreshed, fresh, rotated=rotated)
        return fresh

    try:
        stored = store(
            write, seconds=lease.seconds_left() - 1.0, pk=row.pk, what="refreshed tokens"
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
        store_later(
            lambda: write() is not None,
            pk=row.pk,
            what="refreshed tokens",
            renew=lambda: leases.renew(row.pk, lease.owner),
        )
        raise TokensNotSaved(
            "Intuit issued new tokens but the database refused them; they are stored as soon "
            "as it accepts them."
        ) from None
    if stored is None:
        copy_row(connection, _rows().get(pk=row.pk))
        connection.raise_for_state()
        return False
    copy_row(connection, stored)
    return True


def mark_reauth_required(
    connection: QuickBooksConnection,
    version: int,
    err: QuickBooksError,
    *,
    owner: str,
    actor: Any = None,
) -> bool:
    """Mark the connection ``reauth_required`` unless newer tokens were stored since
    ``version`` (then copy those and return False), or our lease was taken over (then
    the other holder may still store a rotated token: :class:`IntuitUnavailable`)."""
    now = timezone.now()
    with transaction.atomic():
        changed = (
            _rows()
            .filter(pk=connection.pk, token_version=version, refresh_lease_owner=owner)
            .update(
                state=ConnectionState.REAUTH_REQUIRED,
                # Only its user can fix it: the sweep does not try again on schedule.
                **QuickBooksConnection.backoff_failure_values(err.describe(), now),
                updated_at=now,
            )
        )
        fresh = _rows().get(pk=connection.pk)
        if not changed:
            copy_row(connection, fresh)
            if fresh.token_version != version:
                return False  # someone stored newer tokens meanwhile: their grant is alive
            raise IntuitUnavailable(_LEASE_TAKEN, intuit_tid=err.intuit_tid) from None
        record_event(
            connection.pk,
            EventKind.REAUTH_REQUIRED,
            "Intuit answered invalid_grant.",
            intuit_tid=err.intuit_tid,
            actor=actor,
        )
        send_on_commit(signals.reauthorization_required, fresh, reason="invalid_grant")
    copy_row(connection, fresh)
    logger.warning("Connection %s needs reconnecting: %s", connection.pk, err.describe())
    return True


def record_failure(
    connection: QuickBooksConnection, err: QuickBooksError, *, actor: Any = None
) -> None:
    """Count an outage, with its backoff and an event: nothing about the tokens changes."""
    now = timezone.now()
    with transaction.atomic():
        connection.backoff_failure(err.describe(), now)
        record_event(
            connection.pk,
            EventKind.REFRESH_FAILED,
            err.describe(),
            intuit_tid=err.intuit_tid,
            actor=actor,
        )
    logger.warning("Refresh of connection %s failed: %s", connection.pk, err.describe())

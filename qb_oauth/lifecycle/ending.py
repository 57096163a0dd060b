"""How a connection ends: its tokens dropped, only over the version the caller saw.

Used by :func:`qb_oauth.tokens.revoke` and by Intuit's Disconnect URL
(:func:`qb_oauth.tokens.disconnected_at_intuit`), whose checks at Intuit are
rationed here too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import Error as DatabaseError
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from .. import signals
from ..conf import qb_settings
from ..events import record_event, send_on_commit
from ..exceptions import TokensNotSaved
from ..models import ConnectionState, QuickBooksConnection
from . import lease as leases
from .store import store, store_later


def _rows():
    return QuickBooksConnection.objects


CLEARED = {
    "access_token": None,
    "refresh_token": None,
    "id_token": None,
    "access_token_expires_at": None,
    "refresh_token_expires_at": None,
    "refresh_token_hard_expires_at": None,
    "refresh_lease_owner": "",
    "refresh_lease_expires_at": None,
    **QuickBooksConnection.backoff_cleared_values(),
    "tokens_unreadable_at": None,
    "disconnect_checked_at": None,
    "state": ConnectionState.DISCONNECTED,
}


def clear(
    pk: int, version: int, kind: str, detail: str, *, by: str, actor=None
) -> QuickBooksConnection | None:
    """Drop the tokens and mark the connection disconnected, only over ``version``: a
    reconnect that committed meanwhile keeps its new grant. Retried (then kept in memory)
    like a store of tokens: the grant is already gone at Intuit."""

    def write(fields: dict[str, Any]) -> QuickBooksConnection | None:
        with transaction.atomic():
            if not _rows().filter(pk=pk, token_version=version).update(**fields):
                return None
            fresh = _rows().get(pk=pk)
            record_event(pk, kind, detail, actor=actor)
            send_on_commit(signals.connection_disconnected, fresh, by=by)
            return fresh

    fields = dict(CLEARED, token_version=F("token_version") + 1, updated_at=timezone.now())
    try:
        return store(
            lambda: write(fields), seconds=qb_settings.wait_limit, pk=pk, what="a disconnect"
        )
    except DatabaseError:
        late = {k: v for k, v in fields.items() if k not in leases.LEASE_FIELDS}
        store_later(lambda: write(late) is not None, pk=pk, what="a disconnect")
        raise TokensNotSaved(
            "The grant ended at Intuit, but the database refused the change; it is stored as "
            "soon as the database accepts it."
        ) from None


def claim_disconnect_check(pk: int) -> bool:
    """Whether this visit of the Disconnect URL may ask Intuit: at most one check per
    connection per ``DISCONNECT_CHECK_INTERVAL``, timed by the database's clock."""
    interval = timedelta(seconds=qb_settings.DISCONNECT_CHECK_INTERVAL)
    due = Q(disconnect_checked_at__isnull=True) | Q(
        disconnect_checked_at__lt=leases.db_now_plus(-interval)
    )
    return bool(_rows().filter(pk=pk).filter(due).update(disconnect_checked_at=Now()))

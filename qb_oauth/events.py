"""A connection's history, and the signals that report a change once it commits.

The lifecycle (:mod:`qb_oauth.tokens`), the sweep and the webhooks append
events here and send their signals through :func:`send_on_commit`, so every
signal is sent the same way: after the change is committed, to every
receiver, a failing receiver logged and never raised into the caller (the
tokens are stored by then, and the caller still gets them).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from .models import ConnectionEvent, QuickBooksConnection

logger = logging.getLogger("qb_oauth.tokens")

#: The longest detail kept in an event.
DETAIL_LIMIT = 2000


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
        detail=detail[:DETAIL_LIMIT],
        intuit_tid=intuit_tid or "",
        actor=actor if getattr(actor, "is_authenticated", False) else None,
    )


def send_robust(signal: Signal, **kwargs: Any) -> list[tuple[Any, Exception]]:
    """Send ``signal`` now (``sender=QuickBooksConnection``) to every receiver; log a
    receiver that fails, never raise it. Returns the receivers that failed, with
    what they raised (the webhooks retry an event on that)."""
    failures: list[tuple[Any, Exception]] = []
    for receiver, result in signal.send_robust(sender=QuickBooksConnection, **kwargs):
        if isinstance(result, Exception):
            failures.append((receiver, result))
            logger.error(
                "A receiver of a qb_oauth signal failed: %r raised %s",
                receiver,
                type(result).__name__,
                exc_info=result,
            )
    return failures


def send_on_commit(signal: Signal, connection: QuickBooksConnection, **kwargs: Any) -> None:
    """Send ``signal`` with ``connection`` and its ``owner`` once the current transaction
    commits (at once outside one), with :func:`send_robust`."""

    def send() -> None:
        if not signal.has_listeners(QuickBooksConnection):
            return  # nobody listens: don't load the owner for nothing
        send_robust(signal, connection=connection, owner=owner_of_connection(connection), **kwargs)

    transaction.on_commit(send)


def owner_of_connection(connection: QuickBooksConnection) -> Any:
    """``connection.owner``, or None when it no longer exists (a generic relation has no
    cascade of its own)."""
    try:
        return connection.owner
    except Exception:  # a content type or row gone meanwhile: the signal still goes out
        logger.warning("The owner of connection %s could not be loaded.", connection.pk)
        return None

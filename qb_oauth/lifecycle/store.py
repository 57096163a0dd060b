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
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import Error as DatabaseError
from django.db import connections, transaction
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
from ..models import ConnectionState, QuickBooksConnection
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
    """Give ``connection`` every column of ``row`` (the caller's object is updated in place)."""
    for f in QuickBooksConnection._meta.concrete_fields:
        setattr(connection, f.attname, getattr(row, f.attname))


def _retrying(seconds: float, pk: int | None, what: str) -> Retrying:
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


def store(write: Callable[[], T], *, seconds: float, pk: int | None, what: str) -> T:
    """Run ``write`` (one short transaction), retrying database errors for ``seconds``; the
    last error is raised when they run out."""
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

"""Warnings sent when a connection's refresh token will end soon: once per window."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import signals
from ..conf import qb_settings
from ..events import record_event, send_on_commit
from ..models import TOKEN_COLUMNS, EventKind, QuickBooksConnection
from .claims import iter_pks


def _qs():
    return QuickBooksConnection.objects


def _expiring(row: dict, now: datetime, limit: datetime) -> tuple[datetime, str] | None:
    found = []
    hard = row["refresh_token_hard_expires_at"]
    if hard is not None and now < hard <= limit:
        found.append((hard, "hard"))
    rolling = row["refresh_token_expires_at"]
    if row["consecutive_failures"] > 0 and rolling is not None and now < rolling <= limit:
        found.append((rolling, "rolling"))
    return min(found) if found else None


def send_expiry_warnings(now: datetime | None = None) -> int:
    """Send ``refresh_token_expiring`` for connections whose refresh token ends soon.

    A connection qualifies when its hard expiry (the grant's five-year end),
    or its rolling expiry while refreshing fails, falls within
    ``EXPIRY_WARNING_WINDOW``. It is warned once per window: the row is
    claimed with a conditional UPDATE of ``expiry_warning_sent_at`` (null or
    older than the window), so two sweeps at once send one warning. Each
    warning is recorded as an ``expiry_warning`` event; the signal is sent on
    commit. Returns how many were sent.
    """
    now = now or timezone.now()
    window = timedelta(seconds=qb_settings.EXPIRY_WARNING_WINDOW)
    limit = now + window
    not_warned = Q(expiry_warning_sent_at__isnull=True) | Q(
        expiry_warning_sent_at__lte=now - window
    )
    hard = Q(refresh_token_hard_expires_at__gt=now, refresh_token_hard_expires_at__lte=limit)
    rolling = Q(
        consecutive_failures__gt=0,
        refresh_token_expires_at__gt=now,
        refresh_token_expires_at__lte=limit,
    )
    query = _qs().refreshable().filter(hard | rolling).filter(not_warned)
    sent = 0
    for pks in iter_pks(query, qb_settings.SWEEP_CHUNK_SIZE):
        rows = query.filter(pk__in=pks).values(
            "pk",
            "refresh_token_hard_expires_at",
            "refresh_token_expires_at",
            "consecutive_failures",
        )
        for row in rows:
            found = _expiring(row, now, limit)
            if found is None:
                continue
            expires_at, kind = found
            with transaction.atomic():
                if (
                    not _qs()
                    .filter(pk=row["pk"])
                    .filter(not_warned)
                    .update(expiry_warning_sent_at=now)
                ):
                    continue  # another sweep warned it a moment ago
                # No token is needed to warn, and one row that no key opens must not
                # stop the warnings of the others.
                connection = _qs().defer(*TOKEN_COLUMNS).get(pk=row["pk"])
                record_event(
                    connection,
                    EventKind.EXPIRY_WARNING,
                    f"The refresh token's {kind} expiry is {expires_at:%Y-%m-%d %H:%M} UTC: "
                    "the user should reconnect before then.",
                )
                send_on_commit(
                    signals.refresh_token_expiring, connection, expires_at=expires_at, kind=kind
                )
            sent += 1
    return sent

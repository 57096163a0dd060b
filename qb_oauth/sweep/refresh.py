"""One connection's refresh within a sweep: re-checked, then the single-flight refresh."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from .. import tokens
from ..exceptions import (
    ConnectionNotActive,
    IntuitUnavailable,
    QuickBooksError,
    ReauthorizationRequired,
    TokensUnreadable,
)
from ..models import ConnectionState, QuickBooksConnection
from .claims import Candidate, release
from .stats import (
    FAILED_OTHER,
    FAILED_UNAVAILABLE,
    REAUTH_REQUIRED,
    REFRESHED,
    SKIPPED_FRESH,
    SKIPPED_LOCKED,
)

_ONLY = (
    "pk",
    "environment",
    "state",
    "token_version",
    "next_attempt_at",
    "refresh_lease_expires_at",
    "last_error_at",
)


def _qs():
    return QuickBooksConnection.objects


def refresh_candidate(
    candidate: Candidate,
    *,
    claim: datetime | None = None,
    force: bool = False,
    just_claimed: bool = False,
) -> str:
    """Refresh one connection if it still needs it; return its outcome (one of OUTCOMES).

    ``claim``: the connection was claimed by a sweep with this claim time;
    it is refreshed only while the claim stands. Without a claim, a
    connection is refreshed only if it is due now, or with ``force``.
    ``candidate.version`` is the ``token_version`` seen when the connection
    was found due: under the lease, :func:`tokens.refresh` refreshes only
    if it is unchanged.

    ``just_claimed``: this process claimed the row a moment ago (the sweep
    refreshing here), so the row is not read again before the refresh: the
    claim stands (it lasts a schedule period), and the version re-check
    happens under the lease anyway. A batch run by a cluster worker, which
    may run long after the claim, reads the row first.
    """
    if just_claimed and candidate.version is not None and candidate.environment:
        return _refresh(_as_instance(candidate), candidate.version, claim)
    conn = _qs().only(*_ONLY).filter(pk=candidate.pk).first()
    if conn is None or conn.state != ConnectionState.ACTIVE:
        return SKIPPED_FRESH
    version = candidate.version if candidate.version is not None else conn.token_version
    if conn.token_version != version:
        release(conn.pk, claim)
        return SKIPPED_FRESH  # refreshed by someone since it was found due
    if claim is not None and conn.next_attempt_at != claim:
        return SKIPPED_LOCKED  # our claim expired and a later sweep took the connection
    lease = conn.refresh_lease_expires_at
    if lease is not None and lease > timezone.now():
        release(conn.pk, claim)
        return SKIPPED_LOCKED
    if claim is None and not force and not _qs().due().filter(pk=conn.pk).exists():
        return SKIPPED_FRESH
    conn.token_version = version
    return _refresh(conn, version, claim)


def _as_instance(candidate: Candidate) -> QuickBooksConnection:
    """A connection object holding what :func:`tokens.refresh` reads before it takes the lease
    (only for a candidate this sweep claimed a moment ago: its version and environment are
    known)."""
    assert candidate.version is not None and candidate.environment is not None
    conn = QuickBooksConnection(
        pk=candidate.pk,
        environment=candidate.environment,
        token_version=candidate.version,
        last_error_at=candidate.last_error_at,
        state=ConnectionState.ACTIVE,
    )
    conn._state.adding = False
    return conn


def _refresh(conn: QuickBooksConnection, version: int, claim: datetime | None) -> str:
    try:
        tokens.refresh(conn, force=True)
    except TokensUnreadable:
        return FAILED_OTHER  # flagged, reported and backing off (tokens.refresh did it)
    except ReauthorizationRequired:
        if conn.state == ConnectionState.REAUTH_REQUIRED:
            return REAUTH_REQUIRED
        release(conn.pk, claim)
        return SKIPPED_FRESH
    except IntuitUnavailable:
        return FAILED_UNAVAILABLE
    except ConnectionNotActive:
        release(conn.pk, claim)
        return SKIPPED_FRESH
    except QuickBooksError:
        return FAILED_OTHER
    if conn.token_version != version:
        return REFRESHED
    release(conn.pk, claim)
    return SKIPPED_FRESH

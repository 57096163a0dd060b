"""Which connections a sweep takes, and the claim that keeps two sweeps apart.

The due set is read in keyset-paginated batches and each batch claimed in one
short transaction (``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, then a
conditional UPDATE of ``next_attempt_at`` to a claim time unique to the
sweep); a claimed row leaves the due set. docs/scheduled-refresh.md tells the
whole protocol and why the claim lives in that column.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from ..conf import qb_settings
from ..models import TOKEN_COLUMNS, QuickBooksConnection

MODES = ("due", "all", "connection")


def _qs():
    return QuickBooksConnection.objects


@dataclass(frozen=True)
class Candidate:
    """A connection found due, with the token version seen then (the re-check baseline)."""

    pk: int
    version: int | None = None
    last_error_at: datetime | None = None
    environment: str | None = None


def claim_batches(
    now: datetime, chunk_size: int, claim: datetime
) -> Iterator[tuple[list[Candidate], list[int]]]:
    """Claim the due set batch by batch (see the module docstring).

    Yields ``(claimed, locked)``: the candidates this sweep claimed, and the
    pks of due rows whose refresh lease someone holds right now (not claimed).
    """
    last = 0
    while True:
        with transaction.atomic():
            rows = list(
                _qs()
                .due(now)
                .filter(pk__gt=last)
                .order_by("pk")
                .select_for_update(skip_locked=True)
                .values_list(
                    "pk",
                    "token_version",
                    "refresh_lease_expires_at",
                    "last_error_at",
                    "environment",
                )[:chunk_size]
            )
            if not rows:
                return
            last = rows[-1][0]
            lease_now = timezone.now()
            held = {pk for pk, _v, lease, *_ in rows if lease is not None and lease > lease_now}
            free = [pk for pk, *_ in rows if pk not in held]
            claimed: list[Candidate] = []
            if free:
                _qs().due(now).filter(pk__in=free).update(next_attempt_at=claim)
                seen = {pk: Candidate(pk, v, err, env) for pk, v, _lease, err, env in rows}
                mine = _qs().filter(pk__in=free, next_attempt_at=claim).values_list("pk", flat=True)
                claimed = [seen[pk] for pk in sorted(mine)]
        yield claimed, sorted(held)


def new_claim() -> datetime:
    """A claim time: one schedule period ahead, unique to this sweep (random microseconds)."""
    period = max(60.0, qb_settings.SCHEDULE_MINUTES * 60.0)
    return timezone.now() + timedelta(seconds=period, microseconds=secrets.randbelow(1_000_000))


def release(pk: int, claim: datetime | None) -> None:
    """Give a claim back (the connection was skipped: the next sweep may take it)."""
    if claim is not None:
        _qs().filter(pk=pk, next_attempt_at=claim).update(next_attempt_at=None)


def candidates_query(mode: str, connection_id: int | None, now: datetime):
    # Connections of the other environment hold tokens of the other keys: never refreshed here.
    if mode == "due":
        return _qs().due(now)
    mine = _qs().refreshable()
    if mode == "all":
        return mine
    return mine.filter(pk=connection_id)


def iter_pks(queryset, chunk_size: int) -> Iterator[list[int]]:
    """The pks of ``queryset`` in ascending batches (keyset pagination: memory flat)."""
    last = 0
    while True:
        pks = list(
            queryset.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:chunk_size]
        )
        if not pks:
            return
        yield pks
        last = pks[-1]


def iter_candidates(
    mode: str = "due", connection_id: int | None = None, now: datetime | None = None
):
    """The connections a sweep in ``mode`` would refresh, without claiming them (dry run)."""
    now = now or timezone.now()
    query = candidates_query(mode, connection_id, now)
    for pks in iter_pks(query, qb_settings.SWEEP_CHUNK_SIZE):
        yield from (
            query.filter(pk__in=pks).select_related("user").defer(*TOKEN_COLUMNS).order_by("pk")
        )

"""The scheduled refresh: find the connections that are due and refresh each one once.

:mod:`qb_oauth.tasks` holds the thin django-q2 entry points; this module holds
the work, so the ``qb_refresh`` command, the tasks and the tests share it.

What is due
-----------
``QuickBooksConnection.objects.due(now)``: active connections whose access
token is within ``REFRESH_MARGIN`` of expiry and that were used within
``RECENT_USE_WINDOW``, or whose last refresh is older than ``KEEPALIVE_AGE``
(so no refresh token reaches Intuit's rolling expiry), and that are not
backing off after outages (``next_attempt_at`` in the future).

How two sweeps (or many cluster workers) never refresh one connection twice
----------------------------------------------------------------------------
Three layers, from the cheapest to the one that is the guarantee:

1. **Claim.** The due set is read in keyset-paginated batches (``pk >
   last``, ``SWEEP_CHUNK_SIZE`` rows, memory flat in the number of
   connections). Each batch is claimed in one short transaction: on
   PostgreSQL the candidate rows are read with ``SELECT … FOR UPDATE SKIP
   LOCKED`` (rows another sweep is claiming this very instant are skipped,
   not waited for), then ``next_attempt_at`` is set to a claim time
   (now + one schedule period, made unique per sweep) with an UPDATE that
   repeats the due condition. A claimed row leaves the due set, so a second
   sweep running at the same time, or a replayed one, does not even see it.
   On SQLite, ``select_for_update`` does nothing, but the conditional UPDATE
   is atomic and writers are serialised, so the claim holds there too. The
   claim lives in ``next_attempt_at`` because that column already means
   "the sweep leaves this connection alone until then"; a refresh clears it
   (success) or replaces it by a backoff (outage), and a sweep that skips a
   row gives its claim back. A sweep that dies leaves a claim that expires
   by itself after one period.

   Why not hold ``FOR UPDATE`` row locks across the refresh instead: the lock
   would keep a transaction (and a database connection) open for every call
   to Intuit in flight, up to ``HTTP_TIMEOUT`` each; SQLite ignores it; and a
   ``get_access_token`` at the same moment would not see it. The claim is a
   plain column every process can see, and it expires.

2. **Lease check.** A due row whose refresh lease
   (``refresh_lease_expires_at``) is held is being refreshed right now by
   someone else (a web request's ``get_access_token``, the admin): it is not
   claimed, it is counted as ``skipped_locked``, and it is never waited for.
   A fanned-out batch, which may run a while after the claim, reads its rows
   again and checks the lease, its claim and the version before refreshing.

3. **Single-flight refresh.** Each connection goes through
   :func:`qb_oauth.tokens.refresh` with ``force=True`` and the
   ``token_version`` read when the row was found due. ``refresh`` takes the
   row's lease and, holding it, refreshes only if the version is unchanged:
   if anyone refreshed since the row was found due, nothing is sent to
   Intuit. ``force`` is needed for the keepalive case (the access token may
   still be fresh); the version check is the re-check under the lock.

Failures are recorded by ``tokens.refresh`` itself: an outage (5xx, 429,
timeout, network) counts a failure and sets the backoff (``next_attempt_at``,
exponential, capped); only ``invalid_grant`` marks the connection
``reauth_required``.

Fanning out
-----------
When a django-q2 cluster is configured (``Q_CLUSTER`` without ``sync``), the
sweep that the schedule runs claims the due set batch by batch and hands each
batch to the cluster as one ``qb_oauth.tasks.refresh_connections`` task, so
every worker on every machine shares the work. Each task checks that its
claim still stands before refreshing (a claim that expired may have been
taken by a later sweep). Without a cluster, the batches are refreshed here,
``SWEEP_CONCURRENCY`` at a time, on worker threads that close their database
connections when they finish.

The summary of each run is a :class:`~qb_oauth.models.SweepRun` row and one
log line on the ``qb_oauth.tasks`` logger.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import signals, tokens
from .conf import qb_settings
from .exceptions import (
    ConnectionNotActive,
    IntuitUnavailable,
    QuickBooksError,
    ReauthorizationRequired,
    TokensUnreadable,
)
from .models import TOKEN_COLUMNS, ConnectionState, EventKind, QuickBooksConnection, SweepRun

logger = logging.getLogger("qb_oauth.tasks")

REFRESHED = "refreshed"
SKIPPED_LOCKED = "skipped_locked"
SKIPPED_FRESH = "skipped_fresh"
FAILED_UNAVAILABLE = "failed_unavailable"
FAILED_OTHER = "failed_other"
REAUTH_REQUIRED = "reauth_required"
#: Every outcome of one connection in a sweep; each is a counter of :class:`SweepRun`.
OUTCOMES = (
    REFRESHED,
    SKIPPED_LOCKED,
    SKIPPED_FRESH,
    FAILED_UNAVAILABLE,
    FAILED_OTHER,
    REAUTH_REQUIRED,
)

MODES = ("due", "all", "connection")

#: The task each fanned-out batch runs.
CHUNK_TASK = "qb_oauth.tasks.refresh_connections"

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


@dataclass
class SweepStats:
    """Counts of one sweep (or of one fanned-out batch)."""

    due: int = 0
    refreshed: int = 0
    skipped_locked: int = 0
    skipped_fresh: int = 0
    failed_unavailable: int = 0
    failed_other: int = 0
    reauth_required: int = 0
    warnings_sent: int = 0
    fanned_out: bool = False
    chunks: int = 0
    seconds: float = 0.0
    run_id: int | None = None

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def processed(self) -> int:
        return sum(getattr(self, name) for name in OUTCOMES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "due": self.due,
            **{name: getattr(self, name) for name in OUTCOMES},
            "warnings_sent": self.warnings_sent,
            "fanned_out": self.fanned_out,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """The one summary line (no connection names, no tokens)."""
        head = f"Sweep #{self.run_id}" if self.run_id else "Sweep"
        if self.fanned_out and self.processed < self.due:
            return (
                f"{head}: handed {self.due} due connections to the cluster in "
                f"{self.chunks} tasks ({self.skipped_locked} skipped: refresh in progress), "
                f"{self.warnings_sent} expiry warnings sent."
            )
        return (
            f"{head}: {self.due} due, {self.refreshed} refreshed, "
            f"{self.skipped_locked} skipped (refresh in progress), "
            f"{self.skipped_fresh} skipped (no longer due), "
            f"{self.failed_unavailable} failed (Intuit unavailable), "
            f"{self.failed_other} failed (other), "
            f"{self.reauth_required} marked reauth required, "
            f"{self.warnings_sent} expiry warnings sent"
            + (f", fanned out in {self.chunks} tasks" if self.fanned_out else "")
            + (f", in {self.seconds:.1f} s." if self.seconds else ".")
        )


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
    """Claim the due set batch by batch (see the module's docstring).

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


def _new_claim() -> datetime:
    """A claim time: one schedule period ahead, unique to this sweep (random microseconds)."""
    period = max(60.0, qb_settings.SCHEDULE_MINUTES * 60.0)
    return timezone.now() + timedelta(seconds=period, microseconds=secrets.randbelow(1_000_000))


def _release(pk: int, claim: datetime | None) -> None:
    if claim is not None:
        _qs().filter(pk=pk, next_attempt_at=claim).update(next_attempt_at=None)


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
        _release(conn.pk, claim)
        return SKIPPED_FRESH  # refreshed by someone since it was found due
    if claim is not None and conn.next_attempt_at != claim:
        return SKIPPED_LOCKED  # our claim expired and a later sweep took the connection
    lease = conn.refresh_lease_expires_at
    if lease is not None and lease > timezone.now():
        _release(conn.pk, claim)
        return SKIPPED_LOCKED
    if claim is None and not force and not _qs().due().filter(pk=conn.pk).exists():
        return SKIPPED_FRESH
    conn.token_version = version
    return _refresh(conn, version, claim)


def _as_instance(candidate: Candidate) -> QuickBooksConnection:
    """A connection object holding what :func:`tokens.refresh` reads before it takes the lease."""
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
        _release(conn.pk, claim)
        return SKIPPED_FRESH
    except IntuitUnavailable:
        return FAILED_UNAVAILABLE
    except ConnectionNotActive:
        _release(conn.pk, claim)
        return SKIPPED_FRESH
    except QuickBooksError:
        return FAILED_OTHER
    if conn.token_version != version:
        return REFRESHED
    _release(conn.pk, claim)
    return SKIPPED_FRESH


def _safe(fn: Callable[[Candidate], str], candidate: Candidate) -> str:
    try:
        return fn(candidate)
    except Exception:  # a bug or a database error must not stop the sweep
        logger.exception("Sweep: connection %s failed unexpectedly.", candidate.pk)
        return FAILED_OTHER


_STOP = object()


def run_concurrently(
    candidates: Iterable[Candidate],
    fn: Callable[[Candidate], str],
    on_outcome: Callable[[Candidate, str], None],
    concurrency: int,
) -> None:
    """Run ``fn`` over ``candidates``, ``concurrency`` at a time, streaming.

    ``candidates`` is consumed lazily through a bounded queue (twice the
    concurrency), so an iterator that claims batches as it goes keeps memory
    flat. ``on_outcome`` is called under a lock. Worker threads close their
    database connections when they finish. With ``concurrency`` 1 everything
    runs in the calling thread (and its transaction).
    """
    if concurrency <= 1:
        for candidate in candidates:
            on_outcome(candidate, _safe(fn, candidate))
        return
    work: queue.Queue = queue.Queue(maxsize=concurrency * 2)
    lock = threading.Lock()

    def worker() -> None:
        try:
            while True:
                item = work.get()
                if item is _STOP:
                    return
                outcome = _safe(fn, item)
                with lock:
                    on_outcome(item, outcome)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=worker, name=f"qb-sweep-{i}", daemon=True)
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    try:
        for candidate in candidates:
            work.put(candidate)
    finally:
        for _thread in threads:
            work.put(_STOP)
        for thread in threads:
            thread.join()


def cluster_configured() -> bool:
    """Whether tasks handed to django-q2 run on a cluster (``Q_CLUSTER`` set, not ``sync``)."""
    from django.apps import apps

    if not apps.is_installed("django_q"):
        return False
    conf = getattr(settings, "Q_CLUSTER", None)
    return isinstance(conf, dict) and not conf.get("sync", False)


def run_sweep(
    *,
    mode: str = "due",
    connection_id: int | None = None,
    fan_out: bool | None = None,
    concurrency: int | None = None,
    chunk_size: int | None = None,
    warnings: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
    now: datetime | None = None,
) -> SweepStats:
    """Run one sweep and record it as a :class:`SweepRun`; returns its counts.

    ``mode``: ``"due"`` (the connections :meth:`due` names), ``"all"`` (every
    active connection, ignoring freshness and backoff) or ``"connection"``
    (``connection_id`` only). ``fan_out``: hand batches to the django-q2
    cluster (default: when one is configured; only in ``"due"`` mode).
    ``progress(done, total)`` is called after each connection when refreshing
    here.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    started = time.monotonic()
    now = now or timezone.now()
    concurrency = concurrency or qb_settings.SWEEP_CONCURRENCY
    chunk_size = chunk_size or qb_settings.SWEEP_CHUNK_SIZE
    if fan_out is None:
        fan_out = mode == "due" and cluster_configured()
    stats = SweepStats(fanned_out=bool(fan_out and mode == "due"))
    # A fanned-out run starts with due=1: a sentinel that keeps its batches
    # from marking it finished while batches are still being handed out.
    run = SweepRun.objects.create(
        started_at=now, fanned_out=stats.fanned_out, due=int(stats.fanned_out)
    )
    stats.run_id = run.pk
    try:
        if stats.fanned_out:
            _fan_out(run, stats, now, chunk_size)
        else:
            _refresh_here(stats, mode, connection_id, now, concurrency, chunk_size, progress)
        if warnings:
            stats.warnings_sent = send_expiry_warnings(now)
    finally:
        stats.seconds = time.monotonic() - started
        if stats.fanned_out:
            SweepRun.objects.filter(pk=run.pk).update(
                due=F("due") - 1, warnings_sent=stats.warnings_sent
            )
            _finish_if_done(run.pk)
        else:
            values: dict[str, Any] = {name: getattr(stats, name) for name in OUTCOMES}
            SweepRun.objects.filter(pk=run.pk).update(
                due=stats.due,
                warnings_sent=stats.warnings_sent,
                finished_at=timezone.now(),
                **values,
            )
            logger.info(stats.summary())
        # A fanned-out run logs its summary once, when its last batch finishes
        # (_finish_if_done): here it has only been handed out.
    return stats


def _refresh_here(stats, mode, connection_id, now, concurrency, chunk_size, progress) -> None:
    total = None
    if progress is not None:
        total = _candidates_query(mode, connection_id, now).count()
        progress(0, total)
    claim: datetime | None = None
    # Counted by the producer apart from the workers' outcomes, added at the end.
    found = {"due": 0, "locked": 0}
    if mode == "due":
        claim = _new_claim()

        def source() -> Iterator[Candidate]:
            for claimed, locked in claim_batches(now, chunk_size, claim):
                found["due"] += len(claimed) + len(locked)
                found["locked"] += len(locked)
                yield from claimed

    else:

        def source() -> Iterator[Candidate]:
            for pks in iter_pks(_candidates_query(mode, connection_id, now), chunk_size):
                found["due"] += len(pks)
                yield from (Candidate(pk) for pk in pks)

    done = 0

    def on_outcome(candidate: Candidate, outcome: str) -> None:
        nonlocal done
        stats.add(outcome)
        done += 1
        if progress is not None:
            progress(done, total)

    force = mode != "due"
    try:
        run_concurrently(
            source(),
            lambda c: refresh_candidate(c, claim=claim, force=force, just_claimed=not force),
            on_outcome,
            concurrency,
        )
    finally:
        stats.due += found["due"]
        stats.skipped_locked += found["locked"]


def _fan_out(run: SweepRun, stats: SweepStats, now: datetime, chunk_size: int) -> None:
    from django_q.tasks import async_task

    claim = _new_claim()
    for claimed, locked in claim_batches(now, chunk_size, claim):
        stats.due += len(claimed) + len(locked)
        stats.skipped_locked += len(locked)
        # Counted before the batch is queued, so the run never looks done too early.
        SweepRun.objects.filter(pk=run.pk).update(
            due=F("due") + len(claimed) + len(locked),
            skipped_locked=F("skipped_locked") + len(locked),
        )
        if not claimed:
            continue
        stats.chunks += 1
        async_task(
            CHUNK_TASK,
            [[c.pk, c.version] for c in claimed],
            run_id=run.pk,
            claim=claim,
            task_name=f"qb_oauth sweep {run.pk} batch {stats.chunks}",
            group="qb_oauth.sweep",
        )


def refresh_batch(
    items: Iterable[int | Candidate | tuple[int, int] | list[int]],
    *,
    run_id: int | None = None,
    claim: datetime | None = None,
    force: bool = False,
    concurrency: int | None = None,
) -> SweepStats:
    """Refresh a batch of connections here (the body of ``tasks.refresh_connections``).

    ``items``: pks, or ``[pk, token_version]`` pairs as a sweep hands them
    out. With ``run_id`` the counts are added to that :class:`SweepRun`, and
    the batch that completes it marks it finished and logs its summary.
    """
    candidates = [_as_candidate(item) for item in items]
    stats = SweepStats(run_id=run_id)
    started = time.monotonic()
    run_concurrently(
        candidates,
        lambda c: refresh_candidate(c, claim=claim, force=force),
        lambda _c, outcome: stats.add(outcome),
        min(concurrency or qb_settings.SWEEP_CONCURRENCY, max(1, len(candidates))),
    )
    stats.seconds = time.monotonic() - started
    stats.due = len(candidates)
    if run_id is not None:
        SweepRun.objects.filter(pk=run_id).update(
            **{name: F(name) + getattr(stats, name) for name in OUTCOMES}
        )
        _finish_if_done(run_id)
    logger.debug(
        "Sweep #%s batch on %s (pid %s): %s", run_id, socket.gethostname(), os.getpid(), stats
    )
    return stats


def _as_candidate(item) -> Candidate:
    if isinstance(item, Candidate):
        return item
    if isinstance(item, (list, tuple)):
        return Candidate(int(item[0]), None if item[1] is None else int(item[1]))
    return Candidate(int(item))


def _finish_if_done(run_id: int) -> None:
    """Mark a fanned-out run finished once its batches have accounted for every due row."""
    processed = sum((F(name) for name in OUTCOMES[1:]), F(OUTCOMES[0]))
    if (
        SweepRun.objects.filter(pk=run_id, finished_at__isnull=True, due__lte=processed).update(
            finished_at=timezone.now()
        )
        == 1
    ):
        run = SweepRun.objects.get(pk=run_id)
        stats = SweepStats(
            run_id=run.pk,
            due=run.due,
            fanned_out=run.fanned_out,
            warnings_sent=run.warnings_sent,
            seconds=(run.finished_at - run.started_at).total_seconds(),
            **{name: getattr(run, name) for name in OUTCOMES},
        )
        logger.info(stats.summary())


def _candidates_query(mode: str, connection_id: int | None, now: datetime):
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
    query = _candidates_query(mode, connection_id, now)
    for pks in iter_pks(query, qb_settings.SWEEP_CHUNK_SIZE):
        yield from (
            query.filter(pk__in=pks)
            .select_related("user")
            .defer("access_token", "refresh_token", "id_token")
            .order_by("pk")
        )


# -- expiry warnings -----------------------------------------------------------------------


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
                tokens.record_event(
                    connection,
                    EventKind.EXPIRY_WARNING,
                    f"The refresh token's {kind} expiry is {expires_at:%Y-%m-%d %H:%M} UTC: "
                    "the user should reconnect before then.",
                )
                tokens._send_on_commit(
                    signals.refresh_token_expiring, connection, expires_at=expires_at, kind=kind
                )
            sent += 1
    return sent

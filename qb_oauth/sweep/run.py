"""One run of the scheduled refresh: here on threads, or fanned out to the cluster."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from .. import metering
from ..conf import qb_settings
from ..models import SweepRun
from .claims import MODES, Candidate, candidates_query, claim_batches, iter_pks, new_claim
from .expiry import send_expiry_warnings
from .pool import run_concurrently
from .refresh import refresh_candidate
from .stats import OUTCOMES, SweepStats

logger = logging.getLogger("qb_oauth.tasks")

#: The task each fanned-out batch runs.
CHUNK_TASK = "qb_oauth.tasks.refresh_connections"


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
        _fold_usage(now)
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


def _fold_usage(now: datetime) -> None:
    """Fold the cache's API counts into the database (every sweep; idempotent)."""
    try:
        metering.fold_usage(now)
    except Exception:  # noqa: BLE001 - the counts wait for the next sweep
        logger.exception("Could not fold the QuickBooks API counts into the database.")


def _refresh_here(stats, mode, connection_id, now, concurrency, chunk_size, progress) -> None:
    total = None
    if progress is not None:
        total = candidates_query(mode, connection_id, now).count()
        progress(0, total)
    claim: datetime | None = None
    # Counted by the producer apart from the workers' outcomes, added at the end.
    found = {"due": 0, "locked": 0}
    if mode == "due":
        claim = new_claim()

        def source() -> Iterator[Candidate]:
            for claimed, locked in claim_batches(now, chunk_size, claim):
                found["due"] += len(claimed) + len(locked)
                found["locked"] += len(locked)
                yield from claimed

    else:

        def source() -> Iterator[Candidate]:
            for pks in iter_pks(candidates_query(mode, connection_id, now), chunk_size):
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

    claim = new_claim()
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
        assert run.finished_at is not None  # just set above
        stats = SweepStats(
            run_id=run.pk,
            due=run.due,
            fanned_out=run.fanned_out,
            warnings_sent=run.warnings_sent,
            seconds=(run.finished_at - run.started_at).total_seconds(),
            **{name: getattr(run, name) for name in OUTCOMES},
        )
        logger.info(stats.summary())

"""django-q2 entry points of the scheduled refresh: thin, and safe to run twice.

The schedule (:mod:`qb_oauth.schedule`) runs :func:`refresh_due_connections`.
With a cluster configured it claims the due connections batch by batch and
queues one :func:`refresh_connections` task per batch, so the cluster's
workers on every machine share them; without one it refreshes them itself.
The work is in :mod:`qb_oauth.sweep`.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime
from typing import Any

from . import sweep
from .webhooks import process as webhooks

logger = logging.getLogger("qb_oauth.webhooks")

__all__ = [
    "process_webhook_events",
    "refresh_connections",
    "refresh_due_connections",
    "send_expiry_warnings",
]


def refresh_due_connections(*, fan_out: bool | None = None) -> dict[str, Any]:
    """Refresh every connection that is due, and send expiry warnings; return the counts.

    ``fan_out``: hand the work to the django-q2 cluster in batches (default:
    when ``Q_CLUSTER`` is configured and not ``sync``). Each run is recorded
    as a :class:`~qb_oauth.models.SweepRun`. Safe to run twice at once and
    after a missed run: connections are claimed before they are refreshed,
    and every refresh is single-flight.
    """
    counts = sweep.run_sweep(fan_out=fan_out).as_dict()
    # Webhook events whose task was lost (a worker killed, a broker flushed) are
    # handed out again here, so they wait for the next sweep, not for the next webhook.
    try:
        webhooks.dispatch(webhooks.stale_pending())
    except Exception:  # noqa: BLE001 - the sweep did its work; the next one tries again
        logger.exception("Could not hand out the webhook events whose task was lost.")
    return counts


def refresh_connections(
    connections: list,
    *,
    run_id: int | None = None,
    claim: datetime | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Refresh a batch of connections in this worker (one fanned-out batch of a sweep).

    ``connections``: pks, or ``[pk, token_version]`` pairs. Called by hand
    with pks only, it refreshes those that are due (all of them with
    ``force=True``). The result, kept by django-q2, names the host and
    process that did the work.
    """
    stats = sweep.refresh_batch(connections, run_id=run_id, claim=claim, force=force)
    return {**stats.as_dict(), "host": socket.gethostname(), "pid": os.getpid()}


def send_expiry_warnings() -> int:
    """Send ``refresh_token_expiring`` where a refresh token ends soon (also part of the sweep)."""
    return sweep.send_expiry_warnings()


def process_webhook_events(pks: list[int]) -> dict[str, Any]:
    """Send ``webhook_received`` for the stored webhook events ``pks`` (queued by the
    webhook endpoint once they committed); also picks up pending events whose task was
    lost. Safe to run twice: each event is claimed before it is signalled."""
    counts = webhooks.process_events(pks)
    return {**counts, "host": socket.gethostname(), "pid": os.getpid()}

"""The work behind ``qb_oauth.tasks.process_webhook_events``: claim, signal, mark.

Each event is claimed first (one conditional UPDATE: pending, and not claimed
by a live worker), so two workers handed the same event (a repeated delivery
racing its first, a task django-q2 delivers twice) signal it once. Then
``webhook_received`` is sent with the realm's active connections through
:func:`qb_oauth.events.send_robust`; when every receiver succeeded the event
is processed, otherwise it is sent again, at most ``WEBHOOK_MAX_ATTEMPTS``
times in all, and then flagged ``failed`` for the admin's re-send action.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ..conf import qb_settings
from ..events import send_robust
from ..models import QuickBooksConnection
from ..signals import webhook_received
from ..sweep.run import cluster_configured
from .record import WebhookEvent

logger = logging.getLogger("qb_oauth.webhooks")

#: The task each batch of stored events runs.
TASK = "qb_oauth.tasks.process_webhook_events"
#: Events per task.
CHUNK_SIZE = 100
#: How long a worker's claim on an event lasts (a dead worker's events are then taken again).
CLAIM_SECONDS = 300
#: A pending event left this long unclaimed (its task was lost) is picked up by the next task.
STALE_SECONDS = 300


def dispatch(pks: Iterable[int]) -> None:
    """Hand ``pks`` to the django-q2 cluster in batches, or process them here (no
    cluster, or ``sync``). Call it after the events committed."""
    pks = list(pks)
    if not pks:
        return
    if not cluster_configured():
        process_events(pks)
        return
    from django_q.tasks import async_task

    for start in range(0, len(pks), CHUNK_SIZE):
        async_task(
            TASK,
            pks[start : start + CHUNK_SIZE],
            task_name=f"qb_oauth webhook events {pks[start]}..",
            group="qb_oauth.webhooks",
        )


def dispatch_on_commit(pks: Iterable[int], *, using: str | None = None) -> None:
    pks = list(pks)
    if pks:
        transaction.on_commit(lambda: dispatch(pks), using=using)


def _claim(pk: int, now) -> bool:
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    return bool(
        WebhookEvent.objects.pending()
        .filter(free, pk=pk)
        .update(claimed_until=now + timedelta(seconds=CLAIM_SECONDS), attempts=F("attempts") + 1)
    )


def _receiver_name(receiver: Any) -> str:
    return getattr(receiver, "__qualname__", None) or type(receiver).__name__


def process_event(pk: int) -> str:
    """Signal one event if this worker claims it; returns what happened:
    ``"processed"``, ``"retry"``, ``"failed"`` or ``"skipped"`` (not pending, or claimed)."""
    now = timezone.now()
    if not _claim(pk, now):
        return "skipped"
    event = WebhookEvent.objects.get(pk=pk)
    connections = list(QuickBooksConnection.objects.active().filter(realm_id=event.realm_id))
    event.connections.set(connections)
    if event.unknown_realm != (not connections):  # a re-sent event may have found its realm
        event.unknown_realm = not connections
        WebhookEvent.objects.filter(pk=pk).update(unknown_realm=event.unknown_realm)
    if not connections:
        logger.warning(
            "Webhook event %s of realm %s: no active connection holds the realm.",
            pk,
            event.realm_id,
        )
    failures = send_robust(webhook_received, event=event, connections=connections)
    done = timezone.now()
    if not failures:
        WebhookEvent.objects.filter(pk=pk).update(
            processed_at=done, claimed_until=None, last_error=""
        )
        return "processed"
    error = "; ".join(f"{_receiver_name(r)} raised {type(e).__name__}" for r, e in failures)
    gave_up = event.attempts >= qb_settings.WEBHOOK_MAX_ATTEMPTS
    WebhookEvent.objects.filter(pk=pk).update(
        claimed_until=None, last_error=error[:255], failed=gave_up
    )
    if gave_up:
        logger.error(
            "Webhook event %s failed %s times and is flagged failed: %s",
            pk,
            event.attempts,
            error[:255],
        )
        return "failed"
    return "retry"


def stale_pending(limit: int = CHUNK_SIZE) -> list[int]:
    """Pending events whose task was lost: unclaimed (or claim expired) and old."""
    now = timezone.now()
    old = now - timedelta(seconds=STALE_SECONDS)
    return list(
        WebhookEvent.objects.pending()
        .filter(received_at__lt=old)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def process_events(pks: Iterable[int], *, pick_up_stale: bool = True) -> dict[str, int]:
    """Process ``pks`` here (the body of the task); events to retry are dispatched
    again. Also takes a batch of stale pending events. Returns the counts."""
    pks = list(pks)
    if pick_up_stale:
        seen = set(pks)
        pks += [pk for pk in stale_pending() if pk not in seen]
    counts = {"processed": 0, "retry": 0, "failed": 0, "skipped": 0}
    retry: list[int] = []
    for pk in pks:
        outcome = process_event(pk)
        counts[outcome] += 1
        if outcome == "retry":
            retry.append(pk)
    if retry:
        dispatch(retry)
    return counts


def resend(pks: Iterable[int]) -> int:
    """Make events pending again (their attempts back to 0) and dispatch them after
    commit: the admin's re-send action. Returns how many."""
    pks = list(pks)
    with transaction.atomic():
        n = WebhookEvent.objects.filter(pk__in=pks).update(
            processed_at=None, failed=False, attempts=0, claimed_until=None, last_error=""
        )
        dispatch_on_commit(pks)
    return n

"""One short transaction storing a webhook's events, each once.

Rows are inserted with ``bulk_create(ignore_conflicts=True)`` on the unique
``dedupe_key``: a delivery Intuit repeats (or two deliveries racing) adds no
row. What the caller then hands to the cluster is every event of this body
still pending, a repeated one included if it was not processed yet (the claim
in :mod:`.process` keeps it from being signalled twice).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from .parse import ParsedEvent
from .record import WebhookEvent

#: Rows per INSERT.
BATCH_SIZE = 500


@dataclass
class Stored:
    received: int
    new: int
    pending: list[int]


def store_events(events: list[ParsedEvent], *, using: str | None = None) -> Stored:
    """Store ``events`` (deduplicated) in one transaction; return the pending pks."""
    unique = {e.dedupe_key: e for e in events}
    now = timezone.now()
    rows = [
        WebhookEvent(
            dedupe_key=e.dedupe_key,
            format=e.format,
            realm_id=e.realm_id,
            entity=e.entity,
            entity_id=e.entity_id,
            operation=e.operation,
            event_type=e.event_type,
            occurred_at=e.occurred_at,
            received_at=now,
        )
        for e in unique.values()
    ]
    manager = WebhookEvent.objects.db_manager(using)
    with transaction.atomic(using=using):
        before = manager.filter(dedupe_key__in=list(unique)).count() if rows else 0
        manager.bulk_create(rows, ignore_conflicts=True, batch_size=BATCH_SIZE)
        pending = list(
            manager.pending()
            .filter(dedupe_key__in=list(unique))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    return Stored(received=len(events), new=len(rows) - before, pending=pending)

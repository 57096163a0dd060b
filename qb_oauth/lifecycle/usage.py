"""``last_used_at``: a hint for the sweep of which connections are in use."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from ..models import QuickBooksConnection
from .own_connection import committed_independently


@committed_independently
def write_used_at(pk: int, now: datetime) -> None:
    """Write ``last_used_at`` (a hint for the sweep), on its own commit, never waiting.

    It runs on a connection of its own when the caller holds a transaction, and that
    transaction may hold the row's lock (``select_for_update``): the write skips a
    locked row instead of waiting for it. A hint missed now is written next time.
    """
    db = transaction.get_connection()
    if db.vendor == "postgresql":
        table = db.ops.quote_name(QuickBooksConnection._meta.db_table)
        with db.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET last_used_at = %s WHERE id = "  # noqa: S608 - names are ours
                f"(SELECT id FROM {table} WHERE id = %s FOR UPDATE SKIP LOCKED)",
                [now, pk],
            )
        return
    QuickBooksConnection.objects.filter(pk=pk).update(last_used_at=now)

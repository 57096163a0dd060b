"""Rows whose tokens no key of ``FERNET_KEYS`` opens: flagged once, healed by themselves.

Such a row still loads (its token columns are
:class:`~qb_oauth.fields.UnreadableToken`), so it breaks only itself. Its
first use flags it: ``tokens_unreadable_at``, one event, one ERROR naming its
pk, and a failure with backoff so the sweep tries it rarely. A later read
that decrypts (the key was put back), a reconnect or ``qb_rotate_keys``
clears the flag.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from ..events import record_event
from ..exceptions import TokensUnreadable
from ..fields import is_unreadable
from ..models import TOKEN_COLUMNS, EventKind, QuickBooksConnection
from ..redact import holds_tokens

logger = logging.getLogger("qb_oauth.tokens")

UNREADABLE_TEXT = (
    "No key of FERNET_KEYS decrypts the stored tokens: restore the key that encrypted them, "
    "or the user must reconnect."
)


def flag(pk: int, *, actor=None) -> TokensUnreadable:
    """Flag row ``pk`` and count a failure with backoff; return the error to raise."""
    now = timezone.now()
    rows = QuickBooksConnection.objects.filter(pk=pk)
    with transaction.atomic():
        first = rows.filter(tokens_unreadable_at__isnull=True).update(tokens_unreadable_at=now)
        QuickBooksConnection(pk=pk).backoff_failure(UNREADABLE_TEXT, now)
        if first:
            record_event(pk, EventKind.TOKENS_UNREADABLE, UNREADABLE_TEXT, actor=actor)
    if first:
        logger.error("Connection %s: %s", pk, UNREADABLE_TEXT)
    return TokensUnreadable(f"The tokens of connection {pk} cannot be decrypted.")


@holds_tokens
def readable_again(pk: int) -> bool:
    """Unflag a flagged row whose tokens all decrypt again; whether they do."""
    rows = QuickBooksConnection.objects.filter(pk=pk)
    values = rows.values(*TOKEN_COLUMNS).first() or {}
    if any(is_unreadable(value) for value in values.values()):
        return False
    if rows.filter(tokens_unreadable_at__isnull=False).update(tokens_unreadable_at=None):
        logger.info("Connection %s: its tokens can be decrypted again.", pk)
    return True

"""Key rotation: every stored token re-encrypted with the first key of ``FERNET_KEYS``.

The procedure around it (the order of restarts) is in docs/deployment.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .fields import is_unreadable
from .lifecycle import unreadable
from .lifecycle.own_connection import committed_independently
from .models import TOKEN_COLUMNS, QuickBooksConnection
from .redact import holds_tokens

_COLUMNS = ("pk", *TOKEN_COLUMNS, "token_version", "tokens_unreadable_at")


@dataclass
class ReencryptResult:
    """What :func:`reencrypt_all` did."""

    rewritten: int = 0
    #: pks of rows that no key of ``FERNET_KEYS`` decrypts: flagged, left as they are.
    unreadable: list[int] = field(default_factory=list)


def _rows():
    return QuickBooksConnection.objects


@committed_independently
@holds_tokens
def reencrypt_all(batch_size: int = 200) -> ReencryptResult:
    """Re-encrypt every stored token with the first key of ``FERNET_KEYS``.

    Each row is rewritten only if its tokens did not change meanwhile
    (``token_version``), so a refresh running at the same time never loses
    its new tokens to this job. A row that no key decrypts is left as it is
    (its ciphertext intact, should the key come back), flagged and reported;
    the others go on.
    """
    result = ReencryptResult()
    ids = list(_rows().values_list("pk", flat=True).order_by("pk"))
    for start in range(0, len(ids), batch_size):
        for row in _rows().filter(pk__in=ids[start : start + batch_size]).only(*_COLUMNS):
            for _attempt in range(5):
                if any(is_unreadable(getattr(row, name)) for name in TOKEN_COLUMNS):
                    unreadable.flag(row.pk)
                    result.unreadable.append(row.pk)
                    break
                written = (
                    _rows()
                    .filter(pk=row.pk, token_version=row.token_version)
                    .update(
                        access_token=row.access_token,
                        refresh_token=row.refresh_token,
                        id_token=row.id_token,
                        tokens_unreadable_at=None,
                    )
                )
                if written:
                    result.rewritten += 1
                    break
                row = _rows().only(*_COLUMNS).get(pk=row.pk)
    return result

"""The encrypted token column, tolerant of a row that no key opens.

django-fernet-fields decrypts in ``from_db_value``: one row encrypted under a
lost key (or corrupt) raises ``InvalidToken`` wherever the row is loaded, so
a single bad row breaks every page and job that lists connections. Here such
a value loads as an :class:`UnreadableToken`: the row loads, the page draws,
and :mod:`qb_oauth.tokens` reports the row when something tries to use it.
Saving the sentinel writes the original ciphertext back unchanged, so a key
that comes back later still opens it.
"""

from __future__ import annotations

from cryptography.fernet import InvalidToken
from django.utils.encoding import force_str
from fernet_fields import EncryptedTextField


class UnreadableToken:
    """A token column whose ciphertext no key of ``FERNET_KEYS`` decrypts.

    Falsy, so code that tests for a token treats it as absent; never a
    string, so it cannot be sent anywhere by mistake.
    """

    __slots__ = ("ciphertext",)

    def __init__(self, ciphertext: bytes) -> None:
        self.ciphertext = ciphertext

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnreadableToken) and other.ciphertext == self.ciphertext

    def __hash__(self) -> int:
        return hash(self.ciphertext)

    def __repr__(self) -> str:
        return "<UnreadableToken>"

    __str__ = __repr__


def is_unreadable(value: object) -> bool:
    return isinstance(value, UnreadableToken)


class TokenField(EncryptedTextField):
    """A Fernet-encrypted text column (``FERNET_KEYS``) that loads an undecryptable value as
    :class:`UnreadableToken` instead of raising."""

    def from_db_value(self, value, expression, connection, *args):
        if value is None:
            return None
        raw = bytes(value)
        try:
            return self.to_python(force_str(self.fernet.decrypt(raw)))
        except InvalidToken:
            return UnreadableToken(raw)

    def get_db_prep_save(self, value, connection):
        if isinstance(value, UnreadableToken):
            return connection.Database.Binary(value.ciphertext)
        return super().get_db_prep_save(value, connection)

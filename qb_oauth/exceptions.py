"""The exceptions qb_oauth raises. None of their messages ever holds a token."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured as DjangoImproperlyConfigured
from django.core.exceptions import SuspiciousOperation


class QuickBooksError(Exception):
    """Base of every qb_oauth error.

    ``intuit_tid`` is Intuit's transaction id of the response that caused the
    error, when there was one: it is what Intuit support asks for.
    """

    def __init__(
        self, message: str = "", *, intuit_tid: str | None = None, status: int | None = None
    ):
        super().__init__(message)
        self.intuit_tid = intuit_tid
        self.status = status

    def describe(self) -> str:
        """The message with Intuit's transaction id, for logs and the admin."""
        text = str(self) or self.__class__.__name__
        if self.intuit_tid:
            text = f"{text} (intuit_tid={self.intuit_tid})"
        return text


class ReauthorizationRequired(QuickBooksError):
    """Intuit refused the grant (``invalid_grant``): only the user can fix it by reconnecting."""


class TokensUnreadable(ReauthorizationRequired):
    """No key of ``FERNET_KEYS`` decrypts this connection's stored tokens (a lost key, or
    corrupt data). The row is flagged and reported; only a reconnect (or restoring the
    key) makes it work again."""


class IntuitUnavailable(QuickBooksError):
    """Intuit could not be reached or answered with an outage (network, timeout, 5xx, 429,
    a malformed answer). Nothing stored was changed; try again later."""


class IntuitError(QuickBooksError):
    """Intuit answered with an error that is neither an outage nor ``invalid_grant``
    (``invalid_client``, ``invalid_request``, a 4xx from the API)."""


class CredentialsMismatch(IntuitError):
    """The connection's tokens were issued to another environment or another Intuit app
    (client id) than the keys this site is configured with: they are neither refreshed nor
    revoked with these keys, and the connection's state is left as it is."""


class RealmMismatch(IntuitError):
    """The tokens of a callback do not cover the company (realm) it names: a ``realmId``
    changed on the way, or keys of the other environment. Nothing is stored."""


class InvalidState(QuickBooksError, SuspiciousOperation):
    """The OAuth ``state`` of a callback is missing, unknown, reused, expired or from
    another session."""


class ImproperlyConfigured(QuickBooksError, DjangoImproperlyConfigured):
    """qb_oauth's settings are incomplete or wrong (the system checks name which)."""


class TokensNotSaved(QuickBooksError):
    """Intuit answered, but the database refused to store the tokens for longer than the
    refresh lease allowed. The answer is kept in memory and written as soon as the database
    accepts it, for as long as the process lives (docs/reliability.md)."""


class ConnectionNotActive(QuickBooksError):
    """The connection is disconnected: there is no token to use."""

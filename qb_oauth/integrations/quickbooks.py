"""A ready python-quickbooks client whose tokens come from qb_oauth.

``connection.quickbooks_client()`` returns a ``quickbooks.QuickBooks`` for the
connection's realm. It is given no intuit-oauth ``AuthClient``, so
python-quickbooks never refreshes on its own: every request takes its token
from :func:`qb_oauth.tokens.get_access_token`, and a 401 forces one
single-flight refresh and a retry (:class:`qb_oauth.api.QuickBooksSession`).
Needs the extra ``qb_oauth[quickbooks]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import client
from ..api import QuickBooksSession
from ..conf import qb_settings
from ..exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from quickbooks import QuickBooks

    from ..models import QuickBooksConnection


class _TokenSession(QuickBooksSession):
    """The session python-quickbooks calls: ``.access_token`` and ``.request()``."""

    @property
    def access_token(self) -> str:
        from ..tokens import get_access_token

        return get_access_token(self.connection)


def quickbooks_client(connection: QuickBooksConnection, **kwargs: Any) -> QuickBooks:
    """A ``quickbooks.QuickBooks`` client for ``connection`` (keyword arguments pass through)."""
    try:
        from quickbooks import QuickBooks
    except ImportError as err:  # pragma: no cover - depends on the extra
        raise ImproperlyConfigured(
            "python-quickbooks is not installed: pip install 'django-qb-oauth[quickbooks]'."
        ) from err
    kwargs.setdefault("minorversion", qb_settings.MINOR_VERSION)
    qb = QuickBooks(company_id=connection.realm_id, **kwargs)
    qb.sandbox = connection.environment == "sandbox"
    # Instance attributes: the class's Intuit URLs stay untouched for other clients.
    base = f"{client.api_base(connection.environment)}/v3"
    qb.api_url_v3 = base
    qb.sandbox_api_url_v3 = base
    qb.session = _TokenSession(connection)
    return qb

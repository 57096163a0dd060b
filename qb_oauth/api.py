"""An authorised session against one realm's QuickBooks Accounting API.

``connection.api_session()`` returns a :class:`QuickBooksSession`: a
``requests.Session`` whose relative paths are resolved against
``{api_base}/v3/company/{realm_id}/``, that asks for JSON, adds
``minorversion``, attaches a valid access token (:func:`get_access_token`:
refreshed only when it is nearly expired), and after a 401 forces one
refresh (single-flight) and retries the request once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import requests

from . import client
from .conf import qb_settings
from .deadline import call_deadline
from .exceptions import IntuitUnavailable
from .redact import holds_tokens

if TYPE_CHECKING:
    from .models import QuickBooksConnection


class QuickBooksSession(requests.Session):
    """A ``requests.Session`` for one connection's realm; see the module docstring."""

    def __init__(self, connection: QuickBooksConnection, *, actor=None):
        super().__init__()
        client._prepare(self)
        self.connection = connection
        self.actor = actor
        self.base_url = (
            f"{client.api_base(connection.environment)}/v3/company/{connection.realm_id}/"
        )
        self.headers["Accept"] = "application/json"

    def __repr__(self) -> str:
        return f"<QuickBooksSession realm_id={self.connection.realm_id!r}>"

    def url_for(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url, path.lstrip("/"))

    @holds_tokens
    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        from .tokens import get_access_token, refresh

        url = self.url_for(url)
        params = dict(kwargs.pop("params", None) or {})
        params.setdefault("minorversion", qb_settings.MINOR_VERSION)
        kwargs.setdefault("timeout", qb_settings.HTTP_TIMEOUT)
        headers = dict(kwargs.pop("headers", None) or {})

        @holds_tokens
        def send(token: str) -> requests.Response:
            headers["Authorization"] = f"Bearer {token}"
            # HTTP_TIMEOUT bounds the whole call, not only each read (qb_oauth.deadline).
            with call_deadline(qb_settings.HTTP_TIMEOUT) as deadline:
                try:
                    response = super(QuickBooksSession, self).request(
                        method, url, *args, params=params, headers=headers, **kwargs
                    )
                except requests.RequestException as err:
                    raise client._network_error(
                        err, "Accounting API", timed_out=deadline.expired
                    ) from None
            if deadline.expired:  # the answer was cut short
                response.close()
                raise client._timed_out("Accounting API")
            return response

        response = send(get_access_token(self.connection))
        if response.status_code == 401:
            # The token was refused (expired early, or revoked): refresh once.
            response.close()
            refresh(self.connection, force=True, actor=self.actor)
            response = send(self.connection.access_token)
        return response

    def json_or_raise(self, response: requests.Response, what: str = "answer") -> dict:
        """The JSON body of a successful answer, or the matching QuickBooksError."""
        if response.status_code != 200:
            raise client._unavailable_or_error(response, f"Accounting API ({what})")
        data = client._json(response, what)
        if not isinstance(data, dict):
            raise IntuitUnavailable(f"Malformed {what}.")
        return data

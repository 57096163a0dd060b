"""An authorised session against one realm's QuickBooks Accounting API.

``connection.api_session()`` returns a :class:`QuickBooksSession`: a
``requests.Session`` whose relative paths are resolved against
``{api_base}/v3/company/{realm_id}/``, that asks for JSON, adds
``minorversion``, attaches a valid access token (:func:`get_access_token`:
refreshed only when it is nearly expired), and after a 401 forces one
refresh (single-flight) and retries the request once.

The token goes to the Accounting API's origin only (scheme, host and port of
``client.api_base``, compared case-insensitively, default ports normalised). A URL
that resolves anywhere else is a programming error: ``ValueError``, before
anything is sent and before any token is read. A redirect to another host or
port carries no token (``requests`` drops ``Authorization`` then), and a 401
from anywhere but the API forces no refresh.

Every request is held within Intuit's limits for the realm, across all the
site's processes (:func:`qb_oauth.throttle.within_limits`), and counted
(:func:`qb_oauth.metering.count_call`). A 429, or a 502/503/504 to a request
that is safe to repeat (GET, HEAD, and the ``/query`` endpoint, which
python-quickbooks POSTs to), is retried up to ``API_RETRIES`` times with
exponential backoff and full jitter (tenacity); a write answered 502/503/504
is never sent again, since Intuit may have done it. A 429 or 502/503/504 that
is still the answer raises :class:`~qb_oauth.exceptions.IntuitUnavailable`
with Intuit's ``intuit_tid`` (see docs/usage.md, "Intuit's limits").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    wait_random_exponential,
)
from urllib3.util import parse_url

from . import client, metering, throttle
from .conf import qb_settings
from .exceptions import IntuitUnavailable
from .redact import holds_tokens

if TYPE_CHECKING:
    from .models import QuickBooksConnection


_DEFAULT_PORTS = {"http": 80, "https": 443}

#: Answers retried for any request (Intuit refused it unseen) and for repeatable ones.
_RETRY_ANY = frozenset({429})
_RETRY_REPEATABLE = frozenset({502, 503, 504})
#: Methods that only read.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})

#: (scheme, host, port): where a request goes.
_Origin = tuple[str, str, int | None]


def _origin(url: str) -> _Origin:
    """Where ``requests`` would send ``url``: its scheme, host and port, normalised.

    The URL is first prepared as ``requests`` prepares it (IDNA, lower case), then
    read by urllib3's parser, the one its connection pool uses: the raw
    ``http://a\\@b/`` is host ``a`` to requests and ``b`` to ``urlsplit``, so the raw
    URL proves nothing. Should ``urlsplit`` still disagree, the host matches nothing.
    """
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)  # MissingSchema, InvalidURL: ValueErrors too
    prepared_url = prepared.url or ""  # prepare_url sets it, or raises
    parsed = parse_url(prepared_url)
    scheme = (parsed.scheme or "").lower()
    host = (parsed.host or "").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if (urlsplit(prepared_url).hostname or "") != host:
        host = ""
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS.get(scheme)
    return scheme, host, port


def _shown(where: _Origin) -> str:
    scheme, host, port = where
    host = f"[{host}]" if ":" in host else host
    default = _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


class QuickBooksSession(requests.Session):
    """A ``requests.Session`` for one connection's realm; see the module docstring."""

    def __init__(self, connection: QuickBooksConnection, *, actor: Any = None) -> None:
        super().__init__()
        client.prepare_session(self)
        self.connection = connection
        self.actor = actor
        self.base_url = (
            f"{client.api_base(connection.environment)}/v3/company/{connection.realm_id}/"
        )
        #: The only origin that ever receives the connection's token.
        self.api_origin = _origin(self.base_url)
        self.headers["Accept"] = "application/json"

    def __repr__(self) -> str:
        return f"<QuickBooksSession realm_id={self.connection.realm_id!r}>"

    def url_for(self, path: str) -> str:
        """The absolute URL of ``path``: relative to the realm (``"companyinfo/1"`` and
        ``"/companyinfo/1"`` alike), or an absolute URL on the Accounting API.

        Raises ``ValueError`` for a URL that resolves to another scheme, host or port
        (``https://elsewhere/``, ``//elsewhere/``): the token goes to the API only.
        """
        parts = urlsplit(path)
        if parts.scheme or parts.netloc:
            url = urljoin(self.base_url, path)
        else:
            url = urljoin(self.base_url, path.lstrip("/"))
        where = _origin(url)
        if where != self.api_origin:
            raise ValueError(
                f"The QuickBooks API session sends the connection's token only to "
                f"{_shown(self.api_origin)}; refused a request to {_shown(where)}."
            )
        return url

    def _from_api(self, response: requests.Response) -> bool:
        try:
            return _origin(response.url) == self.api_origin
        except ValueError:
            return False

    @holds_tokens
    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send with a valid token; after Intuit's 401, refresh once and send again.

        Everything after ``url`` goes by keyword, as requests' ``get()`` and
        ``post()`` pass it: ``params`` and ``headers`` are merged with qb_oauth's
        here, so they cannot come positionally.
        """
        from .tokens import get_access_token, refresh

        url = self.url_for(url)  # before any token is read: ValueError for another origin
        params = dict(kwargs.pop("params", None) or {})
        params.setdefault("minorversion", qb_settings.MINOR_VERSION)
        kwargs.setdefault("timeout", qb_settings.HTTP_TIMEOUT)
        headers = dict(kwargs.pop("headers", None) or {})

        path = urlsplit(url).path.rstrip("/")
        method = method.upper()
        query = path.endswith("/query")
        reads = method in _READS or query
        repeatable = reads  # a query is a read, even POSTed
        retried = _RETRY_ANY | (_RETRY_REPEATABLE if repeatable else frozenset())
        connection = self.connection

        @holds_tokens
        def send(token: str) -> requests.Response:
            headers["Authorization"] = f"Bearer {token}"
            # Within the realm's limits, shared by every process of the site.
            with throttle.within_limits(
                connection.environment, connection.realm_id, batch=path.endswith("/batch")
            ):
                # HTTP_TIMEOUT bounds the whole call, not only each read (qb_oauth.deadline).
                with client.bounded_call("Accounting API") as deadline:
                    response = super(QuickBooksSession, self).request(
                        method, url, params=params, headers=headers, **kwargs
                    )
            metering.count_call(connection, read=reads)
            if deadline.expired:  # the answer was cut short
                response.close()
                raise client.timeout_error("Accounting API")
            return response

        def attempt() -> requests.Response:
            response = send(get_access_token(self.connection))
            if response.status_code == 401 and self._from_api(response):
                # Intuit refused the token (expired early, or revoked): refresh once. A 401
                # from wherever a redirect led is that host's business, not Intuit's.
                response.close()
                refresh(self.connection, force=True, actor=self.actor)
                response = send(self.connection.access_token)
            return response

        response = self._retrying(repeatable)(attempt)
        status = response.status_code
        if (status in _RETRY_ANY or status in _RETRY_REPEATABLE) and self._from_api(response):
            response.close()
            if status in retried:
                said = f" (tried {qb_settings.API_RETRIES + 1} times)."
            else:  # a write: Intuit may have done it, so it is not sent again
                said = " to a write, which was not repeated: Intuit may have done it."
            raise IntuitUnavailable(
                f"Intuit's Accounting API answered HTTP {status}{said}",
                intuit_tid=client.intuit_tid(response),
                status=status,
            )
        return response

    def _retrying(self, repeatable: bool) -> Retrying:
        """tenacity's loop: an answer worth another try is retried, with backoff and
        jitter, up to ``API_RETRIES`` times; the last answer is returned either way."""

        def worth_retrying(response: requests.Response) -> bool:
            status = response.status_code
            if not self._from_api(response):
                return False
            return status in _RETRY_ANY or (repeatable and status in _RETRY_REPEATABLE)

        def before_sleep(state: RetryCallState) -> None:
            if state.outcome is not None and not state.outcome.failed:
                state.outcome.result().close()

        return Retrying(
            stop=stop_after_attempt(qb_settings.API_RETRIES + 1),
            wait=wait_random_exponential(
                multiplier=qb_settings.API_RETRY_BACKOFF, max=qb_settings.API_WAIT
            ),
            retry=retry_if_result(worth_retrying),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            before_sleep=before_sleep,
            reraise=True,
        )

    def json_or_raise(self, response: requests.Response, what: str = "answer") -> dict[str, Any]:
        """The JSON body of a successful answer, or the matching QuickBooksError.

        The same classification as the client's own calls
        (:func:`qb_oauth.client.raise_for_status`): a 429 from the API is an
        outage wherever it is met. See docs/usage.md.
        """
        client.raise_for_status(response, f"Accounting API ({what})")
        return client.json_body(response, what)

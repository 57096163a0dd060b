"""How a call to Intuit goes out: sessions, the connection pool, the whole-call deadline.

Every session qb_oauth opens to Intuit (its own calls, and the API session of
:mod:`qb_oauth.api`) is made ready by :func:`prepare_session`, so that all of
them share one User-Agent and one pool whose connections honour
:func:`qb_oauth.deadline.call_deadline`; every call runs inside
:func:`bounded_call`, so that ``HTTP_TIMEOUT`` bounds it as a whole and its
failures are our exceptions, never a bare ``requests`` one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from http.cookiejar import DefaultCookiePolicy
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from oauthlib.oauth2 import is_secure_transport
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from .. import __version__, transport
from ..conf import qb_settings
from ..deadline import CallDeadline, DeadlineAdapter, call_deadline
from ..exceptions import ImproperlyConfigured
from ..redact import holds_tokens
from .responses import network_error, timeout_error

__all__ = [
    "USER_AGENT",
    "QuickBooksOAuth2Session",
    "bounded_call",
    "client_auth",
    "client_id",
    "forget_sessions",
    "http_session",
    "oauth_session",
    "prepare_session",
    "reused_session",
    "send",
    "shared_http_session",
]

USER_AGENT = f"qb_oauth/{__version__} python-requests/{requests.__version__}"

_S = TypeVar("_S", bound=requests.Session)


class _DropSecretDebugRecords(logging.Filter):
    """requests-oauthlib logs request bodies and token responses at DEBUG: drop them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


for _name in ("requests_oauthlib.oauth2_session", "requests_oauthlib.oauth2_auth"):
    _target = logging.getLogger(_name)
    if not any(isinstance(f, _DropSecretDebugRecords) for f in _target.filters):
        _target.addFilter(_DropSecretDebugRecords())

# One connection pool for every session the client makes: sessions are cheap,
# TCP and TLS handshakes to Intuit are not. Its connections honour call_deadline().
_ADAPTER = DeadlineAdapter(pool_connections=16, pool_maxsize=64)


def prepare_session(session: _S) -> _S:
    """Give ``session`` qb_oauth's User-Agent and its shared, deadline-aware pool.

    The connections of a session not prepared here are not watched, so
    :func:`bounded_call` cannot end a call that trickles, and every new session
    would pay its own TCP and TLS handshakes. Returns ``session``.
    """
    session.headers["User-Agent"] = USER_AGENT
    session.mount("https://", _ADAPTER)
    session.mount("http://", _ADAPTER)
    return session


def http_session() -> requests.Session:
    """A plain session with qb_oauth's User-Agent and connection pool."""
    return prepare_session(requests.Session())


class _Reused(threading.local):
    sessions: dict[tuple[Any, ...], requests.Session]

    def __init__(self) -> None:
        self.sessions = {}


_reused = _Reused()


def _no_cookies(session: _S) -> _S:
    # A session reused for every call of a thread must not carry one call's cookies
    # into the next (they could be another connection's).
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


def reused_session(kind: str, make: Callable[[], _S], *key: Any) -> _S:
    """This thread's session of ``kind`` (and ``key``), made by ``make`` once and reused.

    Making a ``requests`` session (and an OAuth2Session) for every call costs more CPU
    than the rest of a refresh; one per thread reuses its pool's kept-alive connection
    too. A session made before ``requests.Session.__init__`` was replaced (a test double
    such as ``qb_oauth.testing``'s in-process fake mounts itself that way) is not reused,
    so it cannot miss the double. Keyed also by the configured client id.
    """
    init = requests.Session.__init__
    full_key = (kind, qb_settings.CLIENT_ID, init, *key)
    session = _reused.sessions.get(full_key)
    if session is None:
        stale = [k for k in _reused.sessions if k[0] == kind]
        for k in stale:  # another client id, or another Session.__init__: drop it
            _reused.sessions.pop(k).close()
        session = _reused.sessions[full_key] = _no_cookies(make())
    return session  # type: ignore[return-value]


def forget_sessions() -> None:
    """Close this thread's reused sessions (tests; after a fork)."""
    for session in _reused.sessions.values():
        session.close()
    _reused.sessions.clear()


def shared_http_session() -> requests.Session:
    """This thread's reused plain session (:func:`reused_session`)."""
    return reused_session("http", http_session)


@contextlib.contextmanager
def bounded_call(what: str) -> Iterator[CallDeadline]:
    """Bound the calls made inside the block by ``HTTP_TIMEOUT`` as a whole, and turn
    their ``requests`` failures into :class:`~qb_oauth.exceptions.IntuitUnavailable`.

    ``requests`` times each socket read only; an answer that trickles in would
    hold a refresh, and the lease of its row, for as long as it liked. The
    deadline yielded tells whether time ran out: an answer that arrives anyway
    was cut short and the caller decides what it is worth (a token answer that
    parsed is kept, it may hold a rotated refresh token). ``what`` names the
    call in messages.

    Use it inside a function marked :func:`~qb_oauth.redact.holds_tokens` when
    the call carries a token: the error's context is the failed request.
    """
    with call_deadline(qb_settings.HTTP_TIMEOUT) as deadline:
        try:
            yield deadline
        except requests.RequestException as err:
            raise network_error(err, what, timed_out=deadline.expired) from None


@holds_tokens
def send(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """One call to Intuit through ``session``, body read, within :func:`bounded_call`.

    The body is read inside the deadline, so a trickling answer cannot outlast
    it; an answer cut short by the deadline is :class:`IntuitUnavailable`,
    since none of the answers read this way carries a token worth keeping.
    Other statuses are returned as they are: the caller classifies them
    (:func:`~qb_oauth.client.responses.raise_for_status`).
    """
    host = urlsplit(url).netloc or url
    with bounded_call(host) as deadline:
        response = session.request(method, url, timeout=qb_settings.HTTP_TIMEOUT, **kwargs)
        response.content  # noqa: B018 - read the body inside the deadline
    if deadline.expired:
        raise timeout_error(host)
    return response


def client_id() -> str:
    """The app's client id at Intuit, or :class:`ImproperlyConfigured` naming the check."""
    value = qb_settings.CLIENT_ID
    if not value:
        raise ImproperlyConfigured("QB_OAUTH['CLIENT_ID'] is not set (see check qb_oauth.E001).")
    return value


def client_auth() -> HTTPBasicAuth:
    """HTTP Basic credentials of the app (client id and secret): Intuit's token and
    revocation endpoints take the client's credentials this way only."""
    secret = qb_settings.CLIENT_SECRET
    if not secret:
        raise ImproperlyConfigured(
            "QB_OAUTH['CLIENT_SECRET'] is not set (see check qb_oauth.E001)."
        )
    return HTTPBasicAuth(client_id(), secret)


class QuickBooksOAuth2Session(OAuth2Session):
    """An OAuth2Session that also speaks plain http to loopback (the fake Intuit).

    oauthlib refuses every URL that is not https unless the environment variable
    ``OAUTHLIB_INSECURE_TRANSPORT`` is set, and that variable is process-wide: it
    would also let every other OAuth client of the site (allauth, intuit-oauth …)
    send secrets over plain http to any host. This session allows one thing more,
    for itself only: plain http to loopback (:func:`qb_oauth.transport.is_plain_loopback`).
    Nothing global changes: no environment variable, no patched oauthlib function.

    How. requests-oauthlib checks ``is_secure_transport(url)`` inline, before any hook
    runs, in ``fetch_token``, ``refresh_token`` and ``request``, and oauthlib checks it
    in ``prepare_grant_uri`` (``authorization_url``). So, for a loopback http URL:

    * ``authorization_url``, ``fetch_token`` and ``refresh_token`` are handed the https
      spelling of the same URL (same host, port, path), which passes their check;
    * the URL is put back right after the check: in the returned authorization URL,
      and for the token endpoint by the ``access_token_request`` /
      ``refresh_token_request`` compliance hooks, which requests-oauthlib runs after
      its check and before sending, precisely so that a provider's URL can be adjusted;
    * ``request`` (through which both token calls send) skips only oauthlib's
      transport check, for a loopback http URL and a request that carries no OAuth
      token (``fetch_token`` clears the token before sending, ``refresh_token``
      withholds it; qb_oauth never sends a bearer token through this session).

    If a hook did not run, the request would go to ``https://`` on loopback and fail
    its TLS handshake: never to another host, never in plain text. With
    ``OAUTHLIB_INSECURE_TRANSPORT`` set by the developer this class changes nothing:
    oauthlib's own rule applies, as it always did.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The https spellings handed to oauthlib's checks, and the real URLs they stand for.
        self._qb_plain_urls: dict[str, str] = {}
        self.register_compliance_hook("access_token_request", self._qb_real_token_url)
        self.register_compliance_hook("refresh_token_request", self._qb_real_token_url)

    def forget_tokens(self) -> None:
        """Drop the tokens the last call left on the session (and its oauthlib client):
        a session reused for the next call must hold nothing of this one."""
        self.token: dict[str, Any] = {}
        for name in ("access_token", "refresh_token"):
            setattr(self._client, name, None)
        self._qb_plain_urls.clear()

    def _qb_for_check(self, url: str) -> str:
        """The URL to show oauthlib's transport check (the https spelling for loopback http)."""
        if is_secure_transport(url) or not transport.is_plain_loopback(url):
            return url  # https, the developer's variable, or refused by oauthlib as before
        spelled = "https://" + url.split("://", 1)[1]
        self._qb_plain_urls[spelled] = url
        return spelled

    def _qb_real_token_url(self, url: str, headers: Any, body: Any) -> tuple[str, Any, Any]:
        return self._qb_plain_urls.get(url, url), headers, body

    def authorization_url(self, url: str, state: Any = None, **kwargs: Any) -> tuple[str, Any]:
        checked = self._qb_for_check(url)
        result, state = super().authorization_url(checked, state=state, **kwargs)
        if checked != url:
            result = "http://" + result.split("://", 1)[1]  # the same URL, its scheme put back
        return result, state

    def fetch_token(self, token_url: str, *args: Any, **kwargs: Any) -> dict:
        return super().fetch_token(self._qb_for_check(token_url), *args, **kwargs)

    def refresh_token(self, token_url: str, *args: Any, **kwargs: Any) -> dict:
        return super().refresh_token(self._qb_for_check(token_url), *args, **kwargs)

    def request(
        self,
        method: str,
        url: str,
        data: Any = None,
        headers: Any = None,
        withhold_token: bool = False,
        client_id: str | None = None,
        client_secret: str | None = None,
        files: Any = None,
        **kwargs: Any,
    ) -> requests.Response:
        if (
            transport.is_plain_loopback(url)
            and not is_secure_transport(url)
            and (withhold_token or not self.token)
        ):
            # What OAuth2Session.request does for a request without a token, minus the
            # transport check.
            return requests.Session.request(
                self, method, url, data=data, headers=headers, files=files, **kwargs
            )
        return super().request(
            method,
            url,
            data=data,
            headers=headers,
            withhold_token=withhold_token,
            client_id=client_id,
            client_secret=client_secret,
            files=files,
            **kwargs,
        )


def oauth_session(**kwargs: Any) -> QuickBooksOAuth2Session:
    """An OAuth2Session for our client id, with qb_oauth's User-Agent and pool, that
    reaches loopback over plain http (:class:`QuickBooksOAuth2Session`)."""
    return prepare_session(QuickBooksOAuth2Session(client_id=client_id(), **kwargs))

"""Intuit's endpoints: the only code in qb_oauth that speaks HTTP to Intuit.

Built on requests-oauthlib's :class:`~requests_oauthlib.OAuth2Session`. Every
call has a timeout (``QB_OAUTH["HTTP_TIMEOUT"]``) and a versioned
User-Agent; every failure becomes one of our exceptions, with Intuit's
``intuit_tid`` when there was a response:

* ``invalid_grant`` → :class:`~qb_oauth.exceptions.ReauthorizationRequired`
* network errors, timeouts, 5xx, 429, a malformed answer →
  :class:`~qb_oauth.exceptions.IntuitUnavailable`
* any other error answer → :class:`~qb_oauth.exceptions.IntuitError`

Functions return plain data and never touch the ORM. No token ever reaches an
exception message or a log line: requests-oauthlib logs whole token responses
at DEBUG level, so a filter on its logger drops those records.

Every endpoint is https, or plain http to loopback (the fake Intuit), the rule of
:mod:`qb_oauth.transport`; anything else raises
:class:`~qb_oauth.exceptions.ImproperlyConfigured` naming the setting.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from oauthlib.oauth2 import InsecureTransportError, OAuth2Error, is_secure_transport
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from . import __version__, transport
from .conf import ENDPOINT_NAMES, INTUIT_ENDPOINTS, qb_settings
from .deadline import DeadlineAdapter, call_deadline
from .exceptions import (
    ImproperlyConfigured,
    IntuitError,
    IntuitUnavailable,
    ReauthorizationRequired,
)
from .redact import holds_tokens

USER_AGENT = f"qb_oauth/{__version__} python-requests/{requests.__version__}"
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"


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


@dataclass(frozen=True)
class TokenResponse:
    """A successful answer of Intuit's token endpoint. Tokens are left out of ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    refresh_token_expires_in: int | None
    refresh_token_hard_expires_in: int | None = None
    id_token: str | None = field(default=None, repr=False)
    intuit_tid: str | None = None


@dataclass(frozen=True)
class IdentityClaims:
    """The verified claims of an id token that qb_oauth keeps."""

    sub: str
    realm_id: str | None
    email: str | None = None


# -- sessions and endpoints ---------------------------------------------------


def _timeout() -> float:
    return qb_settings.HTTP_TIMEOUT


def _prepare(session: requests.Session) -> requests.Session:
    session.headers["User-Agent"] = USER_AGENT
    session.mount("https://", _ADAPTER)
    session.mount("http://", _ADAPTER)
    return session


def http_session() -> requests.Session:
    """A plain session with qb_oauth's User-Agent and connection pool."""
    return _prepare(requests.Session())


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

    def request(  # type: ignore[override]
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
    session = QuickBooksOAuth2Session(client_id=_client_id(), **kwargs)
    return _prepare(session)


def _client_id() -> str:
    client_id = qb_settings.CLIENT_ID
    if not client_id:
        raise ImproperlyConfigured("QB_OAUTH['CLIENT_ID'] is not set (see check qb_oauth.E001).")
    return client_id


def _client_auth() -> HTTPBasicAuth:
    secret = qb_settings.CLIENT_SECRET
    if not secret:
        raise ImproperlyConfigured(
            "QB_OAUTH['CLIENT_SECRET'] is not set (see check qb_oauth.E001)."
        )
    return HTTPBasicAuth(_client_id(), secret)


_discovery_cache: dict[str, dict[str, Any]] = {}
_discovery_lock = threading.Lock()


def clear_discovery_cache() -> None:
    """Forget every fetched discovery document (tests, or after Intuit changed its own)."""
    with _discovery_lock:
        _discovery_cache.clear()


def discovery_document(url: str) -> dict[str, Any]:
    """The OpenID discovery document at ``url``, fetched once per process and cached."""
    with _discovery_lock:
        cached = _discovery_cache.get(url)
    if cached is not None:
        return cached
    response = _send(http_session(), "GET", url, headers={"Accept": "application/json"})
    if response.status_code != 200:
        raise _unavailable_or_error(response, "discovery document")
    document = _json(response, "discovery document")
    missing = [k for k in ("authorization_endpoint", "token_endpoint") if k not in document]
    if missing:
        raise IntuitUnavailable(
            f"The discovery document lacks {', '.join(missing)}.", intuit_tid=_tid(response)
        )
    with _discovery_lock:
        _discovery_cache[url] = document
    return document


_DISCOVERY_KEYS = {
    "authorization": "authorization_endpoint",
    "token": "token_endpoint",
    "revocation": "revocation_endpoint",
    "userinfo": "userinfo_endpoint",
    "jwks": "jwks_uri",
    "issuer": "issuer",
}


def endpoints(environment: str | None = None) -> dict[str, str]:
    """Intuit's endpoints for ``environment`` (default: the configured one).

    Per-endpoint overrides (``ENDPOINTS``) win over the discovery document
    (``DISCOVERY_URL``), which wins over Intuit's published endpoints.
    """
    environment = environment or qb_settings.ENVIRONMENT
    if environment not in INTUIT_ENDPOINTS:
        raise ImproperlyConfigured(
            f"QB_OAUTH['ENVIRONMENT'] must be 'sandbox' or 'production', not {environment!r}."
        )
    result = {k: v for k, v in INTUIT_ENDPOINTS[environment].items() if k in ENDPOINT_NAMES}
    #: Where each endpoint came from, for the message if it is refused.
    source = {name: f"Intuit's {name} endpoint" for name in result}
    discovery_url = qb_settings.DISCOVERY_URL
    if discovery_url:
        transport.require_allowed(discovery_url, "QB_OAUTH['DISCOVERY_URL']")
        document = discovery_document(discovery_url)
        for name, key in _DISCOVERY_KEYS.items():
            if document.get(key):
                result[name] = document[key]
                source[name] = f"The {key} of the document at QB_OAUTH['DISCOVERY_URL']"
    for name, url in qb_settings.ENDPOINTS.items():
        if url:
            result[name] = url
            source[name] = f"QB_OAUTH['ENDPOINTS']['{name}']"
    for name, url in result.items():
        if name != "issuer":  # an identifier compared with the id token's, never fetched
            transport.require_allowed(str(url), source[name])
    return result


def api_base(environment: str | None = None) -> str:
    return endpoints(environment)["api_base"].rstrip("/")


# -- the calls ------------------------------------------------------------------


def authorization_url(*, state: str, redirect_uri: str, scopes: list[str] | None = None) -> str:
    """The URL of Intuit's consent page for a new connection."""
    session = oauth_session(redirect_uri=redirect_uri, scope=scopes or qb_settings.SCOPES)
    endpoint = endpoints()["authorization"]
    try:
        url, _state = session.authorization_url(endpoint, state=state)
    except InsecureTransportError:
        raise _insecure(endpoint, "authorization") from None
    return url


@holds_tokens
def exchange_code(*, code: str, redirect_uri: str) -> TokenResponse:
    """Exchange an authorization code for tokens (a code works once)."""
    session = oauth_session(redirect_uri=redirect_uri)
    return _token_request(
        session, "access_token_response", session.fetch_token, code=code, include_client_id=False
    )


@holds_tokens
def refresh_tokens(refresh_token: str) -> TokenResponse:
    """Use ``refresh_token`` once at Intuit's token endpoint.

    The caller must store the answer's refresh token before doing anything
    else: Intuit may have rotated it, and the old value may already be dead.
    """
    session = oauth_session()
    return _token_request(
        session, "refresh_token_response", session.refresh_token, refresh_token=refresh_token
    )


@holds_tokens
def _token_request(session: OAuth2Session, hook: str, call, **kwargs: Any) -> TokenResponse:
    """One call to the token endpoint through ``session`` (``fetch_token`` or
    ``refresh_token``), its answer checked by a compliance hook before oauthlib parses it."""
    session.register_compliance_hook(hook, _token_hook(session))
    url = endpoints()["token"]
    with call_deadline(_timeout()) as deadline:
        try:
            call(url, auth=_client_auth(), timeout=_timeout(), headers=_token_headers(), **kwargs)
        except requests.RequestException as err:
            raise _network_error(err, "token endpoint", timed_out=deadline.expired) from None
        except InsecureTransportError:
            # Not Intuit's refusal but oauthlib's, before sending: a configuration problem.
            raise _insecure(url, "token") from None
        except (OAuth2Error, IntuitUnavailable) as err:
            if deadline.expired:  # the answer was cut short: what it said is not an answer
                raise _timed_out("token endpoint") from None
            if isinstance(err, IntuitUnavailable):
                raise
            raise IntuitError(f"Intuit refused the token request: {err.error}.") from None
        # A complete answer that parsed is kept even if the deadline passed just after it:
        # it may hold a rotated refresh token.
    return _token_response(session)


@holds_tokens
def revoke_token(token: str) -> None:
    """Revoke a refresh (or access) token at Intuit: the whole grant ends.

    Intuit answers 400 for a token it no longer knows: already revoked, which
    is what the caller wanted, so it is not an error.
    """
    response = _send(
        http_session(),
        "POST",
        endpoints()["revocation"],
        json={"token": token},
        auth=_client_auth(),
        headers={"Accept": "application/json"},
    )
    if response.status_code in (200, 400):
        return
    raise _unavailable_or_error(response, "revocation endpoint")


@holds_tokens
def userinfo(access_token: str) -> dict[str, Any]:
    """The user's Intuit identity (needs the openid scope)."""
    response = _send(
        http_session(),
        "GET",
        endpoints()["userinfo"],
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    if response.status_code != 200:
        raise _unavailable_or_error(response, "userinfo endpoint")
    return _json(response, "userinfo")


@holds_tokens
def company_info(access_token: str, realm_id: str, environment: str | None = None) -> dict:
    """The CompanyInfo entity of ``realm_id`` from the Accounting API."""
    url = f"{api_base(environment)}/v3/company/{realm_id}/companyinfo/{realm_id}"
    response = _send(
        http_session(),
        "GET",
        url,
        params={"minorversion": qb_settings.MINOR_VERSION},
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    if response.status_code != 200:
        raise _unavailable_or_error(response, "Accounting API")
    info = _json(response, "CompanyInfo").get("CompanyInfo")
    if not isinstance(info, dict):
        raise IntuitUnavailable(
            "CompanyInfo answer without a CompanyInfo.", intuit_tid=_tid(response)
        )
    return info


@holds_tokens
def verify_id_token(id_token: str) -> IdentityClaims:
    """Check an id token's RS256 signature against Intuit's JWKS, its issuer and audience."""
    eps = endpoints()
    response = _send(http_session(), "GET", eps["jwks"], headers={"Accept": "application/json"})
    if response.status_code != 200:
        raise _unavailable_or_error(response, "JWKS")
    try:
        header = jwt.get_unverified_header(id_token)
        keys = jwt.PyJWKSet.from_dict(_json(response, "JWKS"))
        key = next(k for k in keys.keys if k.key_id == header.get("kid"))
        claims = jwt.decode(
            id_token,
            key=key.key,
            algorithms=["RS256"],
            audience=_client_id(),
            issuer=eps["issuer"],
            leeway=300,
        )
    except (jwt.PyJWTError, StopIteration) as err:
        raise IntuitError(f"The id token did not verify ({type(err).__name__}).") from None
    return IdentityClaims(
        sub=str(claims.get("sub", "")),
        realm_id=claims.get("realmid"),
        email=claims.get("email"),
    )


# -- helpers --------------------------------------------------------------------


def _insecure(url: str, name: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"oauthlib refused Intuit's {name} endpoint ({transport.shown(url)}): it is not "
        "https (see check qb_oauth.E003)."
    )


def _token_headers() -> dict[str, str]:
    return {
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
        HARD_EXPIRY_HEADER: "true",
    }


@holds_tokens
def _send(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """One call, bounded as a whole by ``HTTP_TIMEOUT`` (connect, send, wait and read)."""
    with call_deadline(_timeout()) as deadline:
        try:
            response = session.request(method, url, timeout=_timeout(), **kwargs)
            response.content  # noqa: B018 - read the body inside the deadline
        except requests.RequestException as err:
            raise _network_error(err, _host(url), timed_out=deadline.expired) from None
    if deadline.expired:  # cut short: none of these answers carries a token to keep
        raise _timed_out(_host(url))
    return response


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _timed_out(what: str) -> IntuitUnavailable:
    return IntuitUnavailable(f"Timed out talking to Intuit ({what}).")


def _network_error(
    err: requests.RequestException, what: str, *, timed_out: bool = False
) -> IntuitUnavailable:
    if timed_out or isinstance(err, requests.Timeout):
        return _timed_out(what)
    return IntuitUnavailable(f"Could not reach Intuit ({what}): {type(err).__name__}.")


def _tid(response: requests.Response) -> str | None:
    return response.headers.get("intuit_tid") or response.headers.get("intuit-tid")


def _json(response: requests.Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise IntuitUnavailable(
            f"Intuit sent a malformed {what} (HTTP {response.status_code}).",
            intuit_tid=_tid(response),
            status=response.status_code,
        )
    return data


def _error_code(response: requests.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return None


def _fault_text(response: requests.Response) -> str:
    """A short, non-secret description of an Accounting API fault.

    Only the fault's message and code: Intuit's ``detail`` may echo part of the token.
    """
    try:
        fault = response.json().get("fault") or response.json().get("Fault") or {}
        error = (fault.get("error") or fault.get("Error") or [{}])[0]
        parts = [error.get("message") or error.get("Message"), error.get("code")]
        return "; ".join(str(p) for p in parts if p)[:200]
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def _unavailable_or_error(response: requests.Response, what: str) -> Exception:
    status = response.status_code
    tid = _tid(response)
    if status == 429 or status >= 500:
        return IntuitUnavailable(
            f"Intuit's {what} answered HTTP {status}.", intuit_tid=tid, status=status
        )
    detail = _error_code(response) or _fault_text(response)
    suffix = f": {detail}" if detail else ""
    return IntuitError(
        f"Intuit's {what} answered HTTP {status}{suffix}.", intuit_tid=tid, status=status
    )


@holds_tokens
def _check_token_response(response: requests.Response) -> requests.Response:
    """Compliance hook: classify the token endpoint's answer before oauthlib parses it."""
    status = response.status_code
    tid = _tid(response)
    if status == 429 or status >= 500:
        raise IntuitUnavailable(
            f"Intuit's token endpoint answered HTTP {status}.", intuit_tid=tid, status=status
        )
    if status != 200:
        code = _error_code(response)
        if code == "invalid_grant":
            raise ReauthorizationRequired(
                "Intuit refused the grant (invalid_grant).", intuit_tid=tid, status=status
            )
        if code is None:
            raise IntuitUnavailable(
                f"Intuit's token endpoint answered HTTP {status} without an error code.",
                intuit_tid=tid,
                status=status,
            )
        raise IntuitError(
            f"Intuit's token endpoint refused: {code}.", intuit_tid=tid, status=status
        )
    data = _json(response, "token response")
    problems = []
    for key in ("access_token", "refresh_token"):
        if not isinstance(data.get(key), str) or not data[key]:
            problems.append(key)
    for key in ("expires_in", "x_refresh_token_expires_in"):
        if not _is_number(data.get(key)):
            problems.append(key)
    if str(data.get("token_type", "")).lower() != "bearer":
        problems.append("token_type")
    if problems:
        raise IntuitUnavailable(
            f"Intuit's token response is malformed ({', '.join(problems)}).", intuit_tid=tid
        )
    return response


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value >= 0
    if isinstance(value, str):
        return value.isdigit()
    return False


@holds_tokens
def _token_response(session: OAuth2Session) -> TokenResponse:
    token = session.token
    hard = token.get("x_refresh_token_hard_expires_in")
    return TokenResponse(
        access_token=token["access_token"],
        refresh_token=token["refresh_token"],
        expires_in=int(token["expires_in"]),
        refresh_token_expires_in=int(token["x_refresh_token_expires_in"]),
        refresh_token_hard_expires_in=int(hard) if _is_number(hard) else None,
        id_token=token.get("id_token") or None,
        intuit_tid=getattr(session, "_qb_last_tid", None),
    )


def _token_hook(session: OAuth2Session):
    """A compliance hook that checks the token answer and keeps its ``intuit_tid``."""

    def hook(response: requests.Response) -> requests.Response:
        session._qb_last_tid = _tid(response)  # type: ignore[attr-defined]
        return _check_token_response(response)

    return hook

"""The life of a grant at Intuit's OAuth 2.0 endpoints: consent URL, code exchange,
refresh, revocation.

The token endpoint's answers are classified by a requests-oauthlib compliance
hook, before oauthlib parses them: oauthlib alone would report Intuit's 503 or
a truncated body as a missing token, and qb_oauth must tell ``invalid_grant``
(only the user can help) from an outage (try again later, nothing changed) from
anything else. What becomes of an answer whose deadline passed, and why the
refresh token must be stored first: docs/reliability.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from oauthlib.oauth2 import InsecureTransportError, OAuth2Error

from .. import transport
from ..conf import qb_settings
from ..exceptions import (
    ImproperlyConfigured,
    IntuitError,
    IntuitUnavailable,
    ReauthorizationRequired,
)
from ..redact import holds_tokens
from .discovery import endpoints
from .responses import error_code, intuit_tid, is_outage, json_body, raise_for_status, timeout_error
from .sessions import (
    QuickBooksOAuth2Session,
    bounded_call,
    client_auth,
    oauth_session,
    reused_session,
    send,
    shared_http_session,
)

__all__ = [
    "HARD_EXPIRY_HEADER",
    "TokenResponse",
    "authorization_url",
    "exchange_code",
    "refresh_tokens",
    "revoke_token",
]

#: The request header that makes Intuit report the grant's five-year hard expiry.
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"

#: The field under which the compliance hook hands the answer's ``intuit_tid`` to
#: oauthlib, so that it comes back in the token dict with the tokens it belongs to.
_TID_FIELD = "intuit_tid"


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


def authorization_url(*, state: str, redirect_uri: str, scopes: list[str] | None = None) -> str:
    """The URL of Intuit's consent page for a new connection."""
    session = oauth_session(redirect_uri=redirect_uri, scope=scopes or qb_settings.SCOPES)
    endpoint = endpoints()["authorization"]
    try:
        url, _state = session.authorization_url(endpoint, state=state)
    except InsecureTransportError:
        raise _insecure(endpoint, "authorization") from None
    return url


def _make_token_session() -> QuickBooksOAuth2Session:
    session = oauth_session()
    # Registered once: the session is this thread's for every token call (reused_session).
    session.register_compliance_hook("access_token_response", _check_token_answer)
    session.register_compliance_hook("refresh_token_response", _check_token_answer)
    return session


def _token_session() -> QuickBooksOAuth2Session:
    """This thread's session for the token endpoint, made once (see reused_session)."""
    return reused_session("token", _make_token_session)


@holds_tokens
def exchange_code(*, code: str, redirect_uri: str) -> TokenResponse:
    """Exchange an authorization code for tokens (a code works once)."""
    session = _token_session()
    session.redirect_uri = redirect_uri
    return _token_request(session, session.fetch_token, code=code, include_client_id=False)


@holds_tokens
def refresh_tokens(refresh_token: str) -> TokenResponse:
    """Use ``refresh_token`` once at Intuit's token endpoint.

    The caller must store the answer's refresh token before doing anything
    else: Intuit may have rotated it, and the old value may already be dead.
    """
    session = _token_session()
    session.redirect_uri = None
    return _token_request(session, session.refresh_token, refresh_token=refresh_token)


@holds_tokens
def revoke_token(token: str) -> None:
    """Revoke a refresh (or access) token at Intuit: the whole grant ends.

    Intuit answers 400 for a token it no longer knows: already revoked, which
    is what the caller wanted, so it is not an error.
    """
    response = send(
        shared_http_session(),
        "POST",
        endpoints()["revocation"],
        json={"token": token},
        auth=client_auth(),
        headers={"Accept": "application/json"},
    )
    raise_for_status(response, "revocation endpoint", ok=(200, 400))


# -- the token endpoint ---------------------------------------------------------


@holds_tokens
def _token_request(
    session: QuickBooksOAuth2Session,
    call: Callable[..., dict[str, Any]],
    **kwargs: Any,
) -> TokenResponse:
    """One call to the token endpoint through ``session`` (``fetch_token`` or
    ``refresh_token``), its answer checked by a compliance hook before oauthlib parses it.

    The session keeps nothing of the answer afterwards: it is reused for the next call.
    """
    url = endpoints()["token"]
    try:
        return _token_response(_token_call(session, call, url, **kwargs))
    finally:
        session.forget_tokens()


@holds_tokens
def _token_call(
    session: QuickBooksOAuth2Session,
    call: Callable[..., dict[str, Any]],
    url: str,
    **kwargs: Any,
) -> dict[str, Any]:
    with bounded_call("token endpoint") as deadline:
        try:
            token = call(
                url,
                auth=client_auth(),
                timeout=qb_settings.HTTP_TIMEOUT,
                headers=_token_headers(),
                **kwargs,
            )
        except InsecureTransportError:
            # Not Intuit's refusal but oauthlib's, before sending: a configuration problem.
            raise _insecure(url, "token") from None
        except (OAuth2Error, IntuitUnavailable) as err:
            if deadline.expired:  # the answer was cut short: what it said is not an answer
                raise timeout_error("token endpoint") from None
            if isinstance(err, IntuitUnavailable):
                raise
            raise IntuitError(f"Intuit refused the token request: {err.error}.") from None
        # A complete answer that parsed is kept even if the deadline passed just after it:
        # it may hold a rotated refresh token.
    return token


def _token_headers() -> dict[str, str]:
    return {
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
        HARD_EXPIRY_HEADER: "true",
    }


@holds_tokens
def _check_token_answer(response: requests.Response) -> requests.Response:
    """Compliance hook: classify the token endpoint's answer before oauthlib parses it,
    and hand its ``intuit_tid`` on in the body oauthlib parses.

    Rewriting the body is what compliance hooks are for (requests-oauthlib's own
    fixes for other providers do it); it lets the tid come back with the tokens
    as the return value of ``fetch_token`` / ``refresh_token``, instead of being
    left on the session for someone to pick up.
    """
    data = _token_answer(response)
    data[_TID_FIELD] = intuit_tid(response)
    response._content = json.dumps(data).encode()
    response.encoding = "utf-8"
    return response


@holds_tokens
def _token_answer(response: requests.Response) -> dict[str, Any]:
    """The token endpoint's answer if it holds usable tokens; otherwise the exception
    that says what the caller may do about it."""
    status = response.status_code
    tid = intuit_tid(response)
    if is_outage(status):  # by status alone, as every answer, whatever the body says
        raise_for_status(response, "token endpoint")
    if status != 200:
        code = error_code(response)
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
    data = json_body(response, "token response")
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
    return data


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value >= 0
    if isinstance(value, str):
        return value.isdigit()
    return False


@holds_tokens
def _token_response(token: Mapping[str, Any]) -> TokenResponse:
    hard: Any = token.get("x_refresh_token_hard_expires_in")
    return TokenResponse(
        access_token=token["access_token"],
        refresh_token=token["refresh_token"],
        expires_in=int(token["expires_in"]),
        refresh_token_expires_in=int(token["x_refresh_token_expires_in"]),
        refresh_token_hard_expires_in=int(hard) if _is_number(hard) else None,
        id_token=token.get("id_token") or None,
        intuit_tid=token.get(_TID_FIELD),
    )


def _insecure(url: str, name: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"oauthlib refused Intuit's {name} endpoint ({transport.shown(url)}): it is not "
        "https (see check qb_oauth.E003)."
    )

"""Intuit's endpoints: the only code in qb_oauth that speaks HTTP to Intuit.

Built on requests-oauthlib's :class:`~requests_oauthlib.OAuth2Session`. Every
call is bounded as a whole by ``QB_OAUTH["HTTP_TIMEOUT"]`` and sends a
versioned User-Agent; every failure becomes one of our exceptions, with
Intuit's ``intuit_tid`` when there was a response:

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

One job a module; everything is imported from here:

* :mod:`~qb_oauth.client.sessions`: how a call goes out (User-Agent, the pooled
  deadline-aware adapter, the OAuth session, :func:`bounded_call`, :func:`send`);
* :mod:`~qb_oauth.client.responses`: how an answer is read and classified
  (:func:`raise_for_status`, :func:`json_body`, :func:`intuit_tid`);
* :mod:`~qb_oauth.client.discovery`: where Intuit is (discovery document, overrides, endpoints);
* :mod:`~qb_oauth.client.oauth`: consent URL, code exchange, refresh, revocation;
* :mod:`~qb_oauth.client.identity`: userinfo and id token verification;
* :mod:`~qb_oauth.client.accounting`: CompanyInfo and the company's name.
"""

from __future__ import annotations

from .accounting import company_info, company_name
from .discovery import api_base, clear_discovery_cache, discovery_document, endpoints
from .identity import IdentityClaims, userinfo, verify_id_token
from .oauth import (
    HARD_EXPIRY_HEADER,
    TokenResponse,
    authorization_url,
    exchange_code,
    refresh_tokens,
    revoke_token,
)
from .responses import (
    intuit_tid,
    is_outage,
    json_body,
    network_error,
    raise_for_status,
    timeout_error,
)
from .sessions import (
    USER_AGENT,
    QuickBooksOAuth2Session,
    bounded_call,
    http_session,
    oauth_session,
    prepare_session,
    send,
)

__all__ = [
    "HARD_EXPIRY_HEADER",
    "USER_AGENT",
    "IdentityClaims",
    "QuickBooksOAuth2Session",
    "TokenResponse",
    "api_base",
    "authorization_url",
    "bounded_call",
    "clear_discovery_cache",
    "company_info",
    "company_name",
    "discovery_document",
    "endpoints",
    "exchange_code",
    "http_session",
    "intuit_tid",
    "is_outage",
    "json_body",
    "network_error",
    "oauth_session",
    "prepare_session",
    "raise_for_status",
    "refresh_tokens",
    "revoke_token",
    "send",
    "timeout_error",
    "userinfo",
    "verify_id_token",
]

"""Where Intuit is: its endpoints for an environment, from settings, discovery or defaults.

Every URL handed out here has passed :func:`qb_oauth.transport.require_allowed`
(https, or plain http to loopback), so no caller sends a secret before the
rule has been applied, whatever the source of the URL.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import transport
from ..conf import ENDPOINT_NAMES, INTUIT_ENDPOINTS, qb_settings
from ..exceptions import ImproperlyConfigured, IntuitUnavailable
from .responses import intuit_tid, json_body, raise_for_status
from .sessions import send, shared_http_session

__all__ = ["api_base", "clear_discovery_cache", "discovery_document", "endpoints"]

_discovery_cache: dict[str, dict[str, Any]] = {}
_discovery_lock = threading.Lock()

#: The name of each endpoint in an OpenID discovery document.
_DISCOVERY_KEYS = {
    "authorization": "authorization_endpoint",
    "token": "token_endpoint",
    "revocation": "revocation_endpoint",
    "userinfo": "userinfo_endpoint",
    "jwks": "jwks_uri",
    "issuer": "issuer",
}


def clear_discovery_cache() -> None:
    """Forget every fetched discovery document (tests, or after Intuit changed its own)."""
    with _discovery_lock:
        _discovery_cache.clear()


def discovery_document(url: str) -> dict[str, Any]:
    """The OpenID discovery document at ``url``, fetched once per process and cached.

    Cached because every call to Intuit needs an endpoint and the document
    rarely changes. A document without the authorization and token endpoints
    is treated as an outage (:class:`IntuitUnavailable`) and not cached, so the
    next call fetches it again.
    """
    with _discovery_lock:
        cached = _discovery_cache.get(url)
    if cached is not None:
        return cached
    response = send(shared_http_session(), "GET", url, headers={"Accept": "application/json"})
    raise_for_status(response, "discovery document")
    document = json_body(response, "discovery document")
    missing = [k for k in ("authorization_endpoint", "token_endpoint") if k not in document]
    if missing:
        raise IntuitUnavailable(
            f"The discovery document lacks {', '.join(missing)}.",
            intuit_tid=intuit_tid(response),
        )
    with _discovery_lock:
        _discovery_cache[url] = document
    return document


def endpoints(environment: str | None = None) -> dict[str, str]:
    """Intuit's endpoints for ``environment`` (default: the configured one), by name.

    Per-endpoint overrides (``ENDPOINTS``) win over the discovery document
    (``DISCOVERY_URL``), which wins over Intuit's published endpoints. A URL
    that may not carry secrets raises :class:`ImproperlyConfigured` naming where
    it came from, so the developer knows which setting to fix.
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
    """The Accounting API's base URL for ``environment``, without a trailing slash,
    so that callers can append ``/v3/company/…`` as Intuit's documentation spells it."""
    return endpoints(environment)["api_base"].rstrip("/")

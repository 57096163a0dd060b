"""Where each of Intuit's endpoints sits on the fake's one origin, and which one a path names."""

from __future__ import annotations

ENDPOINTS = ("discovery", "authorize", "token", "revoke", "userinfo", "jwks", "api")

# Paths, mirroring Intuit's hosts on one origin.
DISCOVERY_PATHS = {
    "production": "/.well-known/openid_configuration",
    "sandbox": "/.well-known/openid_sandbox_configuration",
}
AUTHORIZE_PATH = "/connect/oauth2"
TOKEN_PATH = "/oauth2/v1/tokens/bearer"
REVOKE_PATH = "/v2/oauth2/tokens/revoke"
USERINFO_PATHS = {
    "production": "/v1/openid_connect/userinfo",
    "sandbox": "/sandbox-accounts/v1/openid_connect/userinfo",
}
JWKS_PATH = "/op/v1/jwks"
ISSUER_PATH = "/op/v1"
API_PATHS = {"production": "/quickbooks-api", "sandbox": "/sandbox-quickbooks-api"}
#: The fake's own control page (not Intuit's): clock and "disconnect inside QuickBooks".
CONTROL_PATH = "/_fake"


def route(path: str) -> str | None:
    """The endpoint ``path`` belongs to (one of ENDPOINTS, or "control"), or None."""
    path = path.rstrip("/") or "/"
    if path in DISCOVERY_PATHS.values():
        return "discovery"
    if path == AUTHORIZE_PATH:
        return "authorize"
    if path == TOKEN_PATH:
        return "token"
    if path == REVOKE_PATH:
        return "revoke"
    if path in USERINFO_PATHS.values():
        return "userinfo"
    if path == JWKS_PATH:
        return "jwks"
    for prefix in API_PATHS.values():
        if path == prefix or path.startswith(prefix + "/"):
            return "api"
    if path == CONTROL_PATH or path.startswith(CONTROL_PATH + "/"):
        return "control"
    return None

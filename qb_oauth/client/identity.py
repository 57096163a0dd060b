"""Who the user is at Intuit: the userinfo endpoint and id token verification.

Both need the ``openid`` scope. The id token is verified here, not merely
decoded, because qb_oauth trusts its ``realmid`` to check that the tokens of a
callback cover the company the callback names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from ..exceptions import IntuitError
from ..redact import holds_tokens
from .discovery import endpoints
from .responses import json_body, raise_for_status
from .sessions import client_id, send, shared_http_session

__all__ = ["IdentityClaims", "userinfo", "verify_id_token"]


@dataclass(frozen=True)
class IdentityClaims:
    """The verified claims of an id token that qb_oauth keeps."""

    sub: str
    realm_id: str | None
    email: str | None = None


@holds_tokens
def userinfo(access_token: str) -> dict[str, Any]:
    """The user's Intuit identity (needs the openid scope)."""
    response = send(
        shared_http_session(),
        "GET",
        endpoints()["userinfo"],
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    raise_for_status(response, "userinfo endpoint")
    return json_body(response, "userinfo")


@holds_tokens
def verify_id_token(id_token: str) -> IdentityClaims:
    """Check an id token's RS256 signature against Intuit's JWKS, its issuer and audience.

    Any failure to verify is :class:`~qb_oauth.exceptions.IntuitError` naming
    the kind of failure only: the token is not to be trusted, and its content
    not to be shown.
    """
    eps = endpoints()
    response = send(
        shared_http_session(), "GET", eps["jwks"], headers={"Accept": "application/json"}
    )
    raise_for_status(response, "JWKS")
    try:
        header = jwt.get_unverified_header(id_token)
        keys = jwt.PyJWKSet.from_dict(json_body(response, "JWKS"))
        key = next(k for k in keys.keys if k.key_id == header.get("kid"))
        claims = jwt.decode(
            id_token,
            key=key.key,
            algorithms=["RS256"],
            audience=client_id(),
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

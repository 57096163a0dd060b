"""OpenID Connect: the discovery documents, the JWKS and RS256 id tokens, and UserInfo."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..clock import FakeClock
from .records import Grant
from .routes import DISCOVERY_PATHS
from .wsgi import NO_STORE, Request, Response, empty_response, json_response


class OpenIDEndpoints:
    """FakeIntuit's discovery, JWKS and UserInfo endpoints and its id tokens (a mixin)."""

    client_id: str
    environment: str
    clock: FakeClock
    user: dict[str, Any]
    id_token_lifetime: int
    kid: str
    _id_tokens: set[str]
    _private_key: Any
    # From FakeIntuit and TokenEndpoint:
    _env: Callable[[str], str]
    userinfo_url_for: Callable[[str], str]
    _bearer_grant: Callable[[Request], tuple[Grant | None, str]]

    if TYPE_CHECKING:  # FakeIntuit's URLs

        @property
        def issuer(self) -> str: ...
        @property
        def authorization_url(self) -> str: ...
        @property
        def token_url(self) -> str: ...
        @property
        def revocation_url(self) -> str: ...
        @property
        def jwks_url(self) -> str: ...

    # ---------------------------------------------------------- discovery

    def discovery_document(self, environment: str | None = None) -> dict[str, Any]:
        env = self._env(environment or self.environment)
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_url,
            "token_endpoint": self.token_url,
            "userinfo_endpoint": self.userinfo_url_for(env),
            "revocation_endpoint": self.revocation_url,
            "jwks_uri": self.jwks_url,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile", "address", "phone"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "client_secret_basic",
            ],
            "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
        }

    def _discovery(self, req: Request) -> Response:
        if req.method != "GET":
            return json_response(405, {"error": "method_not_allowed"})
        path = req.path.rstrip("/")
        env = "sandbox" if path == DISCOVERY_PATHS["sandbox"] else "production"
        return json_response(200, self.discovery_document(env))

    # ------------------------------------------------------ JWKS, id token

    def _jwks(self, req: Request) -> Response:
        if req.method != "GET":
            return json_response(405, {"error": "method_not_allowed"})
        return json_response(200, self.jwks())

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set holding the fake's id-token signing key."""
        from jwt.algorithms import RSAAlgorithm

        jwk = RSAAlgorithm.to_jwk(self._key().public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def _key(self):
        # Made on first use: a 2048-bit key takes a while, and most tests never sign.
        if self._private_key is None:
            from cryptography.hazmat.primitives.asymmetric import rsa

            self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._private_key

    def make_id_token(self, grant: Grant, now: float | None = None) -> str:
        """An RS256 id token for ``grant``, signed with the key in the JWKS."""
        import jwt

        now = self.clock.now() if now is None else now
        claims: dict[str, Any] = {
            "sub": self.user["sub"],
            "aud": [self.client_id],
            "realmid": grant.realm_id,
            "auth_time": int(grant.auth_time),
            "iss": self.issuer,
            "exp": int(now) + self.id_token_lifetime,
            "iat": int(now),
        }
        if grant.realm_id is None:
            del claims["realmid"]
        token = jwt.encode(claims, self._key(), algorithm="RS256", headers={"kid": self.kid})
        self._id_tokens.add(token)
        return token

    # ----------------------------------------------------------- userinfo

    def _userinfo(self, req: Request) -> Response:
        if req.method not in ("GET", "POST"):
            return empty_response(405)
        grant, _ = self._bearer_grant(req)
        if grant is None:
            resp = empty_response(401)
            resp.headers.append(("WWW-Authenticate", 'Bearer error="invalid_token"'))
            return resp
        if "openid" not in grant.scopes:
            resp = empty_response(403)
            resp.headers.append(("WWW-Authenticate", 'Bearer error="insufficient_scope"'))
            return resp
        info: dict[str, Any] = {"sub": self.user["sub"]}
        if "email" in grant.scopes:
            info["email"] = self.user["email"]
            info["emailVerified"] = self.user["emailVerified"]
        if "profile" in grant.scopes:
            info["givenName"] = self.user["givenName"]
            info["familyName"] = self.user["familyName"]
        if "phone" in grant.scopes:
            info["phoneNumber"] = self.user["phoneNumber"]
            info["phoneNumberVerified"] = self.user["phoneNumberVerified"]
        if "address" in grant.scopes:
            info["address"] = dict(self.user["address"])
        return json_response(200, info, extra=[NO_STORE])

"""The token endpoint (code exchange, refresh with rotation) and revocation, and bearer tokens."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

from ..clock import FakeClock
from .records import Code, Grant, access_token_value, refresh_token_value
from .wsgi import NO_STORE, Request, Response, empty_response, json_response


def token_error(status: int, error: str, description: str | None = None) -> Response:
    """An OAuth error answer from the token endpoint: ``{"error": …}``."""
    body = {"error": error}
    if description:
        body["error_description"] = description
    extra = [NO_STORE]
    if status == 401:
        extra.append(("WWW-Authenticate", 'Basic realm="Intuit"'))
    return json_response(status, body, extra=extra)


class TokenEndpoint:
    """FakeIntuit's token and revocation endpoints (a mixin), and the grants they keep."""

    client_id: str
    client_secret: str
    environment: str
    clock: FakeClock
    grants: list[Grant]
    access_token_lifetime: int
    refresh_token_lifetime: int
    rotation_interval: int
    rotation_grace: int
    hard_lifetime: int
    _codes: dict[str, Code]
    _refresh_index: dict[str, Grant]
    _access_index: dict[str, Grant]
    make_id_token: Callable[..., str]  # from OpenIDEndpoints

    # -------------------------------------------------------------- token

    def _client_auth(self, req: Request, form: dict[str, list[str]] | None) -> bool | None:
        """True if the client authenticated; False if it tried and failed; None if absent."""
        presented = False
        auth = req.header("authorization") or ""
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            cid, sep, secret = decoded.partition(":")
            # RFC 6749 §2.3.1 form-encodes both before Basic; most clients don't.
            if not sep or (cid, secret) not in (
                (self.client_id, self.client_secret),
                (quote_plus(self.client_id), quote_plus(self.client_secret)),
            ):
                return False
            presented = True
        if form is not None and ("client_secret" in form or "client_id" in form):
            cid = (form.get("client_id") or [""])[0]
            if cid != self.client_id:
                return False
            if "client_secret" in form:
                if (form.get("client_secret") or [""])[0] != self.client_secret:
                    return False
                presented = True
        return True if presented else None

    def _token(self, req: Request) -> Response:
        if req.method != "POST":
            return json_response(
                405,
                {"error": "invalid_request", "error_description": "The token endpoint takes POST"},
            )
        if req.content_type != "application/x-www-form-urlencoded":
            return token_error(
                400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
            )
        form = req.form()
        if any(len(v) > 1 for v in form.values()):
            return token_error(400, "invalid_request", "Duplicate parameter")
        if not self._client_auth(req, form):
            return token_error(401, "invalid_client")
        grant_type = (form.get("grant_type") or [""])[0]
        if not grant_type:
            return token_error(400, "invalid_request", "grant_type is missing")
        if grant_type == "authorization_code":
            return self._exchange_code(req, form)
        if grant_type == "refresh_token":
            return self._refresh(req, form)
        return token_error(400, "unsupported_grant_type")

    def _exchange_code(self, req: Request, form: dict[str, list[str]]) -> Response:
        value = (form.get("code") or [""])[0]
        redirect_uri = (form.get("redirect_uri") or [""])[0]
        if not value:
            return token_error(400, "invalid_request", "code is missing")
        if not redirect_uri:
            return token_error(400, "invalid_request", "redirect_uri is missing")
        code = self._codes.get(value)
        now = self.clock.now()
        if code is None or code.client_id != self.client_id:
            return token_error(400, "invalid_grant")
        if code.used:
            # RFC 6749 §4.1.2: a reused code revokes what it was exchanged for.
            if code.grant is not None and not code.grant.revoked:
                self._revoke(code.grant)
            return token_error(400, "invalid_grant")
        if now >= code.expires_at:
            return token_error(400, "invalid_grant")
        if redirect_uri != code.redirect_uri:
            return token_error(400, "invalid_grant")
        code.used = True
        refresh, refresh_expires = self._new_refresh_token(now, now + self.hard_lifetime)
        grant = Grant(
            realm_id=code.realm_id,
            scopes=list(code.scopes),
            client_id=code.client_id,
            environment=self.environment,
            created_at=now,
            hard_expires_at=now + self.hard_lifetime,
            current_refresh_token=refresh,
            refresh_issued_at=now,
            refresh_expires_at=refresh_expires,
            clock=self,
            auth_time=code.auth_time,
        )
        grant.refresh_tokens.append(refresh)
        self._refresh_index[refresh] = grant
        self.grants.append(grant)
        code.grant = grant
        return self._token_response(req, grant, now, with_id_token=True)

    def _refresh(self, req: Request, form: dict[str, list[str]]) -> Response:
        value = (form.get("refresh_token") or [""])[0]
        if not value:
            return token_error(400, "invalid_request", "refresh_token is missing")
        grant = self._refresh_index.get(value)
        now = self.clock.now()
        if grant is None or grant.client_id != self.client_id:
            return token_error(400, "invalid_grant", "Incorrect or invalid refresh token")
        if grant.revoked:
            return token_error(400, "invalid_grant", "Token invalid")
        if now >= grant.hard_expires_at:
            return token_error(400, "invalid_grant", "Incorrect or invalid refresh token")
        if value == grant.current_refresh_token:
            if now >= grant.refresh_expires_at:
                return token_error(400, "invalid_grant", "Incorrect or invalid refresh token")
        elif not (value == grant.previous_refresh_token and now < grant.previous_refresh_dies_at):
            return token_error(400, "invalid_grant", "Incorrect or invalid refresh token")
        if now - grant.refresh_issued_at >= self.rotation_interval:
            new, expires = self._new_refresh_token(now, grant.hard_expires_at)
            grant.previous_refresh_token = grant.current_refresh_token
            grant.previous_refresh_dies_at = now + self.rotation_grace
            grant.current_refresh_token = new
            grant.refresh_issued_at = now
            grant.refresh_expires_at = expires
            grant.refresh_tokens.append(new)
            self._refresh_index[new] = grant
        return self._token_response(req, grant, now, with_id_token=False)

    def _new_refresh_token(self, now: float, hard_expires_at: float) -> tuple[str, float]:
        expires = min(now + self.refresh_token_lifetime, hard_expires_at)
        return refresh_token_value(expires), expires

    def _new_access_token(self) -> str:
        return access_token_value()

    def _token_response(
        self, req: Request, grant: Grant, now: float, *, with_id_token: bool
    ) -> Response:
        access = self._new_access_token()
        access_expires = min(now + self.access_token_lifetime, grant.hard_expires_at)
        grant.access_token_expiry[access] = access_expires
        self._access_index[access] = grant
        body: dict[str, Any] = {
            "x_refresh_token_expires_in": max(0, int(grant.refresh_expires_at - now)),
            "refresh_token": grant.current_refresh_token,
            "access_token": access,
            "token_type": "bearer",
            "expires_in": int(access_expires - now),
        }
        if (req.header("x-include-refresh-token-hard-expires-in") or "").lower() == "true":
            body["x_refresh_token_hard_expires_in"] = max(0, int(grant.hard_expires_at - now))
        if with_id_token and "openid" in grant.scopes:
            body["id_token"] = self.make_id_token(grant, now)
        return json_response(200, body, extra=[NO_STORE, ("pragma", "no-cache")])

    # ------------------------------------------------------------- revoke

    def _revoke(self, grant: Grant) -> None:
        grant.revoked = True
        grant.revoked_at = self.clock.now()

    def _revoke_endpoint(self, req: Request) -> Response:
        if req.method != "POST":
            return empty_response(405)
        auth = self._client_auth(req, None)
        if not auth:
            return token_error(401, "invalid_client")
        if req.content_type == "application/json":
            try:
                payload = json.loads(req.body.decode("utf-8") or "null")
            except (UnicodeDecodeError, ValueError):
                return empty_response(400)
            token = payload.get("token") if isinstance(payload, dict) else None
        elif req.content_type == "application/x-www-form-urlencoded":
            token = next(iter(req.form().get("token") or []), None)
        else:
            return empty_response(400)
        if not isinstance(token, str) or not token:
            return empty_response(400)
        grant = self._refresh_index.get(token) or self._access_index.get(token)
        if grant is None or grant.revoked or grant.client_id != self.client_id:
            return empty_response(400)
        if token in self._access_index and token not in grant.access_tokens:
            return empty_response(400)  # an expired access token no longer names the grant
        self._revoke(grant)
        return empty_response(200)

    # ------------------------------------------------------------- bearer

    def _bearer_grant(self, req: Request) -> tuple[Grant | None, str]:
        """The grant whose live access token the ``Authorization: Bearer`` header holds."""
        auth = req.header("authorization") or ""
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, token
        grant = self._access_index.get(token)
        if grant is None or token not in grant.access_tokens:
            return None, token
        return grant, token

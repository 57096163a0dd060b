"""The fake Intuit: state and protocol logic, served as one WSGI application.

Everything Intuit's OAuth 2.0 / OpenID service and the CompanyInfo slice of
the Accounting API do that qb_oauth relies on (see shared/INTUIT.md), held in
memory and driven by a clock the test controls. ``FakeIntuit.wsgi_app`` is the
single implementation; the in-process adapter (``adapter.py``), the threaded
server (``server.py``), ``python -m qb_oauth.testing`` and the
``qb_fake_intuit`` management command all run it.

Importing this module needs neither Django nor a network.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import random
import re
import secrets
import string
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit
from xml.sax.saxutils import escape as xml_escape

from . import pages
from .adapter import FakeIntuitAdapter
from .adapter import mounted as _mounted
from .clock import FakeClock
from .errors import DropConnection, FakeIntuitError

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "SCOPES",
    "Company",
    "DropConnection",
    "FakeIntuit",
    "FakeIntuitError",
    "Grant",
]

ACCOUNTING = "com.intuit.quickbooks.accounting"
PAYMENT = "com.intuit.quickbooks.payment"
SCOPES = (ACCOUNTING, PAYMENT, "openid", "profile", "email", "phone", "address")
ENDPOINTS = ("discovery", "authorize", "token", "revoke", "userinfo", "jwks", "api")
FAULT_KINDS = (
    "500",
    "502",
    "503",
    "429",
    "timeout",
    "reset",
    "malformed",
    # The request is processed, then the answer is lost: the state at Intuit changed
    # (a code used, a refresh token rotated) but the client never hears of it.
    "reset_after",
    "timeout_after",
)

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

CODE_LIFETIME = 600
JSON_TYPE = "application/json;charset=UTF-8"
XML_TYPE = "application/xml;charset=UTF-8"
NO_STORE = ("cache-control", "no-cache, no-store")
_PACIFIC = timezone(timedelta(hours=-8))
_ALNUM_LOWER = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _random_text(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class Company:
    """A QuickBooks company the consent page offers."""

    realm_id: str
    name: str
    country: str = "US"
    legal_name: str | None = None

    def __post_init__(self) -> None:
        self.realm_id = str(self.realm_id)
        if not self.realm_id.isdigit():
            raise ValueError("realm_id must be a numeric string")


DEFAULT_COMPANIES = (
    ("9341452859140132", "Sandbox Company US 1", "US"),
    ("9130357992276326", "Sandbox Company US 2", "US"),
    ("4620816365281947510", "Sandbox Company CA", "CA"),
)


@dataclass(eq=False)
class Grant:
    """One consent: a company, scopes, and the tokens issued for it."""

    realm_id: str | None
    scopes: list[str]
    client_id: str
    environment: str
    created_at: float
    hard_expires_at: float
    current_refresh_token: str
    refresh_issued_at: float
    refresh_expires_at: float
    clock: Any = field(repr=False)  # anything with now(): the fake, so a swapped clock applies
    previous_refresh_token: str | None = None
    previous_refresh_dies_at: float = 0.0
    revoked: bool = False
    revoked_at: float | None = None
    auth_time: float = 0.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    access_token_expiry: dict[str, float] = field(default_factory=dict, repr=False)
    refresh_tokens: list[str] = field(default_factory=list, repr=False)

    @property
    def access_tokens(self) -> set[str]:
        """The access tokens of this grant that still work."""
        if self.revoked:
            return set()
        now = self.clock.now()
        return {t for t, exp in self.access_token_expiry.items() if exp > now}

    @property
    def live(self) -> bool:
        """Not revoked, and its refresh token still usable (rolling and hard expiry)."""
        now = self.clock.now()
        return not self.revoked and now < self.hard_expires_at and now < self.refresh_expires_at


@dataclass(eq=False)
class _Code:
    value: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    realm_id: str | None
    expires_at: float
    auth_time: float
    used: bool = False
    grant: Grant | None = None


@dataclass
class _Fault:
    kind: str
    times: int | None
    rate: float | None


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    script_name: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def form(self) -> dict[str, list[str]]:
        try:
            return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return {}


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


class FakeIntuit:
    """A local, in-memory Intuit: OAuth 2.0, OpenID Connect and CompanyInfo.

    See docs/testing.md. All state is guarded by one lock; sleeps (latency,
    timeouts) happen outside it.
    """

    def __init__(
        self,
        client_id: str = "qb-test-client",
        client_secret: str = "qb-test-secret",
        redirect_uris: Iterable[str] = ("http://testserver/quickbooks/callback/",),
        companies: Iterable[Company] | None = None,
        environment: str = "sandbox",
        base_url: str = "http://fake-intuit.test",
        disconnect_url: str | None = None,
        clock: FakeClock | None = None,
        seed: int | None = None,
    ) -> None:
        if environment not in ("sandbox", "production"):
            raise ValueError('environment must be "sandbox" or "production"')
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris: list[str] = list(redirect_uris)
        if companies is None:
            companies = [Company(r, n, c) for r, n, c in DEFAULT_COMPANIES]
        self.companies: list[Company] = list(companies)
        self.environment = environment
        self.base_url = base_url.rstrip("/")
        self.disconnect_url = disconnect_url
        self.clock = clock or FakeClock()

        self.access_token_lifetime = 3600
        self.refresh_token_lifetime = 8726400
        self.rotation_interval = 86400
        self.rotation_grace = 0
        self.hard_lifetime = 5 * 365 * 86400
        self.id_token_lifetime = 3600
        self.latency: dict[str, float] = {}
        self.throttle_per_minute = 500
        self.timeout_seconds = 30.0

        self.user: dict[str, Any] = {
            "sub": str(uuid.uuid4()),
            "email": "pat.tester@example.com",
            "emailVerified": True,
            "givenName": "Pat",
            "familyName": "Tester",
            "phoneNumber": "+1 6505550100",
            "phoneNumberVerified": False,
            "address": {
                "streetAddress": "2700 Coast Ave",
                "locality": "Mountain View",
                "region": "CA",
                "postalCode": "94043",
                "country": "US",
            },
        }

        self.counts: Counter[str] = Counter()
        self.refresh_counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str]] = []
        self.grants: list[Grant] = []

        self._lock = threading.RLock()
        self._random = random.Random(seed)
        self._interrupt = threading.Event()
        self._faults: dict[str, list[_Fault]] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh_index: dict[str, Grant] = {}
        self._access_index: dict[str, Grant] = {}
        self._id_tokens: set[str] = set()
        self._api_hits: dict[str, deque[float]] = {}
        self._private_key = None
        self.kid = _random_text(_ALNUM_LOWER, 16)

    def __repr__(self) -> str:
        return f"<FakeIntuit {self.environment} at {self.base_url}>"

    def now(self) -> float:
        """The fake's time (``self.clock.now()``)."""
        return self.clock.now()

    # ----------------------------------------------------------------- URLs

    @property
    def authorization_url(self) -> str:
        return self.base_url + AUTHORIZE_PATH

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def revocation_url(self) -> str:
        return self.base_url + REVOKE_PATH

    @property
    def userinfo_url(self) -> str:
        return self.userinfo_url_for(self.environment)

    def userinfo_url_for(self, environment: str) -> str:
        return self.base_url + USERINFO_PATHS[self._env(environment)]

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    @property
    def issuer(self) -> str:
        return self.base_url + ISSUER_PATH

    @property
    def discovery_url(self) -> str:
        """The production-like discovery document."""
        return self.discovery_url_for("production")

    @property
    def sandbox_discovery_url(self) -> str:
        return self.discovery_url_for("sandbox")

    def discovery_url_for(self, environment: str) -> str:
        return self.base_url + DISCOVERY_PATHS[self._env(environment)]

    @property
    def api_base(self) -> str:
        """The Accounting API base (no ``/v3``) for the fake's environment."""
        return self.api_base_for(self.environment)

    def api_base_for(self, environment: str) -> str:
        return self.base_url + API_PATHS[self._env(environment)]

    @staticmethod
    def _env(environment: str) -> str:
        env = {"prod": "production", "sand": "sandbox"}.get(environment, environment)
        if env not in ("sandbox", "production"):
            raise ValueError('environment must be "sandbox" or "production"')
        return env

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

    def qb_oauth_settings(self, **overrides: Any) -> dict[str, Any]:
        """A ``QB_OAUTH`` setting pointing qb_oauth at this fake."""
        conf: dict[str, Any] = {
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.client_secret,
            "ENVIRONMENT": self.environment,
            "DISCOVERY_URL": self.discovery_url_for(self.environment),
            "ENDPOINTS": {"api_base": self.api_base},
        }
        conf.update(overrides)
        return conf

    # ------------------------------------------------------ test controls

    def inject_fault(
        self,
        endpoint: str,
        kind: str,
        times: int | None = 1,
        rate: float | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``endpoint`` fail with ``kind``.

        With ``rate``, each call fails with that probability (seeded by
        ``FakeIntuit(seed=...)``) until ``times`` calls have failed
        (``times=None``: for ever). ``endpoint="*"`` applies to every endpoint.
        """
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        if rate is not None and not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        with self._lock:
            self._faults.setdefault(endpoint, []).append(_Fault(kind, times, rate))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.counts.clear()
            self.refresh_counts.clear()
            self.requests.clear()

    def grant_for_realm(self, realm_id: str) -> Grant | None:
        """The newest live grant for ``realm_id``, or None."""
        with self._lock:
            for grant in reversed(self.grants):
                if grant.realm_id == str(realm_id) and grant.live:
                    return grant
        return None

    def current_refresh_token(self, realm_id: str) -> str:
        grant = self.grant_for_realm(realm_id)
        if grant is None:
            raise LookupError(f"no live grant for realm {realm_id}")
        return grant.current_refresh_token

    def issued_tokens(self) -> set[str]:
        """Every access, refresh and id token issued so far (live or not)."""
        with self._lock:
            tokens = set(self._access_index) | set(self._refresh_index) | set(self._id_tokens)
        return tokens

    def revoke_grant(self, realm_id: str) -> int:
        """Revoke, as Intuit would, every grant for ``realm_id``; returns how many."""
        with self._lock:
            n = 0
            for grant in self.grants:
                if grant.realm_id == str(realm_id) and not grant.revoked:
                    self._revoke(grant)
                    n += 1
        return n

    def disconnect_from_quickbooks(self, realm_id: str) -> str:
        """The user disconnects the app inside QuickBooks.

        Revokes the realm's grants and returns the Disconnect URL Intuit sends
        the user's browser to: ``{disconnect_url}?realmId={realm_id}``.
        """
        if not self.disconnect_url:
            raise ValueError("set FakeIntuit(disconnect_url=...) (the app's Disconnect URL)")
        self.revoke_grant(realm_id)
        sep = "&" if "?" in self.disconnect_url else "?"
        return f"{self.disconnect_url}{sep}{urlencode({'realmId': str(realm_id)})}"

    def consent(
        self,
        authorization_url: str,
        realm_id: str | None = None,
        action: str = "connect",
    ) -> str:
        """Click through the consent page without a browser.

        Validates ``authorization_url`` as the endpoint does and returns the
        URL Intuit would redirect the browser to (``redirect_uri?code=…``, or
        ``?error=access_denied`` for ``action="cancel"``, or
        ``?error=invalid_scope`` …). Raises :class:`FakeIntuitError` where
        Intuit shows an error page instead of redirecting.
        """
        if action not in ("connect", "cancel"):
            raise ValueError('action must be "connect" or "cancel"')
        query = parse_qs(urlsplit(authorization_url).query, keep_blank_values=True)
        if realm_id is not None:
            query["realm_id"] = [str(realm_id)]
        query["action"] = [action]
        with self._lock:
            self.counts["authorize"] += 1
            self.counts["authorize.consent"] += 1
            self.requests.append(("authorize", "CONSENT", AUTHORIZE_PATH))
            outcome = self._authorize_outcome(query, submitted=True)
        if isinstance(outcome, FakeIntuitError):
            raise outcome
        return outcome

    # ----------------------------------------------------------- transports

    def adapter(self) -> FakeIntuitAdapter:
        """A ``requests`` transport adapter serving this fake in-process (no socket)."""
        return FakeIntuitAdapter(self)

    def mounted(self):
        """Context manager: every ``requests`` session made meanwhile reaches this fake
        in-process for URLs under ``base_url``."""
        return _mounted(self)

    # ---------------------------------------------------------------- WSGI

    def wsgi_app(self, environ: dict, start_response) -> list[bytes]:
        """The WSGI application serving every endpoint."""
        req = _request_from_environ(environ)
        resp = self.handle(req)
        reason = HTTPStatus(resp.status).phrase
        headers = list(resp.headers)
        if not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(resp.body))))
        start_response(f"{resp.status} {reason}", headers)
        return [resp.body]

    def handle(self, req: _Request) -> _Response:
        """Answer one request: counters, faults, latency, then the endpoint."""
        endpoint = self._route(req.path)
        with self._lock:
            self._record(endpoint, req)
            fault = self._take_fault(endpoint)
        delay = self.latency.get(endpoint, 0) if endpoint else 0
        if delay:
            self._sleep(delay)
        if fault in ("reset", "timeout"):
            raise DropConnection(fault, self.timeout_seconds, self._sleep)
        if fault and not fault.endswith("_after"):
            return self._with_tid(self._fault_response(endpoint, fault, req))
        with self._lock:
            resp = self._dispatch(endpoint, req)
        if fault:
            raise DropConnection(fault.removesuffix("_after"), self.timeout_seconds, self._sleep)
        return self._with_tid(resp)

    def _sleep(self, seconds: float) -> None:
        # Interruptible, so stopping a server never waits for a hanging "timeout".
        self._interrupt.wait(seconds)

    def _route(self, path: str) -> str | None:
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

    def _record(self, endpoint: str | None, req: _Request) -> None:
        name = endpoint or "unknown"
        self.counts[name] += 1
        self.requests.append((name, req.method, req.path))
        if endpoint == "token" and req.method == "POST":
            form = req.form()
            grant_type = (form.get("grant_type") or [""])[0]
            if grant_type:
                self.counts[f"token.{grant_type}"] += 1
            if grant_type == "refresh_token":
                value = (form.get("refresh_token") or [""])[0]
                if value:
                    self.refresh_counts[value] += 1

    def _take_fault(self, endpoint: str | None) -> str | None:
        if endpoint is None:
            return None
        for key in (endpoint, "*"):
            rules = self._faults.get(key, [])
            for rule in list(rules):
                if rule.rate is not None and self._random.random() >= rule.rate:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        rules.remove(rule)
                return rule.kind
        return None

    def _dispatch(self, endpoint: str | None, req: _Request) -> _Response:
        handler = {
            "discovery": self._discovery,
            "authorize": self._authorize,
            "token": self._token,
            "revoke": self._revoke_endpoint,
            "userinfo": self._userinfo,
            "jwks": self._jwks,
            "api": self._api,
            "control": self._control,
        }.get(endpoint or "")
        if handler is None:
            return _html(404, pages.GATEWAY_PAGE.format(status=404, reason="Not Found"))
        return handler(req)

    def _control(self, req: _Request) -> _Response:
        """``/_fake/``: the control page; POST ``/_fake/clock`` and ``/_fake/disconnect``."""
        path = req.path.rstrip("/")
        if req.method == "POST" and path == CONTROL_PATH + "/clock":
            try:
                seconds = float((req.form().get("seconds") or ["3700"])[0])
            except ValueError:
                return _html(400, pages.error_page("invalid_request", "seconds must be a number"))
            self.clock.advance(seconds)
            return _Response(303, [("Location", CONTROL_PATH + "/")])
        if req.method == "POST" and path == CONTROL_PATH + "/disconnect":
            realm = (req.form().get("realmId") or [""])[0]
            if not self.disconnect_url or not realm:
                return _html(400, pages.error_page("invalid_request", "no Disconnect URL or realm"))
            return _Response(303, [("Location", self.disconnect_from_quickbooks(realm))])
        if req.method not in ("GET", "HEAD") or path != CONTROL_PATH:
            return _html(404, pages.GATEWAY_PAGE.format(status=404, reason="Not Found"))
        import datetime as _dt

        now = self.clock.now()
        names = {c.realm_id: c.name for c in self.companies}
        live: dict[str, bool] = {}
        for grant in self.grants:
            if grant.realm_id is not None:
                live[grant.realm_id] = live.get(grant.realm_id, False) or grant.live
        return _html(
            200,
            pages.control_page(
                now=_dt.datetime.fromtimestamp(now, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                offset_hours=(now - time.time()) / 3600,
                companies=[
                    (names.get(realm, realm), realm, alive) for realm, alive in live.items()
                ],
                disconnect_url=self.disconnect_url,
            ),
        )

    def _with_tid(self, resp: _Response) -> _Response:
        if not any(k.lower() == "intuit_tid" for k, _ in resp.headers):
            resp.headers.append(("intuit_tid", self._tid()))
        return resp

    @staticmethod
    def _tid() -> str:
        return f"1-{secrets.token_hex(4)}-{secrets.token_hex(12)}"

    def _fault_response(self, endpoint: str | None, kind: str, req: _Request) -> _Response:
        if kind == "malformed":
            if endpoint in ("authorize",):
                return _html(200, "<html><body><h1>Connect to Quick")
            return _Response(200, [("Content-Type", JSON_TYPE)], b'{"access_token":"eyJlbmMiOi')
        status = int(kind)
        reason = HTTPStatus(status).phrase
        if endpoint == "api" and status in (429, 500):
            json_wanted = "application/json" in (req.header("accept") or "").lower()
            if status == 429:
                return self._api_fault(
                    429,
                    "ThrottleExceeded",
                    "003001",
                    "SERVICE",
                    "The request limit was reached.",
                    json_wanted,
                )
            return self._api_fault(
                500,
                "InternalServerError",
                "010000",
                "SERVICE",
                "An application error has occurred while processing your request",
                json_wanted,
            )
        if status == 500 and endpoint in ("token", "revoke", "userinfo"):
            body = {"error": "server_error", "error_description": "Internal Server Error"}
            return _json(500, body, extra=[NO_STORE])
        # 502, 503 and 429 come from Intuit's gateway as a bare HTML page.
        headers = [("Retry-After", "60")] if status in (429, 503) else []
        resp = _html(status, pages.GATEWAY_PAGE.format(status=status, reason=reason))
        resp.headers.extend(headers)
        return resp

    # ------------------------------------------------------------ discovery

    def _discovery(self, req: _Request) -> _Response:
        if req.method != "GET":
            return _json(405, {"error": "method_not_allowed"})
        path = req.path.rstrip("/")
        env = "sandbox" if path == DISCOVERY_PATHS["sandbox"] else "production"
        return _json(200, self.discovery_document(env))

    def _jwks(self, req: _Request) -> _Response:
        if req.method != "GET":
            return _json(405, {"error": "method_not_allowed"})
        return _json(200, self.jwks())

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set holding the fake's id-token signing key."""
        from jwt.algorithms import RSAAlgorithm

        jwk = RSAAlgorithm.to_jwk(self._key().public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def _key(self):
        if self._private_key is None:
            from cryptography.hazmat.primitives.asymmetric import rsa

            self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._private_key

    # ---------------------------------------------------------- authorize

    def _authorize(self, req: _Request) -> _Response:
        if req.method == "GET":
            query, submitted = req.query, False
        elif req.method == "POST":
            query, submitted = req.form(), True
        else:
            return _html(405, pages.error_page("invalid_request", "Method not allowed"))
        outcome = self._authorize_outcome(
            query, submitted=submitted, action=req.script_name + AUTHORIZE_PATH
        )
        if isinstance(outcome, FakeIntuitError):
            return _html(outcome.status, pages.error_page(outcome.error, outcome.description))
        if isinstance(outcome, _Response):
            return outcome
        return _Response(302, [("Location", outcome), ("Content-Type", "text/html")])

    def _authorize_outcome(
        self, query: dict[str, list[str]], *, submitted: bool, action: str = AUTHORIZE_PATH
    ) -> str | FakeIntuitError | _Response:
        """The redirect URL, an error page's error, or (GET) the consent page."""

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        for name in ("client_id", "redirect_uri", "response_type", "scope", "state"):
            if len(query.get(name, [])) > 1:
                return FakeIntuitError("invalid_request", f"Duplicate parameter: {name}")
        client_id = one("client_id")
        redirect_uri = one("redirect_uri")
        if not client_id or client_id != self.client_id:
            return FakeIntuitError(
                "invalid_client", "The client_id is unknown. Check your app's keys."
            )
        if not redirect_uri or redirect_uri not in self.redirect_uris:
            return FakeIntuitError(
                "invalid_redirect_uri",
                "The redirect_uri query parameter value is invalid. Make sure it is listed "
                "in the Redirect URIs section on your app's keys tab and matches it exactly.",
            )
        state = one("state")

        def back(**params: str) -> str:
            if state is not None:
                params["state"] = state
            sep = "&" if "?" in redirect_uri else "?"
            return redirect_uri + sep + urlencode(params)

        if one("response_type") != "code":
            return back(error="unsupported_response_type")
        scope_text = one("scope") or ""
        scopes = scope_text.split()
        if not scopes:
            return back(error="invalid_request")
        if any(s not in SCOPES for s in scopes):
            return back(error="invalid_scope")
        ask_company = ACCOUNTING in scopes or PAYMENT in scopes

        if not submitted:
            params = {
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": scope_text,
            }
            if state is not None:
                params["state"] = state
            html = pages.consent_page(
                action=action,
                params=params,
                scopes=scopes,
                companies=self.companies,
                ask_company=ask_company,
            )
            return _html(200, html)

        if one("action") == "cancel":
            return back(error="access_denied")
        realm_id = None
        if ask_company:
            realm_id = one("realm_id")
            if realm_id is None and self.companies:
                realm_id = self.companies[0].realm_id
            if realm_id not in {c.realm_id for c in self.companies}:
                return FakeIntuitError("invalid_request", "Choose one of your companies.")
        now = self.clock.now()
        code = _Code(
            value=f"AB11{int(now)}{_random_text(_ALNUM, 36)}",
            client_id=client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            realm_id=realm_id,
            expires_at=now + CODE_LIFETIME,
            auth_time=now,
        )
        self._codes[code.value] = code
        params = {"code": code.value}
        if state is not None:
            params["state"] = state
        if realm_id is not None:
            params["realmId"] = realm_id
        sep = "&" if "?" in redirect_uri else "?"
        return redirect_uri + sep + urlencode(params)

    # -------------------------------------------------------------- token

    def _client_auth(self, req: _Request, form: dict[str, list[str]] | None) -> bool | None:
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

    def _token(self, req: _Request) -> _Response:
        if req.method != "POST":
            return _json(
                405,
                {"error": "invalid_request", "error_description": "The token endpoint takes POST"},
            )
        if req.content_type != "application/x-www-form-urlencoded":
            return _token_error(
                400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
            )
        form = req.form()
        if any(len(v) > 1 for v in form.values()):
            return _token_error(400, "invalid_request", "Duplicate parameter")
        if not self._client_auth(req, form):
            return _token_error(401, "invalid_client")
        grant_type = (form.get("grant_type") or [""])[0]
        if not grant_type:
            return _token_error(400, "invalid_request", "grant_type is missing")
        if grant_type == "authorization_code":
            return self._exchange_code(req, form)
        if grant_type == "refresh_token":
            return self._refresh(req, form)
        return _token_error(400, "unsupported_grant_type")

    def _exchange_code(self, req: _Request, form: dict[str, list[str]]) -> _Response:
        value = (form.get("code") or [""])[0]
        redirect_uri = (form.get("redirect_uri") or [""])[0]
        if not value:
            return _token_error(400, "invalid_request", "code is missing")
        if not redirect_uri:
            return _token_error(400, "invalid_request", "redirect_uri is missing")
        code = self._codes.get(value)
        now = self.clock.now()
        if code is None or code.client_id != self.client_id:
            return _token_error(400, "invalid_grant")
        if code.used:
            # RFC 6749 §4.1.2: a reused code revokes what it was exchanged for.
            if code.grant is not None and not code.grant.revoked:
                self._revoke(code.grant)
            return _token_error(400, "invalid_grant")
        if now >= code.expires_at:
            return _token_error(400, "invalid_grant")
        if redirect_uri != code.redirect_uri:
            return _token_error(400, "invalid_grant")
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

    def _refresh(self, req: _Request, form: dict[str, list[str]]) -> _Response:
        value = (form.get("refresh_token") or [""])[0]
        if not value:
            return _token_error(400, "invalid_request", "refresh_token is missing")
        grant = self._refresh_index.get(value)
        now = self.clock.now()
        if grant is None or grant.client_id != self.client_id:
            return _token_error(400, "invalid_grant", "Incorrect or invalid refresh token")
        if grant.revoked:
            return _token_error(400, "invalid_grant", "Token invalid")
        if now >= grant.hard_expires_at:
            return _token_error(400, "invalid_grant", "Incorrect or invalid refresh token")
        if value == grant.current_refresh_token:
            if now >= grant.refresh_expires_at:
                return _token_error(400, "invalid_grant", "Incorrect or invalid refresh token")
        elif not (value == grant.previous_refresh_token and now < grant.previous_refresh_dies_at):
            return _token_error(400, "invalid_grant", "Incorrect or invalid refresh token")
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
        value = f"RT1-206-H0-{int(expires)}{_random_text(_ALNUM_LOWER, 20)}"
        return value, expires

    def _new_access_token(self) -> str:
        # A compact JWE ("dir", A128CBC-HS256) as Intuit issues today: 5 segments, ~630 chars.
        header = _b64url(b'{"enc":"A128CBC-HS256","alg":"dir"}')
        return ".".join(
            [
                header,
                "",
                _b64url(secrets.token_bytes(16)),
                _b64url(secrets.token_bytes(400)),
                _b64url(secrets.token_bytes(16)),
            ]
        )

    def _token_response(
        self, req: _Request, grant: Grant, now: float, *, with_id_token: bool
    ) -> _Response:
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
        return _json(200, body, extra=[NO_STORE, ("pragma", "no-cache")])

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

    def _revoke(self, grant: Grant) -> None:
        grant.revoked = True
        grant.revoked_at = self.clock.now()

    # ------------------------------------------------------------- revoke

    def _revoke_endpoint(self, req: _Request) -> _Response:
        if req.method != "POST":
            return _empty(405)
        auth = self._client_auth(req, None)
        if not auth:
            return _token_error(401, "invalid_client")
        if req.content_type == "application/json":
            try:
                payload = json.loads(req.body.decode("utf-8") or "null")
            except (UnicodeDecodeError, ValueError):
                return _empty(400)
            token = payload.get("token") if isinstance(payload, dict) else None
        elif req.content_type == "application/x-www-form-urlencoded":
            token = (req.form().get("token") or [None])[0]
        else:
            return _empty(400)
        if not isinstance(token, str) or not token:
            return _empty(400)
        grant = self._refresh_index.get(token) or self._access_index.get(token)
        if grant is None or grant.revoked or grant.client_id != self.client_id:
            return _empty(400)
        if token in self._access_index and token not in grant.access_tokens:
            return _empty(400)  # an expired access token no longer names the grant
        self._revoke(grant)
        return _empty(200)

    # ----------------------------------------------------------- userinfo

    def _bearer_grant(self, req: _Request) -> tuple[Grant | None, str]:
        auth = req.header("authorization") or ""
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, token
        grant = self._access_index.get(token)
        if grant is None or token not in grant.access_tokens:
            return None, token
        return grant, token

    def _userinfo(self, req: _Request) -> _Response:
        if req.method not in ("GET", "POST"):
            return _empty(405)
        grant, _ = self._bearer_grant(req)
        if grant is None:
            resp = _empty(401)
            resp.headers.append(("WWW-Authenticate", 'Bearer error="invalid_token"'))
            return resp
        if "openid" not in grant.scopes:
            resp = _empty(403)
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
        return _json(200, info, extra=[NO_STORE])

    # ---------------------------------------------------------------- API

    _API_RE = re.compile(r"^/v3/company/(?P<realm>[^/]+)/(?P<rest>.*)$")

    def _api(self, req: _Request) -> _Response:
        env = next(e for e, p in API_PATHS.items() if req.path == p or req.path.startswith(p + "/"))
        sub = req.path[len(API_PATHS[env]) :]
        json_wanted = "application/json" in (req.header("accept") or "").lower()
        grant, token = self._bearer_grant(req)
        if grant is None:
            detail = "Token expired: " + token[:12] if token else "Token invalid"
            return self._api_auth_fault(detail, json_wanted)
        match = self._API_RE.match(sub)
        if not match:
            return self._api_fault(
                404,
                "Unsupported Operation",
                "000500",
                "ValidationFault",
                "Operation not supported",
                json_wanted,
            )
        realm, rest = match.group("realm"), match.group("rest").rstrip("/")
        if grant.environment != env or realm != grant.realm_id or ACCOUNTING not in grant.scopes:
            return self._api_fault(
                403,
                "ApplicationAuthorizationFailed",
                "003100",
                "AUTHORIZATION",
                "The token does not give access to this company",
                json_wanted,
            )
        if self._throttled(realm):
            return self._api_fault(
                429,
                "ThrottleExceeded",
                "003001",
                "SERVICE",
                "The request limit was reached.",
                json_wanted,
            )
        company = next((c for c in self.companies if c.realm_id == realm), None)
        if company is None:
            company = Company(realm, f"Company {realm}")
        if req.method == "GET" and rest in (f"companyinfo/{realm}", "companyinfo/1"):
            return self._company_info(company, json_wanted)
        if rest == "query" and req.method in ("GET", "POST"):
            query = req.param("query")
            if query is None and req.method == "POST":
                query = req.body.decode("utf-8", "replace")
            normalized = " ".join((query or "").lower().split())
            if normalized.startswith("select * from companyinfo"):
                return self._company_info(company, json_wanted, as_query=True)
            return self._api_fault(
                400,
                "QueryParserError",
                "4000",
                "ValidationFault",
                "The fake Intuit answers only select * from CompanyInfo",
                json_wanted,
            )
        return self._api_fault(
            400,
            "Object Not Found",
            "610",
            "ValidationFault",
            "The fake Intuit serves CompanyInfo only",
            json_wanted,
        )

    def _throttled(self, realm: str) -> bool:
        now = self.clock.now()
        hits = self._api_hits.setdefault(realm, deque())
        while hits and (hits[0] <= now - 60 or hits[0] > now):
            hits.popleft()
        if len(hits) >= self.throttle_per_minute:
            return True
        hits.append(now)
        return False

    def _timestamp(self, epoch: float | None = None) -> str:
        moment = datetime.fromtimestamp(self.clock.now() if epoch is None else epoch, _PACIFIC)
        return moment.isoformat(timespec="milliseconds")

    def _api_auth_fault(self, detail: str, json_wanted: bool) -> _Response:
        message = "message=AuthenticationFailed; errorCode=003200; statusCode=401"
        headers = [("WWW-Authenticate", 'Bearer realm="Intuit", error="invalid_token"')]
        if json_wanted:
            body = {
                "warnings": None,
                "intuitObject": None,
                "fault": {
                    "error": [
                        {"message": message, "detail": detail, "code": "3200", "element": None}
                    ],
                    "type": "AUTHENTICATION",
                },
                "report": None,
                "queryResponse": None,
                "batchItemResponse": [],
                "attachableResponse": [],
                "syncErrorResponse": None,
                "requestId": None,
                "time": int(self.clock.now() * 1000),
                "status": None,
                "cdcresponse": [],
            }
            return _json(401, body, extra=headers)
        return self._xml_fault(401, message, detail, "3200", "AUTHENTICATION", headers)

    def _api_fault(
        self,
        status: int,
        name: str,
        error_code: str,
        kind: str,
        detail: str,
        json_wanted: bool,
    ) -> _Response:
        message = f"message={name}; errorCode={error_code}; statusCode={status}"
        code = str(int(error_code))
        if json_wanted:
            body = {
                "Fault": {
                    "Error": [{"Message": message, "Detail": detail, "code": code}],
                    "type": kind,
                },
                "time": self._timestamp(),
            }
            return _json(status, body)
        return self._xml_fault(status, message, detail, code, kind)

    def _xml_fault(
        self,
        status: int,
        message: str,
        detail: str,
        code: str,
        kind: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> _Response:
        xml = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
            f'time="{self._timestamp()}">'
            f'<Fault type="{xml_escape(kind)}"><Error code="{xml_escape(code)}">'
            f"<Message>{xml_escape(message)}</Message><Detail>{xml_escape(detail)}</Detail>"
            "</Error></Fault></IntuitResponse>"
        )
        return _Response(
            status, [("Content-Type", XML_TYPE)] + list(headers or []), xml.encode("utf-8")
        )

    def company_info(self, company: Company) -> dict[str, Any]:
        """The CompanyInfo object the API returns for ``company``."""
        created = self._timestamp(1_600_000_000)
        address = {
            "Id": "1",
            "Line1": "123 Sierra Way",
            "City": "San Pablo",
            "CountrySubDivisionCode": "CA" if company.country == "US" else "ON",
            "PostalCode": "87999",
        }
        return {
            "CompanyName": company.name,
            "LegalName": company.legal_name or company.name,
            "CompanyAddr": dict(address),
            "CustomerCommunicationAddr": dict(address),
            "LegalAddr": dict(address),
            "PrimaryPhone": {},
            "CompanyStartDate": "2024-01-01",
            "FiscalYearStartMonth": "January",
            "Country": company.country,
            "Email": {"Address": "noreply@quickbooks.com"},
            "WebAddr": {},
            "SupportedLanguages": "en",
            "NameValue": [
                {"Name": "NeoEnabled", "Value": "true"},
                {"Name": "IsQbdtMigrated", "Value": "false"},
            ],
            "domain": "QBO",
            "sparse": False,
            "Id": "1",
            "SyncToken": "4",
            "MetaData": {"CreateTime": created, "LastUpdatedTime": created},
        }

    def _company_info(
        self, company: Company, json_wanted: bool, as_query: bool = False
    ) -> _Response:
        info = self.company_info(company)
        if json_wanted:
            if as_query:
                body = {
                    "QueryResponse": {"CompanyInfo": [info], "startPosition": 1, "maxResults": 1},
                    "time": self._timestamp(),
                }
            else:
                body = {"CompanyInfo": info, "time": self._timestamp()}
            return _json(200, body)
        inner = _to_xml("CompanyInfo", info, attrs=("domain", "sparse"))
        if as_query:
            inner = f'<QueryResponse startPosition="1" maxResults="1">{inner}</QueryResponse>'
        xml = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
            f'time="{self._timestamp()}">{inner}</IntuitResponse>'
        )
        return _Response(200, [("Content-Type", XML_TYPE)], xml.encode("utf-8"))


# --------------------------------------------------------------- helpers


def _to_xml(tag: str, value: Any, attrs: tuple[str, ...] = ()) -> str:
    if isinstance(value, dict):
        attr_text = "".join(
            f' {k}="{xml_escape(_xml_scalar(value[k]))}"' for k in attrs if k in value
        )
        children = "".join(_to_xml(k, v) for k, v in value.items() if k not in attrs)
        return f"<{tag}{attr_text}>{children}</{tag}>"
    if isinstance(value, list):
        return "".join(_to_xml(tag, item) for item in value)
    return f"<{tag}>{xml_escape(_xml_scalar(value))}</{tag}>"


def _xml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _json(status: int, body: Any, extra: list[tuple[str, str]] | None = None) -> _Response:
    data = json.dumps(body).encode("utf-8")
    return _Response(status, [("Content-Type", JSON_TYPE)] + list(extra or []), data)


def _html(status: int, text: str) -> _Response:
    return _Response(status, [("Content-Type", "text/html;charset=UTF-8")], text.encode("utf-8"))


def _empty(status: int) -> _Response:
    return _Response(status, [NO_STORE])


def _token_error(status: int, error: str, description: str | None = None) -> _Response:
    body = {"error": error}
    if description:
        body["error_description"] = description
    extra = [NO_STORE]
    if status == 401:
        extra.append(("WWW-Authenticate", 'Basic realm="Intuit"'))
    return _json(status, body, extra=extra)


def _request_from_environ(environ: dict) -> _Request:
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    # wsgiref drops headers whose name holds "_" (intuit's own are sent with "-").
    body = b""
    with contextlib.suppress(ValueError, TypeError):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > 0:
            body = environ["wsgi.input"].read(length)
    path = environ.get("PATH_INFO", "") or "/"
    # WSGI gives PATH_INFO as latin-1 decoded bytes; undo that for non-ASCII paths.
    with contextlib.suppress(UnicodeError):
        path = path.encode("latin-1").decode("utf-8")
    return _Request(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        path=path,
        query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
        headers=headers,
        body=body,
        script_name=environ.get("SCRIPT_NAME", ""),
    )

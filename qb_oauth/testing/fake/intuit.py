"""``FakeIntuit``: the fake's settings and state, its URLs, and the request dispatch."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from .. import pages
from ..adapter import FakeIntuitAdapter
from ..adapter import mounted as _mounted
from ..clock import FakeClock
from ..errors import DropConnection, Trickle
from .accounting import AccountingAPI
from .authorize import AuthorizeEndpoint
from .controls import Controls
from .faults import Fault, Faults
from .openid import OpenIDEndpoints
from .records import DEFAULT_COMPANIES, Code, Company, Grant, key_id
from .routes import (
    API_PATHS,
    AUTHORIZE_PATH,
    DISCOVERY_PATHS,
    ISSUER_PATH,
    JWKS_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    USERINFO_PATHS,
    route,
)
from .tokens import TokenEndpoint
from .webhooks import INTUIT_RETRY_SCHEDULE, WebhookSender
from .wsgi import Request, Response, html_response, request_from_environ, start, with_tid


class FakeIntuit(
    AuthorizeEndpoint,
    TokenEndpoint,
    OpenIDEndpoints,
    AccountingAPI,
    Faults,
    Controls,
    WebhookSender,
):
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
        webhook_url: str | None = None,
        webhook_verifier_token: str | None = None,
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
        #: Intuit's limits per realm (docs/testing.md): requests per ``throttle_window``,
        #: Batch requests per window, requests in flight.
        self.throttle_per_minute = 500
        self.throttle_window = 60.0
        self.batch_per_minute = 120
        self.concurrency_limit = 10
        self.timeout_seconds = 30.0

        # Webhooks (fake/webhooks.py): where they go, how they are signed and retried.
        self.webhook_url = webhook_url
        self.webhook_verifier_token = webhook_verifier_token
        self.webhook_retry_schedule: tuple[float, ...] = INTUIT_RETRY_SCHEDULE
        self.webhook_time_scale = 1.0
        self.webhook_answer_timeout = 3.0
        self.webhook_max_attempts = 10
        self.webhook_transport = None
        self.webhook_deliveries = []
        self._webhook_queues = {}
        self._webhook_stop = threading.Event()

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
        #: TCP connections the HTTP server accepted (it keeps them alive, as Intuit does).
        self.connections = 0
        self.refresh_counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str]] = []
        self.grants: list[Grant] = []

        self._lock = threading.RLock()
        self._random = random.Random(seed)
        self._interrupt = threading.Event()
        self._faults: dict[str, list[Fault]] = {}
        self._codes: dict[str, Code] = {}
        self._refresh_index: dict[str, Grant] = {}
        self._access_index: dict[str, Grant] = {}
        self._id_tokens: set[str] = set()
        self._api_hits: dict[str, deque[float]] = {}
        self._batch_hits: dict[str, deque[float]] = {}
        #: Accounting API requests of each realm in flight now, the most ever, and how
        #: many were answered 429 for a limit.
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.throttled: dict[str, int] = {}
        self._private_key = None
        self.kid = key_id()

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

    def qb_oauth_settings(self, **overrides: Any) -> dict[str, Any]:
        """A ``QB_OAUTH`` setting pointing qb_oauth at this fake."""
        conf: dict[str, Any] = {
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.client_secret,
            "ENVIRONMENT": self.environment,
            "DISCOVERY_URL": self.discovery_url_for(self.environment),
            "ENDPOINTS": {"api_base": self.api_base},
        }
        if self.webhook_verifier_token:
            conf["WEBHOOK_VERIFIER_TOKEN"] = self.webhook_verifier_token
        conf.update(overrides)
        return conf

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
        resp = self.handle(request_from_environ(environ))
        body = start(resp, start_response)
        if resp.trickle is not None:
            return Trickle(body, resp.trickle, self._sleep)
        return body

    def handle(self, req: Request) -> Response:
        """Answer one request: counters, faults, latency, then the endpoint."""
        endpoint = route(req.path)
        realm = self.api_realm(req.path) if endpoint == "api" else None
        if realm is None:
            return self._handle(endpoint, req)
        with self._lock:
            allowed = self._api_enter(realm)
        try:
            if not allowed:
                with self._lock:
                    self._record(endpoint, req)
                json_wanted = "application/json" in (req.header("accept") or "").lower()
                return with_tid(self.throttle_fault(json_wanted))
            return self._handle(endpoint, req)
        finally:
            with self._lock:
                self._api_leave(realm)

    def _handle(self, endpoint: str | None, req: Request) -> Response:
        with self._lock:
            self._record(endpoint, req)
            fault = self._take_fault(endpoint)
        kind = fault.kind if fault else None
        delay = self.latency.get(endpoint, 0) if endpoint else 0
        if delay:
            self._sleep(delay)
        if kind in ("reset", "timeout"):
            raise DropConnection(kind, self.timeout_seconds, self._sleep)
        if kind and not kind.endswith("_after") and kind != "trickle":
            return with_tid(self._fault_response(endpoint, kind, req))
        with self._lock:
            resp = self._dispatch(endpoint, req)
        if kind == "trickle" and fault is not None:
            resp.trickle = fault.seconds
        elif kind:
            raise DropConnection(kind.removesuffix("_after"), self.timeout_seconds, self._sleep)
        return with_tid(resp)

    def _sleep(self, seconds: float) -> None:
        # Interruptible, so stopping a server never waits for a hanging "timeout".
        self._interrupt.wait(seconds)

    def _record(self, endpoint: str | None, req: Request) -> None:
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

    def _dispatch(self, endpoint: str | None, req: Request) -> Response:
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
            return html_response(404, pages.GATEWAY_PAGE.format(status=404, reason="Not Found"))
        return handler(req)

"""The authorization endpoint: the consent page, the redirect with a code, ``consent()``."""

from __future__ import annotations

import threading
from collections import Counter
from urllib.parse import parse_qs, urlencode, urlsplit

from .. import pages
from ..clock import FakeClock
from ..errors import FakeIntuitError
from .records import ACCOUNTING, PAYMENT, SCOPES, Code, Company, code_value
from .routes import AUTHORIZE_PATH
from .wsgi import Request, Response, html_response

CODE_LIFETIME = 600


class AuthorizeEndpoint:
    """FakeIntuit's authorization endpoint (a mixin): validates, shows consent, issues codes."""

    client_id: str
    redirect_uris: list[str]
    companies: list[Company]
    clock: FakeClock
    counts: Counter[str]
    requests: list[tuple[str, str, str]]
    _lock: threading.RLock
    _codes: dict[str, Code]

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
        assert isinstance(outcome, str)  # a submitted consent always ends in a redirect
        return outcome

    def _authorize(self, req: Request) -> Response:
        if req.method == "GET":
            query, submitted = req.query, False
        elif req.method == "POST":
            query, submitted = req.form(), True
        else:
            return html_response(405, pages.error_page("invalid_request", "Method not allowed"))
        outcome = self._authorize_outcome(
            query, submitted=submitted, action=req.script_name + AUTHORIZE_PATH
        )
        if isinstance(outcome, FakeIntuitError):
            return html_response(
                outcome.status, pages.error_page(outcome.error, outcome.description)
            )
        if isinstance(outcome, Response):
            return outcome
        return Response(302, [("Location", outcome), ("Content-Type", "text/html")])

    def _authorize_outcome(
        self, query: dict[str, list[str]], *, submitted: bool, action: str = AUTHORIZE_PATH
    ) -> str | FakeIntuitError | Response:
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
            return html_response(200, html)

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
        code = Code(
            value=code_value(now),
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

"""What a test, or a person at ``/_fake/``, does to the fake from outside Intuit's protocol."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from .. import pages
from ..clock import FakeClock
from .records import Company, Grant
from .routes import CONTROL_PATH
from .wsgi import Request, Response, html_response


class Controls:
    """FakeIntuit's counters, grant look-ups, revocation by Intuit, control page (a mixin)."""

    companies: list[Company]
    clock: FakeClock
    disconnect_url: str | None
    grants: list[Grant]
    counts: Counter[str]
    refresh_counts: Counter[str]
    connections: int
    requests: list[tuple[str, str, str]]
    max_in_flight: dict[str, int]
    throttled: dict[str, int]
    inject_fault: Callable[..., None]  # from Faults
    _lock: threading.RLock
    _access_index: dict[str, Grant]
    _refresh_index: dict[str, Grant]
    _id_tokens: set[str]
    _revoke: Callable[[Grant], None]  # from TokenEndpoint
    webhook_url: str | None  # from WebhookSender
    webhook_deliveries: list
    send_webhook: Callable[..., Any]

    def reset_counters(self) -> None:
        with self._lock:
            self.connections = 0
            self.counts.clear()
            self.refresh_counts.clear()
            self.requests.clear()
            self.max_in_flight.clear()
            self.throttled.clear()

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

    def _control(self, req: Request) -> Response:
        """``/_fake/``: the control page; POST ``/_fake/clock`` and ``/_fake/disconnect``."""
        path = req.path.rstrip("/")
        if req.method == "POST" and path == CONTROL_PATH + "/clock":
            try:
                seconds = float((req.form().get("seconds") or ["3700"])[0])
            except ValueError:
                return html_response(
                    400, pages.error_page("invalid_request", "seconds must be a number")
                )
            self.clock.advance(seconds)
            return Response(303, [("Location", CONTROL_PATH + "/")])
        if req.method == "POST" and path == CONTROL_PATH + "/fault":
            # The next N calls to an endpoint fail: endpoint=api&kind=429&times=3.
            form = req.form()
            try:
                self.inject_fault(
                    (form.get("endpoint") or ["api"])[0],
                    (form.get("kind") or ["503"])[0],
                    times=int((form.get("times") or ["1"])[0]),
                )
            except ValueError as err:
                return html_response(400, pages.error_page("invalid_request", str(err)))
            return Response(303, [("Location", CONTROL_PATH + "/")])
        if req.method == "POST" and path == CONTROL_PATH + "/disconnect":
            realm = (req.form().get("realmId") or [""])[0]
            if not self.disconnect_url or not realm:
                return html_response(
                    400, pages.error_page("invalid_request", "no Disconnect URL or realm")
                )
            return Response(303, [("Location", self.disconnect_from_quickbooks(realm))])
        if req.method == "POST" and path == CONTROL_PATH + "/webhook":
            return self._send_webhook_form(req)
        if req.method not in ("GET", "HEAD") or path != CONTROL_PATH:
            return html_response(404, pages.GATEWAY_PAGE.format(status=404, reason="Not Found"))

        now = self.clock.now()
        names = {c.realm_id: c.name for c in self.companies}
        live: dict[str, bool] = {}
        for grant in self.grants:
            if grant.realm_id is not None:
                live[grant.realm_id] = live.get(grant.realm_id, False) or grant.live
        return html_response(
            200,
            pages.control_page(
                now=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                offset_hours=(now - time.time()) / 3600,
                companies=[
                    (names.get(realm, realm), realm, alive) for realm, alive in live.items()
                ],
                disconnect_url=self.disconnect_url,
                webhooks=pages.webhook_form(
                    self.webhook_url,
                    [c.realm_id for c in self.companies],
                    len(self.webhook_deliveries),
                ),
            ),
        )

    def _send_webhook_form(self, req: Request) -> Response:
        """POST ``/_fake/webhook``: send one signed notification (not waiting for it)."""
        form = req.form()

        def field(name: str, default: str = "") -> str:
            return (form.get(name) or [default])[0].strip()

        realm, entity, entity_id = field("realmId"), field("entity"), field("id")
        fmt = field("format", "cloudevents")
        if not (self.webhook_url and realm and entity and entity_id) or fmt not in (
            "cloudevents",
            "legacy",
        ):
            return html_response(
                400, pages.error_page("invalid_request", "no webhook URL, realm, entity or id")
            )
        self.send_webhook(realm, entity, entity_id, field("operation", "updated"), fmt, wait=False)
        return Response(303, [("Location", CONTROL_PATH + "/")])

"""Faults a test injects: their kinds, the rules that pick them, and the answers they give."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from .. import pages
from .routes import ENDPOINTS
from .wsgi import JSON_TYPE, NO_STORE, Request, Response, html_response, json_response

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
    # The request is processed, then the whole answer is sent one byte at a time, a pause
    # between bytes: every read returns in time, the whole call takes far longer.
    "trickle",
)


@dataclass
class Fault:
    kind: str
    times: int | None
    rate: float | None
    seconds: float | None = None


class Faults:
    """FakeIntuit's fault injection (a mixin); ``handle()`` takes a fault per request."""

    _lock: threading.RLock
    _random: random.Random
    _faults: dict[str, list[Fault]]
    _api_fault: Callable[..., Response]  # the API's Fault envelope, from AccountingAPI
    throttle_fault: Callable[[bool], Response]  # from AccountingAPI

    def inject_fault(
        self,
        endpoint: str,
        kind: str,
        times: int | None = 1,
        rate: float | None = None,
        seconds: float | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``endpoint`` fail with ``kind``.

        With ``rate``, each call fails with that probability (seeded by
        ``FakeIntuit(seed=...)``) until ``times`` calls have failed
        (``times=None``: for ever). ``endpoint="*"`` applies to every endpoint.
        ``seconds`` is the pause between bytes of a "trickle" (and needed for it).
        """
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        if rate is not None and not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if kind == "trickle":
            if seconds is None or seconds < 0:
                raise ValueError('a "trickle" needs seconds=, the pause between bytes (>= 0)')
        elif seconds is not None:
            raise ValueError('seconds is for "trickle" only (a "timeout" lasts timeout_seconds)')
        with self._lock:
            self._faults.setdefault(endpoint, []).append(Fault(kind, times, rate, seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, endpoint: str | None) -> Fault | None:
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
                return rule
        return None

    def _fault_response(self, endpoint: str | None, kind: str, req: Request) -> Response:
        if kind == "malformed":
            if endpoint in ("authorize",):
                return html_response(200, "<html><body><h1>Connect to Quick")
            return Response(200, [("Content-Type", JSON_TYPE)], b'{"access_token":"eyJlbmMiOi')
        status = int(kind)
        reason = HTTPStatus(status).phrase
        if endpoint == "api" and status in (429, 500):
            json_wanted = "application/json" in (req.header("accept") or "").lower()
            if status == 429:
                return self.throttle_fault(json_wanted)
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
            return json_response(500, body, extra=[NO_STORE])
        # 502, 503 and 429 come from Intuit's gateway as a bare HTML page.
        headers = [("Retry-After", "60")] if status in (429, 503) else []
        resp = html_response(status, pages.GATEWAY_PAGE.format(status=status, reason=reason))
        resp.headers.extend(headers)
        return resp

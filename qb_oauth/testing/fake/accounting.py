"""The Accounting API, as far as tokens go: CompanyInfo, its 401/403/429 faults, JSON or XML.

Intuit's limits are enforced per realm as Intuit does: more than
``concurrency_limit`` (10) requests in flight, or ``throttle_per_minute`` (500)
in a ``throttle_window`` (60 s), or ``batch_per_minute`` (120) Batch requests,
are answered 429 ``ThrottleExceeded``. ``max_in_flight`` records the most
requests of each realm the fake ever had in flight at once.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from ..clock import FakeClock
from .records import ACCOUNTING, Company, Grant
from .routes import API_PATHS
from .wsgi import XML_TYPE, Request, Response, json_response

_PACIFIC = timezone(timedelta(hours=-8))


class AccountingAPI:
    """FakeIntuit's Accounting API (a mixin): CompanyInfo for the grant's realm, throttled."""

    companies: list[Company]
    clock: FakeClock
    throttle_per_minute: int
    throttle_window: float
    batch_per_minute: int
    concurrency_limit: int
    in_flight: dict[str, int]
    max_in_flight: dict[str, int]
    throttled: dict[str, int]
    _api_hits: dict[str, deque[float]]
    _batch_hits: dict[str, deque[float]]
    _bearer_grant: Callable[[Request], tuple[Grant | None, str]]  # from TokenEndpoint

    _API_RE = re.compile(r"^/v3/company/(?P<realm>[^/]+)/(?P<rest>.*)$")

    def api_realm(self, path: str) -> str | None:
        """The realm an Accounting API path names, or None."""
        for prefix in API_PATHS.values():
            if path.startswith(prefix + "/"):
                match = self._API_RE.match(path[len(prefix) :])
                return match.group("realm") if match else None
        return None

    def _api_enter(self, realm: str) -> bool:
        """One more request of ``realm`` in flight (under the lock); False when that is
        beyond ``concurrency_limit`` (the request is then answered 429)."""
        now = self.in_flight.get(realm, 0) + 1
        self.in_flight[realm] = now
        self.max_in_flight[realm] = max(self.max_in_flight.get(realm, 0), now)
        if now > self.concurrency_limit:
            self.throttled[realm] = self.throttled.get(realm, 0) + 1
            return False
        return True

    def _api_leave(self, realm: str) -> None:
        self.in_flight[realm] -= 1

    def _api(self, req: Request) -> Response:
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
        if rest == "batch" and self._throttled(realm, self._batch_hits, self.batch_per_minute):
            return self.throttle_fault(json_wanted)
        if self._throttled(realm, self._api_hits, self.throttle_per_minute):
            return self.throttle_fault(json_wanted)
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
        if rest == "batch" and req.method == "POST":
            return self._batch(company, req)
        return self._api_fault(
            400,
            "Object Not Found",
            "610",
            "ValidationFault",
            "The fake Intuit serves CompanyInfo only",
            json_wanted,
        )

    def _throttled(self, realm: str, log: dict[str, deque[float]], limit: int) -> bool:
        """Whether ``realm`` has had ``limit`` requests in the last ``throttle_window``
        (a sliding log, as exact as Intuit's); else counts this one."""
        now = self.clock.now()
        hits = log.setdefault(realm, deque())
        while hits and (hits[0] <= now - self.throttle_window or hits[0] > now):
            hits.popleft()
        if len(hits) >= limit:
            self.throttled[realm] = self.throttled.get(realm, 0) + 1
            return True
        hits.append(now)
        return False

    def _batch(self, company: Company, req: Request) -> Response:
        """Batch: each ``Query`` of CompanyInfo answered, any other item a Fault."""
        try:
            items = json.loads(req.body or b"{}").get("BatchItemRequest") or []
        except (ValueError, AttributeError):
            items = []
        answers: list[dict[str, Any]] = []
        for item in items if isinstance(items, list) else []:
            bid = item.get("bId") if isinstance(item, dict) else None
            query = " ".join(str(item.get("Query", "")).lower().split()) if bid else ""
            if query.startswith("select * from companyinfo"):
                info = self.company_info(company)
                answers.append({"bId": bid, "QueryResponse": {"CompanyInfo": [info]}})
            else:
                error = {"Message": "The fake Intuit answers only CompanyInfo", "code": "610"}
                answers.append({"bId": bid, "Fault": {"Error": [error], "type": "ValidationFault"}})
        body = {"BatchItemResponse": answers, "time": self._timestamp()}
        return json_response(200, body)

    def _timestamp(self, epoch: float | None = None) -> str:
        moment = datetime.fromtimestamp(self.clock.now() if epoch is None else epoch, _PACIFIC)
        return moment.isoformat(timespec="milliseconds")

    # ------------------------------------------------------------- faults

    def _api_auth_fault(self, detail: str, json_wanted: bool) -> Response:
        message = "message=AuthenticationFailed; errorCode=003200; statusCode=401"
        headers = [("WWW-Authenticate", 'Bearer realm="Intuit", error="invalid_token"')]
        if json_wanted:
            body: dict[str, Any] = {
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
            return json_response(401, body, extra=headers)
        return self._xml_fault(401, message, detail, "3200", "AUTHENTICATION", headers)

    def throttle_fault(self, json_wanted: bool) -> Response:
        """Intuit's 429 ``ThrottleExceeded`` (errorCode 003001)."""
        return self._api_fault(
            429,
            "ThrottleExceeded",
            "003001",
            "SERVICE",
            "The request limit was reached.",
            json_wanted,
        )

    def _api_fault(
        self,
        status: int,
        name: str,
        error_code: str,
        kind: str,
        detail: str,
        json_wanted: bool,
    ) -> Response:
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
            return json_response(status, body)
        return self._xml_fault(status, message, detail, code, kind)

    def _xml_fault(
        self,
        status: int,
        message: str,
        detail: str,
        code: str,
        kind: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        xml = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
            f'time="{self._timestamp()}">'
            f'<Fault type="{xml_escape(kind)}"><Error code="{xml_escape(code)}">'
            f"<Message>{xml_escape(message)}</Message><Detail>{xml_escape(detail)}</Detail>"
            "</Error></Fault></IntuitResponse>"
        )
        return Response(
            status, [("Content-Type", XML_TYPE)] + list(headers or []), xml.encode("utf-8")
        )

    # -------------------------------------------------------- CompanyInfo

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
    ) -> Response:
        info = self.company_info(company)
        if json_wanted:
            if as_query:
                body = {
                    "QueryResponse": {"CompanyInfo": [info], "startPosition": 1, "maxResults": 1},
                    "time": self._timestamp(),
                }
            else:
                body = {"CompanyInfo": info, "time": self._timestamp()}
            return json_response(200, body)
        inner = _to_xml("CompanyInfo", info, attrs=("domain", "sparse"))
        if as_query:
            inner = f'<QueryResponse startPosition="1" maxResults="1">{inner}</QueryResponse>'
        xml = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
            f'time="{self._timestamp()}">{inner}</IntuitResponse>'
        )
        return Response(200, [("Content-Type", XML_TYPE)], xml.encode("utf-8"))


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

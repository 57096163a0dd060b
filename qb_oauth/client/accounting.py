"""The slice of the Accounting API the token lifecycle needs: CompanyInfo.

Connecting reads it to prove the new token covers the realm and to name the
company; the admin's "check connection" reads it through the API session.
Both name the company with :func:`company_name`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import throttle
from ..conf import qb_settings
from ..exceptions import IntuitUnavailable
from ..redact import holds_tokens
from .discovery import api_base
from .responses import intuit_tid, json_body, raise_for_status
from .sessions import send, shared_http_session

__all__ = ["company_info", "company_name"]


@holds_tokens
def company_info(
    access_token: str, realm_id: str, environment: str | None = None
) -> dict[str, Any]:
    """The CompanyInfo entity of ``realm_id`` from the Accounting API.

    Its errors carry the HTTP ``status``: for a token just issued, a 401 or 403
    means the token does not cover this realm in this environment.
    """
    url = f"{api_base(environment)}/v3/company/{realm_id}/companyinfo/{realm_id}"
    # Within the realm's limits like every API call (not metered: no connection yet).
    with throttle.within_limits(environment or qb_settings.ENVIRONMENT, realm_id):
        response = send(
            shared_http_session(),
            "GET",
            url,
            params={"minorversion": qb_settings.MINOR_VERSION},
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
    raise_for_status(response, "Accounting API")
    info = json_body(response, "CompanyInfo").get("CompanyInfo")
    if not isinstance(info, dict):
        raise IntuitUnavailable(
            "CompanyInfo answer without a CompanyInfo.", intuit_tid=intuit_tid(response)
        )
    return info


def company_name(info: Mapping[str, Any]) -> str:
    """The name to show for a company, from its CompanyInfo entity: ``CompanyName``,
    else ``LegalName``, else empty.

    One rule wherever a connection is named (when it is made, when it is
    checked), so the admin and the user see the same name either way.
    """
    return str(info.get("CompanyName") or info.get("LegalName") or "")

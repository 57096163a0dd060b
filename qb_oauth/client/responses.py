"""How qb_oauth reads Intuit's answers, and what it raises for them.

Public seams, shared by the client's own calls and the API session
(:mod:`qb_oauth.api`), so that an answer is classified one way wherever it is
met: a 429 is an outage whether the token endpoint or the Accounting API sent
it. No message built here holds a token: only statuses, Intuit's error codes
and a fault's message and code.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import requests

from ..exceptions import IntuitError, IntuitUnavailable, QuickBooksError

__all__ = [
    "error_code",
    "intuit_tid",
    "is_outage",
    "json_body",
    "network_error",
    "raise_for_status",
    "timeout_error",
]


def intuit_tid(response: requests.Response) -> str | None:
    """Intuit's transaction id of ``response``: what Intuit support asks for.

    Read as ``intuit_tid`` and, should a layer in between have renamed it,
    ``intuit-tid``.
    """
    return response.headers.get("intuit_tid") or response.headers.get("intuit-tid")


def is_outage(status: int) -> bool:
    """Whether an HTTP status means "Intuit is busy or down, try later" (429, 5xx).

    Classified by status alone: a 429 has been seen as XML even when JSON was
    asked for, so the body cannot be relied on.
    """
    return status == 429 or status >= 500


def _parsed(response: requests.Response) -> Any:
    """The body as JSON, or None when it is not JSON (an HTML error page, XML, nothing)."""
    try:
        return response.json()
    except ValueError:
        return None


def json_body(response: requests.Response, what: str) -> dict[str, Any]:
    """The JSON object in ``response``'s body.

    Anything else (no JSON, a list, a string) is :class:`IntuitUnavailable`, not
    ``ValueError``: a broken answer is Intuit's passing fault, and the callers'
    retry and backoff treat it like an outage. ``what`` names the answer in the
    message.
    """
    data = _parsed(response)
    if not isinstance(data, dict):
        raise IntuitUnavailable(
            f"Intuit sent a malformed {what} (HTTP {response.status_code}).",
            intuit_tid=intuit_tid(response),
            status=response.status_code,
        )
    return data


def error_code(response: requests.Response) -> str | None:
    """The OAuth ``error`` of an error answer (``invalid_grant``, ``invalid_client`` …),
    or None when the body carries none."""
    data = _parsed(response)
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return None


def _fault_text(response: requests.Response) -> str:
    """A short description of an Accounting API fault: its message and code only,
    since Intuit's ``detail`` may echo part of the token."""
    data = _parsed(response)
    try:
        fault = data.get("fault") or data.get("Fault") or {}
        error = (fault.get("error") or fault.get("Error") or [{}])[0]
        parts = [error.get("message") or error.get("Message"), error.get("code")]
        return "; ".join(str(p) for p in parts if p)[:200]
    except (AttributeError, IndexError, TypeError):
        return ""


def _error_for(response: requests.Response, what: str) -> QuickBooksError:
    status = response.status_code
    tid = intuit_tid(response)
    if is_outage(status):
        return IntuitUnavailable(
            f"Intuit's {what} answered HTTP {status}.", intuit_tid=tid, status=status
        )
    detail = error_code(response) or _fault_text(response)
    suffix = f": {detail}" if detail else ""
    return IntuitError(
        f"Intuit's {what} answered HTTP {status}{suffix}.", intuit_tid=tid, status=status
    )


def raise_for_status(
    response: requests.Response, what: str, *, ok: Container[int] = (200,)
) -> None:
    """Raise the :class:`~qb_oauth.exceptions.QuickBooksError` for an answer whose
    status is not in ``ok``.

    An outage (:func:`is_outage`) is :class:`IntuitUnavailable`, which callers
    retry; any other status is :class:`IntuitError`, which they do not, with
    Intuit's error code or fault text so the admin can tell a revoked token from
    a wrong realm. Both carry the status and ``intuit_tid``.
    """
    if response.status_code not in ok:
        raise _error_for(response, what)


def timeout_error(what: str) -> IntuitUnavailable:
    """The error for a call to Intuit that ran out of time (``HTTP_TIMEOUT``)."""
    return IntuitUnavailable(f"Timed out talking to Intuit ({what}).")


def network_error(
    err: requests.RequestException, what: str, *, timed_out: bool = False
) -> IntuitUnavailable:
    """The error for a call to Intuit that failed on the way (``err``).

    ``timed_out`` says the call's deadline passed: the watchdog then ends the
    call by shutting its socket, which ``requests`` reports as a connection
    error, and the caller should hear "timed out", not "could not reach". The
    message names the exception's type only: requests' messages carry URLs.
    """
    if timed_out or isinstance(err, requests.Timeout):
        return timeout_error(what)
    return IntuitUnavailable(f"Could not reach Intuit ({what}): {type(err).__name__}.")

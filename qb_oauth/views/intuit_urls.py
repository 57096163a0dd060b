"""The pages behind the Disconnect URL and the Reconnect URL registered at Intuit.

Intuit sends the user's browser here with a ``realmId`` by GET; anyone can forge such
a link, so neither page acts on the link alone (see each view).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from .. import tokens
from ..adapter import get_adapter
from ..conf import qb_settings
from ..exceptions import ImproperlyConfigured, IntuitUnavailable, QuickBooksError
from .common import clean_realm, connections_url, logger, login_required, misconfiguration_page

if TYPE_CHECKING:
    from ..models import QuickBooksConnectionQuerySet


def _users_realm(request: HttpRequest, realm_id: str) -> QuickBooksConnectionQuerySet:
    """The connections to ``realm_id`` in this site's environment that the adapter shows
    ``request`` (``connections_for``): the user's own by default, a team's for a team
    adapter (docs/ownership.md)."""
    return (
        get_adapter()
        .connections_for(request)
        .filter(realm_id=realm_id, environment=qb_settings.ENVIRONMENT)
    )


def _managed(request: HttpRequest, connections: list) -> list:
    """Those of ``connections`` the adapter lets ``request`` disconnect or reconnect."""
    adapter = get_adapter()
    return [c for c in connections if adapter.can_manage(request, c)]


@never_cache
@login_required
@require_GET
@misconfiguration_page
def intuit_disconnect(request: HttpRequest) -> HttpResponse:
    """Intuit's Disconnect URL: the user disconnected the app inside QuickBooks.

    A GET that may change state, because that is how Intuit calls it; it is
    safe against forged links because the grant is checked at Intuit first
    (:func:`qb_oauth.tokens.disconnected_at_intuit`): tokens are dropped only
    when Intuit confirms they no longer work.
    """
    realm_id = clean_realm(request.GET.get("realmId")) or ""
    found = (
        _managed(request, list(_users_realm(request, realm_id).with_token_presence()))
        if realm_id
        else []
    )
    if not found:
        return render(
            request,
            "qb_oauth/intuit_disconnect.html",
            {"outcome": "unknown", "realm_id": realm_id},
            status=404,
        )
    results = []
    status = 200
    for connection in found:
        try:
            gone = tokens.disconnected_at_intuit(connection, actor=request.user)
        except IntuitUnavailable as err:
            logger.warning(
                "Disconnect URL for connection %s: could not confirm: %s",
                connection.pk,
                err.describe(),
            )
            results.append((connection, "unavailable"))
            status = 503
            continue
        except ImproperlyConfigured:
            raise  # the site's mistake, not Intuit's refusal: misconfiguration_page
        except QuickBooksError as err:
            logger.warning("Disconnect URL for connection %s: %s", connection.pk, err.describe())
            results.append((connection, "error"))
            status = status if status == 503 else 502
            continue
        results.append((connection, "disconnected" if gone else "still_connected"))
    outcomes = {outcome for _conn, outcome in results}
    outcome = outcomes.pop() if len(outcomes) == 1 else "mixed"
    return render(
        request,
        "qb_oauth/intuit_disconnect.html",
        {"outcome": outcome, "results": results, "realm_id": realm_id},
        status=status,
    )


@never_cache
@login_required
@require_safe
@misconfiguration_page
def reconnect(request: HttpRequest) -> HttpResponse:
    """Intuit's Reconnect URL: a page with a Reconnect button (a POST to ``connect``).

    A GET never starts a flow by itself: otherwise any page could send the
    user's browser through Intuit and back (login CSRF in reverse).
    """
    realm_id = clean_realm(request.GET.get("realmId")) or ""
    found = _managed(request, list(_users_realm(request, realm_id))) if realm_id else []
    connection = found[0] if found else None
    return render(
        request,
        "qb_oauth/reconnect.html",
        {"connection": connection, "realm_id": realm_id, "next_url": connections_url()},
    )

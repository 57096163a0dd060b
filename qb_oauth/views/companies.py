"""The signed-in user's QuickBooks companies: the connections page and Disconnect.

Which companies those are is the adapter's answer (``connections_for``), and who may
disconnect one its ``can_manage`` (docs/ownership.md)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_safe

from .. import tokens
from ..adapter import get_adapter
from ..exceptions import (
    CredentialsMismatch,
    ImproperlyConfigured,
    IntuitUnavailable,
    QuickBooksError,
    TokensNotSaved,
)
from ..models import ConnectionState
from .common import (
    company_label,
    connections_url,
    for_error,
    logger,
    login_required,
    misconfiguration_page,
    safe_next,
)

#: What the user is told when a disconnect fails: (exception, message), the first
#: matching class wins.
_DISCONNECT_FAILURES = (
    (
        IntuitUnavailable,
        gettext_lazy(
            "We couldn't reach QuickBooks, so %(company)s is still connected and nothing "
            "was changed. Please try again in a few minutes."
        ),
    ),
    (
        TokensNotSaved,
        gettext_lazy(
            "QuickBooks ended the connection to %(company)s, but this site couldn't save "
            "the change yet. It will be saved shortly; nothing is lost."
        ),
    ),
    (
        CredentialsMismatch,
        gettext_lazy(
            "%(company)s was connected through another QuickBooks app than the one this "
            "site uses now, so it can't be disconnected from here. Remove the app inside "
            "QuickBooks instead, or ask the site's administrators."
        ),
    ),
    (
        QuickBooksError,
        gettext_lazy(
            "QuickBooks refused to disconnect %(company)s, so nothing was changed. If this "
            "happens again, please tell the site's administrators."
        ),
    ),
)


@never_cache
@login_required
@require_safe
def connections(request: HttpRequest) -> HttpResponse:
    """The signed-in user's QuickBooks companies, with Connect, Reconnect and Disconnect:
    the adapter's ``connections_for(request)``; the buttons only where ``can_manage``."""
    adapter = get_adapter()
    # No token is decrypted to draw the page: one row that no key opens breaks only itself.
    items = list(
        adapter.connections_for(request)
        .with_token_presence()
        .order_by("company_name", "realm_id", "environment")
    )
    for item in items:
        item.qb_can_manage = adapter.can_manage(request, item)
    return render(
        request,
        "qb_oauth/connections.html",
        {"connections": items, "next_url": request.get_full_path()},
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
@misconfiguration_page
def disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the confirmation page. POST: revoke at Intuit, drop the tokens.

    Only a connection of the adapter's ``connections_for(request)`` that it lets the
    request manage (``can_manage``); any other is a 404, as if it did not exist."""
    adapter = get_adapter()
    connection = get_object_or_404(adapter.connections_for(request).with_token_presence(), pk=pk)
    if not adapter.can_manage(request, connection):
        raise Http404("No such QuickBooks connection.")
    next_url = safe_next(request, request.POST.get("next")) or connections_url()
    if request.method == "GET":
        return render(request, "qb_oauth/disconnect_confirm.html", {"connection": connection})
    if connection.state == ConnectionState.DISCONNECTED and not connection.has_tokens:
        messages.info(
            request,
            _("%(company)s was already disconnected.") % {"company": company_label(connection)},
        )
        return HttpResponseRedirect(next_url)
    try:
        tokens.revoke(connection, actor=request.user, by="user")
    except ImproperlyConfigured:
        raise  # the site's mistake, not Intuit's refusal: misconfiguration_page
    except QuickBooksError as err:
        logger.warning("Disconnect of connection %s: %s", connection.pk, err.describe())
        _cls, text = for_error(_DISCONNECT_FAILURES, err)
        messages.error(request, str(text) % {"company": company_label(connection)})
        return HttpResponseRedirect(next_url)
    messages.success(
        request, _("Disconnected from %(company)s.") % {"company": company_label(connection)}
    )
    return HttpResponseRedirect(next_url)

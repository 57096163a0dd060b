"""Connect to QuickBooks and the callback: the OAuth flow itself (docs/web-flow.md).

The state is issued here and consumed before the code is exchanged; every refusal is a
page or a message, and nothing is stored unless :func:`qb_oauth.tokens.connect`
succeeded.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from .. import client, state, tokens
from ..adapter import get_adapter, owner_of
from ..conf import qb_settings
from ..exceptions import (
    ImproperlyConfigured,
    IntuitUnavailable,
    QuickBooksError,
    RealmMismatch,
    ReauthorizationRequired,
    TokensNotSaved,
)
from ..models import owner_key
from .common import (
    clean_realm,
    company_label,
    connections_url,
    error_page,
    for_error,
    logger,
    login_required,
    login_url,
    misconfiguration_page,
    safe_next,
)

#: The callback's parameters; RFC 6749 3.1: none may be repeated.
_CALLBACK_PARAMS = ("code", "state", "realmId", "error")

_UNAVAILABLE_TITLE = gettext_lazy("QuickBooks can't be reached right now")
_INCOMPLETE_TITLE = gettext_lazy("QuickBooks sent back an incomplete answer")
_DECLINED = gettext_lazy("You chose not to connect to QuickBooks. Nothing was changed.")


def _redirect_uri(request: HttpRequest) -> str:
    return qb_settings.REDIRECT_URI or request.build_absolute_uri(reverse("qb_oauth:callback"))


def _printable(value: str | None, limit: int = 64) -> str:
    """An error code from the query string, made safe to log and show (it is untrusted)."""
    text = "".join(c for c in (value or "") if c.isalnum() or c in "_-.")
    return text[:limit] or "?"


# -- connect --------------------------------------------------------------------------------


@never_cache
@login_required
@require_POST
@misconfiguration_page
def connect(request: HttpRequest) -> HttpResponse:
    """Start the flow: a single-use state in the session, then off to Intuit's consent page.

    POST only (with Django's CSRF check), so no link or image on another site
    can start a flow in the user's name. ``next`` is the page to come back to
    (same-site only; default: the connections page); ``realm_id`` is the
    company a Reconnect button is for (Intuit lets the user pick anyway), and
    ``connection`` the connection it reconnects: the new tokens go to that
    connection's owner. Otherwise the owner is the adapter's ``get_owner(request)``
    (docs/ownership.md); either is remembered in the state, and a connection or an
    owner the adapter refuses is a 404.
    """
    next_url = safe_next(request, request.POST.get("next")) or connections_url()
    realm_id = clean_realm(request.POST.get("realm_id"))
    owner = _chosen_owner(request)
    redirect_uri = _redirect_uri(request)
    scopes = qb_settings.SCOPES
    value = state.issue(
        request,
        next_url=next_url,
        redirect_uri=redirect_uri,
        scopes=scopes,
        realm_id=realm_id,
        owner=owner,
    )
    try:
        url = client.authorization_url(state=value, redirect_uri=redirect_uri, scopes=scopes)
    except IntuitUnavailable as err:
        # The discovery document could not be fetched: Intuit (or the network) is down.
        logger.warning("Could not start a QuickBooks connection: %s", err.describe())
        return error_page(
            request,
            reason="unavailable",
            title=_UNAVAILABLE_TITLE,
            message=_("Nothing was changed. Please try again in a few minutes."),
            status=503,
            next_url=next_url,
        )
    return HttpResponseRedirect(url)


def _chosen_owner(request: HttpRequest) -> tuple[int, str]:
    """(content type id, object id) of what this flow's connection will belong to."""
    adapter = get_adapter()
    pk = request.POST.get("connection")
    if pk:
        found = (
            adapter.connections_for(request).filter(pk=pk).first()
            if pk.isascii() and pk.isdigit()
            else None
        )
        if found is None or not adapter.can_manage(request, found):
            raise Http404("No such QuickBooks connection.")
        return found.owner_content_type_id, found.owner_object_id
    owner = adapter.get_owner(request)
    if owner is None:
        raise Http404("Nothing to connect QuickBooks for.")
    content_type, object_id = owner_key(owner)
    return content_type.pk, object_id


def _pending_owner(request: HttpRequest, pending: state.PendingState):
    """The owner chosen when the flow started, or None when it no longer exists."""
    if pending.owner:
        content_type_id, object_id = pending.owner
        return owner_of(content_type_id, object_id)
    return get_adapter().get_owner(request)  # a state issued before owners existed


# -- callback -------------------------------------------------------------------------------

_STATE_MESSAGES = {
    state.MISSING: gettext_lazy(
        "This page was opened without the information QuickBooks sends back. "
        "Please start again from your QuickBooks connections."
    ),
    state.UNKNOWN: gettext_lazy(
        "This connection request didn't start in this browser session, or it was already "
        "finished. Please start again from your QuickBooks connections."
    ),
    state.REUSED: gettext_lazy(
        "This connection request was already used. Please start again from your QuickBooks "
        "connections."
    ),
    state.EXPIRED: gettext_lazy(
        "This connection request took too long and has expired. Please start again from your "
        "QuickBooks connections."
    ),
    state.OTHER_USER: gettext_lazy(
        "This connection request was started by another account. Please start again from your "
        "QuickBooks connections."
    ),
}

#: What the callback shows when the code exchange fails: (exception, reason, status,
#: title, message), the first matching class wins. Nothing was stored in any case.
_CONNECT_FAILURES = (
    (
        ReauthorizationRequired,
        "invalid_grant",
        400,
        gettext_lazy("QuickBooks didn't accept this connection request"),
        gettext_lazy(
            "The authorization from QuickBooks was refused, perhaps because it was "
            "already used or took too long. Nothing was changed. Please try again."
        ),
    ),
    (
        IntuitUnavailable,
        "unavailable",
        503,
        _UNAVAILABLE_TITLE,
        gettext_lazy(
            "We couldn't finish connecting because QuickBooks didn't answer. "
            "Nothing was changed. Please try again in a few minutes."
        ),
    ),
    (
        TokensNotSaved,
        "not_saved",
        503,
        gettext_lazy("The connection couldn't be saved"),
        gettext_lazy(
            "QuickBooks accepted the connection, but this site couldn't save it. Nothing was "
            "changed. Please try connecting again in a few minutes."
        ),
    ),
    (
        RealmMismatch,
        "realm_mismatch",
        400,
        gettext_lazy("QuickBooks sent back an answer for another company"),
        gettext_lazy(
            "The authorization from QuickBooks doesn't cover the company named in the "
            "answer. Nothing was changed. Please try connecting again."
        ),
    ),
    (
        QuickBooksError,
        "intuit_error",
        502,
        gettext_lazy("QuickBooks refused the connection"),
        gettext_lazy(
            "QuickBooks answered with an error. Nothing was changed. If this happens "
            "again, please tell the site's administrators."
        ),
    ),
)


@never_cache
@require_GET
@misconfiguration_page
def callback(request: HttpRequest) -> HttpResponse:
    """Where Intuit sends the browser back, with ``code``, ``state``, ``realmId`` or ``error``.

    Each failure renders ``qb_oauth/error.html`` (or, for a refusal at Intuit
    with a valid state, goes back to the remembered page with a message), and
    stores nothing. The state is consumed before the code is exchanged.
    """
    if not request.user.is_authenticated:
        # The session ended while the user was at Intuit: its states are gone with it.
        # Don't carry the code through the login page; they start again once signed in.
        messages.warning(
            request,
            _("Please sign in again, then connect to QuickBooks once more."),
        )
        return redirect_to_login(connections_url(), login_url())

    params = request.GET
    repeated = [name for name in _CALLBACK_PARAMS if len(params.getlist(name)) > 1]
    if repeated:
        # Which value would be the real one? Refuse, and leave the state unused.
        logger.warning("QuickBooks callback refused: repeated %s.", ", ".join(repeated))
        return error_page(
            request,
            reason="incomplete",
            title=_INCOMPLETE_TITLE,
            message=_(
                "The answer from QuickBooks is malformed. Nothing was changed. "
                "Please try connecting again."
            ),
            status=400,
        )
    error = params.get("error")
    try:
        pending = state.consume(request, params.get("state"))
    except state.StateRefused as refused:
        logger.warning(
            "QuickBooks callback refused: state %s (%s).",
            refused.reason,
            "error " + _printable(error) if error else "no error",
        )
        if error == "access_denied":
            return error_page(
                request,
                reason="access_denied",
                title=_("QuickBooks wasn't connected"),
                message=_DECLINED,
                status=400,
            )
        return error_page(
            request,
            reason=f"state_{refused.reason}",
            title=_("This connection request can't be completed"),
            message=_STATE_MESSAGES.get(refused.reason, _STATE_MESSAGES[state.UNKNOWN]),
            status=400,
        )

    next_url = safe_next(request, pending.next_url) or connections_url()
    if error:
        if error == "access_denied":
            messages.info(request, str(_DECLINED))
        else:
            logger.warning(
                "QuickBooks answered the authorization with error %s.", _printable(error)
            )
            messages.error(
                request,
                _(
                    "QuickBooks didn't connect (it answered “%(error)s”). Nothing was changed. "
                    "If this happens again, please tell the site's administrators."
                )
                % {"error": _printable(error)},
            )
        return HttpResponseRedirect(next_url)

    code = params.get("code")
    realm_id = clean_realm(params.get("realmId"))
    if not code or realm_id is None:
        logger.warning(
            "QuickBooks callback without %s.", "a code" if not code else "a valid realmId"
        )
        return error_page(
            request,
            reason="incomplete",
            title=_INCOMPLETE_TITLE,
            message=_(
                "The answer from QuickBooks is missing the company or the authorization. "
                "Nothing was changed. Please try connecting again."
            ),
            status=400,
            next_url=next_url,
        )

    owner = _pending_owner(request, pending)
    if owner is None:
        logger.warning("QuickBooks callback refused: the connection's owner no longer exists.")
        return error_page(
            request,
            reason="owner_gone",
            title=_("This connection request can't be completed"),
            message=_(
                "What this connection was for no longer exists. Nothing was changed. "
                "Please start again from your QuickBooks connections."
            ),
            status=400,
            next_url=next_url,
        )
    try:
        connection, created = tokens.connect(
            user=request.user,
            owner=owner,
            code=code,
            realm_id=realm_id,
            redirect_uri=pending.redirect_uri,
            scopes=pending.scopes or None,
        )
    except ImproperlyConfigured:
        raise  # the site's mistake, not Intuit's refusal: misconfiguration_page
    except QuickBooksError as err:
        _cls, reason, status, title, message = for_error(_CONNECT_FAILURES, err)
        logger.warning("QuickBooks callback failed (%s): %s", reason, err.describe())
        return error_page(
            request,
            reason=reason,
            title=title,
            message=message,
            status=status,
            next_url=next_url,
        )

    if created:
        text = _("Connected to %(company)s.")
    else:
        text = _("Reconnected to %(company)s.")
    messages.success(request, text % {"company": company_label(connection)})
    return HttpResponseRedirect(next_url)

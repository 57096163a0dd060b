"""The web flow: the user's companies, Connect to QuickBooks, the callback, disconnect,
and the landing pages of Intuit's Disconnect and Reconnect URLs.

Views only call :mod:`qb_oauth.tokens` (which writes tokens) and
:mod:`qb_oauth.client` (which builds Intuit's URL); every failure becomes a
page or a message, never a 500, and nothing stored changes unless the
operation succeeded. No token ever reaches a template, a message or a log.
See docs/web-flow.md.
"""

from __future__ import annotations

import logging
import threading
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import (
    require_GET,
    require_http_methods,
    require_POST,
    require_safe,
)
from oauthlib.oauth2 import InsecureTransportError

from . import client, state, tokens
from .conf import qb_settings
from .exceptions import (
    ConnectionNotActive,
    CredentialsMismatch,
    ImproperlyConfigured,
    IntuitUnavailable,
    QuickBooksError,
    RealmMismatch,
    ReauthorizationRequired,
    TokensNotSaved,
)
from .models import ConnectionState, QuickBooksConnection

logger = logging.getLogger("qb_oauth.views")

#: Intuit's realm ids are numeric strings; the model holds 32 characters.
_REALM_MAX = 32


def _login_url() -> str:
    return qb_settings.LOGIN_URL or settings.LOGIN_URL


def login_required(view):
    """Like Django's, but honouring ``QB_OAUTH["LOGIN_URL"]`` (read at request time)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), _login_url())
        return view(request, *args, **kwargs)

    return wrapper


def _connections_url() -> str:
    return reverse("qb_oauth:connections")


def _safe_next(request: HttpRequest, url: str | None) -> str | None:
    """``url`` if it stays on this site (no open redirect), else None."""
    if not url:
        return None
    if url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return None


def _redirect_uri(request: HttpRequest) -> str:
    return qb_settings.REDIRECT_URI or request.build_absolute_uri(reverse("qb_oauth:callback"))


def _valid_realm(realm_id: str | None) -> bool:
    return (
        bool(realm_id) and realm_id.isascii() and realm_id.isdigit() and len(realm_id) <= _REALM_MAX
    )


#: The callback's parameters; RFC 6749 3.1: none may be repeated.
_CALLBACK_PARAMS = ("code", "state", "realmId", "error")


def _error_page(
    request: HttpRequest,
    *,
    reason: str,
    title: str,
    message: str,
    status: int,
    retry: bool = True,
    next_url: str | None = None,
) -> HttpResponse:
    """The page shown when a flow could not finish (``qb_oauth/error.html``)."""
    return render(
        request,
        "qb_oauth/error.html",
        {
            "reason": reason,
            "title": title,
            "message": message,
            "retry": retry and request.user.is_authenticated,
            "next_url": next_url or _connections_url(),
        },
        status=status,
    )


def _company(connection: QuickBooksConnection) -> str:
    return connection.company_name or _("company %(realm)s") % {"realm": connection.realm_id}


# -- configuration mistakes ---------------------------------------------------------------

#: The configuration problems this process has logged. A misconfigured site would
#: otherwise log the same ERROR on every click of every user: one line per distinct
#: problem per process is enough to find it (``manage.py check`` names it too), so
#: each is logged once, without a traceback. Bounded, in case messages ever vary.
_logged_problems: set[str] = set()
_logged_lock = threading.Lock()
_LOGGED_PROBLEMS_MAX = 100


def _log_misconfiguration(err: Exception) -> None:
    problem = str(err) or type(err).__name__
    with _logged_lock:
        if problem in _logged_problems or len(_logged_problems) >= _LOGGED_PROBLEMS_MAX:
            return
        _logged_problems.add(problem)
    logger.error("QuickBooks is not set up correctly on this site: %s", problem)


def _misconfiguration_page(view):
    """Answer a configuration mistake with the ``misconfigured`` page (503), never a 500.

    qb_oauth's :class:`~qb_oauth.exceptions.ImproperlyConfigured` (missing keys, a bad
    ENVIRONMENT, an endpoint that is not https) and oauthlib's InsecureTransportError
    are the site's mistakes, not Intuit's and not the user's: the page says so without
    naming a setting's value, and the problem is logged once (see above).
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except (ImproperlyConfigured, InsecureTransportError) as err:
            _log_misconfiguration(err)
            return _error_page(
                request,
                reason="misconfigured",
                title=_("QuickBooks isn't set up correctly on this site"),
                message=_(
                    "This site's QuickBooks connection is not set up correctly. Nothing was "
                    "changed. Please tell the site's administrators."
                ),
                status=503,
                retry=False,
            )

    return wrapper


# -- the user's companies ---------------------------------------------------------------


@never_cache
@login_required
@require_safe
def connections(request: HttpRequest) -> HttpResponse:
    """The signed-in user's QuickBooks companies, with Connect, Reconnect and Disconnect."""
    # No token is decrypted to draw the page: one row that no key opens breaks only itself.
    items = (
        QuickBooksConnection.objects.for_user(request.user)
        .with_token_presence()
        .order_by("company_name", "realm_id", "environment")
    )
    return render(
        request,
        "qb_oauth/connections.html",
        {"connections": items, "next_url": request.get_full_path()},
    )


# -- connect --------------------------------------------------------------------------------


@never_cache
@login_required
@require_POST
@_misconfiguration_page
def connect(request: HttpRequest) -> HttpResponse:
    """Start the flow: a single-use state in the session, then off to Intuit's consent page.

    POST only (with Django's CSRF check), so no link or image on another site
    can start a flow in the user's name. ``next`` is the page to come back to
    (same-site only; default: the connections page); ``realm_id`` is the
    company a Reconnect button is for (Intuit lets the user pick anyway).
    """
    next_url = _safe_next(request, request.POST.get("next")) or _connections_url()
    realm_id = request.POST.get("realm_id") or None
    if realm_id is not None and not _valid_realm(realm_id):
        realm_id = None
    redirect_uri = _redirect_uri(request)
    scopes = qb_settings.SCOPES
    value = state.issue(
        request, next_url=next_url, redirect_uri=redirect_uri, scopes=scopes, realm_id=realm_id
    )
    try:
        url = client.authorization_url(state=value, redirect_uri=redirect_uri, scopes=scopes)
    except IntuitUnavailable as err:
        # The discovery document could not be fetched: Intuit (or the network) is down.
        logger.warning("Could not start a QuickBooks connection: %s", err.describe())
        return _error_page(
            request,
            reason="unavailable",
            title=_("QuickBooks can't be reached right now"),
            message=_("Nothing was changed. Please try again in a few minutes."),
            status=503,
            next_url=next_url,
        )
    return HttpResponseRedirect(url)


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


def _state_message(reason: str) -> str:
    return str(_STATE_MESSAGES.get(reason, _STATE_MESSAGES[state.UNKNOWN]))


@never_cache
@require_GET
@_misconfiguration_page
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
        return redirect_to_login(_connections_url(), _login_url())

    params = request.GET
    repeated = [name for name in _CALLBACK_PARAMS if len(params.getlist(name)) > 1]
    if repeated:
        # Which value would be the real one? Refuse, and leave the state unused.
        logger.warning("QuickBooks callback refused: repeated %s.", ", ".join(repeated))
        return _error_page(
            request,
            reason="incomplete",
            title=_("QuickBooks sent back an incomplete answer"),
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
            return _error_page(
                request,
                reason="access_denied",
                title=_("QuickBooks wasn't connected"),
                message=_("You chose not to connect to QuickBooks. Nothing was changed."),
                status=400,
            )
        return _error_page(
            request,
            reason=f"state_{refused.reason}",
            title=_("This connection request can't be completed"),
            message=_state_message(refused.reason),
            status=400,
        )

    next_url = _safe_next(request, pending.next_url) or _connections_url()
    if error:
        if error == "access_denied":
            messages.info(
                request, _("You chose not to connect to QuickBooks. Nothing was changed.")
            )
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
    realm_id = params.get("realmId")
    if not code or not _valid_realm(realm_id):
        logger.warning(
            "QuickBooks callback without %s.", "a code" if not code else "a valid realmId"
        )
        return _error_page(
            request,
            reason="incomplete",
            title=_("QuickBooks sent back an incomplete answer"),
            message=_(
                "The answer from QuickBooks is missing the company or the authorization. "
                "Nothing was changed. Please try connecting again."
            ),
            status=400,
            next_url=next_url,
        )

    try:
        connection, created = tokens.connect(
            user=request.user,
            code=code,
            realm_id=realm_id,
            redirect_uri=pending.redirect_uri,
            scopes=pending.scopes or None,
        )
    except ImproperlyConfigured:
        raise  # the site's mistake, not Intuit's refusal: _misconfiguration_page
    except QuickBooksError as err:
        reason, status, title, message = _connect_failure(err)
        logger.warning("QuickBooks callback failed (%s): %s", reason, err.describe())
        return _error_page(
            request,
            reason=reason,
            title=str(title),
            message=str(message),
            status=status,
            next_url=next_url,
        )

    if created:
        text = _("Connected to %(company)s.")
    else:
        text = _("Reconnected to %(company)s.")
    messages.success(request, text % {"company": _company(connection)})
    return HttpResponseRedirect(next_url)


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
        gettext_lazy("QuickBooks can't be reached right now"),
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


def _connect_failure(err: QuickBooksError):
    return next(row[1:] for row in _CONNECT_FAILURES if isinstance(err, row[0]))


def _printable(value: str | None, limit: int = 64) -> str:
    """An error code from the query string, made safe to log and show (it is untrusted)."""
    text = "".join(c for c in (value or "") if c.isalnum() or c in "_-.")
    return text[:limit] or "?"


# -- disconnect -----------------------------------------------------------------------------


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
@_misconfiguration_page
def disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the confirmation page. POST: revoke at Intuit, drop the tokens (owner only)."""
    connection = get_object_or_404(
        QuickBooksConnection.objects.with_token_presence(), pk=pk, user=request.user
    )
    next_url = _safe_next(request, request.POST.get("next")) or _connections_url()
    if request.method == "GET":
        return render(request, "qb_oauth/disconnect_confirm.html", {"connection": connection})
    if connection.state == ConnectionState.DISCONNECTED and not connection.has_tokens:
        messages.info(
            request, _("%(company)s was already disconnected.") % {"company": _company(connection)}
        )
        return HttpResponseRedirect(next_url)
    try:
        tokens.revoke(connection, actor=request.user, by="user")
    except ImproperlyConfigured:
        raise  # the site's mistake, not Intuit's refusal: _misconfiguration_page
    except QuickBooksError as err:
        logger.warning("Disconnect of connection %s: %s", connection.pk, err.describe())
        if isinstance(err, IntuitUnavailable):
            text = _(
                "We couldn't reach QuickBooks, so %(company)s is still connected and nothing "
                "was changed. Please try again in a few minutes."
            )
        elif isinstance(err, TokensNotSaved):
            text = _(
                "QuickBooks ended the connection to %(company)s, but this site couldn't save "
                "the change yet. It will be saved shortly; nothing is lost."
            )
        elif isinstance(err, CredentialsMismatch):
            text = _(
                "%(company)s was connected through another QuickBooks app than the one this "
                "site uses now, so it can't be disconnected from here. Remove the app inside "
                "QuickBooks instead, or ask the site's administrators."
            )
        else:
            text = _(
                "QuickBooks refused to disconnect %(company)s, so nothing was changed. If this "
                "happens again, please tell the site's administrators."
            )
        messages.error(request, text % {"company": _company(connection)})
        return HttpResponseRedirect(next_url)
    messages.success(
        request, _("Disconnected from %(company)s.") % {"company": _company(connection)}
    )
    return HttpResponseRedirect(next_url)


# -- Intuit's Disconnect and Reconnect URLs ----------------------------------------------------


@never_cache
@login_required
@require_GET
@_misconfiguration_page
def intuit_disconnect(request: HttpRequest) -> HttpResponse:
    """Intuit's Disconnect URL: the user disconnected the app inside QuickBooks.

    A GET that may change state, because that is how Intuit calls it; it is
    safe against forged links because the grant is checked at Intuit first
    (:func:`qb_oauth.tokens.disconnected_at_intuit`): tokens are dropped only
    when Intuit confirms they no longer work.
    """
    realm_id = request.GET.get("realmId")
    environment = qb_settings.ENVIRONMENT
    found = []
    if _valid_realm(realm_id):
        found = list(
            QuickBooksConnection.objects.for_user(request.user)
            .with_token_presence()
            .filter(realm_id=realm_id, environment=environment)
        )
    if not found:
        return render(
            request,
            "qb_oauth/intuit_disconnect.html",
            {"outcome": "unknown", "realm_id": realm_id if _valid_realm(realm_id) else ""},
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
            raise  # the site's mistake, not Intuit's refusal: _misconfiguration_page
        except (ConnectionNotActive, QuickBooksError) as err:
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
@_misconfiguration_page
def reconnect(request: HttpRequest) -> HttpResponse:
    """Intuit's Reconnect URL: a page with a Reconnect button (a POST to ``connect``).

    A GET never starts a flow by itself: otherwise any page could send the
    user's browser through Intuit and back (login CSRF in reverse).
    """
    realm_id = request.GET.get("realmId")
    connection = None
    if _valid_realm(realm_id):
        connection = (
            QuickBooksConnection.objects.for_user(request.user)
            .filter(realm_id=realm_id, environment=qb_settings.ENVIRONMENT)
            .first()
        )
    return render(
        request,
        "qb_oauth/reconnect.html",
        {
            "connection": connection,
            "realm_id": realm_id if _valid_realm(realm_id) else "",
            "next_url": _connections_url(),
        },
    )

"""What every page of the web flow shares: the login gate, the error page, the answer to a
configuration mistake, and the checks on what the browser sends (``next``, a realm id)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from oauthlib.oauth2 import InsecureTransportError

from ..conf import qb_settings
from ..exceptions import ImproperlyConfigured, QuickBooksError
from ..models import QuickBooksConnection

#: One logger for every view, the name docs/deployment.md gives operators.
logger = logging.getLogger("qb_oauth.views")

View = Callable[..., HttpResponse]
Row = TypeVar("Row", bound=Sequence[Any])

#: Intuit's realm ids are numeric strings; the model holds 32 characters.
REALM_MAX = 32


def login_url() -> str:
    return qb_settings.LOGIN_URL or settings.LOGIN_URL


def login_required(view: View) -> View:
    """Like Django's, but honouring ``QB_OAUTH["LOGIN_URL"]`` (read at request time)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), login_url())
        return view(request, *args, **kwargs)

    return wrapper


def connections_url() -> str:
    return reverse("qb_oauth:connections")


def safe_next(request: HttpRequest, url: str | None) -> str | None:
    """``url`` if it stays on this site (no open redirect), else None."""
    if not url:
        return None
    if url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return None


def clean_realm(value: str | None) -> str | None:
    """``value`` if it can be an Intuit realm id, else None: it comes from the browser."""
    if value and value.isascii() and value.isdigit() and len(value) <= REALM_MAX:
        return value
    return None


def company_label(connection: QuickBooksConnection) -> str:
    """The company's name for a message, or its realm id before Intuit has named it."""
    return connection.company_name or _("company %(realm)s") % {"realm": connection.realm_id}


def for_error(table: Sequence[Row], err: QuickBooksError) -> Row:
    """The first row of ``table`` whose class (its first item) ``err`` is an instance of.

    Each table lists the narrow classes first and ends with :class:`QuickBooksError`, so
    every error finds its row.
    """
    return next(row for row in table if isinstance(err, row[0]))


def error_page(
    request: HttpRequest,
    *,
    reason: str,
    title: Any,
    message: Any,
    status: int,
    retry: bool = True,
    next_url: str | None = None,
) -> HttpResponse:
    """The page shown when a flow could not finish (``qb_oauth/error.html``).

    ``reason`` is the code a site's override of the template can test; ``title`` and
    ``message`` may be lazy translations.
    """
    return render(
        request,
        "qb_oauth/error.html",
        {
            "reason": reason,
            "title": str(title),
            "message": str(message),
            "retry": retry and request.user.is_authenticated,
            "next_url": next_url or connections_url(),
        },
        status=status,
    )


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


def misconfiguration_page(view: View) -> View:
    """Answer a configuration mistake with the ``misconfigured`` page (503), never a 500.

    qb_oauth's :class:`~qb_oauth.exceptions.ImproperlyConfigured` (missing keys, a bad
    ENVIRONMENT, an endpoint that is not https) and oauthlib's InsecureTransportError
    are the site's mistakes, not Intuit's and not the user's: the page says so without
    naming a setting's value, and the problem is logged once (see above). A view that
    catches :class:`QuickBooksError` re-raises ImproperlyConfigured to reach this.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except (ImproperlyConfigured, InsecureTransportError) as err:
            _log_misconfiguration(err)
            return error_page(
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

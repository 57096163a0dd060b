"""Views of the test project only (not shipped): what a site would do with a connection."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.html import escape

from qb_oauth.exceptions import QuickBooksError
from qb_oauth.models import QuickBooksConnection


@login_required
def e2e_company(request, pk):
    """The company's name read live from the Accounting API through ``api_session()``."""
    connection = get_object_or_404(QuickBooksConnection, pk=pk, user=request.user)
    try:
        with connection.api_session() as session:
            response = session.get(f"companyinfo/{connection.realm_id}")
            info = session.json_or_raise(response, "CompanyInfo").get("CompanyInfo") or {}
    except QuickBooksError as err:
        return HttpResponse(
            f'<p id="error">{escape(type(err).__name__)}: {escape(err.describe())}</p>',
            status=502,
        )
    return HttpResponse(
        "<!DOCTYPE html><html lang='en'><head><title>Company</title></head><body>"
        f'<h1 id="company">{escape(info.get("CompanyName", ""))}</h1></body></html>'
    )


@login_required
def refresh_now(request, pk):
    """A forced refresh whose failures are left to Django's error handling (500 page)."""
    from qb_oauth import tokens

    connection = get_object_or_404(QuickBooksConnection, pk=pk, user=request.user)
    tokens.refresh(connection, force=True)
    return HttpResponse("refreshed")


@login_required
def api_call(request, pk):
    """An Accounting API call whose failures are left to Django's error handling."""
    connection = get_object_or_404(QuickBooksConnection, pk=pk, user=request.user)
    with connection.api_session() as session:
        response = session.get(f"companyinfo/{connection.realm_id}")
    return HttpResponse(str(response.status_code))

"""The example site's home page: the user's companies, each read live from QuickBooks."""

from django.conf import settings
from django.shortcuts import render

from qb_oauth.adapter import get_adapter
from qb_oauth.exceptions import QuickBooksError, ReauthorizationRequired
from qb_oauth.models import WebhookEvent


def live_company_name(connection):
    """The company's name as QuickBooks says it now, through the authorised API session.

    ``api_session()`` attaches a valid access token, refreshing it (once, however
    many requests ask) when it is nearly expired, and retries once after a 401.
    """
    with connection.api_session() as session:
        response = session.get(f"companyinfo/{connection.realm_id}")
        info = session.json_or_raise(response, "CompanyInfo").get("CompanyInfo") or {}
    return info.get("CompanyName") or info.get("LegalName") or ""


def home(request):
    rows = []
    events = []
    if request.user.is_authenticated:
        # The adapter's answer: the user's own companies, or (QB_DEMO_ORGANIZATIONS=1)
        # their organization's.
        for connection in get_adapter().connections_for(request):
            row = {"connection": connection, "live_name": None, "problem": None}
            if connection.is_active:
                try:
                    row["live_name"] = live_company_name(connection)
                except ReauthorizationRequired:
                    row["problem"] = "QuickBooks no longer accepts this connection: reconnect it."
                except QuickBooksError:
                    row["problem"] = "QuickBooks didn't answer just now; reload in a moment."
                connection.refresh_from_db()  # the state may have changed on the way
            rows.append(row)
        # What Intuit notified about these companies (qb_oauth stores it; the
        # webhook_received signal is where a real site would act on it).
        realms = {row["connection"].realm_id for row in rows}
        events = list(WebhookEvent.objects.filter(realm_id__in=realms)[:10])
    organizations = (
        list(request.user.organizations.all())
        if settings.QB_DEMO_ORGANIZATIONS and request.user.is_authenticated
        else []
    )
    return render(
        request,
        "example/home.html",
        {
            "rows": rows,
            "events": events,
            "intuit": settings.QB_INTUIT,
            "organizations": organizations,
        },
    )

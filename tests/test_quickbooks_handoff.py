"""connection.quickbooks_client(): python-quickbooks with qb_oauth's tokens, against the fake."""

import pytest
from quickbooks import QuickBooks
from quickbooks.objects.company_info import CompanyInfo

from qb_oauth.models import QuickBooksConnection

pytestmark = pytest.mark.django_db(transaction=True)


def test_reads_company_info(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    qb = conn.quickbooks_client()
    info = CompanyInfo.get(conn.realm_id, qb=qb)
    assert info.CompanyName == conn.company_name
    assert QuickBooks.api_url_v3 == "https://quickbooks.api.intuit.com/v3"  # class untouched


def test_refreshes_through_single_flight_refresh(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    qb = conn.quickbooks_client()
    fake_intuit.clock.advance(3700)  # the token dies at Intuit: 401, refresh, retry
    fake_intuit.reset_counters()
    info = CompanyInfo.get(conn.realm_id, qb=qb)
    assert info.CompanyName == conn.company_name
    assert fake_intuit.counts["token.refresh_token"] == 1
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
    assert stored.events.first().kind == "refreshed"

"""The worked example of docs/testing.md, kept running: a site's tests against the fake."""

from __future__ import annotations

import time

import pytest
import time_machine

from qb_oauth.models import QuickBooksConnection
from qb_oauth.tokens import get_access_token

pytestmark = pytest.mark.django_db(transaction=True)


def connect_with_quickbooks(client, fake, realm_id=None):
    """Click "Connect to QuickBooks", consent at the fake Intuit, follow the callback."""
    response = client.post("/quickbooks/connect/")
    assert response.status_code == 302
    callback_url = fake.consent(response["Location"], realm_id=realm_id)
    return client.get(callback_url)


def test_user_connects_a_company(client, django_user_model, fake_intuit):
    user = django_user_model.objects.create_user("ann", password="pw")
    client.force_login(user)
    realm = fake_intuit.companies[1].realm_id

    response = connect_with_quickbooks(client, fake_intuit, realm_id=realm)

    assert response.status_code == 302
    connection = QuickBooksConnection.objects.get(user=user, realm_id=realm)
    assert connection.company_name == fake_intuit.companies[1].name
    assert fake_intuit.counts["token.authorization_code"] == 1


def test_tokens_are_refreshed_when_they_expire(client, django_user_model, fake_intuit):
    user = django_user_model.objects.create_user("ann", password="pw")
    client.force_login(user)
    connect_with_quickbooks(client, fake_intuit)
    connection = QuickBooksConnection.objects.get(user=user)
    first = get_access_token(connection)

    # The fake's default clock follows time.time(), so one time_machine.travel
    # moves the site and Intuit together: an hour later the access token is stale.
    with time_machine.travel(time.time() + 3700, tick=False):
        second = get_access_token(connection)
    assert second != first
    assert fake_intuit.counts["token.refresh_token"] == 1


def test_intuit_down_keeps_the_connection(client, django_user_model, fake_intuit):
    from qb_oauth.exceptions import IntuitUnavailable
    from qb_oauth.tokens import refresh

    user = django_user_model.objects.create_user("ann", password="pw")
    client.force_login(user)
    connect_with_quickbooks(client, fake_intuit)
    connection = QuickBooksConnection.objects.get(user=user)

    fake_intuit.inject_fault("token", "503", times=1)
    with pytest.raises(IntuitUnavailable):
        refresh(connection, force=True)
    connection.refresh_from_db()
    assert connection.state == "active"


def test_user_disconnects_inside_quickbooks(client, django_user_model, fake_intuit):
    user = django_user_model.objects.create_user("ann", password="pw")
    client.force_login(user)
    fake_intuit.disconnect_url = "http://testserver/quickbooks/intuit/disconnect/"
    connect_with_quickbooks(client, fake_intuit)
    connection = QuickBooksConnection.objects.get(user=user)

    client.get(fake_intuit.disconnect_from_quickbooks(connection.realm_id))

    connection.refresh_from_db()
    assert connection.state == "disconnected"

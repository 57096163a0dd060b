"""Intuit's own Python client and python-quickbooks, unchanged, against the fake Intuit.

If they cannot tell the fake from Intuit, neither can qb_oauth.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.exceptions import AuthorizationException, QuickbooksException
from quickbooks.objects.company_info import CompanyInfo

from qb_oauth.testing import FakeIntuit, FakeIntuitServer

CALLBACK = "http://testserver/quickbooks/callback/"


@pytest.fixture(params=["server", "inprocess"])
def fake(request, monkeypatch):
    # requests-oauthlib (under python-quickbooks) refuses plain http otherwise.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    # The default clock follows the real time: intuit-oauth checks the id token's
    # exp with datetime.utcnow() and PyJWT its iat with time.time().
    fake = FakeIntuit(redirect_uris=[CALLBACK])
    runner = FakeIntuitServer(fake) if request.param == "server" else fake.mounted()
    with runner:
        yield fake


@pytest.fixture
def quickbooks_at_fake(fake, monkeypatch):
    """Point python-quickbooks' API base (a class attribute) at the fake; restored after."""
    monkeypatch.setattr(QuickBooks, "api_url_v3", fake.api_base + "/v3")
    monkeypatch.setattr(QuickBooks, "sandbox_api_url_v3", fake.api_base + "/v3")


def connected_client(fake, scopes):
    auth_client = AuthClient(
        fake.client_id, fake.client_secret, CALLBACK, environment=fake.sandbox_discovery_url
    )
    url = auth_client.get_authorization_url(scopes)
    realm = fake.companies[1].realm_id
    redirect = fake.consent(url, realm_id=realm)
    query = {k: v[0] for k, v in parse_qs(urlsplit(redirect).query).items()}
    assert query["state"] == auth_client.state_token
    auth_client.get_bearer_token(query["code"], realm_id=query["realmId"])
    auth_client.used_code = query["code"]  # for the reuse test
    return auth_client, realm


def test_intuit_oauth_full_cycle(fake):
    scopes = [Scopes.ACCOUNTING, Scopes.OPENID, Scopes.EMAIL, Scopes.PROFILE]
    auth_client = AuthClient(
        fake.client_id, fake.client_secret, CALLBACK, environment=fake.sandbox_discovery_url
    )
    assert auth_client.token_endpoint == fake.token_url
    assert auth_client.issuer_uri == fake.issuer
    url = auth_client.get_authorization_url(scopes)
    assert url.startswith(fake.authorization_url + "?")
    realm = fake.companies[1].realm_id
    query = parse_qs(urlsplit(fake.consent(url, realm_id=realm)).query)
    assert query["state"] == [auth_client.state_token]

    auth_client.get_bearer_token(query["code"][0], realm_id=query["realmId"][0])
    assert auth_client.realm_id == realm
    assert auth_client.expires_in == 3600
    assert auth_client.x_refresh_token_expires_in == 8726400
    assert auth_client.refresh_token == fake.current_refresh_token(realm)
    # intuit-oauth sets id_token only after validate_id_token() checked issuer,
    # audience, expiry and the RS256 signature against the fake's JWKS.
    assert auth_client.id_token is not None
    assert auth_client.id_token in fake.issued_tokens()
    assert fake.counts["jwks"] == 1

    first_access = auth_client.access_token
    auth_client.refresh()
    assert auth_client.access_token != first_access
    assert fake.counts["token.refresh_token"] == 1

    info = auth_client.get_user_info().json()
    assert info["sub"] == fake.user["sub"]
    assert info["email"] == fake.user["email"]
    assert info["givenName"] == fake.user["givenName"]

    assert auth_client.revoke() is True
    assert fake.grant_for_realm(realm) is None
    with pytest.raises(AuthClientError) as err:
        auth_client.refresh()
    assert err.value.status_code == 400
    assert b"invalid_grant" in err.value.content
    assert err.value.intuit_tid


def test_intuit_oauth_second_exchange_and_wrong_secret(fake):
    auth_client, realm = connected_client(fake, [Scopes.ACCOUNTING])
    with pytest.raises(AuthClientError) as err:
        auth_client.get_bearer_token(auth_client.used_code, realm_id=realm)
    assert err.value.status_code == 400
    assert fake.grant_for_realm(realm) is None  # the reused code killed the grant

    wrong = AuthClient(fake.client_id, "not-the-secret", CALLBACK, fake.sandbox_discovery_url)
    url = wrong.get_authorization_url([Scopes.ACCOUNTING])
    code = parse_qs(urlsplit(fake.consent(url)).query)["code"][0]
    with pytest.raises(AuthClientError) as err:
        wrong.get_bearer_token(code)
    assert err.value.status_code == 401
    assert b"invalid_client" in err.value.content


def test_python_quickbooks_reads_company_info(fake, quickbooks_at_fake):
    auth_client, realm = connected_client(fake, [Scopes.ACCOUNTING])
    qb = QuickBooks(
        auth_client=auth_client,
        refresh_token=auth_client.refresh_token,
        company_id=realm,
        minorversion=75,
    )
    info = CompanyInfo.get(realm, qb=qb)
    assert info.CompanyName == fake.companies[1].name
    assert info.Country == "US"
    assert CompanyInfo.get(1, qb=qb).Id == "1"
    listed = CompanyInfo.all(qb=qb)
    assert [c.CompanyName for c in listed] == [fake.companies[1].name]
    assert fake.counts["api"] == 3


def test_python_quickbooks_refreshes_then_fails_after_revoke(fake, quickbooks_at_fake):
    auth_client, realm = connected_client(fake, [Scopes.ACCOUNTING])
    refresh_token = auth_client.refresh_token
    auth_client.access_token = None  # python-quickbooks then refreshes first
    qb = QuickBooks(
        auth_client=auth_client, refresh_token=refresh_token, company_id=realm, minorversion=75
    )
    assert fake.counts["token.refresh_token"] == 1
    assert CompanyInfo.get(realm, qb=qb).CompanyName == fake.companies[1].name
    fake.revoke_grant(realm)
    with pytest.raises(AuthorizationException) as err:
        CompanyInfo.get(realm, qb=qb)
    assert "003200" in err.value.detail


def test_python_quickbooks_production_base_is_a_different_environment(fake, monkeypatch):
    # A sandbox token sent to the production API: 403, errorCode 003100.
    monkeypatch.setattr(QuickBooks, "api_url_v3", fake.api_base_for("production") + "/v3")
    monkeypatch.setattr(QuickBooks, "sandbox_api_url_v3", fake.api_base_for("production") + "/v3")
    auth_client, realm = connected_client(fake, [Scopes.ACCOUNTING])
    qb = QuickBooks(
        auth_client=auth_client,
        refresh_token=auth_client.refresh_token,
        company_id=realm,
        minorversion=75,
    )
    # python-quickbooks files code 3100 under ValidationException (2000-4999)
    with pytest.raises(QuickbooksException) as err:
        CompanyInfo.get(realm, qb=qb)
    assert err.value.error_code == 3100
    assert "errorCode=003100" in err.value.message


def test_class_attributes_are_restored():
    # Runs after the tests above in file order: monkeypatch put them back.
    assert QuickBooks.api_url_v3 == "https://quickbooks.api.intuit.com/v3"
    assert QuickBooks.sandbox_api_url_v3 == "https://sandbox-quickbooks.api.intuit.com/v3"

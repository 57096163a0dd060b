"""Plain http: allowed to loopback inside qb_oauth's own sessions, refused (with a check and
a page, never a 500) anywhere else, and never by changing the process's environment.

The in-process fake's fixture sets ``OAUTHLIB_INSECURE_TRANSPORT``; every test here
that is about the default removes it first (``no_insecure_transport``), as a real
site's process would be.
"""

import logging
import os
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.checks import run_checks
from django.test import Client
from django.urls import reverse

from qb_oauth import client, tokens
from qb_oauth.exceptions import ImproperlyConfigured
from qb_oauth.models import ConnectionEvent, ConnectionState, QuickBooksConnection

from .local_servers import RecordingServer

pytestmark = pytest.mark.django_db

VARIABLE = "OAUTHLIB_INSECURE_TRANSPORT"
CALLBACK = "http://testserver/quickbooks/callback/"
BASE = {"CLIENT_ID": "id", "CLIENT_SECRET": "secret"}


@pytest.fixture
def no_insecure_transport(monkeypatch):
    """The process as a real site runs it: oauthlib's variable unset (after the fixtures set it)."""

    def remove():
        monkeypatch.delenv(VARIABLE, raising=False)

    remove()
    return remove


@pytest.fixture
def loopback_fake(fake_intuit, no_insecure_transport):
    no_insecure_transport()  # the fake_intuit fixture set it again
    assert fake_intuit.base_url.startswith("http://127.0.0.1:")
    return fake_intuit


@pytest.fixture
def alice(user):
    browser = Client(raise_request_exception=False)
    browser.force_login(user)
    return browser


def start(browser, **data):
    response = browser.post(reverse("qb_oauth:connect"), data)
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def counts():
    return QuickBooksConnection.objects.count(), ConnectionEvent.objects.count()


def assert_misconfigured_page(response, *secrets):
    assert response.status_code == 503
    html = response.content.decode()
    assert 'data-reason="misconfigured"' in html
    assert "not set up correctly" in html
    assert "Nothing was changed" in html
    assert "QuickBooks refused" not in html
    for secret in secrets:
        assert secret not in html


def error_records(caplog):
    return [r for r in caplog.records if r.name == "qb_oauth.views" and r.levelno >= logging.ERROR]


# -- loopback http without the variable -----------------------------------------------------------


def test_the_whole_flow_works_over_loopback_http_without_the_variable(alice, user, loopback_fake):
    environ_before = dict(os.environ)
    location = start(alice)
    assert location.startswith(loopback_fake.base_url + "/")  # plain http, as the fake serves it
    back = loopback_fake.consent(location, realm_id=loopback_fake.companies[0].realm_id)
    response = alice.get(back)
    assert response.status_code == 302, response.content[:500]
    connection = QuickBooksConnection.objects.get(user=user)
    assert connection.state == ConnectionState.ACTIVE
    assert connection.company_name == loopback_fake.companies[0].name

    tokens.refresh(connection, force=True)  # the token endpoint again, refresh_token grant
    assert loopback_fake.counts["token.refresh_token"] == 1
    with connection.api_session() as session:
        assert session.get(f"companyinfo/{connection.realm_id}").status_code == 200

    response = alice.post(reverse("qb_oauth:disconnect", args=[connection.pk]))
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.state == ConnectionState.DISCONNECTED and not connection.has_tokens
    assert loopback_fake.counts["revoke"] == 1

    # qb_oauth allowed plain http inside its own sessions only: the process is untouched.
    assert dict(os.environ) == environ_before
    assert VARIABLE not in os.environ


def test_the_openid_flow_works_over_loopback_http_without_the_variable(
    alice, user, loopback_fake, settings
):
    settings.QB_OAUTH = {
        **settings.QB_OAUTH,
        "SCOPES": ["com.intuit.quickbooks.accounting", "openid", "email"],
    }
    back = loopback_fake.consent(start(alice))
    assert alice.get(back).status_code == 302
    connection = QuickBooksConnection.objects.get(user=user)
    assert connection.intuit_user_id  # the id token was verified against the JWKS
    assert VARIABLE not in os.environ


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://127.8.9.10:8000/x",
        "http://[::1]:8765/x",
        "http://localhost:8765/x",
        "HTTP://LOCALHOST/x",
        "https://intuit.example.com/x",
    ],
)
def test_loopback_http_and_https_are_allowed(url):
    from qb_oauth import transport

    assert transport.is_allowed(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://intuit.example.com/x",
        "http://127.0.0.1.nip.io/x",
        "http://localhost.example.com/x",
        "http://app.localhost/x",  # a resolver may send *.localhost anywhere
        "http://127.0.0.1@intuit.example.com/x",
        "http://10.0.0.8/x",
        "ftp://127.0.0.1/x",
    ],
)
def test_other_plain_endpoints_are_not(url):
    from qb_oauth import transport

    assert not transport.is_allowed(url)


# -- the system check -----------------------------------------------------------------------------


def e003(settings):
    return [m for m in run_checks() if m.id == "qb_oauth.E003"]


@pytest.mark.parametrize("debug", [False, True])
def test_non_loopback_http_is_e003_with_debug_on_and_off(settings, debug):
    settings.DEBUG = debug
    settings.QB_OAUTH = {
        **BASE,
        "DISCOVERY_URL": "http://intuit.example.com/.well-known/openid_sandbox_configuration",
        "ENDPOINTS": {"token": "http://intuit.example.com/token"},
    }
    messages = e003(settings)
    assert sorted(m.msg.split(" is ")[0] for m in messages) == [
        "QB_OAUTH['DISCOVERY_URL']",
        "QB_OAUTH['ENDPOINTS']['token']",
    ]
    for message in messages:
        assert "https" in message.hint and "loopback" in message.hint
        assert VARIABLE in message.hint


@pytest.mark.parametrize("debug", [False, True])
def test_loopback_http_passes_the_check(settings, debug):
    settings.DEBUG = debug
    settings.QB_OAUTH = {
        **BASE,
        "DISCOVERY_URL": "http://127.0.0.1:8765/.well-known/x",
        "ENDPOINTS": {"api_base": "http://localhost:8765/api", "token": "http://[::1]:1/t"},
    }
    assert e003(settings) == []


def test_e003_shows_no_userinfo_of_the_url(settings):
    settings.QB_OAUTH = {**BASE, "ENDPOINTS": {"token": "http://user:pa55@intuit.example.com/t"}}
    (message,) = e003(settings)
    assert "pa55" not in message.msg and "intuit.example.com" in message.msg


# -- at run time: qb_oauth's own ImproperlyConfigured, naming the key -----------------------------


def test_a_plain_discovery_url_raises_our_error_naming_the_key(settings, no_insecure_transport):
    settings.QB_OAUTH = {**BASE, "DISCOVERY_URL": "http://intuit.example.com/.well-known/x"}
    with pytest.raises(ImproperlyConfigured, match=r"QB_OAUTH\['DISCOVERY_URL'\]") as caught:
        client.authorization_url(state="s", redirect_uri=CALLBACK)
    assert "intuit.example.com" in str(caught.value)
    assert "qb_oauth.E003" in str(caught.value)


def test_a_plain_endpoint_override_raises_our_error_naming_the_key(
    settings, loopback_fake, no_insecure_transport
):
    settings.QB_OAUTH = {
        **settings.QB_OAUTH,
        "ENDPOINTS": {**settings.QB_OAUTH["ENDPOINTS"], "token": "http://intuit.example.com/t"},
    }
    with pytest.raises(ImproperlyConfigured, match=r"QB_OAUTH\['ENDPOINTS'\]\['token'\]"):
        client.exchange_code(code="c", redirect_uri=CALLBACK)
    assert loopback_fake.counts["token"] == 0


def test_a_discovery_document_listing_plain_endpoints_is_refused(settings, no_insecure_transport):
    document = {
        "authorization_endpoint": "http://intuit.example.com/authorize",
        "token_endpoint": "https://intuit.example.com/token",
    }
    with RecordingServer().json(document) as server:
        settings.QB_OAUTH = {**BASE, "DISCOVERY_URL": server.url("/.well-known/x")}
        with pytest.raises(ImproperlyConfigured) as caught:
            client.authorization_url(state="s", redirect_uri=CALLBACK)
    text = str(caught.value)
    assert "authorization_endpoint" in text and "QB_OAUTH['DISCOVERY_URL']" in text


def test_with_the_variable_set_oauthlibs_own_rule_applies(fake_intuit_inprocess, user, monkeypatch):
    # The developer's choice: a non-loopback plain endpoint (the in-process fake at
    # http://fake-intuit.test) works as it did before, with a check error only.
    monkeypatch.setenv(VARIABLE, "1")
    browser = Client()
    browser.force_login(user)
    back = fake_intuit_inprocess.consent(start(browser))
    assert browser.get(back).status_code == 302
    assert QuickBooksConnection.objects.filter(user=user).exists()


# -- the views: a page, never a 500 ---------------------------------------------------------------


def test_connect_to_a_non_loopback_plain_endpoint_is_a_503_page(
    alice, fake_intuit_inprocess, no_insecure_transport, caplog
):
    no_insecure_transport()
    with caplog.at_level(logging.DEBUG, logger="qb_oauth"):
        response = alice.post(reverse("qb_oauth:connect"))
    assert_misconfigured_page(response, "qb-test-secret")
    assert fake_intuit_inprocess.counts["discovery"] == 0  # refused before asking anyone
    (record,) = error_records(caplog) or [None]
    if record is not None:  # logged once per process: an earlier test may have logged it
        assert "QB_OAUTH['DISCOVERY_URL']" in record.getMessage()
        assert record.exc_info is None


def test_a_misconfiguration_is_logged_once_per_problem(alice, settings, caplog):
    first, second = f"staging-{uuid.uuid4().hex[:8]}", f"live-{uuid.uuid4().hex[:8]}"
    settings.QB_OAUTH = {**settings.QB_OAUTH, "ENVIRONMENT": first}
    with caplog.at_level(logging.DEBUG, logger="qb_oauth"):
        for _ in range(3):
            assert_misconfigured_page(alice.post(reverse("qb_oauth:connect")))
        settings.QB_OAUTH = {**settings.QB_OAUTH, "ENVIRONMENT": second}
        assert_misconfigured_page(alice.post(reverse("qb_oauth:connect")))
    records = error_records(caplog)
    assert [first in r.getMessage() for r in records] == [True, False]
    assert [second in r.getMessage() for r in records] == [False, True]
    assert all(r.exc_info is None and not r.stack_info for r in records)
    assert all("ENVIRONMENT" in r.getMessage() for r in records)


def test_a_missing_client_id_on_connect_is_a_503_page(alice, settings):
    settings.QB_OAUTH = {k: v for k, v in settings.QB_OAUTH.items() if k != "CLIENT_ID"}
    assert_misconfigured_page(alice.post(reverse("qb_oauth:connect")))


def test_a_missing_client_secret_on_the_callback_is_the_page(alice, loopback_fake, settings):
    back = loopback_fake.consent(start(alice))
    settings.QB_OAUTH = {k: v for k, v in settings.QB_OAUTH.items() if k != "CLIENT_SECRET"}
    before = counts()
    response = alice.get(back)
    assert_misconfigured_page(response, loopback_fake.client_secret)
    assert response.context["reason"] == "misconfigured"
    assert counts() == before
    assert loopback_fake.counts["token"] == 0  # the code was never sent anywhere


def test_a_plain_token_endpoint_on_the_callback_is_the_page(alice, loopback_fake, settings):
    back = loopback_fake.consent(start(alice))
    settings.QB_OAUTH = {
        **settings.QB_OAUTH,
        "ENDPOINTS": {**settings.QB_OAUTH["ENDPOINTS"], "token": "http://intuit.example.com/t"},
    }
    before = counts()
    assert_misconfigured_page(alice.get(back))
    assert counts() == before


@pytest.fixture
def connected(alice, user, loopback_fake):
    back = loopback_fake.consent(start(alice))
    assert alice.get(back).status_code == 302
    return QuickBooksConnection.objects.get(user=user)


def test_disconnect_with_a_missing_secret_is_the_page_and_keeps_the_tokens(
    alice, connected, settings, loopback_fake
):
    settings.QB_OAUTH = {k: v for k, v in settings.QB_OAUTH.items() if k != "CLIENT_SECRET"}
    response = alice.post(reverse("qb_oauth:disconnect", args=[connected.pk]))
    assert_misconfigured_page(response, loopback_fake.client_secret)
    connected.refresh_from_db()
    assert connected.state == ConnectionState.ACTIVE and connected.has_tokens
    assert loopback_fake.counts["revoke"] == 0


def test_intuit_disconnect_url_with_a_missing_secret_is_the_page(alice, connected, settings):
    settings.QB_OAUTH = {k: v for k, v in settings.QB_OAUTH.items() if k != "CLIENT_SECRET"}
    response = alice.get(reverse("qb_oauth:intuit_disconnect"), {"realmId": connected.realm_id})
    assert_misconfigured_page(response)
    connected.refresh_from_db()
    assert connected.state == ConnectionState.ACTIVE and connected.has_tokens


def test_the_authorization_url_keeps_every_parameter_over_loopback_http(loopback_fake):
    url = client.authorization_url(state="st-1", redirect_uri=CALLBACK, scopes=["a", "b"])
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == loopback_fake.base_url
    query = parse_qs(parts.query)
    assert query["state"] == ["st-1"] and query["redirect_uri"] == [CALLBACK]
    assert query["scope"] == ["a b"] and query["response_type"] == ["code"]

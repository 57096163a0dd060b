"""The web flow through Django's test client, against the fake Intuit over real HTTP."""

import logging
import time
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from qb_oauth import state as qb_state
from qb_oauth.models import ConnectionEvent, ConnectionState, QuickBooksConnection

pytestmark = pytest.mark.django_db

CONNECTIONS = "/quickbooks/"
CALLBACK = "http://testserver/quickbooks/callback/"


# -- helpers ------------------------------------------------------------------------------


def start(client, next_url=None, **extra):
    """POST connect; return the authorization URL it redirects to."""
    data = dict(extra)
    if next_url is not None:
        data["next"] = next_url
    response = client.post(reverse("qb_oauth:connect"), data)
    assert response.status_code == 302, response.content
    return response["Location"]


def query_of(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def with_query(url, **changes):
    """``url`` with query parameters changed (None removes one)."""
    parts = urlsplit(url)
    query = query_of(url)
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def counts():
    return QuickBooksConnection.objects.count(), ConnectionEvent.objects.count()


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def second_realm(fake_intuit):
    return fake_intuit.companies[1]


@pytest.fixture
def with_disconnect_url(fake_intuit):
    fake_intuit.disconnect_url = "http://testserver" + reverse("qb_oauth:intuit_disconnect")
    return fake_intuit


# -- the connections page ------------------------------------------------------------------


def test_connections_needs_login(client):
    response = client.get(CONNECTIONS)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/quickbooks/"


def test_login_url_setting_is_honoured(client, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "LOGIN_URL": "/elsewhere/login/"}
    response = client.get(CONNECTIONS)
    assert response["Location"] == "/elsewhere/login/?next=/quickbooks/"


def test_empty_connections_page_offers_the_button(alice):
    response = alice.get(CONNECTIONS)
    assert response.status_code == 200
    html = response.content.decode()
    assert "haven't connected a QuickBooks company yet" in html
    assert 'action="/quickbooks/connect/"' in html
    assert 'method="post"' in html
    assert "csrfmiddlewaretoken" in html
    assert "Connect to QuickBooks" in html
    assert "Cache-Control" in response.headers and "no-cache" in response["Cache-Control"]


def test_connections_page_shows_each_state_in_words(alice, user, connect_realm, fake_intuit):
    one = connect_realm(user, fake_intuit.companies[0].realm_id)
    two = connect_realm(user, fake_intuit.companies[1].realm_id)
    three = connect_realm(user, fake_intuit.companies[2].realm_id)
    QuickBooksConnection.objects.filter(pk=two.pk).update(state=ConnectionState.REAUTH_REQUIRED)
    QuickBooksConnection.objects.filter(pk=three.pk).update(state=ConnectionState.DISCONNECTED)
    html = alice.get(CONNECTIONS).content.decode()
    for company in fake_intuit.companies:
        assert company.name in html
        assert company.realm_id in html
    assert ">Connected</span>" in html
    assert ">Needs reconnecting</span>" in html
    assert ">Disconnected</span>" in html
    assert "Sandbox" in html
    assert reverse("qb_oauth:disconnect", args=[one.pk]) in html
    # Reconnect (a POST form with the realm) only where the state needs it.
    assert html.count(">Reconnect</button>") == 2
    assert f'name="realm_id" value="{two.realm_id}"' in html
    assert f'name="realm_id" value="{three.realm_id}"' in html
    assert f'name="realm_id" value="{one.realm_id}"' not in html
    assert reverse("qb_oauth:disconnect", args=[two.pk]) not in html
    # Never a token.
    one.refresh_from_db()
    assert one.access_token not in html and one.refresh_token not in html


def test_connections_page_lists_only_my_companies(
    alice, other_user, connect_realm, fake_intuit, client
):
    connect_realm(other_user, fake_intuit.companies[2].realm_id)
    html = alice.get(CONNECTIONS).content.decode()
    assert fake_intuit.companies[2].name not in html


# -- the happy path ------------------------------------------------------------------------


def test_connect_callback_happy_path(alice, user, fake_intuit, second_realm):
    location = start(alice, next_url="/quickbooks/?tab=companies")
    assert location.startswith(fake_intuit.authorization_url + "?")
    query = query_of(location)
    assert query["client_id"] == "qb-test-client"
    assert query["redirect_uri"] == CALLBACK
    assert query["response_type"] == "code"
    assert query["scope"] == "com.intuit.quickbooks.accounting"
    assert len(query["state"]) >= 32

    back = fake_intuit.consent(location, realm_id=second_realm.realm_id)
    assert back.startswith(CALLBACK)
    response = alice.get(back)
    assert response.status_code == 302
    assert response["Location"] == "/quickbooks/?tab=companies"
    assert messages_of(response) == [f"Connected to {second_realm.name}."]

    connection = QuickBooksConnection.objects.get()
    assert connection.user == user
    assert connection.realm_id == second_realm.realm_id
    assert connection.company_name == second_realm.name
    assert connection.state == ConnectionState.ACTIVE
    assert connection.refresh_token == fake_intuit.current_refresh_token(second_realm.realm_id)
    assert connection.events.filter(kind="connected").count() == 1

    page = alice.get(response["Location"]).content.decode()
    assert second_realm.name in page
    assert ">Connected</span>" in page


def test_the_message_is_shown_on_the_page_we_come_back_to(alice, fake_intuit):
    back = fake_intuit.consent(start(alice))
    response = alice.get(back, follow=True)
    assert response.redirect_chain == [(CONNECTIONS, 302)]
    html = response.content.decode()
    assert f"Connected to {fake_intuit.companies[0].name}." in html
    assert 'role="status"' in html


def test_connecting_a_realm_again_updates_the_connection(alice, fake_intuit):
    realm = fake_intuit.companies[0].realm_id
    alice.get(fake_intuit.consent(start(alice), realm_id=realm), follow=True)
    first = QuickBooksConnection.objects.get()
    old_refresh = first.refresh_token
    response = alice.get(fake_intuit.consent(start(alice), realm_id=realm))
    assert response.status_code == 302
    assert messages_of(response) == [f"Reconnected to {fake_intuit.companies[0].name}."]
    again = QuickBooksConnection.objects.get()
    assert again.pk == first.pk
    assert again.refresh_token != old_refresh
    assert again.events.filter(kind="reconnected").count() == 1


def test_reconnect_revives_a_connection_that_needs_it(alice, user, connect_realm, fake_intuit):
    connection = connect_realm(user)
    QuickBooksConnection.objects.filter(pk=connection.pk).update(
        state=ConnectionState.REAUTH_REQUIRED
    )
    location = start(alice, realm_id=connection.realm_id)
    alice.get(fake_intuit.consent(location, realm_id=connection.realm_id))
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE


def test_redirect_uri_setting_is_used_at_connect_and_callback(alice, fake_intuit, settings):
    fixed = "http://localhost/quickbooks/callback/"
    settings.QB_OAUTH = {**settings.QB_OAUTH, "REDIRECT_URI": fixed}
    location = start(alice)
    assert query_of(location)["redirect_uri"] == fixed
    back = fake_intuit.consent(location)
    assert back.startswith(fixed)
    # The fake checks that the exchange names the same redirect_uri as the request.
    response = alice.get(urlsplit(back)._replace(scheme="", netloc="").geturl())
    assert response.status_code == 302
    assert QuickBooksConnection.objects.count() == 1


def test_flow_works_with_lax_session_cookies(client, user, fake_intuit, settings):
    settings.SESSION_COOKIE_SAMESITE = "Lax"
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302
    assert client.cookies["sessionid"]["samesite"] == "Lax"
    response = client.get(fake_intuit.consent(start(client)))
    assert response.status_code == 302
    assert QuickBooksConnection.objects.count() == 1
    # (tests/e2e/test_browser.py proves it in Chromium, which enforces SameSite, cross-site.)


# -- POST only, CSRF ---------------------------------------------------------------------------


def test_get_on_connect_is_405_and_starts_nothing(alice):
    response = alice.get(reverse("qb_oauth:connect"))
    assert response.status_code == 405
    assert qb_state.SESSION_KEY not in alice.session


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_other_methods_on_disconnect_are_405(alice, user, connect_realm, method):
    connection = connect_realm(user)
    response = getattr(alice, method)(reverse("qb_oauth:disconnect", args=[connection.pk]))
    assert response.status_code == 405


@pytest.mark.parametrize("name", ["connections", "callback", "intuit_disconnect", "reconnect"])
def test_post_on_get_only_views_is_405(alice, name):
    response = alice.post(reverse(f"qb_oauth:{name}"))
    assert response.status_code == 405


def test_csrf_is_enforced_on_connect(user, fake_intuit):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(reverse("qb_oauth:connect")).status_code == 403
    assert qb_state.SESSION_KEY not in client.session
    client.get(CONNECTIONS)  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(reverse("qb_oauth:connect"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"].startswith(fake_intuit.authorization_url)


def test_csrf_is_enforced_on_disconnect(user, connect_realm, fake_intuit):
    connection = connect_realm(user)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(reverse("qb_oauth:disconnect", args=[connection.pk]))
    assert response.status_code == 403
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE
    assert fake_intuit.grant_for_realm(connection.realm_id) is not None


def test_connect_needs_login(client):
    response = client.post(reverse("qb_oauth:connect"))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_connect_when_intuit_is_down(alice, fake_intuit):
    fake_intuit.inject_fault("discovery", "503")
    response = alice.post(reverse("qb_oauth:connect"))
    assert response.status_code == 503
    assert "can&#x27;t be reached right now" in response.content.decode()


def test_pending_states_per_session_are_bounded(alice, fake_intuit):
    states = [query_of(start(alice))["state"] for _ in range(qb_state.MAX_PENDING + 3)]
    assert qb_state.pending_count(alice.get(CONNECTIONS).wsgi_request) == qb_state.MAX_PENDING
    # The newest still works, the oldest was dropped.
    oldest = CALLBACK + "?" + urlencode({"state": states[0], "code": "x", "realmId": "1"})
    assert alice.get(oldest).status_code == 400
    newest_url = fake_intuit.consent(
        fake_intuit.authorization_url
        + "?"
        + urlencode(
            {
                "client_id": "qb-test-client",
                "redirect_uri": CALLBACK,
                "response_type": "code",
                "scope": "com.intuit.quickbooks.accounting",
                "state": states[-1],
            }
        )
    )
    assert alice.get(newest_url).status_code == 302


# -- hostile and unlucky callbacks ---------------------------------------------------------------


def assert_nothing_stored(before):
    assert counts() == before


def test_access_denied_goes_back_with_a_message(alice, fake_intuit):
    before = counts()
    back = fake_intuit.consent(start(alice, next_url="/quickbooks/?x=1"), action="cancel")
    assert query_of(back)["error"] == "access_denied"
    response = alice.get(back)
    assert response.status_code == 302
    assert response["Location"] == "/quickbooks/?x=1"
    assert messages_of(response) == ["You chose not to connect to QuickBooks. Nothing was changed."]
    assert_nothing_stored(before)
    # The state is spent: the same answer again is refused.
    assert alice.get(back).status_code == 400


def test_access_denied_keeps_an_existing_connection(alice, user, connect_realm, fake_intuit):
    connection = connect_realm(user)
    before = counts()
    alice.get(fake_intuit.consent(start(alice, realm_id=connection.realm_id), action="cancel"))
    assert_nothing_stored(before)
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE
    assert connection.refresh_token == fake_intuit.current_refresh_token(connection.realm_id)


@pytest.mark.parametrize(
    "params",
    [
        {"error": "access_denied"},
        {"error": "access_denied", "error_description": "User denied"},
    ],
)
def test_access_denied_without_state_is_a_page(alice, params):
    before = counts()
    response = alice.get(CALLBACK + "?" + urlencode(params))
    assert response.status_code == 400
    assert "You chose not to connect to QuickBooks" in response.content.decode()
    assert response.context["reason"] == "access_denied"
    assert_nothing_stored(before)


@pytest.mark.parametrize("description", [None, "scope is not valid"])
def test_other_errors_with_state_go_back_with_a_message(alice, description):
    before = counts()
    location = start(alice)
    params = {"error": "invalid_scope", "state": query_of(location)["state"]}
    if description:
        params["error_description"] = description
    response = alice.get(CALLBACK + "?" + urlencode(params))
    assert response.status_code == 302
    assert response["Location"] == CONNECTIONS
    [message] = messages_of(response)
    assert "invalid_scope" in message and "Nothing was changed" in message
    assert_nothing_stored(before)


def test_invalid_scope_from_the_fake(alice, fake_intuit, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "SCOPES": ["com.intuit.quickbooks.nonsense"]}
    before = counts()
    back = fake_intuit.consent(start(alice))
    assert query_of(back)["error"] == "invalid_scope"
    response = alice.get(back)
    assert response.status_code == 302
    assert "invalid_scope" in messages_of(response)[0]
    assert_nothing_stored(before)


def test_an_error_code_is_not_echoed_raw(alice):
    location = start(alice)
    params = {"error": "<script>alert(1)</script>", "state": query_of(location)["state"]}
    response = alice.get(CALLBACK + "?" + urlencode(params))
    [message] = messages_of(response)
    assert "<" not in message and "scriptalert1script" in message


@pytest.mark.parametrize(
    "params,reason",
    [
        ({"error": "server_error"}, "state_missing"),
        ({"error": "invalid_scope", "state": "not-mine"}, "state_unknown"),
        ({"code": "abc", "realmId": "123"}, "state_missing"),
        ({"code": "abc", "realmId": "123", "state": ""}, "state_missing"),
        ({"code": "abc", "realmId": "123", "state": "made-up-state"}, "state_unknown"),
        ({"code": "abc", "realmId": "123", "state": "x" * 5000}, "state_unknown"),
        ({}, "state_missing"),
    ],
)
def test_callbacks_without_a_valid_state_are_refused(alice, params, reason, caplog):
    before = counts()
    start(alice)  # a pending state exists, but not the one presented
    with caplog.at_level(logging.WARNING, logger="qb_oauth.views"):
        response = alice.get(CALLBACK + "?" + urlencode(params))
    assert response.status_code == 400
    assert response.context["reason"] == reason
    assert "Please start again" in response.content.decode()
    assert "Connect to QuickBooks" in response.content.decode()
    assert_nothing_stored(before)
    assert any("state" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert "made-up-state" not in record.getMessage()
        assert "abc" not in record.getMessage()


@pytest.mark.parametrize(
    "change",
    [
        {"code": None},
        {"code": ""},
        {"realmId": None},
        {"realmId": ""},
        {"realmId": "12ab"},
        {"realmId": "1" * 40},
    ],
)
def test_incomplete_callbacks_are_refused(alice, fake_intuit, change):
    before = counts()
    back = with_query(fake_intuit.consent(start(alice)), **change)
    response = alice.get(back)
    assert response.status_code == 400
    assert response.context["reason"] == "incomplete"
    assert "incomplete answer" in response.content.decode()
    assert_nothing_stored(before)
    assert fake_intuit.counts["token.authorization_code"] == 0


def test_a_reused_state_is_refused(alice, fake_intuit):
    back = fake_intuit.consent(start(alice))
    assert alice.get(back).status_code == 302
    before = counts()
    response = alice.get(back)
    assert response.status_code == 400
    assert response.context["reason"] == "state_reused"
    assert "already used" in response.content.decode()
    assert_nothing_stored(before)
    assert fake_intuit.counts["token.authorization_code"] == 1


def test_an_expired_state_is_refused(alice, fake_intuit, settings):
    back = fake_intuit.consent(start(alice))
    before = counts()
    with time_machine.travel(time.time() + 601, tick=False):
        response = alice.get(back)
    assert response.status_code == 400
    assert response.context["reason"] == "state_expired"
    assert "expired" in response.content.decode()
    assert_nothing_stored(before)
    assert fake_intuit.counts["token.authorization_code"] == 0


def test_state_max_age_setting(alice, fake_intuit, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "STATE_MAX_AGE": 3600}
    back = fake_intuit.consent(start(alice))
    with time_machine.travel(time.time() + 601, tick=False):
        # The fake's code lives 600 s and its clock follows time-machine: Intuit refuses it.
        response = alice.get(back)
    assert response.context["reason"] == "invalid_grant"


def test_another_sessions_state_is_refused(alice, user, fake_intuit):
    back = fake_intuit.consent(start(alice))
    before = counts()
    thief = Client()
    thief.force_login(user)  # even the same user, in another browser
    response = thief.get(back)
    assert response.status_code == 400
    assert response.context["reason"] == "state_unknown"
    assert_nothing_stored(before)
    # The rightful session can still finish.
    assert alice.get(back).status_code == 302
    assert counts()[0] == before[0] + 1


def test_another_users_session_cannot_use_my_callback(alice, other_user, fake_intuit):
    back = fake_intuit.consent(start(alice))
    mallory = Client()
    mallory.force_login(other_user)
    before = counts()
    assert mallory.get(back).status_code == 400
    assert_nothing_stored(before)


def test_a_code_intuit_rejects(alice, fake_intuit):
    before = counts()
    back = with_query(fake_intuit.consent(start(alice)), code="AB11-not-a-code")
    response = alice.get(back)
    assert response.status_code == 400
    assert response.context["reason"] == "invalid_grant"
    assert "didn&#x27;t accept" in response.content.decode()
    assert_nothing_stored(before)


def test_a_code_used_twice_through_two_states(alice, fake_intuit):
    back = fake_intuit.consent(start(alice))
    assert alice.get(back).status_code == 302
    before = counts()
    # A fresh state of this session, with the already exchanged code.
    replay = with_query(back, state=query_of(start(alice))["state"])
    response = alice.get(replay)
    assert response.status_code == 400
    assert response.context["reason"] == "invalid_grant"
    assert_nothing_stored(before)


@pytest.mark.parametrize("fault", ["503", "500", "429", "reset", "malformed"])
def test_intuit_down_during_the_exchange(alice, fake_intuit, fault, settings):
    before = counts()
    back = fake_intuit.consent(start(alice))
    fake_intuit.inject_fault("token", fault)
    response = alice.get(back)
    assert response.status_code == 503
    assert response.context["reason"] == "unavailable"
    html = response.content.decode()
    assert "try again" in html
    assert_nothing_stored(before)


def test_intuit_timeout_during_the_exchange(alice, fake_intuit, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 0.5}
    fake_intuit.timeout_seconds = 2
    before = counts()
    back = fake_intuit.consent(start(alice))
    fake_intuit.inject_fault("token", "timeout")
    response = alice.get(back)
    assert response.status_code == 503
    assert_nothing_stored(before)


def test_invalid_client_is_a_502_page(alice, fake_intuit, settings):
    back = fake_intuit.consent(start(alice))
    settings.QB_OAUTH = {**settings.QB_OAUTH, "CLIENT_SECRET": "wrong"}
    before = counts()
    response = alice.get(back)
    assert response.status_code == 502
    assert response.context["reason"] == "intuit_error"
    assert_nothing_stored(before)


def test_signed_out_at_callback_goes_to_login(client, user, fake_intuit):
    client.force_login(user)
    back = fake_intuit.consent(start(client))
    client.logout()
    before = counts()
    response = client.get(back)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/quickbooks/"
    assert "code=" not in response["Location"]
    assert_nothing_stored(before)


def test_no_token_in_logs_pages_or_messages(alice, fake_intuit, caplog):
    with caplog.at_level(logging.DEBUG):
        back = fake_intuit.consent(start(alice))
        response = alice.get(back, follow=True)
        html = response.content.decode()
        alice.get(back)  # reused: a warning is logged
    issued = fake_intuit.issued_tokens()
    code = query_of(back)["code"]
    state = query_of(back)["state"]
    for secret in [*issued, code, state]:
        assert secret not in html
        assert secret not in caplog.text


# -- open redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.com",
        "//evil.com/quickbooks/",
        "https://evil.com",
        "http://evil.com/x",
        "/\\evil.com",
        "\\\\evil.com",
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "http://testserver.evil.com/",
        "http:///evil.com",
        " //evil.com",
        "/%09/evil.com",
        "\x00//evil.com",
    ],
)
def test_next_never_leaves_the_site(alice, fake_intuit, next_url):
    response = alice.get(fake_intuit.consent(start(alice, next_url=next_url)))
    assert response.status_code == 302
    location = response["Location"]
    assert location == CONNECTIONS or (
        location.startswith("/") and not location.startswith(("//", "/\\"))
    )
    assert "evil.com" not in urlsplit(location).netloc


@pytest.mark.parametrize(
    "next_url",
    [
        "/quickbooks/?x=1",
        "/admin/",
        "http://testserver/quickbooks/?y=2",
        "https://testserver/quickbooks/",  # an upgrade to https stays on the site
    ],
)
def test_same_site_next_is_kept(alice, fake_intuit, next_url):
    response = alice.get(fake_intuit.consent(start(alice, next_url=next_url)))
    assert response["Location"] == next_url


def test_next_is_used_for_refusals_too(alice, fake_intuit):
    back = fake_intuit.consent(start(alice, next_url="https://evil.com"), action="cancel")
    assert alice.get(back)["Location"] == CONNECTIONS


# -- disconnect --------------------------------------------------------------------------------


def test_disconnect_get_shows_a_confirmation(alice, user, connect_realm, fake_intuit):
    connection = connect_realm(user)
    response = alice.get(reverse("qb_oauth:disconnect", args=[connection.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert f"Disconnect {connection.company_name}?" in html
    assert 'method="post"' in html and "csrfmiddlewaretoken" in html
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE


def test_disconnect_post_revokes_at_intuit(alice, user, connect_realm, fake_intuit):
    connection = connect_realm(user)
    realm = connection.realm_id
    response = alice.post(reverse("qb_oauth:disconnect", args=[connection.pk]))
    assert response.status_code == 302
    assert response["Location"] == CONNECTIONS
    assert messages_of(response) == [f"Disconnected from {connection.company_name}."]
    connection.refresh_from_db()
    assert connection.state == ConnectionState.DISCONNECTED
    assert connection.refresh_token is None and connection.access_token is None
    assert fake_intuit.grant_for_realm(realm) is None
    assert connection.events.filter(kind="revoked").count() == 1
    html = alice.get(CONNECTIONS).content.decode()
    assert ">Disconnected</span>" in html and ">Reconnect</button>" in html
    # Again: nothing more happens.
    response = alice.post(reverse("qb_oauth:disconnect", args=[connection.pk]))
    assert "already disconnected" in messages_of(response)[0]
    assert connection.events.filter(kind="revoked").count() == 1


def test_disconnect_when_intuit_is_down_keeps_the_tokens(alice, user, connect_realm, fake_intuit):
    connection = connect_realm(user)
    tokens_before = (connection.access_token, connection.refresh_token)
    fake_intuit.inject_fault("revoke", "503")
    response = alice.post(reverse("qb_oauth:disconnect", args=[connection.pk]))
    assert response.status_code == 302
    [message] = messages_of(response)
    assert "couldn't reach QuickBooks" in message
    assert "nothing was changed" in message and "try again" in message
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE
    assert (connection.access_token, connection.refresh_token) == tokens_before
    assert fake_intuit.grant_for_realm(connection.realm_id) is not None


def test_another_users_connection_is_404(alice, other_user, connect_realm, fake_intuit):
    theirs = connect_realm(other_user)
    url = reverse("qb_oauth:disconnect", args=[theirs.pk])
    assert alice.get(url).status_code == 404
    assert alice.post(url).status_code == 404
    theirs.refresh_from_db()
    assert theirs.state == ConnectionState.ACTIVE
    assert fake_intuit.grant_for_realm(theirs.realm_id) is not None


def test_unknown_connection_is_404(alice):
    assert alice.post(reverse("qb_oauth:disconnect", args=[999999])).status_code == 404


def test_disconnect_needs_login(client, user, connect_realm):
    connection = connect_realm(user)
    response = client.post(reverse("qb_oauth:disconnect", args=[connection.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE


# -- Intuit's Disconnect URL ---------------------------------------------------------------------


def test_intuit_disconnect_marks_the_connection(alice, user, connect_realm, with_disconnect_url):
    fake = with_disconnect_url
    connection = connect_realm(user)
    url = fake.disconnect_from_quickbooks(connection.realm_id)
    response = alice.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "You disconnected" in html and connection.company_name in html
    assert ">Reconnect</button>" in html
    connection.refresh_from_db()
    assert connection.state == ConnectionState.DISCONNECTED
    assert connection.refresh_token is None and connection.access_token is None
    assert connection.events.filter(kind="disconnected_at_intuit").count() == 1
    assert ">Disconnected</span>" in alice.get(CONNECTIONS).content.decode()


def test_a_forged_intuit_disconnect_changes_nothing(
    alice, user, connect_realm, with_disconnect_url
):
    connection = connect_realm(user)
    url = reverse("qb_oauth:intuit_disconnect") + f"?realmId={connection.realm_id}"
    response = alice.get(url)
    assert response.status_code == 200
    assert "still accepts" in response.content.decode()
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE
    assert connection.refresh_token  # (a forced refresh confirmed the grant: new tokens)


def test_intuit_disconnect_when_intuit_is_down(alice, user, connect_realm, with_disconnect_url):
    fake = with_disconnect_url
    connection = connect_realm(user)
    url = fake.disconnect_from_quickbooks(connection.realm_id)
    refresh_before = connection.refresh_token
    fake.inject_fault("token", "503")
    response = alice.get(url)
    assert response.status_code == 503
    assert "couldn't check with QuickBooks" in response.content.decode()
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE
    assert connection.refresh_token == refresh_before
    # Reloading once Intuit answers again finishes it.
    assert alice.get(url).status_code == 200
    connection.refresh_from_db()
    assert connection.state == ConnectionState.DISCONNECTED


@pytest.mark.parametrize("query", ["?realmId=123456", "", "?realmId=abc", "?realmId="])
def test_intuit_disconnect_for_an_unknown_realm(alice, query):
    response = alice.get(reverse("qb_oauth:intuit_disconnect") + query)
    assert response.status_code == 404
    assert "No such QuickBooks connection" in response.content.decode()


def test_intuit_disconnect_leaves_other_users_alone(
    alice, other_user, connect_realm, with_disconnect_url
):
    fake = with_disconnect_url
    theirs = connect_realm(other_user)
    url = fake.disconnect_from_quickbooks(theirs.realm_id)
    assert alice.get(url).status_code == 404
    theirs.refresh_from_db()
    assert theirs.state == ConnectionState.ACTIVE  # until its owner comes by


def test_intuit_disconnect_signed_out_asks_to_sign_in(client, user, connect_realm, fake_intuit):
    connection = connect_realm(user)
    url = reverse("qb_oauth:intuit_disconnect") + f"?realmId={connection.realm_id}"
    response = client.get(url)
    assert response.status_code == 302
    login = urlsplit(response["Location"])
    assert login.path == "/accounts/login/"
    assert query_of(response["Location"])["next"] == url
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE


def test_intuit_disconnect_after_signing_in(client, user, connect_realm, with_disconnect_url):
    fake = with_disconnect_url
    connection = connect_realm(user)
    url = fake.disconnect_from_quickbooks(connection.realm_id)
    login = client.get(url)["Location"]
    response = client.post(
        login,
        {"username": "alice", "password": "pw-alice", "next": query_of(login)["next"]},
        follow=True,
    )
    assert response.status_code == 200
    assert "You disconnected" in response.content.decode()
    connection.refresh_from_db()
    assert connection.state == ConnectionState.DISCONNECTED


# -- Intuit's Reconnect URL ----------------------------------------------------------------------


def test_reconnect_page_offers_a_button_and_starts_nothing(alice, user, connect_realm, fake_intuit):
    connection = connect_realm(user)
    QuickBooksConnection.objects.filter(pk=connection.pk).update(
        state=ConnectionState.REAUTH_REQUIRED
    )
    response = alice.get(reverse("qb_oauth:reconnect") + f"?realmId={connection.realm_id}")
    assert response.status_code == 200
    html = response.content.decode()
    assert connection.company_name in html
    assert "needs to be connected again" in html
    assert 'action="/quickbooks/connect/"' in html and 'method="post"' in html
    assert f'name="realm_id" value="{connection.realm_id}"' in html
    assert qb_state.SESSION_KEY not in alice.session
    assert fake_intuit.counts["authorize"] == 1  # only connect_realm's consent


def test_reconnect_page_for_an_unknown_realm(alice):
    response = alice.get(reverse("qb_oauth:reconnect") + "?realmId=42")
    assert response.status_code == 200
    assert "Connect to QuickBooks" in response.content.decode()


def test_reconnect_needs_login(client):
    response = client.get(reverse("qb_oauth:reconnect") + "?realmId=42")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")

"""The security suite: fuzzed callbacks and forms, a token-leak sweep over every surface,
open redirects, CSRF, and other users' connections. See docs/security.md.

Everything runs against the fake Intuit over real HTTP (``fake_intuit``) through Django's
test client; nothing of qb_oauth is mocked.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import TooManyFieldsSent
from django.http import QueryDict
from django.test import Client, RequestFactory
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qb_oauth.models import ConnectionEvent, ConnectionState, QuickBooksConnection
from tests.security_helpers import raw_query, same_site

pytestmark = pytest.mark.django_db

CALLBACK_PATH = "/quickbooks/callback/"
CONNECTIONS = "/quickbooks/"
OPENID = ["com.intuit.quickbooks.accounting", "openid", "email", "profile"]

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # no example database in the repo; failures print the reproducing example
)
FUZZ_SMALL = settings(FUZZ, max_examples=40)


# -- helpers ---------------------------------------------------------------------------------


def query_of(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def counts():
    return QuickBooksConnection.objects.count(), ConnectionEvent.objects.count()


def start(client, **data):
    """POST connect; the authorization URL it redirects to."""
    response = client.post(reverse("qb_oauth:connect"), data)
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def pending_callback(client, fake, realm_id=None):
    """A real pending flow: the valid callback parameters Intuit would send back."""
    back = fake.consent(start(client), realm_id=realm_id)
    return query_of(back)


def too_many_fields(body):
    """Whether Django refuses ``body`` (a query string or form) with its 400 for > 1000 fields."""
    try:
        QueryDict(body)
    except TooManyFieldsSent:
        return True
    return False


def parsed_get(raw):
    """The ``request.GET`` a view sees for the raw query string ``raw`` (None: too many fields,
    which Django answers with a 400 before any view code runs)."""
    try:
        return RequestFactory().get(CALLBACK_PATH, QUERY_STRING=raw).GET
    except TooManyFieldsSent:
        return None


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def with_disconnect_url(fake_intuit):
    fake_intuit.disconnect_url = "http://testserver" + reverse("qb_oauth:intuit_disconnect")
    return fake_intuit


# -- strategies ------------------------------------------------------------------------------

_SPECIALS = [
    "",
    " ",
    "\x00",
    "%00",
    "\x00\x00abc",
    "\r\n",
    "\t",
    "%",
    "%zz",
    "%E2%82",
    "+",
    "&",
    "=",
    "#",
    "?",
    ";",
    "..",
    "../../etc/passwd",
    "null",
    "None",
    "undefined",
    "[]",
    "{}",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "\u202e\u0000",
    "\ufeff",
    "\ud7ff",
    "é",
    "日本語",
    "🙂",
    "٣٤٥",  # Arabic-Indic digits: str.isdigit() says yes
    "²",
    "0",
    "-1",
    "1e5",
    "9" * 33,
]


def _oversized(draw_char, n):
    return draw_char * n


junk = st.one_of(
    st.sampled_from(_SPECIALS),
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20),  # control characters
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.integers(min_value=-(10**6), max_value=10**40).map(str),
    st.builds(
        _oversized,
        st.sampled_from(["a", "Z9", "%", "é", "\x00", "日", "&x="]),
        st.integers(min_value=10_000, max_value=12_000),
    ),
)
encoder = st.sampled_from(["quote", "quote_plus", "raw"])


def mutate(value: str):
    """Strategies that change a valid value a little: a flipped, dropped or added character."""
    if not value:
        return junk
    return st.one_of(
        st.integers(0, len(value) - 1).map(lambda i: value[:i] + value[i + 1 :]),
        st.integers(0, len(value) - 1).map(
            lambda i: value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1 :]
        ),
        junk.map(lambda extra: value + extra[:5]).filter(lambda v: v != value),
        st.just(value.swapcase()).filter(lambda v: v != value),
        st.just(value + value),
    )


@st.composite
def callback_pairs(draw, valid: dict[str, str]):
    """(key, value, encoder) triples around a valid callback, with some of it broken."""
    pairs = []
    for key in ("code", "state", "realmId"):
        how = draw(
            st.sampled_from(
                ["keep", "keep", "omit", "junk", "empty", "mutate", "repeat", "repeat_valid"]
            )
        )
        good = valid[key]
        if how == "keep":
            pairs.append((key, good))
        elif how == "junk":
            pairs.append((key, draw(junk)))
        elif how == "empty":
            pairs.append((key, ""))
        elif how == "mutate":
            pairs.append((key, draw(mutate(good))))
        elif how == "repeat":
            other = draw(junk)
            pairs.extend([(key, good), (key, other)] if draw(st.booleans()) else [(key, other)])
            pairs.append((key, good) if draw(st.booleans()) else (key, draw(junk)))
        elif how == "repeat_valid":
            pairs.extend([(key, good), (key, good)])
    if draw(st.integers(0, 3)) == 0:
        error = draw(st.one_of(st.sampled_from(["access_denied", "invalid_scope"]), junk))
        pairs.append(("error", error))
        if draw(st.booleans()):
            pairs.append(("error_description", draw(junk)))
    extra_keys = st.one_of(st.sampled_from(["foo", "x", "realmid", "Code", "STATE"]), junk)
    pairs.extend(draw(st.lists(st.tuples(extra_keys, junk), max_size=3)))
    pairs = draw(st.permutations(pairs))
    return [(k, v, draw(encoder)) for k, v in pairs]


def _effective(get, key):
    values = get.getlist(key)
    return values[-1] if values else None


def may_connect(get, valid) -> bool:
    """Whether the view is *allowed* to store a connection for these parameters.

    Only when each parameter appears once, with the valid values, and no error
    is set (test_repeated_callback_parameters_are_refused and
    test_a_callback_for_another_realm_stores_nothing pin the two edges).
    """
    if get is None or _effective(get, "error"):
        return False
    if any(len(get.getlist(key)) > 1 for key in ("code", "state", "realmId", "error")):
        return False
    if _effective(get, "code") != valid["code"] or _effective(get, "state") != valid["state"]:
        return False
    return _effective(get, "realmId") == valid["realmId"]


# -- fuzzing the callback --------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzzed_callbacks_never_fail_and_store_nothing(alice, fake_intuit, data):
    valid = pending_callback(alice, fake_intuit)
    pairs = data.draw(callback_pairs(valid), label="pairs")
    raw = raw_query(pairs)
    get = parsed_get(raw)
    before = counts()
    response = alice.get(CALLBACK_PATH, QUERY_STRING=raw)
    assert response.status_code < 500, (raw[:300], response.status_code)
    if response.status_code in (301, 302):
        assert same_site(response["Location"]), response["Location"]
    if not may_connect(get, valid):
        assert counts() == before, raw[:300]


@FUZZ_SMALL
@given(data=st.data())
def test_fuzzed_callbacks_without_a_pending_flow(client, user, fake_intuit, data):
    """Signed in, signed out, no state ever issued: forged callbacks only."""
    if data.draw(st.booleans(), label="signed_in"):
        client.force_login(user)
    else:
        client.logout()
    keys = st.sampled_from(["code", "state", "realmId", "error", "error_description"])
    pairs = data.draw(st.lists(st.tuples(keys, junk, encoder), max_size=8), label="pairs")
    before = counts()
    response = client.get(CALLBACK_PATH, QUERY_STRING=raw_query(pairs))
    assert response.status_code < 500
    if response.status_code in (301, 302):
        assert same_site(response["Location"])
    assert counts() == before
    assert fake_intuit.counts["token.authorization_code"] == 0


@FUZZ_SMALL
@given(data=st.data())
def test_a_forged_state_never_connects(alice, fake_intuit, data):
    """A valid code and realm with any state but the session's own: refused, Intuit not asked."""
    valid = pending_callback(alice, fake_intuit)
    forged = data.draw(
        st.one_of(
            mutate(valid["state"]),
            junk,
            st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        ).filter(lambda s: s != valid["state"]),
        label="state",
    )
    before = counts()
    exchanges = fake_intuit.counts["token.authorization_code"]
    raw = urlencode({"code": valid["code"], "state": forged, "realmId": valid["realmId"]})
    response = alice.get(CALLBACK_PATH, QUERY_STRING=raw)
    assert response.status_code == 400
    assert response.context["reason"].startswith("state_")
    assert counts() == before
    assert fake_intuit.counts["token.authorization_code"] == exchanges


def test_the_valid_callback_still_connects(alice, fake_intuit):
    """The oracle's other side: the exact valid answer stores one connection."""
    valid = pending_callback(alice, fake_intuit)
    before = counts()
    response = alice.get(CALLBACK_PATH, QUERY_STRING=urlencode(valid))
    assert response.status_code == 302
    assert counts()[0] == before[0] + 1


@pytest.mark.parametrize(
    "template",
    [
        "code=junk&code={code}&state={state}&realmId={realmId}",
        "code={code}&state=junk&state={state}&realmId={realmId}",
        "code={code}&state={state}&realmId=1&realmId={realmId}",
        "code={code}&code={code}&state={state}&realmId={realmId}",
    ],
)
def test_repeated_callback_parameters_are_refused(alice, fake_intuit, template):
    valid = pending_callback(alice, fake_intuit)
    before = counts()
    response = alice.get(CALLBACK_PATH, QUERY_STRING=template.format(**valid))
    assert response.status_code == 400
    assert counts() == before


@pytest.mark.parametrize(
    "realm",
    [
        "other",  # the fake's second company: a real realm id the grant does not cover
        "1234567",
        "٣٤٥",  # Arabic-Indic digits pass str.isdigit()
        "²",  # so does a superscript two
    ],
)
def test_a_callback_for_another_realm_stores_nothing(alice, fake_intuit, realm):
    if realm == "other":
        realm = fake_intuit.companies[1].realm_id
    valid = pending_callback(alice, fake_intuit, realm_id=fake_intuit.companies[0].realm_id)
    before = counts()
    response = alice.get(CALLBACK_PATH, QUERY_STRING=urlencode({**valid, "realmId": realm}))
    assert response.status_code < 500
    assert counts() == before
    assert not QuickBooksConnection.objects.filter(realm_id=realm).exists()


# -- fuzzing the other views -----------------------------------------------------------------


@FUZZ_SMALL
@given(data=st.data())
def test_fuzzed_intuit_disconnect_and_reconnect(alice, user, connect_realm, fake_intuit, data):
    """Garbage realmIds: never a 500, never a connection dropped while its grant is alive."""
    if not QuickBooksConnection.objects.filter(user=user).exists():
        connect_realm(user)
    mine = QuickBooksConnection.objects.get(user=user)
    key = st.sampled_from(["realmId", "realmid", "realm_id", "x"])
    value = st.one_of(junk, st.just(mine.realm_id))
    pairs = data.draw(st.lists(st.tuples(key, value, encoder), max_size=5), label="pairs")
    raw = raw_query(pairs)
    before = QuickBooksConnection.objects.count()
    for name in ("intuit_disconnect", "reconnect"):
        response = alice.get(reverse(f"qb_oauth:{name}"), QUERY_STRING=raw)
        assert response.status_code < 500, (name, raw[:200])
        assert "Traceback" not in response.content.decode("utf-8", "replace")
    mine.refresh_from_db()
    assert QuickBooksConnection.objects.count() == before
    # A forged Disconnect URL costs a forced refresh at most: the grant is alive, so it stays.
    assert mine.state == ConnectionState.ACTIVE
    assert mine.refresh_token == fake_intuit.current_refresh_token(mine.realm_id)


next_values = st.one_of(
    junk,
    st.sampled_from(
        [
            "//evil.com",
            "https://evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "javascript:alert(1)",
            "http:evil.com",
            "%2F%2Fevil.com",
            "https:/evil.com",
            "/%09/evil.com",
            "https://testserver@evil.com",
            "/quickbooks/",
            "http://testserver/quickbooks/?a=1",
        ]
    ),
    st.builds(
        lambda a, b, c: a + b + c,
        st.sampled_from(["", "/", "//", "\\", "/\\", " ", "\t", "\x00", "http:", "https://"]),
        st.sampled_from(["evil.com", "testserver", "testserver.evil.com", "evil.com@testserver"]),
        st.sampled_from(["", "/", "/x?y=1", "#frag", "\\"]),
    ),
)


@FUZZ_SMALL
@given(data=st.data())
def test_fuzzed_connect_posts_redirect_only_to_intuit_then_home(alice, fake_intuit, data):
    """Raw connect bodies (next, realm_id, repeats): always to Intuit, and back same-site."""
    key = st.sampled_from(["next", "next", "realm_id", "csrfmiddlewaretoken", "x"])
    pairs = data.draw(
        st.lists(st.tuples(key, st.one_of(next_values, junk), encoder), max_size=5), label="body"
    )
    body = raw_query(pairs)
    response = alice.post(
        reverse("qb_oauth:connect"), data=body, content_type="application/x-www-form-urlencoded"
    )
    if too_many_fields(body):
        assert response.status_code == 400
        return
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(fake_intuit.authorization_url + "?")
    before = counts()
    back = alice.get(fake_intuit.consent(location, action="cancel"))
    assert back.status_code == 302
    assert same_site(back["Location"]), back["Location"]
    assert counts() == before


@FUZZ_SMALL
@given(data=st.data())
def test_fuzzed_disconnect_posts(alice, user, connect_realm, other_user, fake_intuit, data):
    """Raw disconnect bodies on my (already disconnected) connection and on someone else's."""
    if not QuickBooksConnection.objects.filter(user=user).exists():
        mine = connect_realm(user)
        connect_realm(other_user, fake_intuit.companies[1].realm_id)
        QuickBooksConnection.objects.filter(pk=mine.pk).update(
            state=ConnectionState.DISCONNECTED, refresh_token=None, access_token=None
        )
    mine = QuickBooksConnection.objects.get(user=user)
    theirs = QuickBooksConnection.objects.get(user=other_user)
    key = st.sampled_from(["next", "next", "pk", "x"])
    body = raw_query(data.draw(st.lists(st.tuples(key, next_values, encoder), max_size=4)))
    revokes = fake_intuit.counts["revoke"]
    refused = 400 if too_many_fields(body) else None
    response = alice.post(
        reverse("qb_oauth:disconnect", args=[mine.pk]),
        data=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == (refused or 302)
    if not refused:
        assert same_site(response["Location"]), response["Location"]
    response = alice.post(
        reverse("qb_oauth:disconnect", args=[theirs.pk]),
        data=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 404  # the owner check comes before the form is read
    assert fake_intuit.counts["revoke"] == revokes
    theirs.refresh_from_db()
    assert theirs.state == ConnectionState.ACTIVE


# -- open redirects -----------------------------------------------------------------------------

EVIL_NEXT = [
    "//evil.com",
    "//evil.com/quickbooks/",
    "https://evil.com",
    "http://evil.com/x",
    "/\\evil.com",
    "\\\\evil.com",
    "\\/evil.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http:evil.com",
    "https:evil.com",
    "%2F%2Fevil.com",
    "/%2F%2Fevil.com",
    "https:/evil.com",
    "https:///evil.com",
    "/%09/evil.com",
    "/\t/evil.com",
    " //evil.com",
    "\x00//evil.com",
    "https://testserver@evil.com",
    "https://evil.com@testserver",
    "https://testserver.evil.com/",
    "https://evil.com\\@testserver/",
    "http://[::1]/",
    "//localhost/",
    "///evil.com",
]


@pytest.mark.parametrize("next_url", EVIL_NEXT)
def test_open_redirects_via_connect_next(alice, fake_intuit, next_url):
    """Connected, cancelled, or refused: every final Location is on this site."""
    off_site = []
    for action in ("connect", "cancel"):
        back = fake_intuit.consent(start(alice, next=next_url), action=action)
        response = alice.get(back)
        assert response.status_code == 302
        if not same_site(response["Location"]):
            off_site.append((action, response["Location"]))
    # An error from Intuit with a valid state, and an incomplete answer.
    state = query_of(start(alice, next=next_url))["state"]
    response = alice.get(CALLBACK_PATH, {"state": state, "error": "server_error"})
    if not same_site(response["Location"]):
        off_site.append(("error", response["Location"]))
    assert off_site == []


@pytest.mark.parametrize("next_url", EVIL_NEXT)
def test_open_redirects_via_disconnect_next(alice, user, connect_realm, next_url):
    connection = connect_realm(user)
    response = alice.post(reverse("qb_oauth:disconnect", args=[connection.pk]), {"next": next_url})
    assert response.status_code == 302
    assert same_site(response["Location"]), response["Location"]


@pytest.mark.parametrize("next_url", EVIL_NEXT)
def test_open_redirects_via_the_login_round_trip(client, user, next_url):
    """Signed out: the app sends to the login page; the login's own ``next`` stays home."""
    response = client.get(reverse("qb_oauth:intuit_disconnect"), {"realmId": next_url})
    assert response.status_code == 302
    assert same_site(response["Location"])
    login_next = query_of(response["Location"])["next"]
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "pw-alice", "next": login_next}
    )
    assert response.status_code == 302 and same_site(response["Location"])
    client.logout()
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "pw-alice", "next": next_url}
    )
    assert response.status_code == 302 and same_site(response["Location"])


def test_same_site_check_itself():
    """The checker is strict: only the percent-encoded ones are paths on this site."""
    paths_here = {"%2F%2Fevil.com", "/%2F%2Fevil.com", "/%09/evil.com"}
    for value in EVIL_NEXT:
        assert same_site(value) == (value in paths_here), value
    for good in ("/quickbooks/", "http://testserver/x", "https://testserver/", "?a=1", "x/y"):
        assert same_site(good), good


# -- CSRF ----------------------------------------------------------------------------------------


def csrf_client(user, page="/quickbooks/"):
    """A client that enforces CSRF, signed in, with its CSRF cookie set by a GET of ``page``."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(page).status_code == 200
    return client, client.cookies["csrftoken"].value


def test_csrf_on_connect_and_disconnect(user, connect_realm, fake_intuit):
    connection = connect_realm(user)
    client, token = csrf_client(user)
    connect = reverse("qb_oauth:connect")
    disconnect = reverse("qb_oauth:disconnect", args=[connection.pk])
    assert client.post(connect, {"next": "/quickbooks/"}).status_code == 403
    assert client.post(disconnect).status_code == 403
    assert client.post(disconnect, {"csrfmiddlewaretoken": "x" * 64}).status_code == 403
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE
    assert fake_intuit.counts["revoke"] == 0

    response = client.post(connect, {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"].startswith(fake_intuit.authorization_url)
    response = client.post(disconnect, {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.state == ConnectionState.DISCONNECTED
    # The header works too (a JavaScript front end).
    response = client.post(connect, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 302


ADMIN_CHANGELIST = "admin:qb_oauth_quickbooksconnection_changelist"


def _tool(name, conn):
    return reverse(f"admin:qb_oauth_quickbooksconnection_{name}", args=[conn.pk])


def _admin_posts(conn):
    changelist = reverse(ADMIN_CHANGELIST)
    selected = {"_selected_action": [conn.pk]}
    return [
        ("refresh action", changelist, {"action": "refresh_now", **selected}),
        ("check action", changelist, {"action": "check_connection", **selected}),
        ("revoke confirmation", changelist, {"action": "revoke_and_disconnect", **selected}),
        ("delete confirmation", changelist, {"action": "delete_selected", **selected}),
        ("refresh button", _tool("refresh", conn), {}),
        ("check button", _tool("check", conn), {}),
        (
            "revoke action",
            changelist,
            {"action": "revoke_and_disconnect", "post": "yes", **selected},
        ),
    ]


def test_csrf_on_every_admin_post(admin_user, user, connect_realm, fake_intuit):
    conn = connect_realm(user)
    client, token = csrf_client(admin_user, reverse(ADMIN_CHANGELIST))
    revoke_button = reverse("admin:qb_oauth_quickbooksconnection_revoke", args=[conn.pk])
    posts = [*_admin_posts(conn), ("revoke button", revoke_button, {})]
    fake_intuit.reset_counters()
    for name, url, data in posts:
        assert client.post(url, data).status_code == 403, name
    assert fake_intuit.counts["token.refresh_token"] == 0
    assert fake_intuit.counts["revoke"] == 0 and fake_intuit.counts["api"] == 0
    conn.refresh_from_db()
    assert conn.state == ConnectionState.ACTIVE

    for name, url, data in posts[:-1]:
        response = client.post(url, {**data, "csrfmiddlewaretoken": token})
        assert response.status_code in (200, 302), name
    assert fake_intuit.counts["token.refresh_token"] == 2  # the action and the button
    assert fake_intuit.counts["api"] == 2
    conn.refresh_from_db()
    assert conn.state == ConnectionState.DISCONNECTED  # by the last one, the confirmed revoke


def test_admin_actions_need_change_permission(django_user_model, user, connect_realm, fake_intuit):
    conn = connect_realm(user)
    viewer = django_user_model.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(content_type__app_label="qb_oauth", codename__startswith="view_")
    )
    client, token = csrf_client(viewer, reverse(ADMIN_CHANGELIST))
    fake_intuit.reset_counters()
    for name, url, data in _admin_posts(conn):
        response = client.post(url, {**data, "csrfmiddlewaretoken": token})
        assert response.status_code in (200, 302, 403), name
    revoke_button = reverse("admin:qb_oauth_quickbooksconnection_revoke", args=[conn.pk])
    assert client.get(revoke_button).status_code == 403
    assert client.post(revoke_button, {"csrfmiddlewaretoken": token}).status_code == 403
    assert fake_intuit.counts["token.refresh_token"] == 0
    assert fake_intuit.counts["revoke"] == 0 and fake_intuit.counts["api"] == 0
    conn.refresh_from_db()
    assert conn.state == ConnectionState.ACTIVE
    assert QuickBooksConnection.objects.filter(pk=conn.pk).exists()


# -- other users' connections ----------------------------------------------------------------


def test_another_users_connection_is_unreachable(
    alice, user, other_user, connect_realm, with_disconnect_url
):
    fake = with_disconnect_url
    mine = connect_realm(user, fake.companies[0].realm_id)
    theirs = connect_realm(other_user, fake.companies[1].realm_id)
    same_realm = connect_realm(other_user, fake.companies[0].realm_id)  # a realm we share
    fake.reset_counters()

    for conn in (theirs, same_realm):
        url = reverse("qb_oauth:disconnect", args=[conn.pk])
        assert alice.get(url).status_code == 404
        assert alice.post(url).status_code == 404
        assert alice.post(url, {"next": "/"}).status_code == 404

    page = alice.get(CONNECTIONS).content.decode()
    assert fake.companies[1].name not in page and fake.companies[1].realm_id not in page
    for conn in (theirs, same_realm):
        assert reverse("qb_oauth:disconnect", args=[conn.pk]) not in page
        assert f"qb-connection-{conn.pk}" not in page
    assert reverse("qb_oauth:disconnect", args=[mine.pk]) in page

    # Their realm through Intuit's Disconnect and Reconnect URLs: nothing of theirs.
    url = reverse("qb_oauth:intuit_disconnect")
    assert alice.get(url, {"realmId": theirs.realm_id}).status_code == 404
    reconnect = alice.get(reverse("qb_oauth:reconnect"), {"realmId": theirs.realm_id})
    assert fake.companies[1].name not in reconnect.content.decode()
    # The shared realm: only my own connection is checked at Intuit.
    assert alice.get(url, {"realmId": same_realm.realm_id}).status_code == 200

    assert fake.counts["revoke"] == 0
    assert fake.counts["token.refresh_token"] == 1  # mine, for the shared realm
    for conn in (theirs, same_realm):
        before = conn.refresh_token
        conn.refresh_from_db()
        assert conn.state == ConnectionState.ACTIVE
        assert conn.refresh_token == before
        assert not conn.events.exclude(kind="connected").exists()


# -- the token-leak sweep ----------------------------------------------------------------------


def _flow(sink, fake, client, secrets, *, realm_id=None, action="connect", **form):
    """Connect (or reconnect) through the views; the one-time code and state are noted."""
    location = client.post(reverse("qb_oauth:connect"), form)["Location"]
    back = fake.consent(location, realm_id=realm_id, action=action)
    secrets["states"].add(query_of(back).get("state") or "")
    secrets["codes"].add(query_of(back).get("code") or "")
    return back


@pytest.mark.django_db(transaction=True)
def test_no_token_leaks_anywhere(fake_intuit, settings, user, other_user, admin_user, caplog):
    """The whole life of several connections through every surface; then every token the
    fake issued is searched for in everything captured: 0 hits."""
    from django.core.management import call_command
    from quickbooks.objects.company_info import CompanyInfo

    from qb_oauth import client as qb_client
    from qb_oauth import signals, tasks, tokens
    from qb_oauth.models import SweepRun
    from tests.security_helpers import (
        TEMPLATE_LOGS,
        RecordingClient,
        Sink,
        capture_all_logs,
        command_output,
        dump_database,
    )

    fake = fake_intuit
    sink = Sink()
    secrets = {"states": set(), "codes": set()}
    token_values: set[str] = set()
    settings.QB_OAUTH = {**settings.QB_OAUTH, "SCOPES": OPENID}
    fake.disconnect_url = "http://testserver" + reverse("qb_oauth:intuit_disconnect")
    realms = [c.realm_id for c in fake.companies]

    def on_signal(sender, **kwargs):
        sink.add("signals", repr(kwargs))
        sink.add_object("reprs", kwargs.get("connection"))

    all_signals = [
        signals.connection_created,
        signals.tokens_refreshed,
        signals.reauthorization_required,
        signals.connection_disconnected,
        signals.refresh_token_expiring,
    ]
    for signal in all_signals:
        signal.connect(on_signal, weak=False, dispatch_uid="test_security")
    caplog.set_level(logging.DEBUG)
    try:
        with capture_all_logs(sink) as handler:
            browsers = {}
            for person, password in ((user, "pw-alice"), (other_user, "pw-mallory")):
                browser = RecordingClient(sink)
                response = browser.post(
                    "/accounts/login/", {"username": person.username, "password": password}
                )
                assert response.status_code == 302
                browsers[person] = browser
            alice, mallory = browsers[user], browsers[other_user]

            # 1. Connect through the views, with openid: id tokens are issued too.
            for browser, realm in ((alice, realms[0]), (alice, realms[1]), (mallory, realms[2])):
                browser.get(CONNECTIONS)
                back = _flow(sink, fake, browser, secrets, realm_id=realm, next="/quickbooks/")
                assert browser.get(back, follow=True).status_code == 200
            back = _flow(sink, fake, mallory, secrets, realm_id=realms[0], action="cancel")
            mallory.get(back, follow=True)
            conns = list(QuickBooksConnection.objects.order_by("pk"))
            assert len(conns) == 3 and all(c.id_token for c in conns)

            # 2. Straight through qb_oauth.client: TokenResponse, IdentityClaims.
            authorize = qb_client.authorization_url(
                state="leak-sweep", redirect_uri=fake.redirect_uris[0], scopes=OPENID
            )
            code = query_of(fake.consent(authorize, realm_id=realms[1]))["code"]
            secrets["codes"].add(code)
            answer = qb_client.exchange_code(code=code, redirect_uri=fake.redirect_uris[0])
            sink.add_object("reprs", answer)
            sink.add_object("reprs", qb_client.verify_id_token(answer.id_token))
            sink.add_object("reprs", qb_client.userinfo(answer.access_token))
            again = qb_client.refresh_tokens(answer.refresh_token)
            sink.add_object("reprs", again)
            sink.attempt("exceptions", qb_client.refresh_tokens, "RT1-not-a-token")
            sink.attempt("exceptions", qb_client.exchange_code, code=code, redirect_uri="x")
            qb_client.revoke_token(again.refresh_token)
            for response in (answer, again):
                token_values |= {response.access_token, response.refresh_token}
            token_values.add(answer.id_token)

            # 3. Use, then forced refreshes with rotation every time.
            for conn in conns:
                sink.attempt("exceptions", tokens.get_access_token, conn)
            fake.rotation_interval = 0
            for conn in conns:
                sink.attempt("exceptions", tokens.refresh, conn, force=True)

            # 4. An hour later at Intuit: the API answers 401, the session refreshes, retries.
            fake.clock.advance(3700)

            def read_company(conn):
                with conn.api_session() as session:
                    sink.add_object("reprs", session)
                    response = session.get(f"companyinfo/{conn.realm_id}")
                    sink.add("html", response.text)
                    return session.json_or_raise(response, "CompanyInfo")

            for conn in conns:
                sink.attempt("exceptions", read_company, conn)
                sink.attempt("exceptions", tokens.check_connection, conn)
            qb = conns[0].quickbooks_client()
            sink.add_object("reprs", qb)
            sink.add_object("reprs", vars(qb))
            info = sink.attempt("exceptions", CompanyInfo.get, conns[0].realm_id, qb=qb)
            sink.add_object("reprs", info)
            fake.clock.advance(-3700)

            # 5. Outages: refresh, the API, the exchange, the revocation.
            for kind in ("503", "500", "429", "malformed", "reset"):
                fake.inject_fault("token", kind)
                sink.attempt("exceptions", tokens.refresh, conns[0], force=True)
            settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 0.5}
            fake.timeout_seconds = 1.5
            fake.inject_fault("token", "timeout")
            sink.attempt("exceptions", tokens.refresh, conns[0], force=True)
            fake.inject_fault("api", "timeout")
            sink.attempt("exceptions", tokens.check_connection, conns[0])
            settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 5}
            for kind in ("500", "429", "malformed"):
                fake.inject_fault("api", kind)
                sink.attempt("exceptions", tokens.check_connection, conns[1])
            for kind in ("503", "malformed"):
                back = _flow(sink, fake, alice, secrets, realm_id=realms[0])
                fake.inject_fault("token", kind)
                assert alice.get(back, follow=True).status_code == 503
            fake.inject_fault("revoke", "503")
            alice.post(reverse("qb_oauth:disconnect", args=[conns[1].pk]), follow=True)
            # The answer lost after Intuit rotated: the stored token is dead, then invalid_grant.
            fake.inject_fault("token", "reset_after")
            sink.attempt("exceptions", tokens.refresh, conns[1], force=True)
            sink.attempt("exceptions", tokens.refresh, conns[1], force=True)

            # 6. invalid_grant: the user revoked access at Intuit; then reauth through the views.
            fake.revoke_grant(conns[2].realm_id)
            sink.attempt("exceptions", tokens.refresh, conns[2], force=True)
            sink.attempt("exceptions", tokens.get_access_token, conns[2])
            sink.attempt("exceptions", read_company, conns[2])
            for browser in (alice, mallory):
                browser.get(CONNECTIONS)
                for realm in realms:
                    browser.get(reverse("qb_oauth:reconnect"), {"realmId": realm})
            back = _flow(sink, fake, mallory, secrets, realm_id=realms[2])
            assert mallory.get(back, follow=True).status_code == 200
            back = _flow(sink, fake, alice, secrets, realm_id=realms[1])
            alice.get(back, follow=True)
            alice.get(back, follow=True)  # replayed: refused
            mallory.get(back, follow=True)  # another session: refused

            # 7. Revoke via the view; Intuit-side disconnect (real and forged).
            alice.get(reverse("qb_oauth:disconnect", args=[conns[0].pk]))
            alice.post(reverse("qb_oauth:disconnect", args=[conns[0].pk]), follow=True)
            alice.get(fake.disconnect_from_quickbooks(realms[1]), follow=True)
            mallory.get(reverse("qb_oauth:intuit_disconnect"), {"realmId": realms[2]})
            back = _flow(sink, fake, alice, secrets, realm_id=realms[0])
            alice.get(back, follow=True)

            # 8. The admin, as a superuser: every page and every action.
            admin = RecordingClient(sink)
            admin.force_login(admin_user)
            changelist = reverse(ADMIN_CHANGELIST)
            for query in ("", "?state=active", "?failing=yes", "?refresh_expiring=7", "?q=al"):
                assert admin.get(changelist + query).status_code == 200
            pks = list(QuickBooksConnection.objects.values_list("pk", flat=True))
            for pk in pks:
                admin.get(reverse("admin:qb_oauth_quickbooksconnection_change", args=[pk]))
                admin.get(reverse("admin:qb_oauth_quickbooksconnection_history", args=[pk]))
                admin.get(reverse("admin:qb_oauth_quickbooksconnection_revoke", args=[pk]))
                admin.get(reverse("admin:qb_oauth_quickbooksconnection_delete", args=[pk]))
            for action in ("refresh_now", "check_connection", "revoke_and_disconnect"):
                admin.post(changelist, {"action": action, "_selected_action": pks}, follow=True)
            fake.inject_fault("token", "503")
            live = QuickBooksConnection.objects.filter(state="active").first()
            admin.post(_tool("refresh", live), follow=True)
            fake.inject_fault("api", "500")
            admin.post(_tool("check", live), follow=True)
            admin.post(_tool("refresh", live), follow=True)
            admin.get(reverse("admin:qb_oauth_connectionevent_changelist"))
            for event in ConnectionEvent.objects.all():
                admin.get(reverse("admin:qb_oauth_connectionevent_change", args=[event.pk]))
            admin.get(reverse("admin:index"))

            # 9. The management commands, and the scheduled task.
            command_output(call_command, "qb_status", sink=sink)
            command_output(call_command, "qb_status", "--json", sink=sink)
            command_output(call_command, "qb_status", "--failing", sink=sink)
            command_output(call_command, "qb_refresh", "--all", "--dry-run", sink=sink)
            command_output(call_command, "qb_refresh", "--all", "--concurrency", "1", sink=sink)
            for pk in pks:
                command_output(call_command, "qb_refresh", "--connection", str(pk), sink=sink)
            command_output(call_command, "qb_rotate_keys", sink=sink)
            sink.add_object("reprs", sink.attempt("exceptions", tasks.refresh_due_connections))
            admin.get(reverse("admin:qb_oauth_sweeprun_changelist"))
            admin.post(
                changelist,
                {"action": "revoke_and_disconnect", "_selected_action": pks, "post": "yes"},
                follow=True,
            )
            records = handler.count
    finally:
        for signal in all_signals:
            signal.disconnect(dispatch_uid="test_security")

    # Everything the app holds, read back: reprs, events, errors, every table with SQL.
    for conn in QuickBooksConnection.objects.all():
        sink.add_object("reprs", conn)
        sink.add("database", conn.last_error)
    for event in ConnectionEvent.objects.all():
        sink.add_object("reprs", event)
        sink.add("database", event.detail)
    for run in SweepRun.objects.all():
        sink.add_object("reprs", run)
    rows = dump_database(sink)
    for record in caplog.records:  # pytest's own capture, formatted its way
        where = TEMPLATE_LOGS if record.name.startswith("django.template") else "logs"
        sink.add(where, caplog.handler.format(record))

    token_values |= fake.issued_tokens()
    token_values.discard("")
    kinds = {
        "access": sum(1 for t in token_values if t.count(".") == 4),
        "refresh": sum(1 for t in token_values if t.startswith("RT1-")),
        "id": sum(1 for t in token_values if t.count(".") == 2),
    }
    config_secrets = {"qb-test-secret", *settings.FERNET_KEYS}
    one_time = (secrets["codes"] | secrets["states"]) - {""}
    print(
        f"\nleak sweep: searched {len(token_values)} tokens ({kinds}), {len(one_time)} codes and "
        f"states, {len(config_secrets)} configured secrets in {sink.size():,} characters "
        f"({records} log records, {admin.responses + alice.responses + mallory.responses} "
        f"responses, {rows} database rows): "
        + ", ".join(f"{k} {sum(len(t) for t in v):,}" for k, v in sorted(sink.parts.items()))
    )
    assert kinds["access"] >= 15 and kinds["refresh"] >= 10 and kinds["id"] >= 5
    assert sink.find(token_values) == []
    assert sink.find(config_secrets) == []
    # The state travels to Intuit in the connect redirect's Location by design: not there.
    places = [p for p in sink.parts if p != "headers"]
    hits = [(where, value) for where, value in sink.find(one_time) if where in places]
    assert hits == []


def test_a_refused_callback_page_logs_no_code_at_debug(alice, user, fake_intuit, caplog):
    back = fake_intuit.consent(start(alice))
    thief = Client()
    thief.force_login(user)
    code = query_of(back)["code"]
    with caplog.at_level(logging.DEBUG, logger="django.template"):
        response = thief.get(back)  # another session: refused, the code is still unused
    assert response.status_code == 400
    assert code not in caplog.text


def test_the_leak_search_finds_whole_and_truncated_copies():
    from tests.security_helpers import Sink

    token = "RT1-206-H0-1780000000abcdefghijklmnopqrst"
    sink = Sink()
    sink.add("logs", "refresh with " + token[-20:] + " failed")
    sink.add("database", b"\x00" + token.encode() + b"\x00")
    assert sink.find([token]) == [("logs", token[:12] + "…"), ("database", token[:12] + "…")]
    assert sink.find(["RT1-206-H0-1780000000zzzzzzzzzzzzzzzzzzzz"]) == []

"""The admin of qb_oauth, against the fake Intuit over real HTTP.

Connections are made through the real OAuth path (``connect_realm``); the
display cases then set states and expiries directly on the rows.
"""

import re
from datetime import timedelta

import pytest
from django.contrib import messages
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from qb_oauth import tokens
from qb_oauth.admin import EVENT_LIMIT
from qb_oauth.models import (
    ConnectionEvent,
    ConnectionState,
    Environment,
    EventKind,
    QuickBooksConnection,
    SweepRun,
)
from qb_oauth.testing.fake import Company

pytestmark = pytest.mark.django_db

OPENID = ["com.intuit.quickbooks.accounting", "openid", "email", "profile"]
CHANGELIST = "admin:qb_oauth_quickbooksconnection_changelist"


def change_url(conn):
    return reverse("admin:qb_oauth_quickbooksconnection_change", args=[conn.pk])


def tool_url(name, conn):
    return reverse(f"admin:qb_oauth_quickbooksconnection_{name}", args=[conn.pk])


# -- secrets ------------------------------------------------------------------------


def token_values(fake):
    """Every token the fake issued and every token stored, decrypted."""
    values = set(fake.issued_tokens())
    for conn in QuickBooksConnection.objects.all():
        values |= {conn.access_token, conn.refresh_token, conn.id_token}
    values.discard(None)
    values.discard("")
    assert values, "the test must have tokens to look for"
    return values


def assert_no_tokens(response, fake):
    html = response.content.decode()
    for value in token_values(fake):
        assert value not in html
        # A slice from the end: random in every token format the fake issues.
        assert value[-16:] not in html


# -- users ----------------------------------------------------------------------------


def staff_user(django_user_model, name, codenames):
    user = django_user_model.objects.create_user(
        name, f"{name}@example.com", f"pw-{name}", is_staff=True
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="qb_oauth", codename__in=codenames)
    )
    return user


@pytest.fixture
def viewer(django_user_model):
    return staff_user(
        django_user_model,
        "viewer",
        ["view_quickbooksconnection", "view_connectionevent", "view_sweeprun"],
    )


@pytest.fixture
def changer(django_user_model):
    return staff_user(
        django_user_model,
        "changer",
        ["view_quickbooksconnection", "change_quickbooksconnection"],
    )


@pytest.fixture
def admin_user_client(client, admin_user):
    client.force_login(admin_user)
    return client


# -- connections in every state ---------------------------------------------------------


@pytest.fixture
def fleet(fake_intuit, connect_realm, django_user_model):
    """Five real connections, then set to every state and expiry the admin distinguishes."""
    fake_intuit.companies.append(Company("5550001112223334", "Dune Bakery", "US"))
    realms = [c.realm_id for c in fake_intuit.companies]
    now = timezone.now()
    users = {
        name: django_user_model.objects.create_user(name, f"{name}@shop.example", f"pw-{name}")
        for name in ("alice", "bob", "carol", "dave", "erin")
    }

    healthy = connect_realm(users["alice"], realms[0], scopes=OPENID)
    QuickBooksConnection.objects.filter(pk=healthy.pk).update(
        access_token_expires_at=now + timedelta(minutes=37, seconds=30),
        refresh_token_expires_at=now + timedelta(days=99, hours=1),
        refresh_token_hard_expires_at=now + timedelta(days=1800, hours=1),
        last_refreshed_at=now - timedelta(minutes=22, seconds=30),
    )

    expiring = connect_realm(users["bob"], realms[1])
    QuickBooksConnection.objects.filter(pk=expiring.pk).update(
        access_token_expires_at=now - timedelta(hours=2, minutes=5),
        refresh_token_expires_at=now + timedelta(days=20, hours=1),
        refresh_token_hard_expires_at=now + timedelta(days=3, hours=1),
        environment=Environment.PRODUCTION,
    )

    # Really needs reconnecting: the user revoked access at Intuit, then a refresh met it.
    reauth = connect_realm(users["carol"], realms[2])
    fake_intuit.revoke_grant(realms[2])
    with pytest.raises(Exception, match="invalid_grant"):
        tokens.refresh(reauth, force=True)

    # Really disconnected: revoked by its owner.
    gone = connect_realm(users["dave"], realms[3])
    tokens.revoke(gone, by="user")

    failing = connect_realm(users["erin"], realms[0])
    fake_intuit.inject_fault("token", "503", times=3)
    for _attempt in range(3):
        with pytest.raises(Exception, match="503"):
            tokens.refresh(failing, force=True)

    conns = {
        "healthy": healthy,
        "expiring": expiring,
        "reauth": reauth,
        "gone": gone,
        "failing": failing,
    }
    for conn in conns.values():
        conn.refresh_from_db()
    assert reauth.state == ConnectionState.REAUTH_REQUIRED
    assert gone.state == ConnectionState.DISCONNECTED
    assert failing.consecutive_failures == 3
    return conns


def row_html(html, conn):
    """The changelist's table row of ``conn``."""
    for row in re.findall(r"<tr>.*?</tr>", html, flags=re.S):
        if f'value="{conn.pk}"' in row:
            return row
    raise AssertionError(f"no row for {conn!r}")


def listed(response):
    return {c.pk for c in response.context["cl"].result_list}


# -- the changelist ---------------------------------------------------------------------


def test_changelist_shows_every_column_in_every_state(admin_user_client, fleet, fake_intuit):
    response = admin_user_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    for title in (
        "Company",
        "Owner",
        "Realm id",
        "Environment",
        "State",
        "Access token",
        "Refresh token",
        "Hard expiry",
        "Last refresh",
        "Failures",
        "Last error",
    ):
        assert f">{title}</" in html, title

    healthy = row_html(html, fleet["healthy"])
    assert "Sandbox Company US 1" in healthy
    assert ">alice<" in healthy
    assert fleet["healthy"].realm_id in healthy
    assert "Sandbox" in healthy
    assert '<span class="qb-badge qb-badge-active">Connected</span>' in healthy
    assert "expires in 37 min" in healthy
    assert "expires in 99 days" in healthy
    assert "22 min ago" in healthy
    assert "qb-warning" not in healthy and "qb-danger" not in healthy
    # The absolute time is on hover.
    expires = timezone.localtime(fleet["healthy"].access_token_expires_at)
    assert f'title="{expires:%Y-%m-%d %H:%M:%S} UTC">expires in 37 min<' in healthy

    expiring = row_html(html, fleet["expiring"])
    assert "Production" in expiring
    assert "expired 2 h ago" in expiring
    assert re.search(r'class="qb-time qb-warning" title="[^"]+">expires in 20 days<', expiring)
    assert re.search(r'class="qb-time qb-danger" title="[^"]+">expires in 3 days<', expiring)

    reauth = row_html(html, fleet["reauth"])
    assert '<span class="qb-badge qb-badge-reauth_required">Needs reconnecting</span>' in reauth
    assert "invalid_grant" in reauth  # the last error, short
    assert "qb-muted" in reauth  # a dead grant's expiries are history, not warnings

    gone = row_html(html, fleet["gone"])
    assert '<span class="qb-badge qb-badge-disconnected">Disconnected</span>' in gone
    assert "expires in" not in gone  # no token stored: no expiry shown

    failing = row_html(html, fleet["failing"])
    assert '<td class="field-failures"><span class="qb-error">3</span></td>' in failing
    assert "503" in failing
    assert_no_tokens(response, fake_intuit)


def test_long_last_error_is_truncated_in_the_list_and_full_on_the_change_page(
    admin_user_client, fleet
):
    conn = fleet["failing"]
    long_error = "Intuit's token endpoint answered HTTP 503. " + "x" * 300 + " END"
    QuickBooksConnection.objects.filter(pk=conn.pk).update(last_error=long_error)
    html = admin_user_client.get(reverse(CHANGELIST)).content.decode()
    row = row_html(html, conn)
    assert "END</span>" not in row
    assert "…" in row
    page = admin_user_client.get(change_url(conn)).content.decode()
    assert "END</div>" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=active", {"healthy", "expiring", "failing"}),
        ("state=reauth_required", {"reauth"}),
        ("state=disconnected", {"gone"}),
        ("environment=production", {"expiring"}),
        ("environment=sandbox", {"healthy", "reauth", "gone", "failing"}),
        ("refresh_expiring=30", {"expiring"}),
        ("refresh_expiring=7", {"expiring"}),
        ("failing=yes", {"reauth", "failing"}),
        ("failing=no", {"healthy", "expiring", "gone"}),
        ("q=alice", {"healthy"}),
        ("q=bob%40shop.example", {"expiring"}),
        ("q=9130357992276326", {"expiring"}),
        ("q=Dune", {"gone"}),
    ],
)
def test_filters_and_search(admin_user_client, fleet, query, expected):
    response = admin_user_client.get(reverse(CHANGELIST) + "?" + query)
    assert response.status_code == 200
    assert listed(response) == {fleet[name].pk for name in expected}


def test_refresh_expiring_filter_uses_the_hard_expiry_too(admin_user_client, fleet):
    now = timezone.now()
    QuickBooksConnection.objects.filter(pk=fleet["healthy"].pk).update(
        refresh_token_hard_expires_at=now + timedelta(days=10)
    )
    # A disconnected connection keeps its old expiries: not a live token about to expire.
    QuickBooksConnection.objects.filter(pk=fleet["gone"].pk).update(
        refresh_token_expires_at=now + timedelta(days=2)
    )
    response = admin_user_client.get(reverse(CHANGELIST) + "?refresh_expiring=30")
    assert listed(response) == {fleet["healthy"].pk, fleet["expiring"].pk}
    html = response.content.decode()
    assert "expires within 30 days" in html and "expires within 7 days" in html


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ("access_expiry", "access_token_expires_at"),
        ("refresh_expiry", "refresh_token_expires_at"),
        ("hard_expiry", "refresh_token_hard_expires_at"),
    ],
)
def test_expiry_columns_sort(admin_user_client, fleet, column, field):
    response = admin_user_client.get(reverse(CHANGELIST))
    index = list(response.context["cl"].list_display).index(column)
    for prefix in ("", "-"):
        response = admin_user_client.get(reverse(CHANGELIST) + f"?o={prefix}{index}")
        shown = [getattr(c, field) for c in response.context["cl"].result_list]
        values = [v for v in shown if v is not None]
        assert values == sorted(values, reverse=bool(prefix))
        assert len(values) >= 3


def _bulk_connections(django_user_model, n, start=0):
    users = django_user_model.objects.bulk_create(
        [
            django_user_model(username=f"bulk{start + i}", email=f"bulk{start + i}@example.com")
            for i in range(n)
        ]
    )
    now = timezone.now()
    states = list(ConnectionState.values)
    QuickBooksConnection.objects.bulk_create(
        [
            QuickBooksConnection(
                user=u,
                realm_id=str(1000 + start + i),
                company_name=f"Bulk {start + i}",
                access_token=f"bulk-access-{start + i}",
                refresh_token=f"bulk-refresh-{start + i}",
                id_token=f"bulk-id-{start + i}",
                access_token_expires_at=now + timedelta(minutes=i % 90),
                refresh_token_expires_at=now + timedelta(days=i % 100),
                refresh_token_hard_expires_at=now + timedelta(days=i % 1000),
                last_refreshed_at=now - timedelta(hours=i % 48),
                state=states[i % len(states)],
                consecutive_failures=i % 3,
                last_error="Intuit's token endpoint answered HTTP 503." if i % 3 else "",
            )
            for i, u in enumerate(users)
        ]
    )


def test_changelist_query_count_is_constant(admin_user_client, django_user_model):
    def count():
        with CaptureQueriesContext(db_connection) as ctx:
            response = admin_user_client.get(reverse(CHANGELIST))
        assert response.status_code == 200
        html = response.content.decode()
        assert "bulk-access-" not in html and "bulk-refresh-" not in html
        return len(ctx.captured_queries), len(response.context["cl"].result_list)

    _bulk_connections(django_user_model, 5)
    few, shown_few = count()
    _bulk_connections(django_user_model, 495, start=5)
    many, shown_many = count()
    assert (shown_few, shown_many) == (5, 100)
    assert few == many


# -- the change page --------------------------------------------------------------------


def test_change_page_is_read_only_and_shows_presence_not_tokens(
    admin_user_client, fleet, fake_intuit
):
    conn = fleet["healthy"]
    response = admin_user_client.get(change_url(conn))
    assert response.status_code == 200
    html = response.content.decode()
    assert response.context["adminform"].form.fields == {}
    for name in ("access_token", "refresh_token", "id_token", "token_version", "refresh_lease"):
        assert f'name="{name}' not in html
    assert html.count("stored, encrypted") == 3  # access, refresh and id token
    assert "expires in 37 min" in html
    assert "expires in 99 days" in html
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert "Refresh now" in html and "Check connection" in html
    assert "Revoke and disconnect" in html
    assert "Connected" in html  # the connect event, in the history
    assert_no_tokens(response, fake_intuit)

    gone = admin_user_client.get(change_url(fleet["gone"])).content.decode()
    assert gone.count(">none<") == 3
    assert "Revoked and disconnected" in gone


def test_change_page_shows_the_last_error_in_full_with_intuit_tid(
    admin_user_client, fleet, fake_intuit
):
    conn = fleet["reauth"]
    event = conn.events.filter(kind=EventKind.REAUTH_REQUIRED).get()
    assert event.intuit_tid
    response = admin_user_client.get(change_url(conn))
    html = response.content.decode()
    assert '<div class="qb-error-full">' in html
    assert "invalid_grant" in html
    assert f"<code>{event.intuit_tid}</code>" in html
    assert_no_tokens(response, fake_intuit)


def test_change_page_history_is_newest_first_and_capped(admin_user_client, fleet):
    conn = fleet["healthy"]
    now = timezone.now()
    ConnectionEvent.objects.bulk_create(
        [
            ConnectionEvent(
                connection=conn,
                kind=EventKind.REFRESHED,
                at=now + timedelta(seconds=i),
                detail=f"event number {i:03d}",
            )
            for i in range(EVENT_LIMIT + 10)
        ]
    )
    html = admin_user_client.get(change_url(conn)).content.decode()
    shown = re.findall(r"event number (\d{3})", html)
    assert len(shown) == EVENT_LIMIT
    assert shown == sorted(shown, reverse=True)
    assert shown[0] == f"{EVENT_LIMIT + 9:03d}"
    assert f"Showing the newest {EVENT_LIMIT} events only." in html


def test_change_page_does_not_accept_a_post(admin_user_client, fleet):
    conn = fleet["healthy"]
    before = QuickBooksConnection.objects.get(pk=conn.pk)
    response = admin_user_client.post(change_url(conn), {"company_name": "Hacked"})
    assert response.status_code == 405
    after = QuickBooksConnection.objects.get(pk=conn.pk)
    assert after.company_name == before.company_name
    assert after.refresh_token == before.refresh_token


def test_no_add_for_connections(admin_user_client, fleet):
    response = admin_user_client.get(reverse("admin:qb_oauth_quickbooksconnection_add"))
    assert response.status_code == 403
    html = admin_user_client.get(reverse(CHANGELIST)).content.decode()
    assert reverse("admin:qb_oauth_quickbooksconnection_add") not in html


def test_history_and_delete_pages_hold_no_token(admin_user_client, fleet, fake_intuit):
    conn = fleet["healthy"]
    admin_user_client.post(tool_url("refresh", conn))  # leaves a LogEntry for the history
    assert LogEntry.objects.filter(object_id=str(conn.pk)).exists()
    history = admin_user_client.get(
        reverse("admin:qb_oauth_quickbooksconnection_history", args=[conn.pk])
    )
    assert history.status_code == 200
    assert "Refreshed the tokens at Intuit." in history.content.decode()
    assert_no_tokens(history, fake_intuit)

    delete = admin_user_client.get(
        reverse("admin:qb_oauth_quickbooksconnection_delete", args=[conn.pk])
    )
    assert delete.status_code == 200
    assert_no_tokens(delete, fake_intuit)

    selected = admin_user_client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [c.pk for c in fleet.values()]},
    )
    assert selected.status_code == 200
    assert "Are you sure" in selected.content.decode()
    assert_no_tokens(selected, fake_intuit)

    # The history goes with its connection, though events cannot be deleted on their own.
    done = admin_user_client.post(
        reverse("admin:qb_oauth_quickbooksconnection_delete", args=[conn.pk]), {"post": "yes"}
    )
    assert done.status_code == 302
    assert not QuickBooksConnection.objects.filter(pk=conn.pk).exists()
    assert not ConnectionEvent.objects.filter(connection_id=conn.pk).exists()


# -- actions against the fake Intuit --------------------------------------------------


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def test_refresh_button_success(admin_user_client, admin_user, fleet, fake_intuit):
    conn = fleet["healthy"]
    before = QuickBooksConnection.objects.get(pk=conn.pk)
    response = admin_user_client.post(tool_url("refresh", conn), follow=True)
    assert response.redirect_chain[-1][0] == change_url(conn)
    [message] = messages_of(response)
    assert "refreshed; the new access token expires in 59 min" in message
    after = QuickBooksConnection.objects.get(pk=conn.pk)
    assert after.access_token != before.access_token
    assert after.token_version == before.token_version + 1
    event = after.events.first()
    assert (event.kind, event.actor) == (EventKind.REFRESHED, admin_user)
    assert_no_tokens(response, fake_intuit)


def test_refresh_button_intuit_unavailable(admin_user_client, admin_user, fleet, fake_intuit):
    conn = fleet["healthy"]
    before = QuickBooksConnection.objects.get(pk=conn.pk)
    fake_intuit.inject_fault("token", "503")
    response = admin_user_client.post(tool_url("refresh", conn), follow=True)
    [message] = messages_of(response)
    assert "Intuit unavailable, nothing changed" in message
    assert "HTTP 503" in message and "intuit_tid=" in message
    after = QuickBooksConnection.objects.get(pk=conn.pk)
    assert after.refresh_token == before.refresh_token
    assert after.state == ConnectionState.ACTIVE
    event = after.events.first()
    assert (event.kind, event.actor) == (EventKind.REFRESH_FAILED, admin_user)
    assert_no_tokens(response, fake_intuit)


def test_refresh_button_invalid_grant(admin_user_client, admin_user, fleet, fake_intuit):
    conn = fleet["healthy"]
    fake_intuit.revoke_grant(conn.realm_id)
    response = admin_user_client.post(tool_url("refresh", conn), follow=True)
    [message] = messages_of(response)
    assert "needs reconnecting" in message and "invalid_grant" in message
    after = QuickBooksConnection.objects.get(pk=conn.pk)
    assert after.state == ConnectionState.REAUTH_REQUIRED
    event = after.events.first()
    assert (event.kind, event.actor) == (EventKind.REAUTH_REQUIRED, admin_user)
    assert "Needs reconnecting" in response.content.decode()
    assert_no_tokens(response, fake_intuit)


def test_refresh_action_reports_each_connection(admin_user_client, fleet, fake_intuit):
    fake_intuit.revoke_grant(fleet["expiring"].realm_id)
    chosen = [fleet[n] for n in ("healthy", "expiring", "reauth", "gone")]
    response = admin_user_client.post(
        reverse(CHANGELIST),
        {"action": "refresh_now", "_selected_action": [c.pk for c in chosen]},
        follow=True,
    )
    text = "\n".join(messages_of(response))
    assert f"{fleet['healthy']}: refreshed" in text
    # A production connection on a sandbox site is never refreshed (nor marked lost).
    assert f"{fleet['expiring']}: " in text and "is configured for sandbox" in text
    assert QuickBooksConnection.objects.get(pk=fleet["expiring"].pk).state == "active"
    assert f"{fleet['reauth']}: needs reconnecting" in text
    assert f"{fleet['gone']}: disconnected, nothing to refresh" in text
    assert_no_tokens(response, fake_intuit)


def test_check_button_success_and_failure(admin_user_client, admin_user, fleet, fake_intuit):
    conn = fleet["healthy"]
    response = admin_user_client.post(tool_url("check", conn), follow=True)
    [message] = messages_of(response)
    assert "connection works; QuickBooks names the company “Sandbox Company US 1”" in message
    event = conn.events.first()
    assert (event.kind, event.actor) == (EventKind.CHECKED, admin_user)
    assert_no_tokens(response, fake_intuit)

    fake_intuit.inject_fault("api", "503", times=4)  # the first try and its 3 retries
    response = admin_user_client.post(tool_url("check", conn), follow=True)
    [message] = messages_of(response)
    assert "check failed" in message and "503" in message
    event = conn.events.first()
    assert (event.kind, event.actor) == (EventKind.CHECK_FAILED, admin_user)
    assert event.intuit_tid
    assert_no_tokens(response, fake_intuit)


def test_check_action_on_many(admin_user_client, fleet, fake_intuit):
    chosen = [fleet[n] for n in ("healthy", "gone")]
    response = admin_user_client.post(
        reverse(CHANGELIST),
        {"action": "check_connection", "_selected_action": [c.pk for c in chosen]},
        follow=True,
    )
    text = "\n".join(messages_of(response))
    assert f"{fleet['healthy']}: connection works" in text
    assert f"{fleet['gone']}: check failed" in text
    assert_no_tokens(response, fake_intuit)


def test_revoke_button_confirms_then_revokes(admin_user_client, admin_user, fleet, fake_intuit):
    conn = fleet["healthy"]
    grant = fake_intuit.grants[0]  # the healthy connection's grant, made first
    assert grant.realm_id == conn.realm_id and grant.live
    confirm = admin_user_client.get(tool_url("revoke", conn))
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Revoke this connection at Intuit and disconnect it?" in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert QuickBooksConnection.objects.get(pk=conn.pk).state == ConnectionState.ACTIVE
    assert_no_tokens(confirm, fake_intuit)

    response = admin_user_client.post(tool_url("revoke", conn), follow=True)
    [message] = messages_of(response)
    assert "revoked at Intuit and disconnected" in message
    after = QuickBooksConnection.objects.get(pk=conn.pk)
    assert after.state == ConnectionState.DISCONNECTED
    assert after.refresh_token is None and after.access_token is None
    assert not grant.live
    event = after.events.first()
    assert (event.kind, event.actor, event.detail) == (
        EventKind.REVOKED,
        admin_user,
        "Revoked by admin.",
    )
    assert_no_tokens(response, fake_intuit)


def test_revoke_button_intuit_unavailable_keeps_the_tokens(admin_user_client, fleet, fake_intuit):
    conn = fleet["healthy"]
    before = QuickBooksConnection.objects.get(pk=conn.pk)
    fake_intuit.inject_fault("revoke", "503")
    response = admin_user_client.post(tool_url("revoke", conn), follow=True)
    [message] = messages_of(response)
    assert "not disconnected, the tokens are kept" in message and "503" in message
    after = QuickBooksConnection.objects.get(pk=conn.pk)
    assert after.state == ConnectionState.ACTIVE
    assert after.refresh_token == before.refresh_token
    assert fake_intuit.grants[0].live
    assert_no_tokens(response, fake_intuit)


def test_revoke_action_confirms_then_revokes_many(admin_user_client, fleet, fake_intuit):
    chosen = [fleet[n] for n in ("healthy", "failing")]
    data = {"action": "revoke_and_disconnect", "_selected_action": [c.pk for c in chosen]}
    confirm = admin_user_client.post(reverse(CHANGELIST), data)
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Revoke these 2 connections at Intuit" in html
    assert 'name="post" value="yes"' in html
    assert all(
        c.state == ConnectionState.ACTIVE
        for c in QuickBooksConnection.objects.filter(pk__in=[c.pk for c in chosen])
    )
    assert_no_tokens(confirm, fake_intuit)

    response = admin_user_client.post(reverse(CHANGELIST), {**data, "post": "yes"}, follow=True)
    text = "\n".join(messages_of(response))
    assert text.count("revoked at Intuit and disconnected") == 2
    assert set(
        QuickBooksConnection.objects.filter(pk__in=[c.pk for c in chosen]).values_list(
            "state", flat=True
        )
    ) == {ConnectionState.DISCONNECTED}
    assert_no_tokens(response, fake_intuit)


def test_revoke_action_leaves_a_connection_of_other_keys_alone(admin_user_client, fleet):
    # "expiring" belongs to the production environment; this site has sandbox keys, which
    # cannot revoke it at Intuit: it is reported and kept, tokens and state unchanged.
    other = fleet["expiring"]
    before = QuickBooksConnection.objects.get(pk=other.pk)
    data = {"action": "revoke_and_disconnect", "_selected_action": [other.pk], "post": "yes"}
    response = admin_user_client.post(reverse(CHANGELIST), data, follow=True)
    text = "\n".join(messages_of(response))
    assert "not disconnected, the tokens are kept" in text
    assert "production environment" in text
    after = QuickBooksConnection.objects.get(pk=other.pk)
    assert (after.state, after.refresh_token, after.token_version) == (
        before.state,
        before.refresh_token,
        before.token_version,
    )


def outcomes(response):
    """(level, text) of each message, Intuit's random transaction ids made constant."""
    return [
        (m.level, re.sub(r"intuit_tid=[\w-]+", "intuit_tid=?", str(m)))
        for m in response.context["messages"]
    ]


@pytest.mark.parametrize("limit", [5, 4])
def test_actions_word_every_outcome_and_summarise_past_the_message_limit(
    admin_user_client, fleet, fake_intuit, monkeypatch, limit
):
    monkeypatch.setattr("qb_oauth.admin.actions.MESSAGE_LIMIT", limit)
    # The changelist's order, newest first: each action reports the connections in it.
    order = [fleet[n] for n in ("failing", "gone", "reauth", "expiring", "healthy")]
    failing, gone, reauth, expiring, healthy = (str(c) for c in order)
    other_env = (
        "This connection belongs to the production environment; this site is configured for "
        "sandbox (QB_OAUTH['ENVIRONMENT'])."
    )
    lost = "This QuickBooks connection must be reconnected by its user."

    def act(action):
        data = {"action": action, "_selected_action": [c.pk for c in order], "post": "yes"}
        return outcomes(admin_user_client.post(reverse(CHANGELIST), data, follow=True))

    def expect(each, summary):
        return each if limit >= len(each) else [*each[:limit], (messages.INFO, summary)]

    fake_intuit.inject_fault("token", "503")  # the first refresh: "failing"
    assert act("refresh_now") == expect(
        [
            (
                messages.ERROR,
                f"{failing}: Intuit unavailable, nothing changed (Intuit's token endpoint "
                "answered HTTP 503. (intuit_tid=?))",
            ),
            (messages.WARNING, f"{gone}: disconnected, nothing to refresh"),
            (messages.WARNING, f"{reauth}: needs reconnecting by its owner ({lost})"),
            (messages.ERROR, f"{expiring}: refresh failed ({other_env})"),
            (
                messages.SUCCESS,
                f"{healthy}: refreshed; the new access token expires in 59 min",
            ),
        ],
        "1 refreshed, 1 need reconnecting, 1 Intuit unavailable, 2 other failures.",
    )

    fake_intuit.inject_fault("api", "503", times=4)  # the first check, retried: "failing"
    checked = act("check_connection")
    assert checked[0][0] == messages.ERROR
    assert checked[0][1].startswith(f"{failing}: check failed (") and "503" in checked[0][1]
    assert checked == expect(
        [
            checked[0],
            (
                messages.WARNING,
                f"{gone}: check failed (This QuickBooks connection is disconnected.)",
            ),
            (messages.WARNING, f"{reauth}: check failed ({lost})"),
            (messages.WARNING, f"{expiring}: check failed ({other_env})"),
            (
                messages.SUCCESS,
                f"{healthy}: connection works; QuickBooks names the company “Sandbox Company US 1”",
            ),
        ],
        "1 of 5 connections work.",
    )

    fake_intuit.inject_fault("revoke", "503")  # the first revoke: "failing"
    revoked = act("revoke_and_disconnect")
    assert revoked[0][0] == messages.ERROR
    assert revoked[0][1].startswith(f"{failing}: not disconnected, the tokens are kept (")
    assert revoked == expect(
        [
            revoked[0],
            (messages.SUCCESS, f"{gone}: revoked at Intuit and disconnected"),
            (messages.SUCCESS, f"{reauth}: revoked at Intuit and disconnected"),
            (messages.ERROR, f"{expiring}: not disconnected, the tokens are kept ({other_env})"),
            (messages.SUCCESS, f"{healthy}: revoked at Intuit and disconnected"),
        ],
        "3 of 5 connections revoked and disconnected.",
    )
    assert LogEntry.objects.filter(change_message="Refreshed the tokens at Intuit.").count() == 1
    assert (
        LogEntry.objects.filter(change_message="Revoked at Intuit and disconnected.").count() == 3
    )


def test_the_summary_of_one_connection_is_singular(admin_user_client, fleet, monkeypatch):
    monkeypatch.setattr("qb_oauth.admin.actions.MESSAGE_LIMIT", 0)
    response = admin_user_client.post(tool_url("revoke", fleet["healthy"]), follow=True)
    assert outcomes(response) == [(messages.INFO, "1 of 1 connection revoked and disconnected.")]


def test_custom_urls_refuse_get_where_a_post_is_needed(admin_user_client, fleet):
    conn = fleet["healthy"]
    assert admin_user_client.get(tool_url("refresh", conn)).status_code == 405
    assert admin_user_client.get(tool_url("check", conn)).status_code == 405
    missing = reverse("admin:qb_oauth_quickbooksconnection_refresh", args=[999999])
    assert admin_user_client.post(missing).status_code == 404


def test_custom_urls_need_csrf(fleet, admin_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    conn = fleet["healthy"]
    for name in ("refresh", "check", "revoke"):
        assert client.post(tool_url(name, conn)).status_code == 403
    assert QuickBooksConnection.objects.get(pk=conn.pk).state == ConnectionState.ACTIVE


# -- permissions ------------------------------------------------------------------------


def test_view_only_staff_see_state_but_no_actions(client, viewer, fleet, fake_intuit):
    client.force_login(viewer)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Needs reconnecting" in html and "qb-badge-active" in html
    assert 'name="action"' not in html
    assert_no_tokens(response, fake_intuit)

    conn = fleet["healthy"]
    page = client.get(change_url(conn))
    assert page.status_code == 200
    page_html = page.content.decode()
    assert "stored, encrypted" in page_html
    assert "Refresh now" not in page_html and "Revoke and disconnect" not in page_html
    assert tool_url("refresh", conn) not in page_html
    assert_no_tokens(page, fake_intuit)

    fake_intuit.reset_counters()
    for name in ("refresh", "check", "revoke"):
        assert client.post(tool_url(name, conn)).status_code == 403
    assert client.get(tool_url("revoke", conn)).status_code == 403
    client.post(
        reverse(CHANGELIST),
        {"action": "refresh_now", "_selected_action": [conn.pk]},
    )
    client.post(
        reverse(CHANGELIST),
        {"action": "revoke_and_disconnect", "_selected_action": [conn.pk], "post": "yes"},
    )
    assert fake_intuit.counts["token.refresh_token"] == 0
    assert fake_intuit.counts["revoke"] == 0
    assert QuickBooksConnection.objects.get(pk=conn.pk).state == ConnectionState.ACTIVE
    assert not conn.events.filter(actor=viewer).exists()


def test_staff_with_change_permission_can_act(client, changer, fleet, fake_intuit):
    client.force_login(changer)
    conn = fleet["healthy"]
    html = client.get(reverse(CHANGELIST)).content.decode()
    for action in ("refresh_now", "revoke_and_disconnect", "check_connection"):
        assert f'value="{action}"' in html
    assert 'value="delete_selected"' not in html
    response = client.post(tool_url("refresh", conn), follow=True)
    assert "refreshed" in messages_of(response)[0]
    assert conn.events.first().actor == changer
    response = client.post(
        reverse(CHANGELIST),
        {"action": "check_connection", "_selected_action": [conn.pk]},
        follow=True,
    )
    assert "connection works" in messages_of(response)[0]
    assert conn.events.first().actor == changer


def test_anonymous_and_non_staff_are_sent_to_the_login(client, fleet):
    conn = fleet["healthy"]
    for url in (reverse(CHANGELIST), change_url(conn), tool_url("refresh", conn)):
        assert client.get(url).status_code == 302
    client.force_login(conn.user)  # a customer, not staff
    response = client.post(tool_url("refresh", conn))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


# -- events and sweeps -------------------------------------------------------------------


def test_events_and_sweeps_are_read_only(admin_user_client, fleet, fake_intuit):
    started = timezone.now()
    SweepRun.objects.create(
        started_at=started,
        finished_at=started + timedelta(seconds=3),
        due=4,
        refreshed=3,
        failed_other=1,
    )
    response = admin_user_client.get(reverse("admin:qb_oauth_connectionevent_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Reconnection required" in html and "Refresh failed" in html
    assert 'name="action"' not in html
    assert_no_tokens(response, fake_intuit)

    event = ConnectionEvent.objects.filter(kind=EventKind.REAUTH_REQUIRED).get()
    page = admin_user_client.get(reverse("admin:qb_oauth_connectionevent_change", args=[event.pk]))
    assert page.status_code == 200
    assert page.context["adminform"].form.fields == {}
    assert event.intuit_tid in page.content.decode()
    assert_no_tokens(page, fake_intuit)

    sweeps = admin_user_client.get(reverse("admin:qb_oauth_sweeprun_changelist"))
    assert sweeps.status_code == 200
    sweeps_html = sweeps.content.decode()
    assert "3 s" in sweeps_html
    assert '<td class="field-refreshed">3</td>' in sweeps_html
    for name in ("connectionevent", "sweeprun"):
        assert admin_user_client.get(reverse(f"admin:qb_oauth_{name}_add")).status_code == 403

"""The unlucky moments: each test here failed on the code before the hardening issue.

A database that refuses the write after Intuit answered, tokens in error pages
and error e-mails, a row that no key opens, the lease's holes, Intuit's
Disconnect URL, the keys of another Intuit app, and two small ones. Against
the fake Intuit over real HTTP; the write failures and the lease on
PostgreSQL too (``QB_TEST_DB=postgres``).
"""

import logging
import threading
import time
from datetime import timedelta

import django
import pytest
import time_machine
from django.core import mail
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from qb_oauth import signals, sweep, tokens
from qb_oauth.exceptions import (
    CredentialsMismatch,
    IntuitUnavailable,
    ReauthorizationRequired,
    TokensNotSaved,
    TokensUnreadable,
)
from qb_oauth.fields import is_unreadable
from qb_oauth.lifecycle.lease import Lease
from qb_oauth.lifecycle.refresh import refresh_holding_lease
from qb_oauth.lifecycle.unreadable import UNREADABLE_TEXT
from qb_oauth.models import ConnectionEvent, ConnectionState, EventKind, QuickBooksConnection

from .helpers import (
    Recorder,
    clear_field_key_cache,
    database_refuses_token_writes,
    expire_access,
    raw_token_columns,
)
from .marks import requires_postgres

pytestmark = pytest.mark.django_db(transaction=True)

OPENID = ["com.intuit.quickbooks.accounting", "openid", "email"]


def row(conn) -> QuickBooksConnection:
    return QuickBooksConnection.objects.get(pk=conn.pk)


def events(conn, kind) -> int:
    return ConnectionEvent.objects.filter(connection_id=conn.pk, kind=kind).count()


# -- 1. a database write that fails after Intuit answered ------------------------------


def test_a_store_refused_for_a_few_seconds_costs_nothing(fake_intuit, user, connect_realm, caplog):
    conn = connect_realm(user)
    fake_intuit.clock.advance(86400 + 60)  # the next refresh rotates the refresh token
    before = row(conn)
    with database_refuses_token_writes(1.5), caplog.at_level(logging.WARNING, "qb_oauth"):
        tokens.refresh(conn, force=True)
    stored = row(conn)
    assert stored.refresh_token != before.refresh_token  # rotated, and kept
    assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
    assert conn.access_token == stored.access_token
    assert stored.refresh_lease_owner == "" and stored.refresh_lease_expires_at is None
    assert events(conn, EventKind.REFRESHED) == 1
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert retries, "the refused writes were retried"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in fake_intuit.issued_tokens():
        assert secret not in logged


def test_a_store_refused_past_the_lease_is_written_later(
    fake_intuit, user, connect_realm, settings, caplog
):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "REFRESH_LEASE_TTL": 1.5}
    conn = connect_realm(user)
    fake_intuit.clock.advance(86400 + 60)
    with database_refuses_token_writes(4), caplog.at_level(logging.WARNING, "qb_oauth"):
        with pytest.raises(TokensNotSaved):
            tokens.refresh(conn, force=True)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and f"Connection {conn.pk}:" in errors[0].getMessage()
        # Intuit rotated: the stored refresh token is dead, the new one is in memory only.
        assert row(conn).refresh_token != fake_intuit.current_refresh_token(conn.realm_id)
        # Meanwhile the background store holds the lease: nobody refreshes with the dead one.
        assert row(conn).refresh_lease_owner
    assert wait_for(lambda: _stored_current(fake_intuit, conn))
    stored = row(conn)
    assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
    assert stored.state == ConnectionState.ACTIVE
    assert events(conn, EventKind.REFRESHED) == 1
    assert tokens.get_access_token(stored) == stored.access_token
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Stored refreshed tokens of connection" in logged
    for secret in fake_intuit.issued_tokens():
        assert secret not in logged


def test_a_late_store_never_overwrites_a_reconnect(fake_intuit, user, connect_realm, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "REFRESH_LEASE_TTL": 1.0}
    conn = connect_realm(user)
    fake_intuit.clock.advance(86400 + 60)
    with database_refuses_token_writes(2.5):
        with pytest.raises(TokensNotSaved):
            tokens.refresh(conn, force=True)
        time.sleep(2.6)
    reconnected = connect_realm(user)  # a new grant, stored once the database takes writes
    time.sleep(3)  # the background store's next attempts: it must find newer tokens
    assert row(conn).refresh_token == reconnected.refresh_token


def test_a_new_connection_that_cannot_be_saved_is_revoked_and_says_so(
    fake_intuit, client, user, settings
):
    from tests.test_views import start

    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 0.5}  # the retry window: 6 s
    client.force_login(user)
    with database_refuses_token_writes(60):
        response = client.get(fake_intuit.consent(start(client)))
    assert response.status_code == 503
    assert response.context["reason"] == "not_saved"
    assert len(fake_intuit.grants) == 1 and fake_intuit.grants[0].revoked  # nothing dangles
    assert QuickBooksConnection.objects.count() == 0


# -- 2. tokens on Django's error page and in error e-mails ---------------------------------


def _secrets(fake, conn):
    found = set(fake.issued_tokens())
    found.update(t for t in (conn.access_token, conn.refresh_token, conn.id_token) if t)
    return {s for s in found if s and len(s) > 8}


def _assert_free_of(text: str, secrets: set[str]) -> None:
    leaked = [s[:12] + "…" for s in secrets if s in text]
    assert not leaked, f"tokens on the page: {leaked}"


@pytest.fixture
def debug_client(settings, user):
    settings.DEBUG = True
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def wait_for(predicate, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _stored_current(fake, conn) -> bool:
    return row(conn).refresh_token == fake.current_refresh_token(conn.realm_id)


@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
def test_the_debug_page_of_a_failed_store_shows_no_token(
    fake_intuit, user, connect_realm, debug_client, settings, accept
):
    conn = connect_realm(user, scopes=OPENID)
    fake_intuit.clock.advance(86400 + 60)
    settings.QB_OAUTH = {**settings.QB_OAUTH, "REFRESH_LEASE_TTL": 0.5}
    url = reverse("test_refresh_now", args=[conn.pk])
    with database_refuses_token_writes(2):
        response = debug_client.get(url, headers={"accept": accept})
    assert response.status_code == 500
    page = response.content.decode()
    _assert_free_of(page, _secrets(fake_intuit, conn))
    assert "TokensNotSaved" in page
    if accept == "text/html":
        assert "Local vars" in page  # Django's technical page, with its frames' variables
    assert wait_for(lambda: _stored_current(fake_intuit, conn))  # and nothing was lost


def test_the_debug_page_of_a_failed_api_call_shows_no_token(
    fake_intuit, user, connect_realm, debug_client
):
    conn = connect_realm(user)
    fake_intuit.inject_fault("api", "reset")
    response = debug_client.get(reverse("test_api_call", args=[conn.pk]))
    assert response.status_code == 500
    page = response.content.decode()
    _assert_free_of(page, _secrets(fake_intuit, conn))
    assert "IntuitUnavailable" in page and "Local vars" in page


def test_the_debug_page_of_a_failed_refresh_at_intuit_shows_no_token(
    fake_intuit, user, connect_realm, debug_client
):
    conn = connect_realm(user)
    fake_intuit.inject_fault("token", "reset_after")  # Intuit rotates, the answer is lost
    fake_intuit.clock.advance(86400 + 60)
    response = debug_client.get(reverse("test_refresh_now", args=[conn.pk]))
    assert response.status_code == 500
    _assert_free_of(response.content.decode(), _secrets(fake_intuit, conn))


def test_the_error_email_shows_no_token(fake_intuit, user, connect_realm, settings):
    settings.DEBUG = False
    # Django 6 takes addresses; 5.2 takes (name, address) pairs.
    settings.ADMINS = (
        ["ops@example.com"] if django.VERSION >= (6,) else [("Ops", "ops@example.com")]
    )
    # Django 6.1 names its mail backends in MAILERS (earlier versions ignore the setting).
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    settings.LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "mail_admins": {
                "level": "ERROR",
                "class": "django.utils.log.AdminEmailHandler",
                "include_html": True,
            }
        },
        "loggers": {
            "django.request": {"handlers": ["mail_admins"], "level": "ERROR", "propagate": False}
        },
    }
    from logging.config import dictConfig

    dictConfig(settings.LOGGING)
    conn = connect_realm(user, scopes=OPENID)
    fake_intuit.clock.advance(86400 + 60)
    settings.QB_OAUTH = {**settings.QB_OAUTH, "REFRESH_LEASE_TTL": 0.5}
    client = Client(raise_request_exception=False)
    client.force_login(user)
    try:
        with database_refuses_token_writes(2):
            assert client.get(reverse("test_refresh_now", args=[conn.pk])).status_code == 500
    finally:
        request_logger = logging.getLogger("django.request")
        request_logger.handlers.clear()
        request_logger.propagate = True
    assert wait_for(lambda: _stored_current(fake_intuit, conn))
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    bodies = [message.body] + [content for content, _type in message.alternatives]
    for body in bodies:
        _assert_free_of(body, _secrets(fake_intuit, conn))
    assert "TokensNotSaved" in message.body


# -- 3. one row that no key can decrypt breaks only itself ---------------------------------


@pytest.fixture
def keys(settings):
    clear_field_key_cache()
    yield settings
    clear_field_key_cache()


@pytest.fixture
def lost_key_fleet(fake_intuit, connect_realm, user, keys, django_user_model):
    """Alice's two connections: one written under a key that is then lost, one readable;
    and Bob's readable connection whose hard expiry is near (an expiry warning is due)."""
    keys.FERNET_KEYS = ["key-lost-later"]
    clear_field_key_cache()
    lost = connect_realm(user, fake_intuit.companies[0].realm_id)
    keys.FERNET_KEYS = ["key-now", "key-lost-later"]
    clear_field_key_cache()
    fine = connect_realm(user, fake_intuit.companies[1].realm_id)
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob")
    warned = connect_realm(bob, fake_intuit.companies[2].realm_id)
    keys.FERNET_KEYS = ["key-now"]  # the old key is gone
    clear_field_key_cache()
    soon = timezone.now() + timedelta(days=3)
    QuickBooksConnection.objects.filter(pk=warned.pk).update(refresh_token_hard_expires_at=soon)
    past = timezone.now() - timedelta(days=2)
    QuickBooksConnection.objects.filter(pk__in=[lost.pk, fine.pk]).update(last_refreshed_at=past)
    return {"lost": lost, "fine": fine, "warned": warned}


def test_the_users_page_lists_every_row_without_decrypting(lost_key_fleet, client, user):
    client.force_login(user)
    response = client.get(reverse("qb_oauth:connections"))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="qb-connection-{lost_key_fleet["lost"].pk}"' in html
    assert f'id="qb-connection-{lost_key_fleet["fine"].pk}"' in html


def test_a_sweep_reports_the_unreadable_row_and_goes_on(
    lost_key_fleet, fake_intuit, client, user, caplog
):
    lost, fine, warned = (lost_key_fleet[k] for k in ("lost", "fine", "warned"))
    with Recorder(signals.refresh_token_expiring) as warnings, caplog.at_level(logging.ERROR):
        stats = sweep.run_sweep(fan_out=False, concurrency=1)
    assert stats.refreshed == 1 and stats.failed_other == 1
    assert [c["connection"].pk for c in warnings.calls] == [warned.pk]
    assert row(fine).last_refreshed_at > timezone.now() - timedelta(minutes=1)
    flagged = row(lost)
    assert flagged.tokens_unreadable_at is not None
    assert flagged.state == ConnectionState.ACTIVE  # nothing decided for the user
    assert flagged.next_attempt_at > timezone.now()  # backing off
    assert events(lost, EventKind.TOKENS_UNREADABLE) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"Connection {lost.pk}: " + UNREADABLE_TEXT
    ]
    assert raw_token_columns(lost.pk)[1]  # the ciphertext is kept, should the key come back
    # The user's page says so.
    client.force_login(user)
    html = client.get(reverse("qb_oauth:connections")).content.decode()
    start = html.index(f'id="qb-connection-{lost.pk}"')
    assert 'data-state="reauth_required"' in html[start : start + 2000]
    # A second sweep records no second event.
    QuickBooksConnection.objects.filter(pk=lost.pk).update(next_attempt_at=None)
    sweep.run_sweep(fan_out=False, concurrency=1)
    assert events(lost, EventKind.TOKENS_UNREADABLE) == 1


def test_get_access_token_on_an_unreadable_row_asks_for_a_reconnect(lost_key_fleet):
    lost = QuickBooksConnection.objects.get(pk=lost_key_fleet["lost"].pk)
    assert is_unreadable(lost.refresh_token)  # the row loads; the token does not open
    with pytest.raises(TokensUnreadable):
        tokens.get_access_token(lost)
    assert issubclass(TokensUnreadable, ReauthorizationRequired)
    assert row(lost).tokens_unreadable_at is not None


def test_the_admin_refreshes_the_others_and_flags_the_row(lost_key_fleet, admin_client):
    lost, fine = lost_key_fleet["lost"], lost_key_fleet["fine"]
    changelist = reverse("admin:qb_oauth_quickbooksconnection_changelist")
    data = {"action": "refresh_now", "_selected_action": [lost.pk, fine.pk]}
    response = admin_client.post(changelist, data, follow=True)
    assert response.status_code == 200
    texts = [str(m) for m in response.context["messages"]]
    assert any("refreshed; the new access token expires" in t for t in texts)
    assert any("needs reconnecting" in t for t in texts)
    page = admin_client.get(changelist).content.decode()
    assert "tokens unreadable" in page
    change = admin_client.get(reverse("admin:qb_oauth_quickbooksconnection_change", args=[lost.pk]))
    assert change.status_code == 200


def test_qb_status_flags_the_row(lost_key_fleet):
    import io
    import json

    tokens.get_access_token(row(lost_key_fleet["fine"]))
    with pytest.raises(TokensUnreadable):
        tokens.get_access_token(row(lost_key_fleet["lost"]))
    out = io.StringIO()
    call_command("qb_status", stdout=out)
    lost_pk = lost_key_fleet["lost"].pk
    line = next(x for x in out.getvalue().splitlines() if x.startswith(f"{lost_pk} "))
    assert "tokens_unreadable" in line
    out = io.StringIO()
    call_command("qb_status", "--json", stdout=out)
    by_id = {r["id"]: r for r in json.loads(out.getvalue())}
    assert by_id[lost_key_fleet["lost"].pk]["tokens_unreadable"] is True
    assert by_id[lost_key_fleet["fine"].pk]["tokens_unreadable"] is False


def test_qb_rotate_keys_rewrites_what_it_can_and_reports_the_rest(lost_key_fleet):
    lost, fine = lost_key_fleet["lost"], lost_key_fleet["fine"]
    before = raw_token_columns(lost.pk)
    expected = r"1 connection\(s\) could not be read.*ids " + str(lost.pk)
    with pytest.raises(CommandError, match=expected):
        call_command("qb_rotate_keys", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert raw_token_columns(lost.pk) == before  # left as it was
    assert row(lost).tokens_unreadable_at is not None
    assert row(fine).refresh_token  # readable, rewritten


def test_restoring_the_key_or_reconnecting_heals_the_row(lost_key_fleet, keys, connect_realm, user):
    lost = lost_key_fleet["lost"]
    with pytest.raises(TokensUnreadable):
        tokens.get_access_token(row(lost))
    keys.FERNET_KEYS = ["key-now", "key-lost-later"]  # the operator puts the old key back
    clear_field_key_cache()
    assert tokens.get_access_token(row(lost))
    assert row(lost).tokens_unreadable_at is None
    keys.FERNET_KEYS = ["key-now"]
    clear_field_key_cache()
    with pytest.raises(TokensUnreadable):
        tokens.get_access_token(row(lost))
    healed = connect_realm(user, lost.realm_id)  # the user reconnects
    assert healed.pk == lost.pk
    assert row(lost).tokens_unreadable_at is None
    assert tokens.get_access_token(row(lost)) == healed.access_token


def test_disconnect_of_an_unreadable_row_drops_it_here(lost_key_fleet, client, user):
    lost = lost_key_fleet["lost"]
    client.force_login(user)
    response = client.post(reverse("qb_oauth:disconnect", args=[lost.pk]), follow=True)
    assert response.status_code == 200
    stored = row(lost)
    assert stored.state == ConnectionState.DISCONNECTED and stored.refresh_token is None
    assert "not revoked at Intuit" in stored.events.first().detail


# -- 4. the lease ------------------------------------------------------------------------


def test_a_holder_whose_lease_was_taken_over_does_not_mark_a_live_grant(
    fake_intuit, user, connect_realm
):
    """The mirror of the takeover rule: A paused past its lease; B took the lease over and
    reached Intuit first (rotating the token); A's own call then meets invalid_grant."""
    conn = connect_realm(user)
    fake_intuit.rotation_interval = 0  # every refresh rotates, the old value dies at once
    held = row(conn)  # what A read under its lease
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        refresh_lease_owner="B", refresh_lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    from qb_oauth import client as intuit

    intuit.refresh_tokens(held.refresh_token)  # B's call: rotated at Intuit, not stored yet
    with Recorder(signals.reauthorization_required) as reauth:
        with pytest.raises(IntuitUnavailable, match="another caller held the lease"):
            refresh_holding_lease(conn, held, Lease("A", True))
    stored = row(conn)
    assert stored.state == ConnectionState.ACTIVE
    assert events(conn, EventKind.REAUTH_REQUIRED) == 0 and not reauth.calls
    assert stored.refresh_lease_owner == "B"  # B's lease is untouched


def test_a_clock_running_ahead_cannot_take_over_a_live_lease(fake_intuit, user, connect_realm):
    """Lease times come from the database: a machine whose clock runs ten minutes ahead
    waits for the live holder instead of refreshing a second time."""
    conn = connect_realm(user)
    expire_access(conn)
    fake_intuit.latency = {"token": 1.0}
    holder = threading.Thread(target=tokens.refresh, args=(row(conn),), kwargs={"force": True})
    holder.start()
    deadline = time.monotonic() + 5
    while not row(conn).refresh_lease_owner and time.monotonic() < deadline:
        time.sleep(0.01)
    assert row(conn).refresh_lease_owner
    with time_machine.travel(timezone.now() + timedelta(minutes=10), tick=True):
        other = tokens.refresh(row(conn), force=True)
    holder.join()
    assert fake_intuit.counts["token.refresh_token"] == 1
    assert other.refresh_token == row(conn).refresh_token


@requires_postgres("row locks and the lease across connections")
def test_the_lease_holds_against_a_skewed_clock_on_postgres(fake_intuit, user, connect_realm):
    test_a_clock_running_ahead_cannot_take_over_a_live_lease(fake_intuit, user, connect_realm)


def test_a_trickling_answer_cannot_hold_the_lease(fake_intuit, user, connect_realm, settings):
    """HTTP_TIMEOUT bounds the whole call: an answer that trickles in a byte at a time,
    each read well within the timeout, ends as an outage long before the lease does."""
    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 1}
    conn = connect_realm(user)
    fake_intuit.inject_fault("token", "trickle", seconds=0.05)  # about a minute in all
    before = row(conn)
    started = time.monotonic()
    with pytest.raises(IntuitUnavailable, match="Timed out"):
        tokens.refresh(conn, force=True)
    assert time.monotonic() - started < before_lease_ends(settings)
    after = row(conn)
    assert after.refresh_token == before.refresh_token  # an outage changes no token
    assert after.refresh_lease_owner == ""  # released by its holder, not expired


def before_lease_ends(settings) -> float:
    from qb_oauth.conf import qb_settings

    return qb_settings.REFRESH_LEASE_TTL


def test_the_lease_outlasts_the_longest_refresh_check(settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 10, "REFRESH_LEASE_TTL": 30}
    found = [m for m in run_checks() if m.id == "qb_oauth.E007"]
    assert found and "REFRESH_LEASE_TTL" in found[0].msg
    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 10, "REFRESH_LEASE_TTL": 36}
    assert not [m for m in run_checks() if m.id == "qb_oauth.E007"]
    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 10, "REFRESH_LEASE_TTL": None}
    assert not [m for m in run_checks() if m.id == "qb_oauth.E007"]


# -- 5. Intuit's Disconnect URL -------------------------------------------------------------


def test_ten_visits_of_a_forged_disconnect_link_cost_one_refresh(
    fake_intuit, client, user, connect_realm
):
    conn = connect_realm(user)
    client.force_login(user)
    url = reverse("qb_oauth:intuit_disconnect") + f"?realmId={conn.realm_id}"
    for _visit in range(10):
        response = client.get(url)
        assert response.status_code == 200
        assert response.context["outcome"] == "still_connected"
    assert fake_intuit.counts["token.refresh_token"] == 1
    assert events(conn, EventKind.REFRESHED) == 1
    assert row(conn).state == ConnectionState.ACTIVE


def test_a_reconnect_during_the_disconnect_check_is_kept(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    fake_intuit.revoke_grant(conn.realm_id)  # the user disconnected inside QuickBooks
    new = {}

    def reconnect_now(sender, connection, **kwargs):
        # Right after Intuit said invalid_grant (and it was committed), the user reconnects.
        new["conn"] = connect_realm(user, conn.realm_id)

    signals.reauthorization_required.connect(reconnect_now, weak=False)
    try:
        assert tokens.disconnected_at_intuit(row(conn)) is False
    finally:
        signals.reauthorization_required.disconnect(reconnect_now)
    stored = row(conn)
    assert stored.state == ConnectionState.ACTIVE
    assert stored.refresh_token == new["conn"].refresh_token
    assert fake_intuit.grant_for_realm(conn.realm_id).live


def test_a_row_that_needs_reconnecting_is_revoked_before_it_is_cleared(
    fake_intuit, user, connect_realm
):
    conn = connect_realm(user)
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        state=ConnectionState.REAUTH_REQUIRED
    )  # e.g. marked after a lost answer; its grant may still be alive at Intuit
    grant = fake_intuit.grant_for_realm(conn.realm_id)
    fake_intuit.inject_fault("revoke", "503")
    with pytest.raises(IntuitUnavailable):
        tokens.disconnected_at_intuit(row(conn))
    assert row(conn).refresh_token and grant.live  # nothing changed
    assert tokens.disconnected_at_intuit(row(conn)) is True
    assert not grant.live
    assert row(conn).state == ConnectionState.DISCONNECTED


@requires_postgres("the Disconnect URL's guards under real row locks")
def test_disconnect_url_guards_on_postgres(fake_intuit, client, user, connect_realm):
    test_ten_visits_of_a_forged_disconnect_link_cost_one_refresh(
        fake_intuit, client, user, connect_realm
    )
    QuickBooksConnection.objects.all().delete()
    test_a_reconnect_during_the_disconnect_check_is_kept(fake_intuit, user, connect_realm)


# -- 7. the keys of another Intuit app -------------------------------------------------------


def test_connect_records_the_client_id(fake_intuit, user, connect_realm, settings):
    conn = connect_realm(user)
    assert row(conn).client_id == settings.QB_OAUTH["CLIENT_ID"]


def test_connections_of_another_app_are_never_refreshed_or_marked(
    fake_intuit, user, connect_realm, settings
):
    conn = connect_realm(user)
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        last_refreshed_at=timezone.now() - timedelta(days=3),
        refresh_token_hard_expires_at=timezone.now() + timedelta(days=3),
    )
    settings.QB_OAUTH = {**settings.QB_OAUTH, "CLIENT_ID": "another-app"}
    fake_intuit.client_id = "another-app"
    before = row(conn)
    with pytest.raises(CredentialsMismatch, match="another Intuit app"):
        tokens.refresh(row(conn), force=True)
    with pytest.raises(CredentialsMismatch):
        tokens.revoke(row(conn))
    expire_access(conn)
    with pytest.raises(CredentialsMismatch):
        tokens.get_access_token(row(conn))
    stats = sweep.run_sweep(fan_out=False)
    assert stats.due == 0 and stats.warnings_sent == 0
    after = row(conn)
    assert (after.state, after.refresh_token, after.token_version) == (
        before.state,
        before.refresh_token,
        before.token_version,
    )
    assert fake_intuit.counts["token.refresh_token"] == 0
    assert fake_intuit.counts.get("revoke", 0) == 0


def test_a_check_warns_of_stored_connections_of_another_app(
    fake_intuit, user, connect_realm, settings
):
    connect_realm(user)
    assert not [m for m in run_checks(databases=["default"]) if m.id == "qb_oauth.W004"]
    settings.QB_OAUTH = {**settings.QB_OAUTH, "CLIENT_ID": "another-app"}
    found = [m for m in run_checks(databases=["default"]) if m.id == "qb_oauth.W004"]
    assert len(found) == 1 and "qb-test-client" in found[0].msg
    assert not [m for m in run_checks() if m.id == "qb_oauth.W004"]  # needs a database


def test_the_admin_and_qb_status_show_the_client_id(fake_intuit, user, connect_realm, admin_client):
    import io
    import json

    conn = connect_realm(user)
    change = admin_client.get(reverse("admin:qb_oauth_quickbooksconnection_change", args=[conn.pk]))
    assert "qb-test-client" in change.content.decode()
    out = io.StringIO()
    call_command("qb_status", "--json", stdout=out)
    assert json.loads(out.getvalue())[0]["client_id"] == "qb-test-client"


def test_the_migration_records_the_client_id_of_existing_rows(settings, django_user_model):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("qb_oauth", "0001_initial")])
    old_apps = executor.loader.project_state([("qb_oauth", "0001_initial")]).apps
    Connection = old_apps.get_model("qb_oauth", "QuickBooksConnection")
    owner = django_user_model.objects.create_user("old", "old@example.com", "pw")
    Connection.objects.create(user_id=owner.pk, realm_id="123", environment="sandbox")
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("qb_oauth"))
    assert QuickBooksConnection.objects.get(realm_id="123").client_id == "qb-test-client"


# -- 9. smaller ones ------------------------------------------------------------------------


@requires_postgres("SQLite has one writer: the lifecycle writes inside the caller's transaction")
def test_a_fresh_token_inside_select_for_update_never_waits_for_its_own_lock(
    fake_intuit, user, connect_realm
):
    conn = connect_realm(user)
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        last_used_at=timezone.now() - timedelta(hours=1)
    )
    stale = row(conn).last_used_at
    with transaction.atomic():
        locked = QuickBooksConnection.objects.select_for_update().get(pk=conn.pk)
        assert tokens.get_access_token(locked) == conn.access_token
    assert row(conn).last_used_at == stale  # skipped, not waited for


def test_expiry_warnings_use_the_robust_sender(fake_intuit, user, connect_realm, django_user_model):
    conns = [connect_realm(user, fake_intuit.companies[i].realm_id) for i in range(2)]
    QuickBooksConnection.objects.filter(pk__in=[c.pk for c in conns]).update(
        refresh_token_hard_expires_at=timezone.now() + timedelta(days=3)
    )
    seen = []

    def failing_receiver(sender, connection, **kwargs):
        seen.append(connection.pk)
        raise RuntimeError("a receiver with a bug")

    signals.refresh_token_expiring.connect(failing_receiver, weak=False)
    try:
        stats = sweep.run_sweep(fan_out=False)
    finally:
        signals.refresh_token_expiring.disconnect(failing_receiver)
    assert stats.warnings_sent == 2
    assert sorted(seen) == sorted(c.pk for c in conns)

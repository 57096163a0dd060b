"""The lifecycle in qb_oauth.tokens, against the fake Intuit over real HTTP."""

from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from qb_oauth import signals, tokens
from qb_oauth.exceptions import (
    ConnectionNotActive,
    IntuitError,
    IntuitUnavailable,
    ReauthorizationRequired,
)
from qb_oauth.lifecycle.lease import Lease
from qb_oauth.lifecycle.refresh import mark_reauth_required, refresh_holding_lease
from qb_oauth.models import ConnectionEvent, ConnectionState, EventKind, QuickBooksConnection

from .helpers import Recorder, expire_access, snapshot
from .marks import requires_postgres

pytestmark = pytest.mark.django_db(transaction=True)


def test_connect_stores_tokens_expiries_name_and_event(fake_intuit, user, connect_realm):
    realm = fake_intuit.companies[0].realm_id
    with Recorder(signals.connection_created) as created:
        conn = connect_realm(user, realm)
    grant = fake_intuit.grant_for_realm(realm)
    assert conn.realm_id == realm
    assert conn.company_name == fake_intuit.companies[0].name
    assert conn.state == ConnectionState.ACTIVE
    assert conn.refresh_token == grant.current_refresh_token
    assert conn.access_token in grant.access_tokens
    now = timezone.now()
    assert timedelta(minutes=59) < conn.access_token_expires_at - now <= timedelta(hours=1)
    assert timedelta(days=100) < conn.refresh_token_expires_at - now <= timedelta(days=101)
    assert conn.refresh_token_hard_expires_at - now > timedelta(days=4 * 365)
    assert list(conn.events.values_list("kind", flat=True)) == [EventKind.CONNECTED]
    assert created.calls and created.calls[0]["created"] is True


def test_connect_again_updates_the_same_connection(fake_intuit, user, connect_realm):
    first = connect_realm(user)
    second = connect_realm(user)
    assert first.pk == second.pk
    assert QuickBooksConnection.objects.count() == 1
    assert second.refresh_token == fake_intuit.grants[-1].current_refresh_token
    assert second.events.first().kind == EventKind.RECONNECTED


def test_connect_with_openid_verifies_the_id_token(fake_intuit, user, connect_realm):
    conn = connect_realm(user, scopes=["com.intuit.quickbooks.accounting", "openid", "email"])
    assert conn.id_token
    assert conn.intuit_user_id


def test_connect_with_a_rejected_code_stores_nothing(fake_intuit, user):
    with pytest.raises(ReauthorizationRequired):
        tokens.connect(
            user=user,
            code="not-a-code",
            realm_id="123",
            redirect_uri="http://testserver/quickbooks/callback/",
        )
    assert QuickBooksConnection.objects.count() == 0


@pytest.mark.parametrize("kind", ["503", "429", "timeout", "reset", "malformed"])
def test_connect_when_intuit_is_down_stores_nothing(fake_intuit, user, settings, kind):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 0.5}
    fake_intuit.timeout_seconds = 1.5
    from qb_oauth import client

    url = client.authorization_url(state="s", redirect_uri="http://testserver/quickbooks/callback/")
    redirect = fake_intuit.consent(url, realm_id=fake_intuit.companies[0].realm_id)
    code = redirect.split("code=")[1].split("&")[0]
    fake_intuit.inject_fault("token", kind)
    with pytest.raises(IntuitUnavailable):
        tokens.connect(
            user=user,
            code=code,
            realm_id=fake_intuit.companies[0].realm_id,
            redirect_uri="http://testserver/quickbooks/callback/",
        )
    assert QuickBooksConnection.objects.count() == 0


def test_fresh_token_is_one_query_and_no_network(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    tokens.get_access_token(conn)  # writes last_used_at once
    fake_intuit.reset_counters()
    with CaptureQueriesContext(db_connection) as queries:
        token = tokens.get_access_token(conn)
    assert token == conn.access_token
    assert len(queries) == 1
    assert sum(fake_intuit.counts.values()) == 0


def test_expired_token_is_refreshed_and_stored(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    old_access = conn.access_token
    expire_access(conn)
    with Recorder(signals.tokens_refreshed) as refreshed:
        token = tokens.get_access_token(conn)
    assert token != old_access
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.access_token == token
    assert stored.access_token_expires_at > timezone.now() + timedelta(minutes=50)
    assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
    assert fake_intuit.counts["token.refresh_token"] == 1
    assert stored.events.first().kind == EventKind.REFRESHED
    assert refreshed.calls and refreshed.calls[0]["connection"].pk == conn.pk


def test_token_within_margin_counts_as_expired(fake_intuit, user, connect_realm, settings):
    conn = connect_realm(user)
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        access_token_expires_at=timezone.now() + timedelta(seconds=200)
    )
    tokens.get_access_token(conn)
    assert fake_intuit.counts["token.refresh_token"] == 1


def test_rotated_refresh_token_is_stored(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    first_rt = conn.refresh_token
    fake_intuit.clock.advance(86400 + 60)
    expire_access(conn)
    tokens.get_access_token(conn)
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.refresh_token != first_rt
    assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)


def test_refresh_without_force_does_nothing_when_fresh(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    tokens.refresh(conn)
    assert fake_intuit.counts["token.refresh_token"] == 0
    tokens.refresh(conn, force=True)
    assert fake_intuit.counts["token.refresh_token"] == 1


@pytest.mark.parametrize("kind", ["500", "502", "503", "429", "timeout", "reset", "malformed"])
def test_outage_changes_no_token_and_raises_unavailable(
    fake_intuit, user, connect_realm, settings, kind
):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 0.5}
    fake_intuit.timeout_seconds = 1.5
    conn = connect_realm(user)
    expire_access(conn)
    before = snapshot(conn)
    fake_intuit.inject_fault("token", kind)
    with pytest.raises(IntuitUnavailable) as info:
        tokens.get_access_token(conn)
    assert snapshot(conn) == before
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.state == ConnectionState.ACTIVE
    assert stored.consecutive_failures == 1
    assert stored.next_attempt_at > timezone.now()
    assert stored.last_error
    assert stored.events.first().kind == EventKind.REFRESH_FAILED
    for secret in (before["access_token"], before["refresh_token"]):
        assert secret not in str(info.value)
        assert secret not in stored.last_error
    # Intuit back: the next call works and clears the failure count.
    assert tokens.get_access_token(conn)
    stored.refresh_from_db()
    assert stored.consecutive_failures == 0 and stored.next_attempt_at is None


def test_invalid_grant_marks_reauth_required(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    fake_intuit.revoke_grant(conn.realm_id)
    expire_access(conn)
    with Recorder(signals.reauthorization_required) as reauth:
        with pytest.raises(ReauthorizationRequired):
            tokens.get_access_token(conn)
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.state == ConnectionState.REAUTH_REQUIRED
    assert stored.refresh_token  # kept: nothing to gain by dropping it
    assert stored.events.first().kind == EventKind.REAUTH_REQUIRED
    assert len(reauth.calls) == 1
    with pytest.raises(ReauthorizationRequired):
        tokens.get_access_token(conn)
    assert fake_intuit.counts["token.refresh_token"] == 1  # no second call


def test_invalid_grant_after_another_process_rotated_is_not_reauth(
    fake_intuit, user, connect_realm
):
    """Another process stored a newer refresh token while we held an old one: use it."""
    conn = connect_realm(user)
    old_rt = conn.refresh_token
    # Our worker read the row (and would hold a lease) before the other process stored.
    row = QuickBooksConnection.objects.get(pk=conn.pk)
    # "Another process" rotates: the fake issues a new refresh token which is stored.
    fake_intuit.clock.advance(86400 + 60)
    other = QuickBooksConnection.objects.get(pk=conn.pk)
    tokens.refresh(other, force=True)
    new_rt = QuickBooksConnection.objects.get(pk=conn.pk).refresh_token
    assert new_rt != old_rt
    # Our worker still calls Intuit with the old, now dead, value (as a worker whose
    # lease outlived its holder would), and must not mark the connection reauth_required.
    from qb_oauth import client

    with pytest.raises(ReauthorizationRequired):
        client.refresh_tokens(old_rt)
    assert row.refresh_token == old_rt
    refresh_holding_lease(conn, row, Lease("x", True))
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.state == ConnectionState.ACTIVE
    assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
    assert not stored.events.filter(kind=EventKind.REAUTH_REQUIRED).exists()


def test_invalid_client_is_not_reauth(fake_intuit, user, connect_realm, settings):
    conn = connect_realm(user)
    expire_access(conn)
    settings.QB_OAUTH = {**settings.QB_OAUTH, "CLIENT_SECRET": "wrong"}
    with pytest.raises(IntuitError):
        tokens.get_access_token(conn)
    assert QuickBooksConnection.objects.get(pk=conn.pk).state == ConnectionState.ACTIVE


def test_revoke_ends_the_grant_and_drops_tokens(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    with Recorder(signals.connection_disconnected) as disconnected:
        tokens.revoke(conn, actor=user)
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.state == ConnectionState.DISCONNECTED
    assert stored.access_token is None and stored.refresh_token is None
    assert fake_intuit.grant_for_realm(conn.realm_id) is None
    assert stored.events.first().kind == EventKind.REVOKED
    assert stored.events.first().actor == user
    assert disconnected.calls[0]["by"] == "user"
    with pytest.raises(ConnectionNotActive):
        tokens.get_access_token(stored)


def test_revoke_when_intuit_is_down_keeps_tokens(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    before = snapshot(conn)
    fake_intuit.inject_fault("revoke", "503")
    with pytest.raises(IntuitUnavailable):
        tokens.revoke(conn)
    assert snapshot(conn) == before


def test_revoke_of_an_already_revoked_grant_still_disconnects(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    fake_intuit.revoke_grant(conn.realm_id)
    tokens.revoke(conn)
    assert QuickBooksConnection.objects.get(pk=conn.pk).state == ConnectionState.DISCONNECTED


def test_disconnected_at_intuit_is_checked_before_dropping(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    # A forged Disconnect URL: the grant is alive, nothing is dropped.
    assert tokens.disconnected_at_intuit(conn) is False
    assert QuickBooksConnection.objects.get(pk=conn.pk).state == ConnectionState.ACTIVE
    fake_intuit.revoke_grant(conn.realm_id)
    # Within DISCONNECT_CHECK_INTERVAL a visit answers from the last check, without Intuit.
    refreshes = fake_intuit.counts["token.refresh_token"]
    assert tokens.disconnected_at_intuit(conn) is False
    assert fake_intuit.counts["token.refresh_token"] == refreshes
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        disconnect_checked_at=timezone.now() - timedelta(minutes=6)
    )
    assert tokens.disconnected_at_intuit(conn) is True
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.state == ConnectionState.DISCONNECTED and stored.refresh_token is None
    assert stored.events.first().kind == EventKind.DISCONNECTED_AT_INTUIT


def test_api_session_reads_company_and_retries_once_after_401(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    with conn.api_session() as session:
        data = session.json_or_raise(session.get(f"companyinfo/{conn.realm_id}"))
    assert data["CompanyInfo"]["CompanyName"] == conn.company_name
    # Intuit's clock passes the hour, ours does not: the API answers 401, the
    # session forces one refresh and retries.
    fake_intuit.clock.advance(3700)
    fake_intuit.reset_counters()
    with conn.api_session() as session:
        response = session.get(f"companyinfo/{conn.realm_id}")
    assert response.status_code == 200
    assert fake_intuit.counts["token.refresh_token"] == 1
    assert fake_intuit.counts["api"] == 2


def test_check_connection_records_event(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    assert tokens.check_connection(conn, actor=user) == conn.company_name
    assert conn.events.first().kind == EventKind.CHECKED


def test_repr_and_str_show_no_token(fake_intuit, user, connect_realm):
    conn = connect_realm(user, scopes=["com.intuit.quickbooks.accounting", "openid"])
    for text in (repr(conn), str(conn)):
        for secret in (conn.access_token, conn.refresh_token, conn.id_token):
            assert secret not in text


def test_events_never_hold_tokens(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    expire_access(conn)
    tokens.get_access_token(conn)
    tokens.revoke(conn)
    issued = fake_intuit.issued_tokens()
    for event in ConnectionEvent.objects.all():
        for secret in issued:
            assert secret not in event.detail


def test_a_late_refresh_answer_does_not_overwrite_a_reconnect(fake_intuit, user, connect_realm):
    """A holder whose lease ran out while a reconnect stored a new grant keeps the new grant."""
    conn = connect_realm(user)
    stale_row = QuickBooksConnection.objects.get(pk=conn.pk)
    reconnected = connect_realm(user)  # the user reconnects: new grant, token_version bumped
    assert reconnected.pk == conn.pk
    refresh_holding_lease(conn, stale_row, Lease("lease-ran-out", True))
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.refresh_token == reconnected.refresh_token
    assert conn.refresh_token == reconnected.refresh_token  # the caller got the stored tokens
    assert fake_intuit.counts["token.refresh_token"] == 1  # the late answer existed


def test_revoke_clears_every_expiry(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    tokens.revoke(conn)
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.access_token_expires_at is None
    assert stored.refresh_token_expires_at is None
    assert stored.refresh_token_hard_expires_at is None
    assert not QuickBooksConnection.objects.refresh_expiring_within(10**9).exists()


def test_refresh_caused_by_a_401_records_the_actor(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    fake_intuit.clock.advance(3700)
    assert tokens.check_connection(conn, actor=user) == conn.company_name
    refreshed = conn.events.filter(kind=EventKind.REFRESHED).get()
    assert refreshed.actor == user


def test_api_fault_detail_is_never_copied(fake_intuit, user, connect_realm):
    """Intuit's 401 detail echoes part of the token: errors keep only message and code."""
    conn = connect_realm(user)
    fake_intuit.revoke_grant(conn.realm_id)  # 401 on the API, invalid_grant on refresh
    with pytest.raises(ReauthorizationRequired):
        tokens.check_connection(conn)
    texts = [e.detail for e in ConnectionEvent.objects.all()]
    texts.append(QuickBooksConnection.objects.get(pk=conn.pk).last_error)
    for text in texts:
        assert conn.access_token[:12] not in text


class Rollback(Exception):
    pass


@requires_postgres("SQLite has one writer, so the lifecycle writes inside the caller's transaction")
def test_a_refresh_inside_a_rolled_back_transaction_keeps_the_rotated_token(
    fake_intuit, user, connect_realm
):
    """ATOMIC_REQUESTS or atomic(): the rotated refresh token must survive a rollback."""
    from django.db import transaction

    conn = connect_realm(user)
    fake_intuit.rotation_interval = 0  # every refresh rotates, the old value dies at once
    expire_access(conn)
    with pytest.raises(Rollback):
        with transaction.atomic():
            assert tokens.get_access_token(conn)
            raise Rollback
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
    tokens.refresh(stored, force=True)  # the grant is alive
    assert QuickBooksConnection.objects.get(pk=conn.pk).state == ConnectionState.ACTIVE


@requires_postgres("SQLite has one writer, so the lifecycle writes inside the caller's transaction")
def test_connect_inside_a_transaction_commits_on_its_own(fake_intuit, user, connect_realm):
    from django.db import transaction

    with pytest.raises(Rollback):
        with transaction.atomic():
            conn = connect_realm(user)
            assert QuickBooksConnection.objects.filter(pk=conn.pk).exists()
            raise Rollback
    assert QuickBooksConnection.objects.filter(pk=conn.pk).exists()


def test_a_failing_signal_receiver_does_not_fail_the_caller(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    expire_access(conn)

    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    signals.tokens_refreshed.connect(broken)
    try:
        assert tokens.get_access_token(conn)
    finally:
        signals.tokens_refreshed.disconnect(broken)
    assert QuickBooksConnection.objects.get(pk=conn.pk).access_token == conn.access_token


def test_disconnect_resets_failures_and_reconnect_clears_the_old_grants_dates(
    fake_intuit, user, connect_realm
):
    conn = connect_realm(user)
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        consecutive_failures=3, expiry_warning_sent_at=timezone.now()
    )
    tokens.revoke(QuickBooksConnection.objects.get(pk=conn.pk))
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.consecutive_failures == 0
    assert not QuickBooksConnection.objects.failing().exists()
    again = connect_realm(user)
    assert again.expiry_warning_sent_at is None
    assert again.refresh_token_hard_expires_at is not None


@requires_postgres("SQLite has one writer, so the lifecycle writes inside the caller's transaction")
def test_a_row_locked_by_the_callers_transaction_fails_instead_of_hanging(
    fake_intuit, user, connect_realm, settings
):
    from django.db import OperationalError, transaction

    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 0.2}  # lock wait: 5.4 s
    conn = connect_realm(user)
    expire_access(conn)
    with pytest.raises(Rollback):
        with transaction.atomic():
            QuickBooksConnection.objects.select_for_update().get(pk=conn.pk)
            with pytest.raises(OperationalError):
                tokens.get_access_token(conn)
            raise Rollback
    assert QuickBooksConnection.objects.get(pk=conn.pk).refresh_token == conn.refresh_token


def test_invalid_grant_right_after_a_takeover_is_checked_again_before_reauth(
    fake_intuit, user, connect_realm
):
    """A lease taken over from an interrupted holder: its invalid_grant is not trusted at once
    (the holder may still store a rotated token); the next attempt decides."""
    conn = connect_realm(user)
    expire_access(conn)
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        refresh_lease_owner="interrupted",
        refresh_lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    fake_intuit.revoke_grant(conn.realm_id)
    with pytest.raises(IntuitUnavailable):
        tokens.get_access_token(conn)
    assert QuickBooksConnection.objects.get(pk=conn.pk).state == ConnectionState.ACTIVE
    with pytest.raises(ReauthorizationRequired):
        tokens.get_access_token(conn)
    assert QuickBooksConnection.objects.get(pk=conn.pk).state == ConnectionState.REAUTH_REQUIRED


def test_a_callback_naming_another_realm_stores_nothing_and_ends_the_grant(fake_intuit, user):
    from urllib.parse import parse_qs, urlsplit

    from qb_oauth import client
    from qb_oauth.exceptions import RealmMismatch

    callback = "http://testserver/quickbooks/callback/"
    url = client.authorization_url(state="s", redirect_uri=callback)
    granted, named = fake_intuit.companies[0].realm_id, fake_intuit.companies[1].realm_id
    code = parse_qs(urlsplit(fake_intuit.consent(url, realm_id=granted)).query)["code"][0]
    with pytest.raises(RealmMismatch):
        tokens.connect(user=user, code=code, realm_id=named, redirect_uri=callback)
    assert QuickBooksConnection.objects.count() == 0
    assert fake_intuit.grant_for_realm(granted) is None  # revoked, not left dangling


def test_a_connection_of_the_other_environment_is_never_marked_lost(
    fake_intuit, user, connect_realm, settings
):
    conn = connect_realm(user)
    expire_access(conn)
    settings.QB_OAUTH = {**settings.QB_OAUTH, "ENVIRONMENT": "production"}
    with pytest.raises(IntuitError, match="sandbox environment"):
        tokens.get_access_token(conn)
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.state == ConnectionState.ACTIVE
    assert fake_intuit.counts["token.refresh_token"] == 0


def test_invalid_grant_is_not_marked_when_newer_tokens_were_stored(
    fake_intuit, user, connect_realm
):
    conn = connect_realm(user)
    old_version = conn.token_version
    connect_realm(user)  # a reconnect stores a new grant: token_version moves on
    err = ReauthorizationRequired("Intuit refused the grant (invalid_grant).")
    assert mark_reauth_required(conn, old_version, err, owner="x") is False
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.state == ConnectionState.ACTIVE
    assert not stored.events.filter(kind=EventKind.REAUTH_REQUIRED).exists()


def test_updated_at_moves_with_every_token_or_state_write(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    stamps = [QuickBooksConnection.objects.get(pk=conn.pk).updated_at]
    expire_access(conn)
    tokens.get_access_token(conn)
    stamps.append(QuickBooksConnection.objects.get(pk=conn.pk).updated_at)
    fake_intuit.inject_fault("token", "503")
    with pytest.raises(IntuitUnavailable):
        tokens.refresh(conn, force=True)
    stamps.append(QuickBooksConnection.objects.get(pk=conn.pk).updated_at)
    tokens.revoke(conn)
    stamps.append(QuickBooksConnection.objects.get(pk=conn.pk).updated_at)
    assert stamps == sorted(stamps) and len(set(stamps)) == 4

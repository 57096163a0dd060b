"""Single-flight refresh under concurrent threads and processes, against the fake over HTTP.

On PostgreSQL these are the proof; on SQLite they run too (the lease is a
conditional UPDATE, which SQLite serialises).
"""

import multiprocessing
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from qb_oauth import tokens
from qb_oauth.exceptions import ReauthorizationRequired
from qb_oauth.models import ConnectionState, EventKind, QuickBooksConnection

from .helpers import run_threads
from .workers import ask_for_token

pytestmark = [pytest.mark.django_db(transaction=True)]


def expire(conn):
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=1)
    )


def test_50_threads_in_4_processes_cause_one_refresh(fake_intuit, user, connect_realm, settings):
    conn = connect_realm(user)
    old_access, old_refresh = conn.access_token, conn.refresh_token
    fake_intuit.rotation_interval = 0  # every refresh rotates: the stored one must be the newest
    fake_intuit.latency = {"token": 0.3}
    expire(conn)
    fake_intuit.reset_counters()

    ctx = multiprocessing.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    db_name = db_connection.settings_dict["NAME"]
    per_process = [13, 13, 12, 12]
    procs = [
        ctx.Process(
            target=ask_for_token,
            args=(db_name, dict(settings.QB_OAUTH), conn.pk, n, ready, start, results),
        )
        for n in per_process
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    start.set()
    outcomes = [results.get(timeout=60) for _ in range(sum(per_process))]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0

    errors = [detail for kind, detail in outcomes if kind != "ok"]
    assert errors == []
    handed_out = {token for _kind, token in outcomes}
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert fake_intuit.counts["token.refresh_token"] == 1
    assert handed_out == {stored.access_token}
    assert stored.access_token != old_access
    assert stored.refresh_token != old_refresh
    assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
    assert stored.events.filter(kind=EventKind.REFRESHED).count() == 1


def test_rotation_without_grace_then_concurrent_refreshes_lose_nothing(
    fake_intuit, user, connect_realm
):
    conn = connect_realm(user)
    fake_intuit.rotation_interval = 0
    fake_intuit.rotation_grace = 0
    fake_intuit.latency = {"token": 0.1}
    for _round in range(3):
        version = QuickBooksConnection.objects.get(pk=conn.pk).token_version

        def force_refresh(version=version):
            c = QuickBooksConnection.objects.get(pk=conn.pk)
            c.token_version = version  # every caller decided on the same stored tokens
            return tokens.refresh(c, force=True).refresh_token

        results, errors = run_threads(8, force_refresh)
        assert errors == []
        stored = QuickBooksConnection.objects.get(pk=conn.pk)
        assert stored.state == ConnectionState.ACTIVE
        assert set(results) == {stored.refresh_token}
        assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
    assert fake_intuit.counts["token.refresh_token"] == 3
    assert not stored.events.filter(kind=EventKind.REAUTH_REQUIRED).exists()


def test_waiters_raise_unavailable_when_the_holder_meets_an_outage(
    fake_intuit, user, connect_realm
):
    conn = connect_realm(user)
    expire(conn)
    before = QuickBooksConnection.objects.get(pk=conn.pk)
    fake_intuit.latency = {"token": 0.3}
    fake_intuit.inject_fault("token", "503", times=1)

    def ask():
        return tokens.get_access_token(QuickBooksConnection.objects.get(pk=conn.pk))

    results, errors = run_threads(6, ask)
    # One holder met the 503; the others gave up with it instead of queueing at Intuit.
    assert fake_intuit.counts["token.refresh_token"] <= 2
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.state == ConnectionState.ACTIVE
    if stored.refresh_token == before.refresh_token:
        assert stored.access_token in {before.access_token, *results}
    assert all(type(e).__name__ == "IntuitUnavailable" for e in errors)


def test_revoked_grant_under_concurrency_marks_reauth_once(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    expire(conn)
    fake_intuit.revoke_grant(conn.realm_id)
    fake_intuit.latency = {"token": 0.2}

    def ask():
        return tokens.get_access_token(QuickBooksConnection.objects.get(pk=conn.pk))

    results, errors = run_threads(10, ask)
    assert results == []
    assert all(isinstance(e, ReauthorizationRequired) for e in errors)
    assert fake_intuit.counts["token.refresh_token"] == 1
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.events.filter(kind=EventKind.REAUTH_REQUIRED).count() == 1


def test_a_dead_holder_lease_expires(fake_intuit, user, connect_realm, settings):
    """A worker killed while holding the lease blocks nobody for longer than the lease."""
    conn = connect_realm(user)
    expire(conn)
    QuickBooksConnection.objects.filter(pk=conn.pk).update(
        refresh_lease_owner="dead-worker",
        refresh_lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert tokens.get_access_token(QuickBooksConnection.objects.get(pk=conn.pk))
    assert fake_intuit.counts["token.refresh_token"] == 1


def test_threads_of_one_process_share_one_flight_and_its_outage(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    expire(conn)
    fake_intuit.latency = {"token": 0.3}
    fake_intuit.inject_fault("token", "503", times=1)

    def ask():
        return tokens.get_access_token(QuickBooksConnection.objects.get(pk=conn.pk))

    results, errors = run_threads(10, ask)
    assert results == []
    assert [type(e).__name__ for e in errors] == ["IntuitUnavailable"] * 10
    assert fake_intuit.counts["token.refresh_token"] == 1  # not one try per waiting thread
    fake_intuit.latency = {}
    results, errors = run_threads(10, ask)
    assert errors == [] and len(set(results)) == 1
    assert fake_intuit.counts["token.refresh_token"] == 2

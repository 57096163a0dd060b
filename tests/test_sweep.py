"""The scheduled refresh (qb_oauth.tasks / qb_oauth.sweep) against the fake Intuit.

Connections are made through the real path (``connect_realm``), then made due
by moving their timestamps with ``queryset.update``. Every test runs on SQLite
and on PostgreSQL (``QB_TEST_DB=postgres``).
"""

import logging
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from qb_oauth import signals, sweep, tasks, tokens
from qb_oauth.models import (
    ConnectionEvent,
    ConnectionState,
    EventKind,
    QuickBooksConnection,
    SweepRun,
)
from qb_oauth.testing import Company

pytestmark = pytest.mark.django_db(transaction=True)

QBC = QuickBooksConnection


@pytest.fixture
def make_connections(fake_intuit, connect_realm, django_user_model):
    """``make(n)`` -> n connections, each its own user and realm at the fake."""
    counter = {"n": 0}

    def make(n):
        made = []
        for _ in range(n):
            counter["n"] += 1
            i = counter["n"]
            realm = str(5_000_000 + i)
            fake_intuit.companies.append(Company(realm, f"Company {i}"))
            user = django_user_model.objects.create_user(f"user{i}", f"u{i}@example.com", "pw")
            made.append(connect_realm(user, realm))
        return made

    return make


def ago(**kw):
    return timezone.now() - timedelta(**kw)


def ahead(**kw):
    return timezone.now() + timedelta(**kw)


def make_stale(*conns):
    """Due by keepalive: last refreshed two days ago (access token still fresh)."""
    QBC.objects.filter(pk__in=[c.pk for c in conns]).update(last_refreshed_at=ago(days=2))


def make_expiring(*conns):
    """Due by use: access token within the margin, used an hour ago."""
    QBC.objects.filter(pk__in=[c.pk for c in conns]).update(
        access_token_expires_at=ahead(seconds=60), last_used_at=ago(hours=1)
    )


def refreshes(fake, conn):
    """How many times the fake was asked to refresh with ``conn``'s current stored token."""
    return fake.refresh_counts[conn.refresh_token]


@pytest.fixture
def received():
    """Every signal qb_oauth sent during the test, as (name, kwargs)."""
    got = []
    hooks = []
    for name in ("tokens_refreshed", "reauthorization_required", "refresh_token_expiring"):
        signal = getattr(signals, name)

        def hook(sender, name=name, **kwargs):
            kwargs.pop("signal", None)
            got.append((name, kwargs))

        signal.connect(hook, weak=False)
        hooks.append((signal, hook))
    yield got
    for signal, hook in hooks:
        signal.disconnect(hook)


# -- what is due ------------------------------------------------------------------------


def test_due_set_and_only_it_is_refreshed(make_connections, fake_intuit):
    (stale, expiring, fresh, unused, reauth, disconnected, backing_off, retry_now) = (
        make_connections(8)
    )
    make_stale(stale, reauth, disconnected, backing_off, retry_now)
    make_expiring(expiring)
    # Access token about to expire, but nobody used the connection lately.
    QBC.objects.filter(pk=unused.pk).update(
        access_token_expires_at=ahead(seconds=60), last_used_at=ago(days=30)
    )
    QBC.objects.filter(pk=reauth.pk).update(state=ConnectionState.REAUTH_REQUIRED)
    QBC.objects.filter(pk=disconnected.pk).update(state=ConnectionState.DISCONNECTED)
    QBC.objects.filter(pk=backing_off.pk).update(
        consecutive_failures=2, next_attempt_at=ahead(minutes=5)
    )
    QBC.objects.filter(pk=retry_now.pk).update(
        consecutive_failures=2, next_attempt_at=ago(minutes=1)
    )

    due = set(QBC.objects.due().values_list("pk", flat=True))
    assert due == {stale.pk, expiring.pk, retry_now.pk}

    result = tasks.refresh_due_connections(fan_out=False)

    assert result["due"] == 3
    assert result["refreshed"] == 3
    for conn in (stale, expiring, retry_now):
        assert refreshes(fake_intuit, conn) == 1, conn
    for conn in (fresh, unused, reauth, disconnected, backing_off):
        assert refreshes(fake_intuit, conn) == 0, conn
    assert fake_intuit.counts["token.refresh_token"] == 3
    for conn in (stale, expiring, retry_now):
        row = QBC.objects.get(pk=conn.pk)
        assert row.token_version == conn.token_version + 1
        assert row.last_refreshed_at > ago(minutes=1)
        assert row.access_token_expires_at > ahead(minutes=50)
        assert row.next_attempt_at is None
        assert row.consecutive_failures == 0
        assert row.refresh_lease_expires_at is None
    # Nothing is due any more: a second run (a replay) does nothing.
    again = tasks.refresh_due_connections(fan_out=False)
    assert again["due"] == 0
    assert fake_intuit.counts["token.refresh_token"] == 3


def test_keepalive_refreshes_though_the_access_token_is_fresh(make_connections, fake_intuit):
    (conn,) = make_connections(1)
    make_stale(conn)
    assert not conn.access_token_expired(300)
    stats = sweep.run_sweep(fan_out=False)
    assert stats.refreshed == 1
    assert refreshes(fake_intuit, conn) == 1
    row = QBC.objects.get(pk=conn.pk)
    assert row.access_token != conn.access_token
    assert row.last_refreshed_at > ago(minutes=1)
    assert ConnectionEvent.objects.filter(connection=conn, kind=EventKind.REFRESHED).count() == 1


def test_rotated_refresh_token_is_stored(make_connections, fake_intuit):
    (conn,) = make_connections(1)
    make_stale(conn)
    fake_intuit.clock.advance(2 * 86400)  # past Intuit's rotation interval
    sweep.run_sweep(fan_out=False)
    row = QBC.objects.get(pk=conn.pk)
    assert row.refresh_token != conn.refresh_token
    assert row.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)


def test_recent_use_window_and_keepalive_age_are_settings(make_connections, settings):
    conn_a, conn_b = make_connections(2)
    QBC.objects.filter(pk=conn_a.pk).update(
        access_token_expires_at=ahead(seconds=60), last_used_at=ago(days=10)
    )
    QBC.objects.filter(pk=conn_b.pk).update(last_refreshed_at=ago(hours=3))
    assert not QBC.objects.due().exists()
    settings.QB_OAUTH = {**settings.QB_OAUTH, "RECENT_USE_WINDOW": 14 * 86400}
    assert set(QBC.objects.due().values_list("pk", flat=True)) == {conn_a.pk}
    settings.QB_OAUTH = {**settings.QB_OAUTH, "KEEPALIVE_AGE": 3600}
    assert set(QBC.objects.due().values_list("pk", flat=True)) == {conn_a.pk, conn_b.pk}


def test_connection_held_by_another_refresh_is_skipped(make_connections, fake_intuit):
    held, free = make_connections(2)
    make_stale(held, free)
    QBC.objects.filter(pk=held.pk).update(
        refresh_lease_owner="someone", refresh_lease_expires_at=ahead(seconds=30)
    )
    stats = sweep.run_sweep(fan_out=False)
    assert (stats.due, stats.refreshed, stats.skipped_locked) == (2, 1, 1)
    assert refreshes(fake_intuit, held) == 0
    row = QBC.objects.get(pk=held.pk)
    assert row.next_attempt_at is None  # not claimed: the next run takes it
    assert row.refresh_lease_owner == "someone"


# -- failures: backoff, and reauth only on invalid_grant ------------------------------------


@pytest.mark.parametrize("fault", ["503", "429", "500", "reset", "malformed"])
def test_outage_backs_off_and_keeps_the_connection(make_connections, fake_intuit, fault, received):
    (conn,) = make_connections(1)
    make_stale(conn)
    fake_intuit.inject_fault("token", fault, times=1)
    stats = sweep.run_sweep(fan_out=False)
    assert (stats.due, stats.failed_unavailable, stats.refreshed) == (1, 1, 0)
    row = QBC.objects.get(pk=conn.pk)
    assert row.state == ConnectionState.ACTIVE
    assert row.refresh_token == conn.refresh_token
    assert row.token_version == conn.token_version
    assert row.consecutive_failures == 1
    delay = (row.next_attempt_at - timezone.now()).total_seconds()
    assert tokens.backoff_delay(1) - 5 < delay <= tokens.backoff_delay(1)
    assert row.last_error
    assert ConnectionEvent.objects.filter(connection=conn, kind=EventKind.REFRESH_FAILED).exists()
    assert not [r for r in received if r[0] == "reauthorization_required"]
    # Backing off: the next run leaves it alone and does not call Intuit.
    calls = fake_intuit.counts["token.refresh_token"]
    assert sweep.run_sweep(fan_out=False).due == 0
    assert fake_intuit.counts["token.refresh_token"] == calls


def test_timeout_is_an_outage_not_a_reauth(make_connections, fake_intuit, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 0.5}
    fake_intuit.timeout_seconds = 1.0
    (conn,) = make_connections(1)
    make_stale(conn)
    fake_intuit.inject_fault("token", "timeout", times=1)
    stats = sweep.run_sweep(fan_out=False)
    assert stats.failed_unavailable == 1
    row = QBC.objects.get(pk=conn.pk)
    assert row.state == ConnectionState.ACTIVE
    assert row.consecutive_failures == 1


def test_backoff_grows_exponentially_then_recovers(make_connections, fake_intuit, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "BACKOFF_BASE": 60, "BACKOFF_MAX": 200}
    (conn,) = make_connections(1)
    make_stale(conn)
    fake_intuit.inject_fault("token", "503", times=3)
    delays = []
    for _ in range(3):
        QBC.objects.filter(pk=conn.pk).update(next_attempt_at=ago(seconds=1))
        assert sweep.run_sweep(fan_out=False).failed_unavailable == 1
        row = QBC.objects.get(pk=conn.pk)
        delays.append(round((row.next_attempt_at - timezone.now()).total_seconds(), -1))
    assert delays == [60, 120, 200]  # doubled, then capped at BACKOFF_MAX
    assert row.consecutive_failures == 3
    QBC.objects.filter(pk=conn.pk).update(next_attempt_at=ago(seconds=1))
    assert sweep.run_sweep(fan_out=False).refreshed == 1
    row = QBC.objects.get(pk=conn.pk)
    assert (row.consecutive_failures, row.next_attempt_at, row.last_error) == (0, None, "")


def test_invalid_grant_marks_reauth_required(make_connections, fake_intuit, received):
    revoked, fine = make_connections(2)
    make_stale(revoked, fine)
    fake_intuit.revoke_grant(revoked.realm_id)
    stats = sweep.run_sweep(fan_out=False)
    assert (stats.due, stats.refreshed, stats.reauth_required) == (2, 1, 1)
    row = QBC.objects.get(pk=revoked.pk)
    assert row.state == ConnectionState.REAUTH_REQUIRED
    assert ConnectionEvent.objects.filter(connection=row, kind=EventKind.REAUTH_REQUIRED).exists()
    reauth = [kw for name, kw in received if name == "reauthorization_required"]
    assert [kw["connection"].pk for kw in reauth] == [revoked.pk]
    assert QBC.objects.get(pk=fine.pk).state == ConnectionState.ACTIVE
    # Never due again until the user reconnects.
    calls = fake_intuit.counts["token.refresh_token"]
    assert sweep.run_sweep(fan_out=False).due == 0
    assert fake_intuit.counts["token.refresh_token"] == calls


# -- safety: twice at once, replays, claims ---------------------------------------------------


@pytest.mark.parametrize("chunk_size", [100, 2])
def test_two_sweeps_at_once_refresh_each_connection_once(
    make_connections, fake_intuit, settings, chunk_size
):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "SWEEP_CHUNK_SIZE": chunk_size}
    conns = make_connections(8)
    make_stale(*conns[:4])
    make_expiring(*conns[4:])
    fake_intuit.latency = {"token": 0.2}
    results = []
    barrier = threading.Barrier(2)

    def one_sweep():
        barrier.wait()
        try:
            results.append(sweep.run_sweep(fan_out=False))
        finally:
            from django.db import connections

            connections.close_all()

    threads = [threading.Thread(target=one_sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    for conn in conns:
        assert refreshes(fake_intuit, conn) == 1, conn
    assert fake_intuit.counts["token.refresh_token"] == 8
    assert sum(r.refreshed for r in results) == 8
    assert sum(r.failed_unavailable + r.failed_other for r in results) == 0
    assert SweepRun.objects.filter(finished_at__isnull=False).count() == 2
    for conn in conns:
        row = QBC.objects.get(pk=conn.pk)
        assert row.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
        assert row.next_attempt_at is None


def test_sweep_and_get_access_token_at_once_refresh_once(make_connections, fake_intuit):
    conns = make_connections(4)
    make_expiring(*conns)
    QBC.objects.filter(pk__in=[c.pk for c in conns]).update(
        access_token_expires_at=ahead(seconds=10)
    )
    fake_intuit.latency = {"token": 0.2}
    got = []

    def use():
        try:
            for conn in conns:
                got.append(tokens.get_access_token(QBC.objects.get(pk=conn.pk)))
        finally:
            from django.db import connections

            connections.close_all()

    user_thread = threading.Thread(target=use)
    user_thread.start()
    sweep.run_sweep(fan_out=False)
    user_thread.join()
    for conn in conns:
        assert refreshes(fake_intuit, conn) == 1
    assert len(got) == 4


def test_a_batch_whose_claim_was_taken_does_nothing(make_connections, fake_intuit):
    (conn,) = make_connections(1)
    make_stale(conn)
    mine = timezone.now() + timedelta(minutes=15)
    later_sweep = mine + timedelta(seconds=1)
    QBC.objects.filter(pk=conn.pk).update(next_attempt_at=later_sweep)
    stats = sweep.refresh_batch([[conn.pk, conn.token_version]], claim=mine)
    assert stats.skipped_locked == 1
    assert fake_intuit.counts["token.refresh_token"] == 0
    assert QBC.objects.get(pk=conn.pk).next_attempt_at == later_sweep


def test_a_batch_seeing_a_newer_version_does_nothing(make_connections, fake_intuit):
    (conn,) = make_connections(1)
    make_stale(conn)
    claim = timezone.now() + timedelta(minutes=15)
    QBC.objects.filter(pk=conn.pk).update(next_attempt_at=claim)
    stats = sweep.refresh_batch([[conn.pk, conn.token_version - 1]], claim=claim)
    assert stats.skipped_fresh == 1
    assert fake_intuit.counts["token.refresh_token"] == 0
    assert QBC.objects.get(pk=conn.pk).next_attempt_at is None  # the claim is given back


def test_refresh_connections_by_pk(make_connections, fake_intuit):
    due, fresh = make_connections(2)
    make_stale(due)
    result = tasks.refresh_connections([due.pk, fresh.pk])
    assert (result["refreshed"], result["skipped_fresh"]) == (1, 1)
    assert result["pid"] and result["host"]
    forced = tasks.refresh_connections([fresh.pk], force=True)
    assert forced["refreshed"] == 1
    assert refreshes(fake_intuit, fresh) == 1


def test_fan_out_queues_batches_and_completes_the_run(make_connections, fake_intuit, settings):
    # tests.settings runs django-q2 with sync=True: each queued batch runs at once, here.
    settings.QB_OAUTH = {**settings.QB_OAUTH, "SWEEP_CHUNK_SIZE": 2}
    conns = make_connections(5)
    make_stale(*conns)
    stats = sweep.run_sweep(fan_out=True)
    assert stats.fanned_out and stats.chunks == 3
    run = SweepRun.objects.get(pk=stats.run_id)
    assert run.fanned_out
    assert (run.due, run.refreshed) == (5, 5)
    assert run.finished_at is not None
    for conn in conns:
        assert refreshes(fake_intuit, conn) == 1
    from django_q.models import Task

    assert Task.objects.filter(group="qb_oauth.sweep", success=True).count() == 3


def test_fan_out_is_automatic_with_a_cluster(settings):
    from qb_oauth.sweep import cluster_configured

    assert not cluster_configured()  # sync=True in tests.settings
    settings.Q_CLUSTER = {"name": "x", "redis": {}}
    assert cluster_configured()
    del settings.Q_CLUSTER
    assert not cluster_configured()


def test_concurrency_is_bounded_and_used(make_connections, fake_intuit, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "SWEEP_CONCURRENCY": 4}
    conns = make_connections(8)
    make_stale(*conns)
    fake_intuit.latency = {"token": 0.3}
    active = {"now": 0, "max": 0}
    lock = threading.Lock()

    def watch(sender, **kwargs):
        pass

    original = fake_intuit.handle

    def handle(req):
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        try:
            return original(req)
        finally:
            with lock:
                active["now"] -= 1

    fake_intuit.handle = handle
    started = time.monotonic()
    stats = sweep.run_sweep(fan_out=False)
    elapsed = time.monotonic() - started
    assert stats.refreshed == 8
    assert active["max"] == 4
    assert elapsed < 8 * 0.3 * 0.75  # well under one at a time


def test_summary_is_logged_and_recorded(make_connections, caplog):
    conns = make_connections(2)
    make_stale(*conns)
    with caplog.at_level(logging.INFO, logger="qb_oauth.tasks"):
        stats = sweep.run_sweep(fan_out=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "qb_oauth.tasks"]
    assert len(lines) == 1
    assert lines[0].startswith(f"Sweep #{stats.run_id}: 2 due, 2 refreshed")
    run = SweepRun.objects.get(pk=stats.run_id)
    assert (run.due, run.refreshed, run.failed_unavailable, run.fanned_out) == (2, 2, 0, False)
    assert run.finished_at >= run.started_at
    for conn in conns:
        assert conn.refresh_token not in lines[0]
        assert conn.access_token not in lines[0]


# -- expiry warnings ------------------------------------------------------------------------


def expiring_signals(received):
    return [kw for name, kw in received if name == "refresh_token_expiring"]


def test_hard_expiry_warning_once_per_window(make_connections, received, settings):
    near, far = make_connections(2)
    hard_at = ahead(days=10)
    QBC.objects.filter(pk=near.pk).update(refresh_token_hard_expires_at=hard_at)
    QBC.objects.filter(pk=far.pk).update(refresh_token_hard_expires_at=ahead(days=400))
    stats = sweep.run_sweep(fan_out=False)
    assert stats.warnings_sent == 1
    sent = expiring_signals(received)
    assert len(sent) == 1
    assert sent[0]["connection"].pk == near.pk
    assert sent[0]["kind"] == "hard"
    assert abs((sent[0]["expires_at"] - hard_at).total_seconds()) < 1
    assert (
        ConnectionEvent.objects.filter(connection=near, kind=EventKind.EXPIRY_WARNING).count() == 1
    )
    # Once per window.
    assert sweep.run_sweep(fan_out=False).warnings_sent == 0
    assert len(expiring_signals(received)) == 1
    # A window later, again.
    QBC.objects.filter(pk=near.pk).update(expiry_warning_sent_at=ago(days=31))
    assert sweep.run_sweep(fan_out=False).warnings_sent == 1
    assert len(expiring_signals(received)) == 2


def test_rolling_expiry_warns_only_while_refreshing_fails(make_connections, received):
    failing, healthy = make_connections(2)
    QBC.objects.filter(pk__in=[failing.pk, healthy.pk]).update(
        refresh_token_expires_at=ahead(days=5)
    )
    QBC.objects.filter(pk=failing.pk).update(consecutive_failures=3, next_attempt_at=ahead(hours=1))
    assert sweep.send_expiry_warnings() == 1
    (sent,) = expiring_signals(received)
    assert (sent["connection"].pk, sent["kind"]) == (failing.pk, "rolling")


def test_expiry_warning_window_is_a_setting(make_connections, received, settings):
    (conn,) = make_connections(1)
    QBC.objects.filter(pk=conn.pk).update(refresh_token_hard_expires_at=ahead(days=40))
    assert sweep.send_expiry_warnings() == 0
    settings.QB_OAUTH = {**settings.QB_OAUTH, "EXPIRY_WARNING_WINDOW": 60 * 86400}
    assert sweep.send_expiry_warnings() == 1


def test_no_warning_for_inactive_or_already_expired(make_connections, received):
    gone, past = make_connections(2)
    QBC.objects.filter(pk=gone.pk).update(
        refresh_token_hard_expires_at=ahead(days=3), state=ConnectionState.REAUTH_REQUIRED
    )
    QBC.objects.filter(pk=past.pk).update(refresh_token_hard_expires_at=ago(days=1))
    assert sweep.send_expiry_warnings() == 0
    assert expiring_signals(received) == []


def test_two_sweeps_at_once_warn_once(make_connections, received):
    conns = make_connections(6)
    QBC.objects.filter(pk__in=[c.pk for c in conns]).update(
        refresh_token_hard_expires_at=ahead(days=3)
    )
    counts = []
    barrier = threading.Barrier(2)

    def warn():
        barrier.wait()
        try:
            counts.append(sweep.send_expiry_warnings())
        finally:
            from django.db import connections

            connections.close_all()

    threads = [threading.Thread(target=warn) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 6
    assert sorted(kw["connection"].pk for kw in expiring_signals(received)) == sorted(
        c.pk for c in conns
    )
    assert ConnectionEvent.objects.filter(kind=EventKind.EXPIRY_WARNING).count() == 6


def test_a_batch_delivered_twice_at_once_refreshes_once(make_connections, fake_intuit):
    # django-q2 may deliver a task twice: same batch, same claim, two workers.
    conns = make_connections(6)
    make_stale(*conns)
    claim = timezone.now() + timedelta(minutes=15)
    QBC.objects.filter(pk__in=[c.pk for c in conns]).update(next_attempt_at=claim)
    batch = [[c.pk, c.token_version] for c in conns]
    fake_intuit.latency = {"token": 0.2}
    results = []
    barrier = threading.Barrier(2)

    def deliver():
        barrier.wait()
        try:
            results.append(tasks.refresh_connections(batch, claim=claim))
        finally:
            from django.db import connections

            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for conn in conns:
        assert refreshes(fake_intuit, conn) == 1, conn
    assert sum(r["refreshed"] for r in results) >= 6
    assert sum(r["failed_unavailable"] + r["failed_other"] for r in results) == 0


# -- environments ---------------------------------------------------------------------------


def test_a_production_site_refreshes_its_connections(settings, django_user_model):
    from urllib.parse import parse_qs, urlsplit

    from qb_oauth import client
    from qb_oauth.testing import FakeIntuit, FakeIntuitServer
    from qb_oauth.testing.pytest_plugin import REDIRECT_URIS

    fake = FakeIntuit(redirect_uris=REDIRECT_URIS, environment="production")
    with FakeIntuitServer(fake):
        settings.QB_OAUTH = {**settings.QB_OAUTH, **fake.qb_oauth_settings()}
        client.clear_discovery_cache()
        user = django_user_model.objects.create_user("prod", "p@example.com", "pw")
        callback = REDIRECT_URIS[0]
        url = client.authorization_url(state="s-prod", redirect_uri=callback)
        query = parse_qs(urlsplit(fake.consent(url)).query)
        conn, _ = tokens.connect(
            user=user, code=query["code"][0], realm_id=query["realmId"][0], redirect_uri=callback
        )
        assert conn.environment == "production"
        make_stale(conn)
        stats = sweep.run_sweep(fan_out=False)
        assert (stats.due, stats.refreshed, stats.failed_other) == (1, 1, 0)
        assert fake.refresh_counts[conn.refresh_token] == 1
        fanned = make_stale(conn) or sweep.run_sweep(fan_out=True)
        assert SweepRun.objects.get(pk=fanned.run_id).refreshed == 1


def test_connections_of_the_other_environment_are_left_alone(
    make_connections, fake_intuit, received
):
    mine, other = make_connections(2)
    make_stale(mine, other)
    QBC.objects.filter(pk=other.pk).update(
        environment="production", refresh_token_hard_expires_at=ahead(days=3)
    )
    assert sweep.run_sweep(fan_out=False).refreshed == 1
    assert sweep.run_sweep(mode="all", fan_out=False).due == 1
    assert refreshes(fake_intuit, other) == 0
    assert expiring_signals(received) == []


@pytest.mark.django_db(transaction=True)
def test_a_fanned_out_sweep_logs_its_summary_once(caplog):
    import logging

    from qb_oauth.tasks import refresh_due_connections

    with caplog.at_level(logging.INFO, logger="qb_oauth.tasks"):
        refresh_due_connections(fan_out=True)
    summaries = [r for r in caplog.records if r.getMessage().startswith("Sweep #")]
    assert len(summaries) == 1

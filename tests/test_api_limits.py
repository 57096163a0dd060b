"""Calling QuickBooks within Intuit's limits: the per-realm limits across processes,
the retries, and the metering, against the fake Intuit over HTTP.

The tests that run several processes share a Redis cache (a unique KEY_PREFIX
per run); the others use the test project's LocMem cache.
"""

import multiprocessing
import os
import signal
import threading
import time
import uuid

import pytest
from django.db import connection as db_connection

from qb_oauth import metering, signals
from qb_oauth.exceptions import IntuitUnavailable
from qb_oauth.models import ApiUsage
from qb_oauth.sweep import run_sweep

from .helpers import Recorder, run_threads
from .limits_workers import call_api, hold_a_slot

pytestmark = [pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("QB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture
def shared_cache(settings):
    """QB_OAUTH["CACHE"] on Redis, with a KEY_PREFIX of this run alone."""
    if not _redis_up():
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"qblim_{uuid.uuid4().hex[:12]}"
    settings.CACHES = {
        **settings.CACHES,
        "limits": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,
        },
    }
    settings.QB_OAUTH = {**settings.QB_OAUTH, "CACHE": "limits"}
    yield settings.CACHES
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def qb(settings, **values):
    settings.QB_OAUTH = {**settings.QB_OAUTH, **values}


@pytest.fixture
def connection(fake_intuit, connect_realm, user):
    return connect_realm(user)


def info_path(conn):
    return f"companyinfo/{conn.realm_id}"


# ------------------------------------------------------------ the limits


def test_30_callers_in_3_processes_keep_10_in_flight_and_meet_no_429(
    fake_intuit, connection, settings, shared_cache
):
    fake_intuit.latency = {"api": 0.05}
    fake_intuit.reset_counters()
    ctx = multiprocessing.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    db_name = db_connection.settings_dict["NAME"]
    procs = [
        ctx.Process(
            target=call_api,
            args=(db_name, dict(settings.QB_OAUTH), shared_cache, connection.pk, 10, 3),
            kwargs={"ready": ready, "start": start, "results": results},
        )
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    start.set()
    outcomes = [results.get(timeout=60) for _ in range(90)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert outcomes == [("ok", 200)] * 90
    realm = connection.realm_id
    assert fake_intuit.max_in_flight[realm] == 10  # the bound was reached, never passed
    assert fake_intuit.throttled == {}  # the fake refused nothing
    assert fake_intuit.counts["api"] == 90


def test_a_burst_over_the_rate_limit_is_spread_not_refused(
    fake_intuit, connect_realm, user, settings
):
    # The limits first: connecting reads CompanyInfo within them too.
    qb(settings, API_RATE_LIMIT=10, API_RATE_WINDOW=2, API_RETRIES=0)
    fake_intuit.throttle_per_minute, fake_intuit.throttle_window = 10, 2.0
    connection = connect_realm(user)
    fake_intuit.reset_counters()

    def three_calls():
        with connection.api_session() as session:
            return [session.get(info_path(connection)).status_code for _ in range(3)]

    started = time.monotonic()
    results, errors = run_threads(10, three_calls, together=False)
    took = time.monotonic() - started
    assert errors == []
    assert sorted(sum(results, [])) == [200] * 30
    assert fake_intuit.throttled == {}
    assert took >= 4  # 30 calls at 10 per 2 s: spread over three windows at least


def test_a_caller_that_would_wait_longer_than_api_wait_is_not_sent(
    fake_intuit, connection, settings
):
    qb(settings, API_RATE_LIMIT=2, API_RATE_WINDOW=30, API_WAIT=0.3)
    with connection.api_session() as session:
        assert session.get(info_path(connection)).status_code == 200
        assert session.get(info_path(connection)).status_code == 200
        sent = fake_intuit.counts["api"]
        with pytest.raises(IntuitUnavailable) as caught:
            session.get(info_path(connection))
    assert "API_WAIT" in str(caught.value)
    assert fake_intuit.counts["api"] == sent


def test_two_realms_do_not_slow_each_other(fake_intuit, connect_realm, user, settings):
    qb(settings, API_RATE_LIMIT=5, API_RATE_WINDOW=2, API_RETRIES=0)
    fake_intuit.throttle_per_minute, fake_intuit.throttle_window = 5, 2.0
    busy = connect_realm(user)
    other = connect_realm(user, realm_id=fake_intuit.companies[1].realm_id)

    def on_busy():
        with busy.api_session() as session:
            return session.get(info_path(busy)).status_code

    outcome = {}
    backlog = threading.Thread(
        target=lambda: outcome.update(r=run_threads(15, on_busy, together=False))
    )
    backlog.start()
    time.sleep(0.3)  # the busy realm is at its limit now, and callers wait
    started = time.monotonic()
    with other.api_session() as session:
        codes = [session.get(info_path(other)).status_code for _ in range(4)]
    took = time.monotonic() - started
    backlog.join(60)
    assert codes == [200] * 4
    assert took < 1.5
    results, errors = outcome["r"]
    assert errors == [] and results == [200] * 15
    assert fake_intuit.throttled == {}


def test_a_killed_holders_slot_frees_itself(fake_intuit, connection, settings, shared_cache):
    qb(settings, API_CONCURRENCY=1, HTTP_TIMEOUT=2, API_WAIT=15)
    fake_intuit.latency = {"api": 30}  # the holder's request stays in flight
    ctx = multiprocessing.get_context("spawn")
    db_name = db_connection.settings_dict["NAME"]
    holder = ctx.Process(
        target=hold_a_slot,
        args=(db_name, dict(settings.QB_OAUTH), shared_cache, connection.pk),
    )
    holder.start()
    deadline = time.monotonic() + 30
    while not fake_intuit.in_flight.get(connection.realm_id) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_intuit.in_flight.get(connection.realm_id) == 1
    killed_at = time.monotonic()
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    fake_intuit.latency = {}
    with connection.api_session() as session:
        assert session.get(info_path(connection)).status_code == 200
    waited = time.monotonic() - killed_at
    # The slot outlived its holder until its timeout (HTTP_TIMEOUT + 2 s), then freed itself.
    assert 1 < waited < 6


# ------------------------------------------------------------ retries


def test_429_twice_then_200_succeeds(fake_intuit, connection):
    fake_intuit.inject_fault("api", "429", times=2)
    sent = fake_intuit.counts["api"]
    with connection.api_session() as session:
        response = session.get(info_path(connection))
    assert response.status_code == 200
    assert response.json()["CompanyInfo"]["CompanyName"]
    assert fake_intuit.counts["api"] == sent + 3


def test_five_503s_raise_intuit_unavailable_with_the_tid(fake_intuit, connection):
    fake_intuit.inject_fault("api", "503", times=5)
    sent = fake_intuit.counts["api"]
    with connection.api_session() as session:
        with pytest.raises(IntuitUnavailable) as caught:
            session.get(info_path(connection))
    assert caught.value.status == 503
    assert caught.value.intuit_tid
    assert "tried 4 times" in str(caught.value)
    assert fake_intuit.counts["api"] == sent + 4  # the first try and API_RETRIES (3)
    assert connection.access_token not in str(caught.value)


def test_a_post_answered_503_is_not_repeated(fake_intuit, connection):
    fake_intuit.inject_fault("api", "503", times=5)
    sent = fake_intuit.counts["api"]
    with connection.api_session() as session:
        with pytest.raises(IntuitUnavailable) as caught:
            session.post("customer", json={"DisplayName": "Pat"})
    assert caught.value.status == 503 and caught.value.intuit_tid
    assert "not repeated" in str(caught.value)
    assert fake_intuit.counts["api"] == sent + 1


def test_a_post_answered_429_is_retried_and_a_posted_query_too(fake_intuit, connection):
    fake_intuit.inject_fault("api", "429", times=1)
    with connection.api_session() as session:
        # 429: Intuit refused it unseen, so even a write goes again (answered 400 here).
        assert session.post("customer", json={"DisplayName": "Pat"}).status_code == 400
        fake_intuit.inject_fault("api", "503", times=2)
        sent = fake_intuit.counts["api"]
        response = session.post(
            "query",
            data="select * from CompanyInfo",
            headers={"Content-Type": "application/text"},
        )
    assert response.status_code == 200
    assert fake_intuit.counts["api"] == sent + 3


def test_a_503_through_python_quickbooks_is_intuit_unavailable(fake_intuit, connection):
    pytest.importorskip("quickbooks")
    from quickbooks.objects.company_info import CompanyInfo

    client = connection.quickbooks_client()
    fake_intuit.inject_fault("api", "503", times=4)
    sent = fake_intuit.counts["api"]
    with pytest.raises(IntuitUnavailable):
        CompanyInfo.all(qb=client)  # a query, POSTed: retried as a read
    assert fake_intuit.counts["api"] == sent + 4
    fake_intuit.inject_fault("api", "429", times=2)
    assert CompanyInfo.get(connection.realm_id, qb=client).CompanyName


def test_batch_has_its_own_limit(fake_intuit, connection, settings):
    qb(settings, API_BATCH_RATE_LIMIT=2, API_RATE_WINDOW=2, API_RETRIES=0)
    fake_intuit.batch_per_minute, fake_intuit.throttle_window = 2, 2.0
    body = {"BatchItemRequest": [{"bId": "1", "Query": "select * from CompanyInfo"}]}
    started = time.monotonic()
    with connection.api_session() as session:
        codes = [session.post("batch", json=body).status_code for _ in range(4)]
        info = session.get(info_path(connection)).status_code  # not held up by Batch's limit
    assert codes == [200] * 4 and info == 200
    assert time.monotonic() - started >= 1.5
    assert fake_intuit.throttled == {}


# ------------------------------------------------------------ metering


def test_calls_are_counted_and_folded_by_the_sweep(fake_intuit, connection, settings):
    with connection.api_session() as session:
        for _ in range(3):
            session.get(info_path(connection))
        session.post("customer", json={"DisplayName": "Pat"})
    assert ApiUsage.objects.count() == 0  # nothing written per call
    usage = metering.connection_usage(connection)
    assert (usage.core_plus, usage.core) == (3, 1)

    run_sweep(fan_out=False)
    row = ApiUsage.objects.get(connection=connection, month=metering.month_of())
    assert (row.core_plus, row.core) == (3, 1)
    run_sweep(fan_out=False)  # idempotent
    assert ApiUsage.objects.get(pk=row.pk).core_plus == 3

    from django.core.cache import caches

    caches["default"].clear()  # the cache restarted: the counts go on from the rows
    with connection.api_session() as session:
        session.get(info_path(connection))
    assert metering.connection_usage(connection).core_plus == 4
    assert metering.app_usage().core_plus == 4
    run_sweep(fan_out=False)
    assert ApiUsage.objects.get(pk=row.pk).core_plus == 4


def test_the_quota_signal_once_at_80_and_once_at_95(fake_intuit, connection, settings):
    qb(settings, API_MONTHLY_QUOTA=10)
    with Recorder(signals.api_quota_near) as recorder:
        with connection.api_session() as session:
            for n in range(1, 13):
                session.get(info_path(connection))
                if n == 8:
                    assert [c["percent"] for c in recorder.calls] == [80]
        run_sweep(fan_out=False)
        run_sweep(fan_out=False)
    assert [(c["percent"], c["core_plus"]) for c in recorder.calls] == [(80, 8), (95, 10)]
    first = recorder.calls[0]
    assert first["quota"] == 10 and first["core"] == 0
    assert first["month"] == metering.month_of()


def test_the_admin_and_qb_status_show_the_months_counts(
    fake_intuit, connection, admin_client, settings
):
    from django.core.management import call_command
    from django.urls import reverse

    with connection.api_session() as session:
        for _ in range(3):
            session.get(info_path(connection))
        session.post("customer", json={"DisplayName": "Pat"})
    page = admin_client.get(
        reverse("admin:qb_oauth_quickbooksconnection_change", args=[connection.pk])
    )
    assert "3 CorePlus (reads and queries), 1 Core (writes)" in page.content.decode()
    run_sweep(fan_out=False)
    listing = admin_client.get(reverse("admin:qb_oauth_apiusage_changelist")).content.decode()
    assert "the app: 3 CorePlus calls" in listing and "1 Core calls" in listing
    changelist = admin_client.get(reverse("admin:qb_oauth_quickbooksconnection_changelist"))
    assert "3 reads, 1 writes" in changelist.content.decode()

    import io
    import json

    out = io.StringIO()
    call_command("qb_status", "--json", stdout=out)
    [row] = json.loads(out.getvalue())
    assert row["api_calls_month"] == {"core_plus": 3, "core": 1}


def test_counts_and_the_quota_on_redis(fake_intuit, connection, settings, shared_cache):
    qb(settings, API_MONTHLY_QUOTA=5)
    with Recorder(signals.api_quota_near) as recorder:
        with connection.api_session() as session:
            for _ in range(6):
                session.get(info_path(connection))
            session.post("customer", json={"DisplayName": "Pat"})
    assert [c["percent"] for c in recorder.calls] == [80, 95]
    usage = metering.connection_usage(connection)
    assert (usage.core_plus, usage.core) == (6, 1)
    run_sweep(fan_out=False)
    row = ApiUsage.objects.get(connection=connection)
    assert (row.core_plus, row.core) == (6, 1)


def test_the_fake_refuses_more_in_flight_than_its_limit(fake_intuit, connection, settings):
    # A site that allows more in flight than Intuit does meets Intuit's 429s.
    qb(settings, API_CONCURRENCY=6, API_RETRIES=0)
    fake_intuit.concurrency_limit = 2
    fake_intuit.latency = {"api": 0.3}

    def one():
        with connection.api_session() as session:
            return session.get(info_path(connection)).status_code

    results, errors = run_threads(6, one, together=False)
    assert fake_intuit.max_in_flight[connection.realm_id] > 2
    assert fake_intuit.throttled[connection.realm_id] == len(errors) > 0
    assert all(isinstance(e, IntuitUnavailable) and e.status == 429 for e in errors)
    assert results == [200] * (6 - len(errors))


def test_calls_after_a_threshold_look_for_no_marker(fake_intuit, connection, settings, monkeypatch):
    """Only the call that crosses 80 % (or 95 %) asks the cache whether it was announced:
    the rest of a busy month costs no extra round trip per call."""
    qb(settings, API_MONTHLY_QUOTA=10)
    cache = metering.limits_cache()
    adds = []
    real_add = cache.add
    monkeypatch.setattr(
        cache, "add", lambda key, *a, **kw: adds.append(key) or real_add(key, *a, **kw)
    )
    with Recorder(signals.api_quota_near) as recorder:
        with connection.api_session() as session:
            for _ in range(20):
                session.get(info_path(connection))
    assert [c["percent"] for c in recorder.calls] == [80, 95]
    assert len([key for key in adds if ":quota:" in key]) == 2

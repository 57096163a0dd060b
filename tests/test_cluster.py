"""The scheduled refresh on a real django-q2 cluster: Redis, PostgreSQL, two qcluster processes.

2,000 due connections whose grants live in the fake Intuit, served over HTTP
with latency; two sweeps are queued at once (a replayed schedule) and fan the
work out to both clusters. Every connection must be refreshed exactly once
(the fake's per-token counters), none lost (every stored refresh token is the
one the fake holds as current after rotation), and both clusters must stop
cleanly on SIGTERM.

Needs PostgreSQL (``QB_TEST_DB=postgres``) and Redis at 127.0.0.1:6379.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.db import connection
from django.utils import timezone

from qb_oauth.models import ConnectionState, QuickBooksConnection, SweepRun
from qb_oauth.testing import Company

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
N = 2000
LATENCY = 0.02
CALLBACK = "http://testserver/quickbooks/callback/"
DEADLINE = 90


def _redis_reachable():
    try:
        import redis

        return redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except Exception:
        return False


@pytest.fixture(autouse=True)
def _needs_postgres_and_redis():
    if connection.vendor != "postgresql":
        pytest.skip(
            "the cluster test needs PostgreSQL shared with the qcluster processes: "
            "run with QB_TEST_DB=postgres"
        )
    if not _redis_reachable():
        pytest.skip("the cluster test needs Redis at 127.0.0.1:6379")


def mint_grants(fake, realms):
    """Consent and exchange a code for each realm, in-process: the fake's own token answers."""
    import requests

    session = requests.Session()
    session.mount(fake.base_url + "/", fake.adapter())
    out = {}
    for realm in realms:
        query = urlencode(
            {
                "client_id": fake.client_id,
                "redirect_uri": CALLBACK,
                "response_type": "code",
                "scope": "com.intuit.quickbooks.accounting",
                "state": "cluster",
            }
        )
        redirect = fake.consent(f"{fake.authorization_url}?{query}", realm_id=realm)
        code = parse_qs(urlsplit(redirect).query)["code"][0]
        response = session.post(
            fake.token_url,
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
            auth=(fake.client_id, fake.client_secret),
            headers={
                "Accept": "application/json",
                "x-include-refresh-token-hard-expires-in": "true",
            },
            timeout=5,
        )
        assert response.status_code == 200, response.text
        out[realm] = response.json()
    return out


def make_due_connections(fake, user):
    realms = [str(8_000_000 + i) for i in range(N)]
    fake.companies.extend(Company(r, f"Cluster Company {i}") for i, r in enumerate(realms))
    grants = mint_grants(fake, realms)
    now = timezone.now()
    QuickBooksConnection.objects.bulk_create(
        [
            QuickBooksConnection(
                user=user,
                realm_id=realm,
                environment="sandbox",
                company_name=f"Cluster Company {i}",
                scopes="com.intuit.quickbooks.accounting",
                access_token=grants[realm]["access_token"],
                refresh_token=grants[realm]["refresh_token"],
                access_token_expires_at=now + timedelta(seconds=grants[realm]["expires_in"]),
                refresh_token_expires_at=now
                + timedelta(seconds=grants[realm]["x_refresh_token_expires_in"]),
                refresh_token_hard_expires_at=now
                + timedelta(seconds=grants[realm]["x_refresh_token_hard_expires_in"]),
                token_version=1,
                state=ConnectionState.ACTIVE,
                connected_at=now - timedelta(days=3),
                last_refreshed_at=now - timedelta(days=2),  # due: keepalive
            )
            for i, realm in enumerate(realms)
        ],
        batch_size=500,
    )
    return {realm: grants[realm]["refresh_token"] for realm in realms}


def _ancestors(pid):
    """pid's parent chain from /proc (Linux), to tell which qcluster a worker belongs to."""
    chain = []
    while pid > 1:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid")))
        chain.append(pid)
    return chain


def test_two_clusters_refresh_2000_connections_exactly_once(fake_intuit, settings, user, tmp_path):
    from django_q.models import Schedule, Task

    Schedule.objects.all().delete()  # only the sweeps this test queues run
    started_setup = time.monotonic()
    originals = make_due_connections(fake_intuit, user)
    fake_intuit.clock.advance(2 * 86400)  # past rotation: every refresh issues a new token
    fake_intuit.latency = {"token": LATENCY}
    assert QuickBooksConnection.objects.due().count() == N
    setup_seconds = time.monotonic() - started_setup

    cluster_name = f"qb_oauth_test_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.cluster_settings",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "QB_TEST_DB": "postgres",
        "QB_CLUSTER_DB_NAME": connection.settings_dict["NAME"],
        "QB_CLUSTER_NAME": cluster_name,
        "QB_CLUSTER_QB_OAUTH": json.dumps({**settings.QB_OAUTH, "SWEEP_CONCURRENCY": 4}),
        "PYTHONUNBUFFERED": "1",
    }
    procs = []
    logs = []
    try:
        for i in range(2):
            log = open(tmp_path / f"qcluster-{i}.log", "w+")  # noqa: SIM115
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "django", "qcluster"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        # Two sweeps at once, as a replayed schedule would queue them.
        enqueue = (
            "import django; django.setup()\n"
            "from django_q.tasks import async_task\n"
            "for _ in range(2): async_task('qb_oauth.tasks.refresh_due_connections')\n"
        )
        subprocess.run([sys.executable, "-c", enqueue], cwd=ROOT, env=env, check=True, timeout=60)
        queued_at = time.monotonic()

        deadline = queued_at + DEADLINE
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), "a qcluster process died"
            runs = list(SweepRun.objects.all())
            done = QuickBooksConnection.objects.filter(token_version__gt=1).count()
            if len(runs) == 2 and all(r.finished_at for r in runs) and done == N:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - queued_at
        # Which cluster ran each batch: a worker's parent chain leads to its qcluster process.
        results = [t.result for t in Task.objects.filter(func="qb_oauth.tasks.refresh_connections")]
        by_cluster = {proc.pid: 0 for proc in procs}
        for result in results:
            for ancestor in _ancestors(result["pid"]):
                if ancestor in by_cluster:
                    by_cluster[ancestor] += result["refreshed"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append("killed")
        output = []
        for log in logs:
            log.seek(0)
            output.append(log.read())
            log.close()

    def show():
        return "\n".join(text[-3000:] for text in output)

    runs = list(SweepRun.objects.order_by("pk"))
    assert len(runs) == 2, show()
    assert all(r.fanned_out and r.finished_at for r in runs), show()
    # Every connection refreshed exactly once, with the token it had.
    counts = [fake_intuit.refresh_counts[rt] for rt in originals.values()]
    assert counts.count(1) == N, (sorted(set(counts)), show())
    assert fake_intuit.counts["token.refresh_token"] == N
    assert sum(r.refreshed for r in runs) == N
    assert sum(r.due for r in runs) == N  # claimed by one sweep or the other, never both
    assert sum(r.failed_unavailable + r.failed_other + r.reauth_required for r in runs) == 0
    # None lost: what we store is what the fake holds as current (all rotated).
    stored = dict(QuickBooksConnection.objects.values_list("realm_id", "refresh_token"))
    assert len(stored) == N
    for realm, token in stored.items():
        assert token == fake_intuit.current_refresh_token(realm)
        assert token != originals[realm]
    rows = QuickBooksConnection.objects.all()
    assert all(r.token_version == 2 and r.state == ConnectionState.ACTIVE for r in rows)
    assert not QuickBooksConnection.objects.filter(next_attempt_at__isnull=False).exists()
    assert not QuickBooksConnection.objects.due().exists()
    # The work was shared: batches ran on workers of both clusters.
    assert sum(r["refreshed"] for r in results) == N
    if Path("/proc").exists():
        assert all(by_cluster.values()), by_cluster
    # Clean shutdown.
    assert codes == [0, 0], (codes, show())
    print(
        f"\n{N} connections: setup {setup_seconds:.1f} s, refreshed by the clusters in "
        f"{elapsed:.1f} s; batches: {len(results)}; per cluster: {by_cluster}"
    )

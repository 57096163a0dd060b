#!/usr/bin/env python
"""Benchmark of the scheduled refresh fanned out to a django-q2 cluster.

N due connections (default 4,000); the fake Intuit answers each refresh after
LATENCY (default 100 ms), over HTTP in its own process. Two ``qcluster``
processes (each WORKERS workers, each batch refreshed on SWEEP_CONCURRENCY
threads) share the batches one sweep hands out over Redis. The lower bound is
N x LATENCY / (clusters x workers x SWEEP_CONCURRENCY); the figures are
refreshes per second and wall time / bound, with the fake's check that every
connection was refreshed exactly once.

Needs PostgreSQL at 127.0.0.1:5432 (a database ``qb_oauth_bench_cluster``,
created and dropped here) and Redis at 127.0.0.1:6379; says so and exits 0
without them. Run: ``.venv/bin/python benchmarks/bench_cluster.py [--help]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_sweep import _create_connections, _make_due  # noqa: E402
from benchmarks.common import (  # noqa: E402
    FakeIntuitProcess,
    bench_database,
    describe_database,
    machine,
    postgres_reachable,
    setup_django,
)

BENCH_DB_NAME = "qb_oauth_bench_cluster"
CLUSTERS = 2


def redis_reachable() -> bool:
    try:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping())
    except Exception:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=4000, help="due connections (default 4000)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per refresh")
    parser.add_argument("--workers", type=int, default=2, help="workers per qcluster")
    parser.add_argument("--threads", type=int, default=8, help="SWEEP_CONCURRENCY per batch")
    parser.add_argument("--chunk", type=int, default=100, help="SWEEP_CHUNK_SIZE")
    args = parser.parse_args()
    if not (postgres_reachable() and redis_reachable()):
        print(
            "bench_cluster: needs PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379); skipped."
        )
        return 0

    setup_django("postgres", BENCH_DB_NAME)
    from django.conf import settings
    from django.db import connection

    from qb_oauth.models import QuickBooksConnection, SweepRun

    with FakeIntuitProcess(realms=100) as fake, bench_database() as db_name:
        settings.QB_OAUTH = {**settings.QB_OAUTH, **fake.qb_oauth}
        print("qb_oauth cluster benchmark: one sweep fanned out to two qcluster processes")
        print(f"Machine: {machine()}")
        print(f"Database: {describe_database()}; broker: Redis 127.0.0.1:6379")
        pks = _create_connections(fake.ask(f"mint {args.n}"))
        _make_due(pks, args.n)
        fake.ask(f"latency {args.latency}")
        fake.ask("reset")
        cluster_name = f"qb_oauth_bench_{uuid.uuid4().hex[:10]}"
        qb_oauth = {
            **settings.QB_OAUTH,
            "SWEEP_CONCURRENCY": args.threads,
            "SWEEP_CHUNK_SIZE": args.chunk,
        }
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.cluster_settings",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "QB_TEST_DB": "postgres",
            "QB_CLUSTER_DB_NAME": db_name,
            "QB_CLUSTER_NAME": cluster_name,
            "QB_CLUSTER_QB_OAUTH": json.dumps(qb_oauth),
            "QB_CLUSTER_WORKERS": str(args.workers),
        }
        connection.close()
        procs = []
        logs = []
        try:
            for _cluster in range(CLUSTERS):
                log = tempfile.TemporaryFile("w+")  # noqa: SIM115
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
            time.sleep(3)  # the clusters start their workers
            enqueue = (
                "import django; django.setup()\n"
                "from django_q.tasks import async_task\n"
                "async_task('qb_oauth.tasks.refresh_due_connections')\n"
            )
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", enqueue], cwd=ROOT, env=env, check=True)
            deadline = started + 600
            while time.monotonic() < deadline:
                if all(p.poll() is not None for p in procs):
                    break
                run = SweepRun.objects.first()
                if run is not None and run.finished_at is not None:
                    break
                time.sleep(0.2)
            wall = time.monotonic() - started
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        run = SweepRun.objects.first()
        refreshed = QuickBooksConnection.objects.filter(token_version__gt=1).count()
        stats = fake.ask("refresh_stats")
        slots = CLUSTERS * args.workers * args.threads
        bound = args.n * args.latency / slots
        print(
            f"\n{args.n} due connections, the fake answering each refresh after "
            f"{args.latency * 1000:.0f} ms; {CLUSTERS} clusters x {args.workers} workers x "
            f"{args.threads} threads = {slots} refreshes at once at most"
        )
        print(
            f"  wall {wall:.1f} s (from the sweep's queueing to its last batch), bound "
            f"{bound:.1f} s, ratio {wall / bound:.2f}; {refreshed / wall:.0f} refreshes per second"
        )
        print(
            f"  refreshed {refreshed}; calls at the fake {stats['refresh_calls']}, most per token "
            f"{stats['most_per_token']} (exactly once: {stats['most_per_token'] == 1})"
        )
        if run is not None:
            print(
                f"  SweepRun: due {run.due}, refreshed {run.refreshed}, fanned out {run.fanned_out}"
            )
        if refreshed != args.n:
            for log in logs:
                log.seek(0)
                print(log.read()[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())

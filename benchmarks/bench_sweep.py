#!/usr/bin/env python
"""Benchmark of the scheduled refresh (``qb_oauth.sweep``): wall time and peak memory.

* Wall time: N due connections (default 10,000), the fake Intuit answering each
  refresh after LATENCY (default 100 ms), the sweep refreshing C at a time
  (default 32). The lower bound is N x LATENCY / C; the printed ratio is wall
  time / bound (target: at most 1.25).
* Memory: the sweep's peak Python memory (tracemalloc) over 1,000 and over
  10,000 due connections (target: flat, since the due set is streamed).

The fake Intuit runs over real HTTP in its own process (so it does not share
the sweep's interpreter lock); its grants are minted through its own consent
and token endpoints. The database is PostgreSQL at 127.0.0.1:5432 when
reachable (a database ``qb_bench_sweep``, created and dropped here), else
SQLite. Run: ``.venv/bin/python benchmarks/bench_sweep.py [--help]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import FakeIntuitProcess, postgres_reachable  # noqa: E402

REALMS = 100  # connections are (user, realm) pairs: N / REALMS users


# -- the benchmark ------------------------------------------------------------------------------


def _setup_django(db: str) -> None:
    os.environ["QB_BENCH_DB"] = db
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    import django

    django.setup()


def _machine(db_label: str) -> str:
    import django

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; Django {django.__version__}; "
        f"database {db_label}; load average {load} (other work on the machine skews the figures)"
    )


def _db_label() -> str:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0].split()[0]
        return f"PostgreSQL {version} ({connection.settings_dict['HOST']})"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version} (file)"


def _create_connections(grants: list[dict]) -> list[int]:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from qb_oauth.models import QuickBooksConnection

    users = get_user_model().objects.bulk_create(
        [
            get_user_model()(username=f"bench{i}", password="!")
            for i in range((len(grants) + REALMS - 1) // REALMS)
        ]
    )
    now = timezone.now()
    QuickBooksConnection.objects.bulk_create(
        [
            QuickBooksConnection(
                user=users[i // REALMS],
                realm_id=g["realm_id"],
                environment="sandbox",
                company_name=f"Bench {g['realm_id']}",
                access_token=g["access_token"],
                refresh_token=g["refresh_token"],
                access_token_expires_at=now + timedelta(seconds=g["expires_in"]),
                refresh_token_expires_at=now + timedelta(seconds=g["x_refresh_token_expires_in"]),
                token_version=1,
                last_refreshed_at=now,
            )
            for i, g in enumerate(grants)
        ],
        batch_size=1000,
    )
    return list(QuickBooksConnection.objects.order_by("pk").values_list("pk", flat=True))


def _make_due(pks: list[int], n: int) -> None:
    """Exactly the first n connections due (keepalive); the others just refreshed."""
    from django.utils import timezone

    from qb_oauth.models import QuickBooksConnection

    now = timezone.now()
    QuickBooksConnection.objects.update(
        last_refreshed_at=now, next_attempt_at=None, consecutive_failures=0
    )
    QuickBooksConnection.objects.filter(pk__lte=pks[n - 1]).update(
        last_refreshed_at=now - timedelta(days=2)
    )
    assert QuickBooksConnection.objects.due().count() == n


def _sweep(concurrency: int):
    from qb_oauth import sweep

    return sweep.run_sweep(fan_out=False, concurrency=concurrency)


def _mb(size: float) -> str:
    return f"{size / 1_000_000:.2f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="due connections (default 10000)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per refresh")
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        action="append",
        help="refreshes at once (repeat to compare; default: 16 and 32)",
    )
    parser.add_argument(
        "--memory-sizes",
        default="1000,10000",
        help="due-set sizes for the memory table (default 1000,10000)",
    )
    parser.add_argument(
        "--memory-latency", type=float, default=0.01, help="latency in the memory runs"
    )
    parser.add_argument("--db", choices=("auto", "postgres", "sqlite"), default="auto")
    args = parser.parse_args()
    concurrencies = args.concurrency or [16, 32]
    sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    db = args.db
    if db == "auto":
        db = "postgres" if postgres_reachable() else "sqlite"
    _setup_django(db)

    from django.conf import settings
    from django.db import connection

    fake = FakeIntuitProcess(realms=REALMS)
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        settings.QB_OAUTH = {**settings.QB_OAUTH, **fake.qb_oauth}
        total = max([args.n, *sizes])
        print(_machine(_db_label()))
        print(f"Test database: {test_db}. Minting {total} grants at the fake Intuit...", flush=True)
        started = time.monotonic()
        pks = _create_connections(fake.ask(f"mint {total}"))
        print(f"  {total} connections stored in {time.monotonic() - started:.1f} s.")
        # Warm up (imports, the discovery document, connection pools): not measured.
        _make_due(pks, min(300, total))
        _sweep(concurrencies[0])

        print()
        print(
            f"Sweep wall time: {args.n} due connections, the fake Intuit answering each "
            f"refresh after {args.latency * 1000:.0f} ms (its own process, real HTTP)"
        )
        header = (
            f"  {'connections':>11}  {'concurrency':>11}  {'bound N*lat/C':>13}  "
            f"{'wall':>8}  {'ratio':>5}  {'refreshed':>9}  {'calls':>6}  {'per s':>6}"
        )
        print(header)
        fake.ask(f"latency {args.latency}")
        for c in concurrencies:
            _make_due(pks, args.n)
            fake.ask("reset")
            started = time.monotonic()
            stats = _sweep(c)
            wall = time.monotonic() - started
            counts = fake.ask("refresh_stats")
            bound = args.n * args.latency / c
            print(
                f"  {args.n:>11}  {c:>11}  {bound:>11.1f} s  {wall:>6.1f} s  "
                f"{wall / bound:>5.2f}  {stats.refreshed:>9}  {counts['refresh_calls']:>6}  "
                f"{stats.refreshed / wall:>6.0f}",
                flush=True,
            )
            if counts["most_per_token"] > 1 or stats.refreshed != args.n:
                print(f"  !! not exactly once: {counts}, {stats.as_dict()}")

        print()
        c = concurrencies[-1]
        print(
            f"Peak memory of the sweep (tracemalloc; concurrency {c}, "
            f"latency {args.memory_latency * 1000:.0f} ms, "
            f"SWEEP_CHUNK_SIZE {settings.QB_OAUTH.get('SWEEP_CHUNK_SIZE', 100)})"
        )
        print(f"  {'connections':>11}  {'peak':>10}  {'retained':>10}  {'wall':>8}")
        fake.ask(f"latency {args.memory_latency}")
        peaks = []
        for n in sizes:
            _make_due(pks, n)
            gc.collect()
            tracemalloc.start()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            started = time.monotonic()
            stats = _sweep(c)
            wall = time.monotonic() - started
            peak = tracemalloc.get_traced_memory()[1] - base
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            peaks.append(peak)
            print(f"  {n:>11}  {_mb(peak):>10}  {_mb(retained):>10}  {wall:>6.1f} s", flush=True)
            assert stats.refreshed == n, stats.as_dict()
        if len(peaks) >= 2:
            growth = peaks[-1] / peaks[0]
            print(
                f"  peak at {sizes[-1]} / peak at {sizes[0]}: {growth:.2f}, for a due set "
                f"{sizes[-1] / sizes[0]:.0f}x larger"
            )
            print(
                "  (peak: the most the sweep had allocated at once, including garbage in "
                "reference cycles not yet collected; retained: what it left allocated, "
                "after gc.collect())"
            )
        print()
        print("Load average at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    finally:
        fake.close()
        connection.creation.destroy_test_db(test_db, verbosity=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Benchmark of ``get_access_token``: the fresh-token path, and 200 askers at the moment of expiry.

1. **Fresh token.** ``get_access_token(conn)`` on a token far from expiry
   against a bare ``QuickBooksConnection.objects.get(pk=...)`` and its access
   token (loading the row runs the Fernet decrypt of its encrypted fields).
   The two loops are interleaved in rounds; the figure is the ratio of their
   medians (target at most 1.2), with the queries of one call (target 1) and
   the calls to Intuit (target 0).
2. **Expiry.** ASKERS threads (default 200) call ``get_access_token`` on one
   connection whose access token has just expired; the fake Intuit answers a
   refresh after LATENCY (default 100 ms). Figures: calls to Intuit (target 1)
   and the p50 / p95 wait against one uncontended refresh (target p50 at most
   1.5 x).

The fake Intuit runs over real HTTP in a child process. The database is
PostgreSQL (127.0.0.1:5432, a database ``qb_oauth_bench_tokens`` created and
dropped here) when reachable, else a temporary SQLite file. PostgreSQL's
``max_connections`` is shared with everything else on the server, so the
askers hold at most ``--max-db-connections`` database connections at once
(a connection pool would do the same); the wait for one is part of the wait
measured. Only ratios inside one run are meaningful. Exits 0.

Run: ``.venv/bin/python benchmarks/bench_tokens.py [--help]``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    FakeIntuitProcess,
    bench_database,
    connect_user,
    describe_database,
    machine,
    median,
    percentile,
    postgres_free_connections,
    setup_django,
)

BENCH_DB_NAME = "qb_oauth_bench_tokens"


def expire(pk: int) -> None:
    from django.utils import timezone

    from qb_oauth.models import QuickBooksConnection

    QuickBooksConnection.objects.filter(pk=pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=1)
    )


def network_calls(counts: dict) -> int:
    return sum(v for k, v in counts.items() if "." not in k)


# -- 1. the fresh-token path ----------------------------------------------------------------


def bench_fresh(fake: FakeIntuitProcess, rounds: int, per_round: int) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from qb_oauth import tokens
    from qb_oauth.models import QuickBooksConnection

    conn = connect_user("fresh")
    pk = conn.pk

    def ours() -> str:
        return tokens.get_access_token(conn)

    def bare() -> str:
        return QuickBooksConnection.objects.get(pk=pk).access_token

    def bare_one_column() -> str:
        return QuickBooksConnection.objects.filter(pk=pk).values_list("access_token", flat=True)[0]

    loops = {"get_access_token": ours, "objects.get + decrypt": bare, "one column": bare_one_column}
    for fn in loops.values():  # warm up: imports, prepared statements, last_used_at written
        for _ in range(200):
            assert fn() == conn.access_token
    with CaptureQueriesContext(connection) as queries:
        ours()
    fake.ask("reset")
    per_call: dict[str, list[float]] = {name: [] for name in loops}
    ratios, ratios_one = [], []
    names = list(loops)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        took = {}
        for name in order:
            fn = loops[name]
            started = time.perf_counter()
            for _ in range(per_round):
                fn()
            took[name] = (time.perf_counter() - started) / per_round
            per_call[name].append(took[name])
        ratios.append(took["get_access_token"] / took["objects.get + decrypt"])
        ratios_one.append(took["get_access_token"] / took["one column"])
    calls = network_calls(fake.ask("counts"))

    ours_us = median(per_call["get_access_token"]) * 1e6
    bare_us = median(per_call["objects.get + decrypt"]) * 1e6
    one_us = median(per_call["one column"]) * 1e6
    print(
        f"\n1. get_access_token on a fresh token ({rounds} interleaved rounds x {per_round} calls; "
        "medians)"
    )
    print(f"  {'loop':<44} {'per call':>10} {'ratio':>7}")
    print(f"  {'get_access_token(conn)':<44} {ours_us:>7.0f} us")
    print(
        f"  {'objects.get(pk=...).access_token (baseline)':<44} {bare_us:>7.0f} us "
        f"{median(ratios):>7.2f}  (target <= 1.2)"
    )
    print(
        f"  {'values_list(access_token) only (tighter)':<44} {one_us:>7.0f} us "
        f"{median(ratios_one):>7.2f}"
    )
    print(f"  queries per get_access_token call: {len(queries.captured_queries)} (target 1)")
    print(f"  calls to Intuit during the loops: {calls} (target 0)")


# -- 2. many askers at the moment of expiry --------------------------------------------------


def one_refresh(pk: int) -> float:
    from qb_oauth import tokens
    from qb_oauth.models import QuickBooksConnection

    expire(pk)
    conn = QuickBooksConnection.objects.get(pk=pk)
    started = time.perf_counter()
    tokens.get_access_token(conn)
    return time.perf_counter() - started


def stampede(
    pk: int, askers: int, gate: threading.Semaphore | None, warm: bool = False
) -> tuple[list, list]:
    from django.db import connections

    from qb_oauth import tokens
    from qb_oauth.models import QuickBooksConnection

    conns = [QuickBooksConnection.objects.get(pk=pk) for _ in range(askers)]
    barrier = threading.Barrier(askers + 1)
    waits: list[float] = []
    errors: list[str] = []
    got: set[str] = set()

    def ask(conn) -> None:
        if warm:  # this thread's database connection is open before the expiry
            QuickBooksConnection.objects.filter(pk=pk).exists()
        barrier.wait(60)
        started = time.perf_counter()
        try:
            if gate is not None:
                gate.acquire()
            try:
                got.add(tokens.get_access_token(conn))
                waits.append(time.perf_counter() - started)  # the token is in hand
            finally:
                connections.close_all()
                if gate is not None:
                    gate.release()
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=ask, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    expire(pk)
    barrier.wait(60)  # the access token has just expired: everybody asks at once
    for t in threads:
        t.join(120)
    return waits, errors + ([] if len(got) <= 1 else [f"{len(got)} different tokens handed out"])


def bench_expiry(fake: FakeIntuitProcess, askers: int, latency: float, trials: int, max_db: int):
    from django.db import connection

    conn = connect_user("stampede")
    fake.ask(f"latency {latency}")
    fake.ask("rotation 0")  # every refresh rotates: a second caller at Intuit would show
    singles = [one_refresh(conn.pk) for _ in range(5)]
    single = median(singles)

    free = postgres_free_connections()
    gate_size = None
    if connection.vendor == "postgresql":
        gate_size = max(4, min(askers, max_db, (free or 0) - 10))
    # (askers, warm connections?, gate): the asked-for figure first, then smaller crowds whose
    # threads already hold an open database connection (as persistent connections would).
    configs = [(askers, False, gate_size)]
    warm_crowd = min(askers, gate_size or askers)
    configs += [(n, True, None) for n in sorted({warm_crowd, 10}, reverse=True) if n <= askers]

    print(
        f"\n2. Threads call get_access_token at the moment of expiry; the fake answers a refresh "
        f"after {latency * 1000:.0f} ms; {trials} trials per row"
    )
    print(f"  one uncontended refresh (median of {len(singles)}): {single * 1000:.0f} ms")
    if gate_size:
        print(
            f"  PostgreSQL: {free} connections free on the server; a crowd larger than "
            f"{gate_size} holds at most {gate_size} at once (waiting for one counts)"
        )
    print(
        f"  {'askers':>6}  {'db connection':>22}  {'Intuit calls':>12}  {'p50 wait':>9}  "
        f"{'p50/refresh':>11}  {'p95 wait':>9}  {'p95/refresh':>11}  {'errors':>6}"
    )
    for n, warm, gate in configs:
        waits_all: list[float] = []
        calls_all, errors_all = [], []
        for _ in range(trials):
            fake.ask("reset")
            waits, errors = stampede(
                conn.pk, n, threading.Semaphore(gate) if gate and gate < n else None, warm
            )
            calls_all.append(fake.ask("counts").get("token.refresh_token", 0))
            waits_all.extend(waits)
            errors_all.extend(errors)
        p50, p95 = percentile(waits_all, 50), percentile(waits_all, 95)
        how = "open before" if warm else "opened when asking"
        if gate and gate < n:
            how += f", {gate} at once"
        calls = "/".join(str(c) for c in calls_all)
        print(
            f"  {n:>6}  {how:>22}  {calls:>12}  {p50 * 1000:>6.0f} ms  {p50 / single:>11.2f}  "
            f"{p95 * 1000:>6.0f} ms  {p95 / single:>11.2f}  {len(errors_all):>6}"
        )
        for e in errors_all[:3]:
            print(f"         ! {e}")
    print("  targets: 1 Intuit call per trial; p50 <= 1.5 x one refresh")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds (fresh path)")
    parser.add_argument("--per-round", type=int, default=300, help="calls per loop and round")
    parser.add_argument("--askers", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per refresh")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument(
        "--max-db-connections",
        type=int,
        default=50,
        help="PostgreSQL: connections the askers hold at once at most (default 50)",
    )
    args = parser.parse_args()

    setup_django(args.db, BENCH_DB_NAME)
    from django.conf import settings

    with FakeIntuitProcess() as fake, bench_database():
        settings.QB_OAUTH = {**settings.QB_OAUTH, **fake.qb_oauth}
        print("qb_oauth token benchmarks")
        print(f"Machine: {machine()}")
        print(f"Database: {describe_database()}")
        print("Fake Intuit: qb_oauth.testing.FakeIntuitServer over HTTP, in a child process")
        bench_fresh(fake, args.rounds, args.per_round)
        bench_expiry(fake, args.askers, args.latency, args.trials, args.max_db_connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())

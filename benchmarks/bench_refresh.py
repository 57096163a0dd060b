#!/usr/bin/env python
"""Benchmark of one refresh: qb_oauth's safe refresh against the refresh a site writes by hand.

* **qb_oauth**: load the connection, then ``tokens.refresh(conn, force=True)``:
  single-flight (the row lease), the rotated refresh token stored with the
  access token in one step, an event, the ``tokens_refreshed`` signal.
* **by hand**: load the connection, intuit-oauth's ``AuthClient.refresh()``
  (Intuit's own Python client, one ``AuthClient`` made once, as a site
  would), and a ``Model.save()`` of the new tokens. Unsafe under concurrency
  (two workers refreshing at once can lose the connection), and the
  baseline the safe one is held to.

Both refresh the same kind of connection against the same fake Intuit (over
HTTP, in a child process, no added latency, every refresh rotating the
refresh token), on the same database, in interleaved rounds. Figures per
refresh: CPU time of this process (``time.process_time``, all its threads)
and wall time, the medians of the per-round means, and their ratios
(target: both at most 1.25); the statements each sends to the database
(``CaptureQueriesContext``) and the TCP connections it opens to the fake.

Run: ``.venv/bin/python benchmarks/bench_refresh.py [--help]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    FakeIntuitProcess,
    bench_database,
    connect_user,
    describe_database,
    machine,
    median,
    setup_django,
)

BENCH_DB_NAME = "qb_oauth_bench_refresh"


def qb_oauth_refresh(pk: int) -> None:
    from qb_oauth import tokens
    from qb_oauth.models import QuickBooksConnection

    conn = QuickBooksConnection.objects.get(pk=pk)
    tokens.refresh(conn, force=True)


def make_by_hand(fake: FakeIntuitProcess):
    """The refresh of a site that uses intuit-oauth and saves the row itself."""
    from django.utils import timezone
    from intuitlib.client import AuthClient

    from qb_oauth.models import QuickBooksConnection

    auth_client = AuthClient(
        "qb-test-client",
        "qb-test-secret",
        "http://testserver/quickbooks/callback/",
        environment=fake.qb_oauth["DISCOVERY_URL"],
    )

    def by_hand(pk: int) -> None:
        conn = QuickBooksConnection.objects.get(pk=pk)
        auth_client.refresh(refresh_token=conn.refresh_token)
        now = timezone.now()
        conn.access_token = auth_client.access_token
        conn.refresh_token = auth_client.refresh_token
        conn.access_token_expires_at = now + timezone.timedelta(seconds=auth_client.expires_in)
        conn.refresh_token_expires_at = now + timezone.timedelta(
            seconds=auth_client.x_refresh_token_expires_in
        )
        conn.last_refreshed_at = now
        conn.save()

    return by_hand


def measure(fn, pks: list[int]) -> tuple[float, float]:
    """CPU and wall seconds per call of ``fn`` over ``pks``."""
    cpu, wall = time.process_time(), time.perf_counter()
    for pk in pks:
        fn(pk)
    return (time.process_time() - cpu) / len(pks), (time.perf_counter() - wall) / len(pks)


def statements(fn, pk: int) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fn(pk)
    return [q["sql"] for q in captured.captured_queries]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--per-round", type=int, default=20, help="refreshes per way and round")
    parser.add_argument("--show-sql", action="store_true", help="print each way's statements")
    args = parser.parse_args()

    setup_django(args.db, BENCH_DB_NAME)
    from django.conf import settings

    with FakeIntuitProcess() as fake, bench_database():
        settings.QB_OAUTH = {**settings.QB_OAUTH, **fake.qb_oauth}
        fake.ask("rotation 0")  # every refresh rotates: the case that must not lose a token
        print("qb_oauth refresh benchmark: the safe refresh against one written by hand")
        print(f"Machine: {machine()}")
        print(f"Database: {describe_database()}")
        print("Fake Intuit: over HTTP in a child process, no added latency, rotating every time")
        ours = [connect_user(f"ours{i}").pk for i in range(args.per_round)]
        theirs = [connect_user(f"theirs{i}").pk for i in range(args.per_round)]
        by_hand = make_by_hand(fake)
        ways = {"qb_oauth": (qb_oauth_refresh, ours), "by hand": (by_hand, theirs)}
        for fn, pks in ways.values():  # warm up: imports, pools, discovery
            measure(fn, pks[:3])
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        fake.ask("reset")
        for round_no in range(args.rounds):
            order = list(ways) if round_no % 2 == 0 else list(reversed(ways))
            for name in order:
                fn, pks = ways[name]
                results[name].append(measure(fn, pks))
        counts = fake.ask("counts")
        connections = fake.ask("connections")
        calls = counts.get("token.refresh_token", 0)
        per_way = args.rounds * args.per_round
        sql = {name: statements(fn, pks[0]) for name, (fn, pks) in ways.items()}
        cpu = {name: median([c for c, _w in runs]) for name, runs in results.items()}
        wall = {name: median([w for _c, w in runs]) for name, runs in results.items()}
        print(
            f"\n{args.rounds} interleaved rounds x {args.per_round} refreshes per way; "
            f"medians of the per-round means"
        )
        print(f"  {'way':<10} {'CPU / refresh':>14} {'wall / refresh':>15} {'statements':>11}")
        for name in ways:
            print(
                f"  {name:<10} {cpu[name] * 1000:>11.2f} ms {wall[name] * 1000:>12.2f} ms "
                f"{len(sql[name]):>11}"
            )
        print(
            f"  ratio qb_oauth / by hand: CPU {cpu['qb_oauth'] / cpu['by hand']:.2f}, "
            f"wall {wall['qb_oauth'] / wall['by hand']:.2f}  (target both <= 1.25)"
        )
        print(
            f"  refreshes at the fake: {calls} (expected {2 * per_way}); "
            f"TCP connections the fake accepted meanwhile: {connections}"
        )
        if args.show_sql:
            for name, queries in sql.items():
                print(f"\n  {name}:")
                for q in queries:
                    print(f"    {q[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

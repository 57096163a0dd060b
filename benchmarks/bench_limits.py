#!/usr/bin/env python
"""Benchmark of the API limits: what holding a call within Intuit's limits costs.

* **the limiter alone**: ``throttle.within_limits`` (a slot taken and given
  back, a rate bucket counted) and ``metering.count_call`` (two counters), as
  every API call runs them, on a Redis cache: the cost added to one call
  (target: at most 1 ms);
* **one API call**: ``api_session().get(companyinfo)`` (token, limits, count)
  against the same GET sent with a plain ``requests`` session and the bearer
  token (no limits, no count), in interleaved rounds, over HTTP to the fake
  Intuit in a child process;
* **throughput at the limit**: one realm's calls on 12 threads for a few
  windows under a small ``API_RATE_LIMIT`` per ``API_RATE_WINDOW`` (the same
  shape as 500 a minute, faster), as a share of the limit (about 94 % by
  design: see docs/usage.md).

Needs Redis (``QB_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/0``); the
keys have a prefix of their own and are deleted at the end.

Run: ``.venv/bin/python benchmarks/bench_limits.py [--help]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
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

BENCH_DB_NAME = "qb_oauth_bench_limits"
REDIS_URL = os.environ.get("QB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def limiter_alone(conn, n: int) -> float:
    from qb_oauth import metering, throttle

    started = time.perf_counter()
    for _ in range(n):
        with throttle.within_limits(conn.environment, conn.realm_id):
            pass
        metering.count_call(conn, read=True)
    return (time.perf_counter() - started) / n


def limited_calls(conn, n: int) -> float:
    started = time.perf_counter()
    with conn.api_session() as session:
        for _ in range(n):
            session.get(f"companyinfo/{conn.realm_id}").raise_for_status()
    return (time.perf_counter() - started) / n


def plain_calls(conn, n: int, session) -> float:
    from qb_oauth import client
    from qb_oauth.tokens import get_access_token

    realm = conn.realm_id
    url = f"{client.api_base(conn.environment)}/v3/company/{realm}/companyinfo/{realm}"
    headers = {"Authorization": f"Bearer {get_access_token(conn)}", "Accept": "application/json"}
    started = time.perf_counter()
    for _ in range(n):
        session.get(
            url, params={"minorversion": 75}, headers=headers, timeout=10
        ).raise_for_status()
    return (time.perf_counter() - started) / n


def throughput(conn, limit: int, window: int, seconds: float) -> float:
    from django.conf import settings
    from django.db import connections

    settings.QB_OAUTH = {**settings.QB_OAUTH, "API_RATE_LIMIT": limit, "API_RATE_WINDOW": window}
    done: list[float] = []
    stop = time.monotonic() + seconds

    def worker():
        with conn.api_session() as session:
            while time.monotonic() < stop:
                session.get(f"companyinfo/{conn.realm_id}")
                done.append(time.monotonic())
        connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A realm at its limit sends a window's worth, then waits for room: the (k x limit)-th
    # call, the first of the (k+1)-th window's worth, comes k windows (and the limiter's
    # margin) after the first. Limit per window over that time, as a share of the limit.
    done.sort()
    k = (len(done) - 1) // limit
    if k < 1:
        return float("nan")
    return k * window / (done[k * limit] - done[0])


def _other_realm(realm_id: str) -> str:
    from qb_oauth.testing import FakeIntuit

    return next(c.realm_id for c in FakeIntuit().companies if c.realm_id != realm_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--per-round", type=int, default=50, help="calls per way and round")
    parser.add_argument("--throughput-seconds", type=float, default=15.0)
    args = parser.parse_args()

    setup_django(args.db, BENCH_DB_NAME)
    import redis
    from django.conf import settings
    from django.test.utils import override_settings

    prefix = f"qblim_bench_{uuid.uuid4().hex[:8]}"
    caches = {
        **settings.CACHES,
        "limits": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,
        },
    }
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as err:
        print(f"No Redis at {REDIS_URL} ({type(err).__name__}): skipped.")
        return 0
    with FakeIntuitProcess() as fake, bench_database(), override_settings(CACHES=caches):
        import requests

        settings.QB_OAUTH = {**settings.QB_OAUTH, **fake.qb_oauth, "CACHE": "limits"}
        print("qb_oauth API limits benchmark: the cost of holding a call within Intuit's limits")
        print(f"Machine: {machine()}")
        print(f"Database: {describe_database()}; cache: Redis at {REDIS_URL}")
        print("Fake Intuit: over HTTP in a child process, no added latency")
        # The cost is measured on one realm, with Intuit's per-minute limit and ours out
        # of the way (a thousand calls a minute would otherwise wait, or be refused);
        # the throughput on another realm, at the fake's own 500 a minute.
        conn = connect_user("limits")
        paced = connect_user("limits-paced", realm_id=_other_realm(conn.realm_id))
        fake.ask("throttle 1000000")
        settings.QB_OAUTH = {**settings.QB_OAUTH, "API_RATE_LIMIT": 1_000_000}
        plain = requests.Session()
        for fn in (limiter_alone, limited_calls):  # warm up
            fn(conn, 5)
        plain_calls(conn, 5, plain)
        alone, limited, unlimited = [], [], []
        for round_no in range(args.rounds):
            ways = [
                lambda: limited.append(limited_calls(conn, args.per_round)),
                lambda: unlimited.append(plain_calls(conn, args.per_round, plain)),
            ]
            for way in ways if round_no % 2 == 0 else reversed(ways):
                way()
            alone.append(limiter_alone(conn, args.per_round))
        print(
            f"\n{args.rounds} interleaved rounds x {args.per_round} calls; medians of the "
            "per-round means"
        )
        print(f"  the limiter alone (slot, rate, count): {median(alone) * 1000:.3f} ms / call")
        print("    (target <= 1 ms)")
        print(f"  api_session() GET (limited, counted):  {median(limited) * 1000:.3f} ms / call")
        print(f"  plain requests GET (unlimited):        {median(unlimited) * 1000:.3f} ms / call")
        print(
            f"  difference: {(median(limited) - median(unlimited)) * 1000:.3f} ms / call "
            "(the limiter, the count, the token lookup, the session's checks)"
        )
        fake.ask("throttle 500")
        limit, window = 40, 5  # 480 a minute: under the fake's own 500
        share = throughput(paced, limit, window, args.throughput_seconds)
        print(
            f"\nThroughput of one realm at {limit} per {window} s on 12 threads: "
            f"{share * 100:.0f} % of the limit (by design about 94 %; "
            f"at 500 a minute that is {share * 500:.0f} a minute)"
        )
        counts = fake.ask("counts")
        print(f"  API calls the fake answered: {counts.get('api', 0)}")
        print(f"  refused 429 by the fake: {fake.ask('throttled')}")
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())

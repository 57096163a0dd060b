"""Helpers of the token benchmarks: the machine, a database of their own, the fake Intuit.

* :func:`setup_django` configures ``tests.settings`` on PostgreSQL (when
  reachable, or asked for) or SQLite, and :func:`bench_database` creates a
  database of the benchmark's own name and drops it afterwards.
* :class:`FakeIntuitProcess` serves the fake Intuit over real HTTP
  (``qb_oauth.testing.FakeIntuitServer``) in a child process, so that it does
  not share the benchmark's interpreter lock, and obeys one-line commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CALLBACK = "http://testserver/quickbooks/callback/"


# -- database -------------------------------------------------------------------------------


def postgres_reachable() -> bool:
    try:
        import psycopg

        psycopg.connect(
            host=os.environ.get("QB_TEST_PG_HOST", "127.0.0.1"),
            port=os.environ.get("QB_TEST_PG_PORT", "5432"),
            user=os.environ.get("QB_TEST_PG_USER", "postgres"),
            dbname="postgres",
            connect_timeout=2,
        ).close()
        return True
    except Exception:
        return False


def setup_django(db: str, bench_name: str) -> str:
    """Configure Django with ``tests.settings`` on ``db`` ("auto", "postgres", "sqlite").

    The database itself is made by :func:`bench_database`. Returns the database used.
    """
    if db == "auto":
        db = "postgres" if postgres_reachable() else "sqlite"
    os.environ["QB_TEST_DB"] = db
    os.environ["QB_TEST_PG_TEST_NAME"] = bench_name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    return db


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """Create the benchmark's own database (PostgreSQL: its own name; SQLite: a temp file),
    migrate it, and drop it at the end."""
    from django.db import connection

    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield name
    finally:
        connection.close()
        connection.creation.destroy_test_db(name, verbosity=0)


def describe_database() -> str:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0].split()[0]
            cursor.execute("SHOW max_connections")
            limit = cursor.fetchone()[0]
        return (
            f"PostgreSQL {version} at {connection.settings_dict['HOST']} "
            f"(max_connections {limit}), database {connection.settings_dict['NAME']}"
        )
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version}, file {connection.settings_dict['NAME']}"


def postgres_free_connections() -> int | None:
    """How many more sessions PostgreSQL accepts now (None on SQLite)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int "
            "- current_setting('superuser_reserved_connections')::int "
            "- (SELECT count(*) FROM pg_stat_activity)"
        )
        return cursor.fetchone()[0]


def machine() -> str:
    import django

    return (
        f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; Django {django.__version__}; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )


# -- figures ------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- the fake Intuit in a child process ---------------------------------------------------------


def _mint(fake, n: int) -> list[dict]:
    """n grants through the fake's consent and token endpoints (in-process, no latency)."""
    import requests

    session = requests.Session()
    session.mount(fake.base_url + "/", fake.adapter())
    grants = []
    for i in range(n):
        realm = fake.companies[i % len(fake.companies)].realm_id
        query = urlencode(
            {
                "client_id": fake.client_id,
                "redirect_uri": CALLBACK,
                "response_type": "code",
                "scope": "com.intuit.quickbooks.accounting",
                "state": "bench",
            }
        )
        back = fake.consent(f"{fake.authorization_url}?{query}", realm_id=realm)
        code = parse_qs(urlsplit(back).query)["code"][0]
        answer = session.post(
            fake.token_url,
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
            auth=(fake.client_id, fake.client_secret),
            headers={"Accept": "application/json"},
            timeout=10,
        ).json()
        grants.append(
            {
                "realm_id": realm,
                "access_token": answer["access_token"],
                "refresh_token": answer["refresh_token"],
                "expires_in": answer["expires_in"],
                "x_refresh_token_expires_in": answer["x_refresh_token_expires_in"],
            }
        )
    return grants


def _serve_fake(realms: int = 0) -> None:
    """The child: serve the fake over HTTP; answer one JSON line per command line.

    ``realms``: that many bench companies instead of the fake's default three.
    """
    from qb_oauth.testing import Company, FakeIntuit, FakeIntuitServer

    companies = [Company(str(9_100_000 + i), f"Bench Company {i}") for i in range(realms)]
    fake = FakeIntuit(redirect_uris=[CALLBACK], companies=companies or None)
    server = FakeIntuitServer(fake).start()
    print(json.dumps({"qb_oauth": fake.qb_oauth_settings()}), flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "latency":
            fake.latency = {"token": float(arg)}
            print("{}", flush=True)
        elif command == "rotation":
            fake.rotation_interval = int(arg)
            print("{}", flush=True)
        elif command == "throttle":
            fake.throttle_per_minute = int(arg)
            print("{}", flush=True)
        elif command == "reset":
            fake.reset_counters()
            print("{}", flush=True)
        elif command == "counts":
            print(json.dumps(dict(fake.counts)), flush=True)
        elif command == "throttled":
            print(json.dumps(dict(fake.throttled)), flush=True)
        elif command == "connections":
            print(json.dumps(fake.connections), flush=True)
        elif command == "refresh_stats":
            stats = {
                "refresh_calls": fake.counts["token.refresh_token"],
                "tokens_refreshed": len(fake.refresh_counts),
                "most_per_token": max(fake.refresh_counts.values(), default=0),
            }
            print(json.dumps(stats), flush=True)
        elif command == "current":
            print(json.dumps(fake.current_refresh_token(arg)), flush=True)
        elif command == "mint":
            print(json.dumps(_mint(fake, int(arg))), flush=True)
        else:
            break
    server.stop()


class FakeIntuitProcess:
    """The fake Intuit over HTTP in a child process; ``ask(command)`` returns its JSON answer."""

    def __init__(self, realms: int = 0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from benchmarks.common import _serve_fake; _serve_fake({int(realms)})",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.qb_oauth = json.loads(self.proc.stdout.readline())["qb_oauth"]

    def ask(self, command: str):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()

    def __enter__(self) -> FakeIntuitProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def connect_user(username: str, realm_id: str | None = None):
    """A connection made through the real path over HTTP: the consent form, then tokens.connect."""
    import requests
    from django.contrib.auth import get_user_model

    from qb_oauth import client, tokens

    user, _ = get_user_model().objects.get_or_create(username=username)
    url = client.authorization_url(state="bench-" + os.urandom(4).hex(), redirect_uri=CALLBACK)
    form = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    form["action"] = "connect"
    if realm_id:
        form["realm_id"] = realm_id
    answer = requests.post(url.split("?")[0], data=form, allow_redirects=False, timeout=10)
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    conn, _created = tokens.connect(
        user=user, code=query["code"][0], realm_id=query["realmId"][0], redirect_uri=CALLBACK
    )
    return conn

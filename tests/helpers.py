"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

from django.db import connection as db_connection
from django.db import connections
from django.utils import timezone

from qb_oauth.models import TOKEN_COLUMNS, QuickBooksConnection


class Recorder:
    """Records the keyword arguments of every sending of ``signal`` while active."""

    def __init__(self, signal):
        self.calls: list[dict] = []
        self.signal = signal

    def __call__(self, sender, **kwargs):
        self.calls.append(kwargs)

    def __enter__(self):
        self.signal.connect(self, weak=False)
        return self

    def __exit__(self, *exc):
        self.signal.disconnect(self)


#: What a refresh may change about a connection's tokens: compared before and after.
TOKEN_FIELDS = (
    "access_token",
    "refresh_token",
    "id_token",
    "access_token_expires_at",
    "refresh_token_expires_at",
    "refresh_token_hard_expires_at",
    "token_version",
    "state",
)


def fields_of(row: QuickBooksConnection) -> dict:
    return {f: getattr(row, f) for f in TOKEN_FIELDS}


def snapshot(conn: QuickBooksConnection | int) -> dict:
    """The stored :data:`TOKEN_FIELDS` of a connection (given as an object or a pk)."""
    pk = conn if isinstance(conn, int) else conn.pk
    return fields_of(QuickBooksConnection.objects.get(pk=pk))


def expire_access(conn: QuickBooksConnection | int, seconds_ago: int = 10) -> None:
    """Make the stored access token expired (as time passing would); an object is reloaded."""
    pk = conn if isinstance(conn, int) else conn.pk
    QuickBooksConnection.objects.filter(pk=pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
    if not isinstance(conn, int):
        conn.refresh_from_db()


def clear_field_key_cache() -> None:
    """fernet_fields caches the keys on each field; a test that changes FERNET_KEYS resets it."""
    for name in TOKEN_COLUMNS:
        field = QuickBooksConnection._meta.get_field(name)
        for attr in ("keys", "fernet_keys", "fernet"):
            field.__dict__.pop(attr, None)


def raw_token_columns(pk: int) -> list[bytes]:
    """The stored ciphertext of the three token columns of connection ``pk``."""
    table = QuickBooksConnection._meta.db_table
    with db_connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(TOKEN_COLUMNS)} FROM {table} WHERE id = %s", [pk])
        return [bytes(value) if value is not None else b"" for value in cursor.fetchone()]


_TABLE = QuickBooksConnection._meta.db_table


@contextlib.contextmanager
def database_refuses_token_writes(seconds: float) -> Iterator[None]:
    """For the next ``seconds`` (the database's clock), every UPDATE that sets the refresh
    token of a connection fails inside the database, as a trigger, a full disk or a
    failover would make it fail. Reads and other writes go on."""
    until = timezone.now() + timedelta(seconds=seconds)
    with db_connection.cursor() as cursor:
        if db_connection.vendor == "postgresql":
            cursor.execute("CREATE TABLE qb_test_refuse (until timestamptz NOT NULL)")
            cursor.execute("INSERT INTO qb_test_refuse VALUES (%s)", [until])
            cursor.execute(
                "CREATE FUNCTION qb_test_refuse() RETURNS trigger AS $$ BEGIN "
                "IF clock_timestamp() < (SELECT until FROM qb_test_refuse) THEN "
                "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER qb_test_refuse BEFORE UPDATE OF refresh_token ON {_TABLE} "
                "FOR EACH ROW EXECUTE FUNCTION qb_test_refuse()"
            )
        else:
            cursor.execute("CREATE TABLE qb_test_refuse (until TEXT NOT NULL)")
            cursor.execute(
                "INSERT INTO qb_test_refuse VALUES (%s)",
                [until.strftime("%Y-%m-%d %H:%M:%S.%f")[:23]],
            )
            cursor.execute(
                f"CREATE TRIGGER qb_test_refuse BEFORE UPDATE OF refresh_token ON {_TABLE} "
                "WHEN strftime('%Y-%m-%d %H:%M:%f', 'now') < (SELECT until FROM qb_test_refuse) "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
    try:
        yield
    finally:
        with db_connection.cursor() as cursor:
            if db_connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER IF EXISTS qb_test_refuse ON {_TABLE}")
                cursor.execute("DROP FUNCTION IF EXISTS qb_test_refuse()")
            else:
                cursor.execute("DROP TRIGGER IF EXISTS qb_test_refuse")
            cursor.execute("DROP TABLE IF EXISTS qb_test_refuse")


def run_threads(
    n: int, target: Callable[[], object], *, together: bool = True
) -> tuple[list, list]:
    """Call ``target`` in ``n`` threads (released at once by a barrier when ``together``);
    their results and the exceptions they raised. Each thread closes its database
    connections."""
    barrier = threading.Barrier(n) if together else None
    results: list = []
    errors: list = []

    def body() -> None:
        try:
            if barrier is not None:
                barrier.wait(10)
            results.append(target())
        except Exception as err:
            errors.append(err)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors

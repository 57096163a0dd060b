"""What one refresh costs: the statements it sends, the connections it opens to Intuit.

The figures (CPU and wall against a refresh written by hand) are in ``make bench``
(benchmarks/bench_refresh.py); these tests pin the counts, which do not depend on
the machine.
"""

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from qb_oauth import client, tokens
from qb_oauth.client.oauth import _token_session
from qb_oauth.models import QuickBooksConnection

pytestmark = pytest.mark.django_db(transaction=True)


def statements_of_a_refresh(conn) -> list[str]:
    with CaptureQueriesContext(db_connection) as captured:
        tokens.refresh(conn, force=True)
    return [q["sql"] for q in captured.captured_queries]


def test_a_refresh_touches_the_database_as_little_as_the_guarantees_allow(
    fake_intuit, user, connect_realm
):
    conn = connect_realm(user)
    fake_intuit.rotation_interval = 0  # the store must keep a rotated refresh token
    sql = statements_of_a_refresh(QuickBooksConnection.objects.get(pk=conn.pk))
    if db_connection.vendor == "postgresql":
        # Take the lease and read the row; store the tokens, end the lease, append the event.
        assert len(sql) == 2, sql
        assert sql[0].startswith("UPDATE") and "RETURNING" in sql[0]
        assert sql[1].startswith("WITH stored AS (UPDATE") and "INSERT INTO" in sql[1]
    else:
        # SQLite: the lease in one statement, then the store and the event in a transaction.
        assert sql[0].startswith("UPDATE") and "RETURNING" in sql[0]
        assert [s.split()[0] for s in sql[1:]] == ["BEGIN", "UPDATE", "INSERT", "COMMIT"], sql
    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.refresh_token == fake_intuit.current_refresh_token(conn.realm_id)
    assert stored.refresh_lease_owner == "" and stored.events.first().kind == "refreshed"


def test_refreshes_reuse_one_kept_alive_connection_to_intuit(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    before = fake_intuit.connections
    for _ in range(20):
        tokens.refresh(QuickBooksConnection.objects.get(pk=conn.pk), force=True)
    assert fake_intuit.counts["token.refresh_token"] == 20
    assert fake_intuit.connections - before <= 1


def test_the_reused_token_session_keeps_nothing_of_a_call(fake_intuit, user, connect_realm):
    conn = connect_realm(user)
    answer = client.refresh_tokens(conn.refresh_token)
    session = _token_session()
    assert session.token == {}
    assert session._client.access_token is None and session._client.refresh_token is None
    assert not list(session.cookies)
    assert answer.refresh_token and answer.access_token
    assert _token_session() is session  # the same session for the thread's next call

"""Reliability: fault storms, killed workers and randomized refresh races, against the fake.

What this file proves (docs/reliability.md has the figures):

* **Fault storm.** 10,000 injected faults at the token endpoint (5xx, 429,
  timeouts, resets, malformed bodies) change no stored token, never mark a
  connection ``reauth_required``, and the connection works when they stop.
* **Killed workers.** A worker killed with SIGKILL before its call to Intuit,
  while Intuit is working on it, or after Intuit answered but before the
  commit, over several connections with and without rotation: the
  connections left usable are counted and asserted. The one window that
  cannot be closed (a rotated refresh token issued to a process that dies
  before storing it) is measured, not hoped away.
* **Randomized races.** Over 1,000 seeded random scenarios (threads in this
  process and in a pool of long-lived worker processes; rotation without
  grace; random latencies; get_access_token, forced refreshes, the fake's
  clock moving): no refresh token is lost and no live grant ends in
  ``reauth_required``.

The seed of every randomized test is printed; ``QB_REL_SEED=<n>`` replays it.
"""

import contextlib
import multiprocessing
import os
import random
import signal
import threading
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings as django_settings
from django.db import connection as db_connection
from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from qb_oauth import client, tokens
from qb_oauth.exceptions import IntuitUnavailable
from qb_oauth.models import ConnectionEvent, ConnectionState, EventKind, QuickBooksConnection
from qb_oauth.testing import Company

from .helpers import expire_access, fields_of, snapshot
from .reliability_workers import SlotPool, refresh_until_killed, serve

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CALLBACK = "http://testserver/quickbooks/callback/"

#: Faults that lose Intuit's answer before Intuit did anything (the request is not processed).
CLEAN_FAULTS = ("500", "502", "503", "429", "timeout", "reset", "malformed")


def seed_for(name):
    """QB_REL_SEED if set, else a fresh seed; printed so that a failure can be replayed."""
    seed = int(os.environ.get("QB_REL_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\n{name}: seed {seed} (replay with QB_REL_SEED={seed})")
    return seed


def add_companies(fake, n, first=9_000_000_000_000_000):
    """Give the fake ``n`` more companies; returns their realm ids."""
    realms = []
    for i in range(n):
        realm = str(first + len(fake.companies) + i)
        fake.companies.append(Company(realm, f"Reliability Co {realm[-4:]}"))
        realms.append(realm)
    return realms


def connect(fake, user, realm_id):
    """Connect ``user`` to ``realm_id`` through the real path (consent page, code exchange)."""
    url = client.authorization_url(state="s-" + os.urandom(4).hex(), redirect_uri=CALLBACK)
    query = parse_qs(urlsplit(fake.consent(url, realm_id=realm_id)).query)
    conn, _created = tokens.connect(
        user=user, code=query["code"][0], realm_id=query["realmId"][0], redirect_uri=CALLBACK
    )
    return conn


def fast_commits():
    """Let this test's own database connection commit without waiting for the disk.

    A session setting, for this connection only: the data is thrown away after the test.
    """
    with db_connection.cursor() as cursor:
        if db_connection.vendor == "postgresql":
            cursor.execute("SET synchronous_commit TO off")
        elif db_connection.vendor == "sqlite":
            cursor.execute("PRAGMA synchronous = OFF")
            cursor.execute("PRAGMA journal_mode = MEMORY")


def false_reauth(fake, pks):
    """Connections whose grant is alive at the fake yet that we hold as reauth_required."""
    bad = []
    for row in QuickBooksConnection.objects.filter(pk__in=pks):
        alive = fake.grant_for_realm(row.realm_id) is not None
        flagged = (
            row.state == ConnectionState.REAUTH_REQUIRED
            or row.events.filter(kind=EventKind.REAUTH_REQUIRED).exists()
        )
        if alive and flagged:
            bad.append(row.pk)
    return bad


def lost_refresh_tokens(fake, pks):
    """Connections whose stored refresh token is not the one the fake considers current."""
    lost = []
    for row in QuickBooksConnection.objects.filter(pk__in=pks):
        grant = fake.grant_for_realm(row.realm_id)
        if grant is None or row.refresh_token != grant.current_refresh_token:
            lost.append(row.pk)
    return lost


# -- fault storm ----------------------------------------------------------------------

STORM_FAULTS = int(os.environ.get("QB_REL_STORM", "10000"))


def test_ten_thousand_faults_change_no_token(fake_intuit_inprocess, user):
    """10,000 faults, one per call: every failing call leaves every token field as it was.

    Rotation without grace (every successful refresh rotates, the old value dies at once),
    so a fault mistaken for a success, or a half-stored answer, would show as a lost
    refresh token. One call in ten goes through unfaulted and must succeed and rotate.
    In-process, a timeout fault costs no time, and commits do not wait for the disk
    (``fast_commits``): a commit per write otherwise makes this minutes long.
    """
    fake = fake_intuit_inprocess
    fast_commits()
    rng = random.Random(seed_for("fault storm"))
    fake.rotation_interval = 0
    fake.rotation_grace = 0
    realms = add_companies(fake, 4)
    pks = [connect(fake, user, realm).pk for realm in realms]
    fake.reset_counters()

    faults = successes = 0
    by_kind = dict.fromkeys(CLEAN_FAULTS, 0)
    changed_on_fault = []
    started = time.monotonic()
    while faults < STORM_FAULTS:
        pk = rng.choice(pks)
        faulted = rng.random() < 0.9
        kind = rng.choice(CLEAN_FAULTS)
        use_get = rng.random() < 0.5
        if use_get:
            expire_access(pk)
        conn = QuickBooksConnection.objects.get(pk=pk)
        before = fields_of(conn)
        calls = fake.counts["token"]
        if faulted:
            fake.inject_fault("token", kind, times=1)
        try:
            if use_get:
                tokens.get_access_token(conn)
            else:
                tokens.refresh(conn, force=True)
        except IntuitUnavailable:
            assert faulted, "IntuitUnavailable without a fault"
            faults += 1
            by_kind[kind] += 1
            if snapshot(pk) != before:
                changed_on_fault.append((pk, kind))
        else:
            assert not faulted, f"a {kind} fault was taken for a success"
            successes += 1
            after = snapshot(pk)
            assert after["token_version"] == before["token_version"] + 1
            assert after["refresh_token"] != before["refresh_token"]  # rotated
        assert fake.counts["token"] == calls + 1, "one call to Intuit per refresh"
    elapsed = time.monotonic() - started

    print(
        f"fault storm: {faults} faults {by_kind}, {successes} clean refreshes in between, "
        f"{elapsed:.1f} s; tokens changed on a fault: {len(changed_on_fault)}; "
        f"false reauth_required: {len(false_reauth(fake, pks))}"
    )
    assert changed_on_fault == []
    assert false_reauth(fake, pks) == []
    assert lost_refresh_tokens(fake, pks) == []
    assert ConnectionEvent.objects.filter(kind=EventKind.REFRESH_FAILED).count() == faults

    # The faults stop: every connection works, and its new refresh token is Intuit's current one.
    for pk in pks:
        expire_access(pk)
        conn = QuickBooksConnection.objects.get(pk=pk)
        assert tokens.get_access_token(conn) in fake.grant_for_realm(conn.realm_id).access_tokens
        conn.refresh_from_db()
        assert conn.state == ConnectionState.ACTIVE
        assert conn.consecutive_failures == 0
    assert lost_refresh_tokens(fake, pks) == []


# -- worker processes -------------------------------------------------------------------


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Workers:
    """Long-lived worker processes (reliability_workers.serve) on the test's database."""

    def __init__(self, n, settings, slots=4):
        self.ctx = multiprocessing.get_context("spawn")
        self.db_name = db_connection.settings_dict["NAME"]
        self.qb_oauth = dict(settings.QB_OAUTH)
        self.slots = slots
        self.procs, self.tasks, self.results = [], [], []
        for _ in range(n):
            tasks, results = self.ctx.Queue(), self.ctx.Queue()
            proc = self.ctx.Process(
                target=serve, args=(self.db_name, self.qb_oauth, slots, tasks, results)
            )
            proc.start()
            self.procs.append(proc)
            self.tasks.append(tasks)
            self.results.append(results)
        for results in self.results:
            kind, _pid = results.get(timeout=120)
            assert kind == "ready"

    def ask(self, i, task, timeout=120):
        self.tasks[i].put(task)
        kind, payload = self.results[i].get(timeout=timeout)
        assert kind == task[0], payload
        return payload

    def close(self):
        for tasks in self.tasks:
            tasks.put(None)
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


@pytest.fixture
def workers(settings):
    made = []

    def start(n, slots=4):
        made.append(Workers(n, settings, slots))
        return made[-1]

    yield start
    for w in made:
        w.close()


# -- SIGKILL ----------------------------------------------------------------------------

KILL_CONNECTIONS = 10

KILL_CASES = {
    "a": "killed holding the lease, before its call to the token endpoint",
    "b": "killed while Intuit works on its refresh (request received, no answer yet)",
    "c": "killed after Intuit answered, before the commit",
}


@contextlib.contextmanager
def rows_locked(pks):
    """Hold the rows (PostgreSQL: SELECT ... FOR UPDATE) or the database's write lock (SQLite)
    in this test's own transaction, so that a worker's final UPDATE blocks."""
    with transaction.atomic():
        if db_connection.vendor == "postgresql":
            list(QuickBooksConnection.objects.select_for_update().filter(pk__in=pks))
        else:  # BEGIN IMMEDIATE already took the write lock; a write makes that plain
            QuickBooksConnection.objects.filter(pk__in=pks).update(company_name=F("company_name"))
        yield


def writers_blocked():
    """How many database sessions wait on a lock (PostgreSQL), or None where we cannot see."""
    if db_connection.vendor != "postgresql":
        return None
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def run_kill_case(case, rotation, fake, user, settings, checker):
    """Kill a worker refreshing KILL_CONNECTIONS connections at the moment ``case`` names.

    Returns a row of counts for the table. The lease the dead worker holds would expire
    by itself after REFRESH_LEASE_TTL; the test moves its expiry into the past
    instead of waiting (time passing, nothing else).
    """
    n = KILL_CONNECTIONS
    fake.latency = {}
    fake.rotation_interval = 0 if rotation else 10 * 86400
    fake.rotation_grace = 0
    realms = add_companies(fake, n)
    pks = [connect(fake, user, realm).pk for realm in realms]
    grants = {pk: fake.grant_for_realm(realm) for pk, realm in zip(pks, realms, strict=True)}
    issued = {pk: len(g.access_token_expiry) for pk, g in grants.items()}

    def answered():
        return sum(len(g.access_token_expiry) > issued[pk] for pk, g in grants.items())

    def leases_held():
        return (
            QuickBooksConnection.objects.filter(pk__in=pks).exclude(refresh_lease_owner="").count()
        )

    for pk in pks:
        expire_access(pk)
    fake.reset_counters()
    fake.latency = {"a": {"discovery": 30}, "b": {"token": 3}, "c": {"token": 0.5}}[case]

    ctx = multiprocessing.get_context("spawn")
    started = ctx.Queue()
    proc = ctx.Process(
        target=refresh_until_killed,
        args=(db_connection.settings_dict["NAME"], dict(settings.QB_OAUTH), pks, started),
    )
    proc.start()
    blocked = None
    try:
        started.get(timeout=120)
        wait_for(lambda: leases_held() == n, 30, "every lease taken")
        if case == "a":
            # Each holder is fetching the discovery document (slow), not yet at the token endpoint.
            wait_for(lambda: fake.counts["discovery"] >= n, 10, "the discovery requests")
            assert fake.counts["token.refresh_token"] == 0
            proc.kill()
        elif case == "b":
            wait_for(lambda: fake.counts["token.refresh_token"] == n, 10, "the refresh requests")
            assert answered() == 0
            proc.kill()
        else:
            with rows_locked(pks):
                wait_for(lambda: answered() == n, 10, "Intuit's answers")
                if db_connection.vendor == "postgresql":
                    wait_for(lambda: writers_blocked() >= n, 10, "the worker's blocked UPDATEs")
                    blocked = writers_blocked()
                else:
                    time.sleep(0.5)  # the worker waits on the write lock (busy timeout 30 s)
                proc.kill()
                proc.join(10)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    token_calls = fake.counts["token.refresh_token"]
    if case == "b":
        # The requests the dead worker sent are still being worked on at Intuit: let them end.
        wait_for(lambda: answered() == n, 10, "Intuit to finish the orphaned requests")

    if case == "c" and db_connection.vendor == "postgresql":
        # On PostgreSQL the store is one statement: the worker's UPDATEs were at the server,
        # waiting for the test's locks, when it died; the server finishes them on its own.
        wait_for(lambda: leases_held() == 0, 10, "the server to finish the dead worker's stores")
    left_held = leases_held()
    QuickBooksConnection.objects.filter(pk__in=pks).exclude(refresh_lease_owner="").update(
        refresh_lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    for pk in pks:
        expire_access(pk)
    fake.latency = {}
    outcomes = dict(checker.ask(0, ("get", pks)))
    # A caller that takes over a dead holder's lease may answer "try again" (IntuitUnavailable)
    # rather than judge an invalid_grant at once: the next caller then decides.
    again = [pk for pk, o in outcomes.items() if o[0] == "error" and o[1] == "IntuitUnavailable"]
    if again:
        outcomes.update(checker.ask(0, ("get", again)))

    usable = lost = reauth = 0
    for row in QuickBooksConnection.objects.filter(pk__in=pks):
        outcome = outcomes[row.pk]
        grant = grants[row.pk]
        if outcome[0] == "ok":
            usable += 1
            assert outcome[1] in grant.access_tokens
            assert row.refresh_token == grant.current_refresh_token
            assert row.state == ConnectionState.ACTIVE
        else:
            assert outcome[1] == "ReauthorizationRequired", outcome
            assert row.refresh_token != grant.current_refresh_token  # Intuit rotated it away
        lost += row.refresh_token != grant.current_refresh_token
        reauth += row.state == ConnectionState.REAUTH_REQUIRED
    return {
        "case": case,
        "rotation": rotation,
        "leases_left": left_held,
        "token_calls": token_calls,
        "blocked": blocked,
        "usable": usable,
        "lost": lost,
        "reauth": reauth,
    }


def test_sigkilled_workers(fake_intuit, user, settings, workers):
    """SIGKILL a worker at three moments of a refresh, 10 connections each, with and without
    rotation; count the connections a later get_access_token (another process) can use."""
    checker = workers(1, slots=1)
    rows = []
    for case in KILL_CASES:
        for rotation in (False, True):
            rows.append(run_kill_case(case, rotation, fake_intuit, user, settings, checker))

    print(f"\nSIGKILL on {db_connection.vendor}, {KILL_CONNECTIONS} connections per row:")
    print(f"{'case':<78} {'rotation':>8} {'usable':>7} {'lost':>5} {'reauth':>7}")
    for r in rows:
        label = f"({r['case']}) {KILL_CASES[r['case']]}"
        print(
            f"{label:<78} {'yes' if r['rotation'] else 'no':>8} "
            f"{r['usable']:>4}/{KILL_CONNECTIONS:<2} {r['lost']:>5} {r['reauth']:>7}"
        )
    print(
        "leases left held by the dead worker: "
        + ", ".join(f"({r['case']}, rot={r['rotation']:d}) {r['leases_left']}" for r in rows)
    )
    if db_connection.vendor == "postgresql":
        print(
            "(c) worker UPDATEs seen blocked on the test's row locks at the kill: "
            + ", ".join(f"rot={r['rotation']:d} {r['blocked']}" for r in rows if r["case"] == "c")
        )
    table = {(r["case"], r["rotation"]): r for r in rows}
    # On PostgreSQL a store that reached the server before the death is finished by it.
    stored_by_server = db_connection.vendor == "postgresql"
    for r in rows:
        if r["case"] == "c" and stored_by_server:
            assert r["leases_left"] == 0  # the stores ended the leases, as they do
        else:
            assert r["leases_left"] == KILL_CONNECTIONS  # the dead holder never released it
    # (a) Intuit never saw the request: nothing is lost, with or without rotation.
    assert table["a", False]["usable"] == table["a", True]["usable"] == KILL_CONNECTIONS
    # Without rotation the stored refresh token stays good whatever the moment of death.
    for case in KILL_CASES:
        assert table[case, False]["usable"] == KILL_CONNECTIONS
        assert table[case, False]["reauth"] == 0
    # With rotation and no grace, once Intuit has the request it rotates, answer heard or not:
    # (b), and (c) unless the store already reached the server, are the one window that
    # cannot be closed. The connections need the user.
    for case in ("b", "c") if not stored_by_server else ("b",):
        assert table[case, True]["usable"] == 0
        assert table[case, True]["lost"] == table[case, True]["reauth"] == KILL_CONNECTIONS
    if stored_by_server:
        assert table["c", True]["usable"] == KILL_CONNECTIONS
        assert table["c", True]["lost"] == table["c", True]["reauth"] == 0


# -- randomized races -------------------------------------------------------------------

RACE_CONNECTIONS = 20  # scenarios run side by side in one batch, one connection each
RACE_PROCESSES = 2
RACE_SLOTS = 4  # threads per process, the test's own included


ON_POSTGRES = "postgresql" in django_settings.DATABASES["default"]["ENGINE"]


def race_scenarios(default):
    return int(os.environ.get("QB_REL_SCENARIOS", default))


def plan_batch(rng, pks):
    """A random batch: Intuit's latency and rotation, and each connection's actions.

    Returns (latency, rotation_interval, expired_at_start, actions); an action is
    (action_id, pk, op, arg, delay, place, slot); place 0 is this process.
    """
    latency = rng.choice([0.0, rng.uniform(0, 0.03), rng.uniform(0.03, 0.15)])
    rotation = rng.choice([0, 0, rng.randint(60, 1800)])
    expired = [pk for pk in pks if rng.random() < 0.7]
    actions = []
    for pk in pks:
        for _ in range(rng.randint(2, 8)):
            op = rng.choices(["get", "force", "expire"], weights=[6, 3, 1])[0]
            actions.append([pk, op, None, rng.uniform(0, 0.2)])
    for _ in range(rng.choice([0, 0, 1, 2])):  # Intuit's clock moves, rotation comes due
        actions.append([None, "advance", rng.uniform(0, 1800), rng.uniform(0, 0.2)])
    planned = []
    for i, (pk, op, arg, delay) in enumerate(actions):
        place = 0 if op == "advance" else rng.randrange(RACE_PROCESSES + 1)
        planned.append((i, pk, op, arg, delay, place, rng.randrange(RACE_SLOTS)))
    return latency, rotation, expired, planned


@pytest.mark.skipif(
    not ON_POSTGRES,
    reason="the 1,000-scenario races run on PostgreSQL (QB_TEST_DB=postgres); "
    "SQLite runs test_randomized_refresh_races_small",
)
def test_randomized_refresh_races_1000(fake_intuit, user, settings, workers):
    run_races(race_scenarios(1000), fake_intuit, user, settings, workers)


@pytest.mark.skipif(ON_POSTGRES, reason="PostgreSQL runs test_randomized_refresh_races_1000")
def test_randomized_refresh_races_small(fake_intuit, user, settings, workers):
    """SQLite serialises every write: a smaller run of the same races."""
    run_races(race_scenarios(100), fake_intuit, user, settings, workers)


def run_races(total, fake_intuit, user, settings, workers):
    """Seeded random races over threads of this process and of long-lived worker processes.

    Rotation without grace; random latencies; get_access_token, forced refreshes, our
    clock passing an expiry and Intuit's clock moving. After every batch: every stored
    refresh token is the one Intuit considers current, no connection whose grant is alive
    is marked reauth_required, no lease is left held, no caller got an error.
    """
    fake = fake_intuit
    rng = random.Random(seed_for("randomized races"))
    fake.rotation_grace = 0
    realms = add_companies(fake, RACE_CONNECTIONS)
    pks = [connect(fake, user, realm).pk for realm in realms]
    grants = {pk: fake.grant_for_realm(realm) for pk, realm in zip(pks, realms, strict=True)}
    pool = workers(RACE_PROCESSES, slots=RACE_SLOTS)
    local = SlotPool(RACE_SLOTS, extra_ops={"advance": lambda _pk, s: fake.clock.advance(s)})

    scenarios = calls = actions_run = 0
    errors, lost, false_flags, leases = [], [], [], []
    slowest = 0.0
    started = time.monotonic()
    try:
        while scenarios < total:
            latency, rotation, expired, planned = plan_batch(rng, pks)
            fake.latency = {"token": latency}
            fake.rotation_interval = rotation
            for pk in expired:
                expire_access(pk)
            before_calls = fake.counts["token.refresh_token"]
            per_place = [[[] for _ in range(RACE_SLOTS)] for _ in range(RACE_PROCESSES + 1)]
            for action_id, pk, op, arg, delay, place, slot in planned:
                per_place[place][slot].append((action_id, pk, op, arg, delay))
            start_at = time.time() + 0.05
            for i in range(RACE_PROCESSES):
                pool.tasks[i].put(("race", start_at, per_place[i + 1]))
            results = local.run(start_at, per_place[0])
            for i in range(RACE_PROCESSES):
                kind, payload = pool.results[i].get(timeout=120)
                assert kind == "race", payload
                results.extend(payload)

            by_id = {a[0]: a for a in planned}
            for action_id, outcome, seconds in results:
                _id, pk, op, _arg, _delay, place, _slot = by_id[action_id]
                slowest = max(slowest, seconds)
                if outcome[0] != "ok":
                    errors.append((scenarios, pk, op, place, outcome))
                elif op in ("get", "force") and outcome[1] not in grants[pk].access_token_expiry:
                    errors.append((scenarios, pk, op, place, "a token Intuit never issued"))
            actions_run += len(results)
            calls += fake.counts["token.refresh_token"] - before_calls
            lost += [(scenarios, pk) for pk in lost_refresh_tokens(fake, pks)]
            false_flags += [(scenarios, pk) for pk in false_reauth(fake, pks)]
            leases += list(
                QuickBooksConnection.objects.filter(pk__in=pks)
                .exclude(refresh_lease_owner="")
                .values_list("pk", flat=True)
            )
            scenarios += len(pks)
            if lost or false_flags:
                break  # every later batch would count the same connection again
    finally:
        local.close()
    elapsed = time.monotonic() - started

    print(
        f"randomized races on {db_connection.vendor}: {scenarios} scenarios "
        f"({RACE_CONNECTIONS} connections per batch, {RACE_PROCESSES} worker processes + this "
        f"one, {RACE_SLOTS} threads each), {actions_run} calls, {calls} refreshes at Intuit, "
        f"slowest call {slowest:.2f} s, {elapsed:.0f} s; lost refresh tokens: {len(lost)}, "
        f"false reauth_required: {len(false_flags)}, leases left: {len(leases)}, "
        f"errors: {len(errors)}"
    )
    assert lost == []
    assert false_flags == []
    assert leases == []
    assert errors == []
    assert scenarios >= total


# -- found while writing this suite -----------------------------------------------------


def test_reconnect_during_a_refresh_keeps_the_new_grant(fake_intuit, user):
    """The user reconnects (a new consent, a new grant) while a refresh of the old grant is
    at Intuit. The refresh answers last; the connection must keep the reconnect's tokens."""
    fake = fake_intuit
    realm = add_companies(fake, 1)[0]
    conn = connect(fake, user, realm)
    fake.rotation_interval = 0
    fake.latency = {"token": 1.0}
    outcome = []

    def refresh_old_grant():
        try:
            outcome.append(tokens.refresh(QuickBooksConnection.objects.get(pk=conn.pk), True))
        except Exception as err:
            outcome.append(err)
        finally:
            connections.close_all()

    thread = threading.Thread(target=refresh_old_grant)
    thread.start()
    wait_for(lambda: fake.counts["token.refresh_token"] == 1, 10, "the refresh at Intuit")
    time.sleep(0.2)  # the fake reads its latency just after counting the request
    fake.latency = {}  # the refresh already waits its second; the reconnect is quick
    reconnected = connect(fake, user, realm)
    new_grant = fake.grant_for_realm(realm)
    assert reconnected.refresh_token == new_grant.current_refresh_token
    thread.join(10)
    assert not isinstance(outcome[0], Exception), outcome
    assert fake.counts["token.refresh_token"] == 1

    stored = QuickBooksConnection.objects.get(pk=conn.pk)
    assert stored.state == ConnectionState.ACTIVE
    assert stored.refresh_token == new_grant.current_refresh_token
    assert stored.access_token in new_grant.access_tokens
    assert not stored.events.filter(kind=EventKind.REFRESHED).exists()


PAUSED = 5


def test_a_holder_paused_past_its_lease_causes_no_false_reauth(fake_intuit, user, settings):
    """A holder is paused (SIGSTOP: a VM freeze, a stop-the-world pause, swapping) after
    Intuit rotated the refresh token for it, for longer than its lease; another caller
    takes the lease over. The grant is alive: nobody should be told to reconnect.

    Time passing is simulated: the paused holder's lease expiry is moved into the past.
    """
    fake = fake_intuit
    fake.rotation_interval = 0
    fake.rotation_grace = 0
    realms = add_companies(fake, PAUSED)
    pks = [connect(fake, user, realm).pk for realm in realms]
    grants = {pk: fake.grant_for_realm(realm) for pk, realm in zip(pks, realms, strict=True)}
    issued = {pk: len(g.access_token_expiry) for pk, g in grants.items()}
    for pk in pks:
        expire_access(pk)
    fake.reset_counters()
    fake.latency = {"token": 1.0}
    flagged = []
    from qb_oauth import signals

    def on_reauth(sender, connection, **kwargs):
        flagged.append(connection.pk)

    signals.reauthorization_required.connect(on_reauth, weak=False)
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Queue()
    proc = ctx.Process(
        target=refresh_until_killed,
        args=(db_connection.settings_dict["NAME"], dict(settings.QB_OAUTH), pks, started),
    )
    proc.start()
    try:
        started.get(timeout=120)
        wait_for(lambda: fake.counts["token.refresh_token"] == PAUSED, 30, "the refreshes")
        os.kill(proc.pid, signal.SIGSTOP)
        # Intuit rotates and answers; the answers wait in the paused process's sockets.
        wait_for(
            lambda: all(len(g.access_token_expiry) > issued[pk] for pk, g in grants.items()),
            10,
            "Intuit's answers",
        )
        QuickBooksConnection.objects.filter(pk__in=pks).update(
            refresh_lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        fake.latency = {}
        others = []
        for pk in pks:
            try:
                tokens.get_access_token(QuickBooksConnection.objects.get(pk=pk))
                others.append("ok")
            except Exception as err:
                others.append(type(err).__name__)
        os.kill(proc.pid, signal.SIGCONT)
        wait_for(
            lambda: (
                QuickBooksConnection.objects.filter(
                    pk__in=pks, events__kind=EventKind.REFRESHED
                ).count()
                == PAUSED
            ),
            20,
            "the paused holder to store Intuit's answers",
        )
    finally:
        signals.reauthorization_required.disconnect(on_reauth)
        proc.kill()
        proc.join(5)

    rows = list(QuickBooksConnection.objects.filter(pk__in=pks))
    events = ConnectionEvent.objects.filter(kind=EventKind.REAUTH_REQUIRED).count()
    print(
        f"\npaused holder: the other caller got {others}; afterwards "
        f"{sum(r.state == ConnectionState.ACTIVE for r in rows)}/{PAUSED} active, "
        f"lost refresh tokens {len(lost_refresh_tokens(fake, pks))}, "
        f"reauth_required events {events}, reauthorization_required signals {len(flagged)}"
    )
    assert lost_refresh_tokens(fake, pks) == []  # the paused holder's answer is stored
    assert all(r.state == ConnectionState.ACTIVE for r in rows)
    assert "ReauthorizationRequired" not in others
    assert flagged == []
    assert false_reauth(fake, pks) == []

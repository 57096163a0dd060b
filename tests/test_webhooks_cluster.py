"""Webhooks on a real django-q2 cluster: Redis, PostgreSQL, two qcluster processes.

The site runs in its own process (``runserver`` with the cluster's settings, so
the endpoint queues its tasks to Redis instead of running them inline); the
fake Intuit POSTs 1,000 events in 20 signed deliveries over HTTP, and repeats
five of them. Each event must be stored once and signalled exactly once (a
receiver in the cluster's processes writes one line per signal), and both
clusters must stop cleanly on SIGTERM.

Needs PostgreSQL (``QB_TEST_DB=postgres``) and Redis at 127.0.0.1:6379.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests
from django.db import connection

from qb_oauth.models import WebhookEvent
from qb_oauth.testing import FakeIntuit
from tests.test_cluster import _needs_postgres_and_redis  # noqa: F401  (autouse)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "qb-test-verifier-token"
DELIVERIES, PER_DELIVERY, REPEATED = 20, 50, 5
DEADLINE = 120


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs):
    codes = []
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append("killed")
    return codes


def test_1000_events_in_20_deliveries_each_signalled_once(user, connect_realm, settings, tmp_path):
    conn = connect_realm(user, "9341452859140132")
    counter = tmp_path / "signals.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.cluster_settings",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "QB_TEST_DB": "postgres",
        "QB_CLUSTER_DB_NAME": connection.settings_dict["NAME"],
        "QB_CLUSTER_NAME": f"qbhook_{uuid.uuid4().hex[:10]}",
        "QB_CLUSTER_QB_OAUTH": json.dumps(settings.QB_OAUTH),
        "QB_CLUSTER_WEBHOOK_LOG": str(counter),
        "PYTHONUNBUFFERED": "1",
    }
    port = _free_port()
    logs, procs = [], []
    fake = FakeIntuit(webhook_verifier_token=TOKEN)
    fake.webhook_url = f"http://127.0.0.1:{port}/quickbooks/webhooks/"
    fake.webhook_time_scale = 0.01
    try:
        commands = [["qcluster"], ["qcluster"], ["runserver", "--noreload", f"127.0.0.1:{port}"]]
        for i, command in enumerate(commands):
            log = open(tmp_path / f"proc-{i}.log", "w+")  # noqa: SIM115
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "django", *command],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 30
        while True:  # the site is up when it answers (405 to a GET)
            try:
                requests.get(fake.webhook_url, timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "runserver did not start"
                time.sleep(0.2)

        realms = [conn.realm_id] + [str(7_100_000 + i) for i in range(9)]
        batches = [
            [
                fake.webhook_event(realms[(d + n) % len(realms)], "Invoice", f"{d}-{n}", "updated")
                for n in range(PER_DELIVERY)
            ]
            for d in range(DELIVERIES)
        ]
        sent = [fake.send_webhook_events(batch, wait=False) for batch in batches]
        sent += [fake.send_webhook_events(batch, wait=False) for batch in batches[:REPEATED]]
        assert all(d.wait(60) for d in sent), [d.statuses for d in sent if not d.acknowledged]
        answered = time.monotonic()

        total = DELIVERIES * PER_DELIVERY
        deadline = answered + DEADLINE
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), "a process died"
            if WebhookEvent.objects.filter(processed_at__isnull=False).count() == total:
                break
            time.sleep(0.5)
        time.sleep(1)  # a duplicate signal, if any, has time to show
    finally:
        fake.stop_webhooks()
        codes = _stop(procs)
        output = []
        for log in logs:
            log.seek(0)
            output.append(log.read())
            log.close()

    def show():
        return "\n".join(text[-3000:] for text in output)

    assert WebhookEvent.objects.count() == total, show()
    assert WebhookEvent.objects.filter(processed_at__isnull=False).count() == total, show()
    assert set(WebhookEvent.objects.values_list("attempts", flat=True)) == {1}
    lines = counter.read_text().split("\n")[:-1]
    signalled = Counter(int(line.split()[0]) for line in lines)
    assert len(signalled) == total and set(signalled.values()) == {1}, show()
    pids = {line.split()[1] for line in lines}
    assert len(pids) >= 2  # the work was shared between workers
    with_connection = WebhookEvent.objects.filter(realm_id=conn.realm_id)
    assert all(list(e.connections.all()) == [conn] for e in with_connection[:20])
    assert WebhookEvent.objects.filter(unknown_realm=True).count() == total * 9 // 10
    # The two qcluster processes stop cleanly (runserver is ended by SIGTERM too).
    assert codes[:2] == [0, 0], (codes, show())
    print(f"\n{total} events in {len(sent)} deliveries; signalled by {len(pids)} processes")

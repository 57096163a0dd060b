"""The fake Intuit POSTs signed webhooks over real HTTP: to the site (live_server), and to
a recording server that answers what a test needs (500s, slow answers) to show Intuit's
retries and its holding of a realm's later events."""

import json
import time

import pytest

from qb_oauth.models import WebhookEvent
from qb_oauth.signals import webhook_received
from qb_oauth.testing import FakeIntuit
from tests.helpers import Recorder
from tests.local_servers import RecordingServer

TOKEN = "qb-test-verifier-token"  # tests/settings.py
REALM_1, REALM_2 = "9341452859140132", "9130357992276326"
#: Intuit's schedule, 1,000 times faster: 0 s, 10 ms, 20 ms, 30 ms, 300 ms, ...
SCALE = 0.001


@pytest.fixture
def fake():
    fake = FakeIntuit(webhook_verifier_token=TOKEN)
    fake.webhook_time_scale = SCALE
    yield fake
    fake.stop_webhooks()


@pytest.mark.django_db(transaction=True)
def test_the_fake_delivers_to_the_site_over_http(fake, live_server, user, connect_realm):
    fake.webhook_url = live_server.url + "/quickbooks/webhooks/"
    conn = connect_realm(user, REALM_1)
    with Recorder(webhook_received) as received:
        for format in ("cloudevents", "legacy"):
            delivery = fake.send_webhook(REALM_1, "Invoice", "95", "updated", format=format)
            assert delivery.acknowledged and delivery.statuses == ["200"]
    assert [c["connections"] for c in received.calls] == [[conn], [conn]]
    assert sorted(WebhookEvent.objects.values_list("format", flat=True)) == [
        "cloudevents",
        "legacy",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_site_refusing_at_first_is_retried_until_it_acknowledges(fake, live_server, settings):
    # The site has the wrong verifier token: 401 until it is fixed, then Intuit's retry lands.
    settings.QB_OAUTH = {**settings.QB_OAUTH, "WEBHOOK_VERIFIER_TOKEN": "not-yet"}
    fake.webhook_url = live_server.url + "/quickbooks/webhooks/"
    fake.webhook_time_scale = 0.01  # the 5 min retry after 3 s
    delivery = fake.send_webhook(REALM_1, "Invoice", "95", "created", wait=False)
    deadline = time.monotonic() + 5
    while len(delivery.attempts) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert delivery.statuses[:2] == ["401", "401"] and WebhookEvent.objects.count() == 0
    settings.QB_OAUTH = {**settings.QB_OAUTH, "WEBHOOK_VERIFIER_TOKEN": TOKEN}
    assert delivery.wait(10)
    assert delivery.statuses[-1] == "200" and set(delivery.statuses[:-1]) == {"401"}
    assert WebhookEvent.objects.count() == 1


def test_a_500_is_retried_on_intuits_schedule_then_acknowledged(fake):
    with RecordingServer(statuses=[500, 500, 503, 500]) as site:
        fake.webhook_url = site.url("/hooks/")
        delivery = fake.send_webhook(REALM_1, "Invoice", "95", "created")
    assert delivery.acknowledged
    assert delivery.statuses == ["500", "500", "503", "500", "200"]
    # Every attempt is the same signed body.
    assert {r.body for r in site.received} == {delivery.body}
    assert {r.headers["intuit-signature"] for r in site.received} == {
        fake.sign_webhook(delivery.body)
    }
    # After the first failure: at 0, 10, 20, 30 (scaled) seconds.
    first_failure = site.received[0].at
    offsets = [r.at - first_failure for r in site.received[1:]]
    for offset, expected in zip(offsets, (0, 10, 20, 30), strict=True):
        assert expected * SCALE <= offset + 0.005, offsets


def test_a_slow_answer_counts_as_a_failure(fake):
    fake.webhook_answer_timeout = 0.2
    with RecordingServer(delays=[0.4]) as site:
        fake.webhook_url = site.url("/hooks/")
        delivery = fake.send_webhook(REALM_1, "Invoice", "95", "created")
    assert delivery.acknowledged and len(delivery.attempts) == 2
    assert delivery.statuses == ["ReadTimeout", "200"]


def test_a_realm_s_later_events_wait_for_the_first_to_be_acknowledged(fake):
    fake.webhook_time_scale = 0.002  # 0, 20, 40, 60 ms
    with RecordingServer(statuses=[500, 500, 500]) as site:
        fake.webhook_url = site.url("/hooks/")
        first = fake.send_webhook(REALM_1, "Invoice", "1", "created", wait=False)
        time.sleep(0.02)
        later = fake.send_webhook(REALM_1, "Invoice", "2", "updated", wait=False)
        assert first.wait(5) and later.wait(5)
    ids = [json.loads(r.body)[0]["intuitentityid"] for r in site.received]
    assert ids == ["1", "1", "1", "1", "2"]


def test_other_realms_are_not_held(fake):
    fake.webhook_time_scale = 0.01  # retries at 0, 100, 200, 300 ms

    def answer(received):
        realm = json.loads(received.body)[0]["intuitaccountid"]
        tries = sum(1 for r in site.received if r.body == received.body)
        return 500 if realm == REALM_1 and tries <= 4 else 200

    with RecordingServer(answer=answer) as site:
        fake.webhook_url = site.url("/hooks/")
        held = fake.send_webhook(REALM_1, "Invoice", "1", "created", wait=False)
        time.sleep(0.05)
        other = fake.send_webhook(REALM_2, "Bill", "2", "created")
        assert other.acknowledged and not held.done.is_set()
        assert held.wait(5) and held.statuses == ["500"] * 4 + ["200"]
    realms = [json.loads(r.body)[0]["intuitaccountid"] for r in site.received]
    assert realms.index(REALM_2) < len(realms) - 1  # delivered while realm 1 was retrying


def test_it_gives_up_after_its_attempts(fake):
    fake.webhook_max_attempts = 3
    with RecordingServer(status=500) as site:
        fake.webhook_url = site.url("/hooks/")
        delivery = fake.send_webhook(REALM_1, "Invoice", "1", "created")
    assert not delivery.acknowledged and delivery.statuses == ["500"] * 3
    assert len(site.received) == 3


def test_the_retry_schedule_is_intuits_by_default():
    fake = FakeIntuit()
    assert tuple(fake.webhook_retry_schedule) == (0, 10, 20, 30, 300, 1200, 7200, 14400, 21600)
    assert fake._retry_delay(10) == 21600 + 21600

"""Intuit's webhooks through Django's test client: signature, formats, dedupe, signal.

Bodies are built and signed by the fake Intuit (``webhook_body``, ``sign_webhook``),
the same code that POSTs them over HTTP in test_webhooks_http.py. The test
settings' Q_CLUSTER is ``sync``: the task runs inline after the store commits.
"""

import json
import logging
import time

import pytest
from django.urls import reverse

from qb_oauth.models import WebhookEvent
from qb_oauth.signals import webhook_received
from qb_oauth.testing import FakeIntuit
from tests.helpers import Recorder

pytestmark = pytest.mark.django_db

TOKEN = "qb-test-verifier-token"  # tests/settings.py
REALM_1, REALM_2, REALM_CA = "9341452859140132", "9130357992276326", "4620816365281947510"


@pytest.fixture
def intuit():
    return FakeIntuit(webhook_verifier_token=TOKEN)


@pytest.fixture
def post(client, django_capture_on_commit_callbacks):
    """POST a body; the on-commit work runs as after a real commit (the test's
    transaction never commits)."""
    url = reverse("qb_oauth:webhooks")

    def send(body: bytes, signature: str | None = None, **extra):
        headers = {} if signature is None else {"HTTP_INTUIT_SIGNATURE": signature}
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(url, body, content_type="application/json", **headers, **extra)

    return send


@pytest.fixture
def signed(intuit, post):
    def send(events, format="cloudevents"):
        body = intuit.webhook_body(events, format)
        return post(body, intuit.sign_webhook(body))

    return send


@pytest.fixture
def received():
    with Recorder(webhook_received) as recorder:
        yield recorder


def test_a_signed_cloudevent_is_stored_and_signalled(intuit, signed, received, user, connect_realm):
    conn = connect_realm(user, REALM_1)
    event = intuit.webhook_event(REALM_1, "Invoice", "95", "created")
    answer = signed([event])
    assert answer.status_code == 200
    assert answer.json() == {"received": 1, "new": 1}
    row = WebhookEvent.objects.get()
    assert (row.realm_id, row.entity, row.entity_id, row.operation) == (
        REALM_1,
        "invoice",
        "95",
        "created",
    )
    assert row.event_type == "qbo.invoice.created.v1" and row.format == "cloudevents"
    assert row.occurred_at is not None and row.processed_at is not None
    assert row.attempts == 1 and not row.failed and not row.unknown_realm
    assert list(row.connections.all()) == [conn]
    assert len(received.calls) == 1
    assert received.calls[0]["event"].pk == row.pk
    assert received.calls[0]["connections"] == [conn]


@pytest.mark.parametrize(
    "tamper",
    ["wrong token", "changed byte", "missing header", "not base64", "empty header"],
)
def test_a_bad_signature_is_401_and_stores_nothing(intuit, post, received, tamper, caplog):
    body = intuit.webhook_body([intuit.webhook_event(REALM_1, "Invoice", "95", "created")])
    signature = {
        "wrong token": intuit.sign_webhook(body, "another-token"),
        "changed byte": intuit.sign_webhook(body.replace(b"95", b"96")),
        "missing header": None,
        "not base64": "%%%not-base64%%%",
        "empty header": "",
    }[tamper]
    with caplog.at_level(logging.INFO):
        answer = post(body, signature)
    assert answer.status_code == 401
    assert WebhookEvent.objects.count() == 0 and received.calls == []
    lines = [r for r in caplog.records if r.name.startswith(("qb_oauth", "django"))]
    assert len(lines) == 1 and lines[0].name == "qb_oauth.webhooks"
    text = lines[0].getMessage()
    assert "Invoice" not in text and "95" not in text and TOKEN not in text
    if signature:
        assert signature not in text


def test_no_verifier_token_configured_refuses_everything(intuit, post, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "WEBHOOK_VERIFIER_TOKEN": None}
    body = intuit.webhook_body([intuit.webhook_event(REALM_1, "Invoice", "95", "created")])
    assert post(body, intuit.sign_webhook(body)).status_code == 401
    assert WebhookEvent.objects.count() == 0


def test_a_list_of_tokens_accepts_each_while_rolling(intuit, post, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "WEBHOOK_VERIFIER_TOKEN": ["new-token", TOKEN]}
    for n, token in enumerate(["new-token", TOKEN, "retired-token"]):
        body = intuit.webhook_body([intuit.webhook_event(REALM_1, "Invoice", str(n), "updated")])
        answer = post(body, intuit.sign_webhook(body, token))
        assert answer.status_code == (401 if token == "retired-token" else 200)
    assert WebhookEvent.objects.count() == 2


def test_only_post(client):
    url = reverse("qb_oauth:webhooks")
    assert client.get(url).status_code == 405
    assert client.put(url, b"[]").status_code == 405


def test_csrf_is_not_asked(intuit):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    body = intuit.webhook_body([intuit.webhook_event(REALM_1, "Invoice", "95", "created")])
    answer = client.post(
        reverse("qb_oauth:webhooks"),
        body,
        content_type="application/json",
        HTTP_INTUIT_SIGNATURE=intuit.sign_webhook(body),
    )
    assert answer.status_code == 200


def test_a_body_over_the_limit_is_413(intuit, post, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "WEBHOOK_MAX_BODY": 2048}
    events = [intuit.webhook_event(REALM_1, "Invoice", str(n), "created") for n in range(20)]
    body = intuit.webhook_body(events)
    assert len(body) > 2048
    assert post(body, intuit.sign_webhook(body)).status_code == 413
    assert WebhookEvent.objects.count() == 0
    # Exactly at the limit is accepted.
    settings.QB_OAUTH = {**settings.QB_OAUTH, "WEBHOOK_MAX_BODY": len(body)}
    assert post(body, intuit.sign_webhook(body)).status_code == 200


def test_malformed_json_with_a_good_signature_is_400(intuit, post):
    for body in [b"{not json", b'"a string"', b'{"something": "else"}', b"\xff\xfe"]:
        answer = post(body, intuit.sign_webhook(body))
        assert answer.status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_legacy_format_split_by_realm(intuit, signed, received, user, connect_realm):
    c1 = connect_realm(user, REALM_1)
    c2 = connect_realm(user, REALM_2)
    events = [
        intuit.webhook_event(REALM_1, "Account", "1234", "Create", "legacy"),
        intuit.webhook_event(REALM_2, "Customer", "7", "Update", "legacy"),
        intuit.webhook_event(REALM_1, "Invoice", "44", "Delete", "legacy"),
    ]
    body = json.loads(intuit.webhook_body(events, "legacy"))
    assert [n["realmId"] for n in body["eventNotifications"]] == [REALM_1, REALM_2]
    assert signed(events, "legacy").status_code == 200
    rows = {(r.realm_id, r.entity, r.entity_id, r.operation) for r in WebhookEvent.objects.all()}
    assert rows == {
        (REALM_1, "account", "1234", "created"),
        (REALM_2, "customer", "7", "updated"),
        (REALM_1, "invoice", "44", "deleted"),
    }
    by_entity = {c["event"].entity: c["connections"] for c in received.calls}
    assert by_entity == {"account": [c1], "customer": [c2], "invoice": [c1]}
    assert all(r.format == "legacy" for r in WebhookEvent.objects.all())


def test_cloudevents_batch_of_several_realms(
    intuit, signed, received, user, other_user, connect_realm
):
    a = connect_realm(user, REALM_1)
    b = connect_realm(other_user, REALM_1)  # a realm connected by two users
    events = [
        intuit.webhook_event(REALM_1, "Invoice", "1", "created"),
        intuit.webhook_event(REALM_CA, "Bill", "2", "voided"),  # nobody connects it
    ]
    assert signed(events).status_code == 200
    calls = {c["event"].realm_id: c["connections"] for c in received.calls}
    assert sorted(c.pk for c in calls[REALM_1]) == sorted([a.pk, b.pk])
    assert calls[REALM_CA] == []
    unknown = WebhookEvent.objects.get(realm_id=REALM_CA)
    assert unknown.unknown_realm and unknown.processed_at is not None


def test_a_repeated_delivery_stores_and_signals_once(intuit, post, received):
    events = [intuit.webhook_event(REALM_1, "Invoice", "1", "created") for _ in range(3)]
    legacy = [intuit.webhook_event(REALM_1, "Account", "9", "Update", "legacy")]
    body = intuit.webhook_body(events)
    legacy_body = intuit.webhook_body(legacy, "legacy")
    for _ in range(3):
        assert post(body, intuit.sign_webhook(body)).status_code == 200
        assert post(legacy_body, intuit.sign_webhook(legacy_body)).status_code == 200
    assert WebhookEvent.objects.count() == 4
    assert len(received.calls) == 4
    # The same event twice inside one body, too.
    twice = intuit.webhook_body([events[0], events[0]])
    assert post(twice, intuit.sign_webhook(twice)).json() == {"received": 2, "new": 0}
    assert len(received.calls) == 4


def test_a_failing_receiver_is_retried_then_flagged(intuit, signed, caplog, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "WEBHOOK_MAX_ATTEMPTS": 3}
    calls = []

    def broken(sender, event, connections, **kwargs):
        calls.append(event.pk)
        raise RuntimeError("the site's database is away")

    webhook_received.connect(broken, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="qb_oauth"):
            assert (
                signed([intuit.webhook_event(REALM_1, "Invoice", "5", "updated")]).status_code
                == 200
            )
    finally:
        webhook_received.disconnect(broken)
    row = WebhookEvent.objects.get()
    assert len(calls) == 3 and row.attempts == 3
    assert row.failed and row.processed_at is None
    assert "broken raised RuntimeError" in row.last_error
    assert any("flagged failed" in r.getMessage() for r in caplog.records)


def test_a_receiver_failing_once_succeeds_on_the_retry(intuit, signed):
    calls = []

    def flaky(sender, event, connections, **kwargs):
        calls.append(event.pk)
        if len(calls) == 1:
            raise RuntimeError("once")

    webhook_received.connect(flaky, weak=False)
    try:
        signed([intuit.webhook_event(REALM_1, "Invoice", "5", "updated")])
    finally:
        webhook_received.disconnect(flaky)
    row = WebhookEvent.objects.get()
    assert len(calls) == 2 and row.processed_at is not None and not row.failed
    assert row.last_error == ""


@pytest.mark.django_db(transaction=True)
def test_the_signal_is_sent_after_the_commit(intuit, signed):
    seen = []

    def receiver(sender, event, connections, **kwargs):
        from django.db import connection

        # Committed: the row is visible, and no transaction of the view is open.
        seen.append((WebhookEvent.objects.filter(pk=event.pk).exists(), connection.in_atomic_block))

    webhook_received.connect(receiver, weak=False)
    try:
        signed([intuit.webhook_event(REALM_1, "Invoice", "5", "updated")])
    finally:
        webhook_received.disconnect(receiver)
    assert seen == [(True, False)]


def test_events_without_a_realm_or_id_are_skipped(intuit, post):
    good = intuit.webhook_event(REALM_1, "Invoice", "5", "updated")
    body = json.dumps(
        [good, {"specversion": "1.0", "id": "x", "type": "qbo.invoice.created.v1"}, 7]
    ).encode()
    answer = post(body, intuit.sign_webhook(body))
    assert answer.status_code == 200 and answer.json()["received"] == 1


def test_two_hundred_events_answer_well_under_three_seconds(
    intuit, signed, received, user, connect_realm
):
    connect_realm(user, REALM_1)
    events = [
        intuit.webhook_event((REALM_1, REALM_2)[n % 2], "Invoice", str(n), "updated")
        for n in range(200)
    ]
    started = time.monotonic()
    answer = signed(events)
    elapsed = time.monotonic() - started
    assert answer.status_code == 200 and answer.json()["new"] == 200
    assert len(received.calls) == 200
    # Processing runs inline here (sync); on a cluster the answer only stores.
    assert elapsed < 3, elapsed


def test_no_body_or_signature_in_any_log_line(intuit, post, caplog):
    event = intuit.webhook_event(REALM_1, "Invoice", "secret-entity-777", "created")
    body = intuit.webhook_body([event])
    good = intuit.sign_webhook(body)
    with caplog.at_level(logging.DEBUG):
        post(body, good)
        post(body, intuit.sign_webhook(body, "wrong"))
        post(b"{bad", intuit.sign_webhook(b"{bad"))
    for record in caplog.records:
        text = record.getMessage()
        assert "secret-entity-777" not in text and good not in text and TOKEN not in text
        assert event["id"] not in text


def test_resend_sends_the_signal_again(
    intuit, signed, received, django_capture_on_commit_callbacks
):
    from qb_oauth.webhooks.process import resend

    signed([intuit.webhook_event(REALM_1, "Invoice", "5", "updated")])
    row = WebhookEvent.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        assert resend([row.pk]) == 1
    assert len(received.calls) == 2
    row.refresh_from_db()
    assert row.processed_at is not None and row.attempts == 1


def test_an_unknown_realm_connected_later_is_known_on_resend(
    intuit, signed, received, user, connect_realm, django_capture_on_commit_callbacks
):
    from qb_oauth.webhooks.process import resend

    signed([intuit.webhook_event(REALM_2, "Invoice", "5", "updated")])
    row = WebhookEvent.objects.get()
    assert row.unknown_realm and received.calls[0]["connections"] == []
    conn = connect_realm(user, REALM_2)
    with django_capture_on_commit_callbacks(execute=True):
        resend([row.pk])
    row.refresh_from_db()
    assert not row.unknown_realm and received.calls[1]["connections"] == [conn]
    assert list(row.connections.all()) == [conn]


def test_only_active_connections_are_given(
    intuit, signed, received, user, other_user, connect_realm
):
    from qb_oauth import tokens

    active = connect_realm(user, REALM_1)
    gone = connect_realm(other_user, REALM_1)
    tokens.revoke(gone)  # disconnected: tokens dropped, not active any more
    signed([intuit.webhook_event(REALM_1, "Invoice", "5", "updated")])
    assert received.calls[0]["connections"] == [active]


def test_an_event_whose_task_was_lost_is_handed_out_by_the_next_sweep(
    intuit, client, django_capture_on_commit_callbacks, received
):
    """The answer's on-commit hand-off never ran (the worker died, Redis was flushed):
    the scheduled sweep picks the event up once it has waited five minutes."""
    from datetime import timedelta

    from django.utils import timezone

    from qb_oauth import tasks

    body = intuit.webhook_body([intuit.webhook_event(REALM_1, "Invoice", "7", "created")])
    with django_capture_on_commit_callbacks(execute=False):  # the hand-off is lost
        response = client.post(
            reverse("qb_oauth:webhooks"),
            body,
            content_type="application/json",
            HTTP_INTUIT_SIGNATURE=intuit.sign_webhook(body),
        )
    assert response.status_code == 200
    tasks.refresh_due_connections(fan_out=False)
    assert received.calls == []  # too recent: its task may still be on its way
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(minutes=6))
    tasks.refresh_due_connections(fan_out=False)
    assert len(received.calls) == 1
    assert WebhookEvent.objects.get().processed_at is not None

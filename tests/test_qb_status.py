"""``manage.py qb_status`` against connections made through the fake Intuit."""

import json
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from qb_oauth import tokens
from qb_oauth.models import ConnectionState, Environment, QuickBooksConnection

pytestmark = pytest.mark.django_db


@pytest.fixture
def conns(fake_intuit, connect_realm, user, other_user):
    realms = [c.realm_id for c in fake_intuit.companies]
    now = timezone.now()
    healthy = connect_realm(user, realms[0], scopes=["com.intuit.quickbooks.accounting", "openid"])
    QuickBooksConnection.objects.filter(pk=healthy.pk).update(
        access_token_expires_at=now + timedelta(minutes=37, seconds=30),
        refresh_token_expires_at=now + timedelta(days=99, hours=1),
        refresh_token_hard_expires_at=now + timedelta(days=1800, hours=1),
    )
    expiring = connect_realm(user, realms[1])
    QuickBooksConnection.objects.filter(pk=expiring.pk).update(
        access_token_expires_at=now - timedelta(hours=2, minutes=5),
        refresh_token_expires_at=now + timedelta(days=20, hours=1),
        environment=Environment.PRODUCTION,
    )
    broken = connect_realm(other_user, realms[2])
    QuickBooksConnection.objects.filter(pk=broken.pk).update(
        state=ConnectionState.REAUTH_REQUIRED,
        consecutive_failures=1,
        last_error="Intuit refused the grant (invalid_grant). (intuit_tid=1-abc-def) " + "z" * 80,
    )
    gone = connect_realm(other_user, realms[0])
    tokens.revoke(gone, by="user")
    return {"healthy": healthy, "expiring": expiring, "broken": broken, "gone": gone}


def run(*args):
    out = StringIO()
    call_command("qb_status", *args, stdout=out)
    return out.getvalue()


def assert_no_tokens(text, fake):
    values = set(fake.issued_tokens())
    for conn in QuickBooksConnection.objects.all():
        values |= {conn.access_token, conn.refresh_token, conn.id_token} - {None}
    assert values
    for value in values:
        assert value not in text and value[-16:] not in text


def test_table(conns, fake_intuit):
    text = run()
    lines = text.splitlines()
    assert lines[0].split() == [
        "ID",
        "OWNER",
        "COMPANY",
        "REALM",
        "ENV",
        "STATE",
        "ACCESS",
        "EXPIRES",
        "REFRESH",
        "EXPIRES",
        "HARD",
        "EXPIRY",
        "FAILURES",
        "READS",
        "WRITES",
        "LAST",
        "ERROR",
        "LAST",
        "WEBHOOK",
    ]
    healthy = next(line for line in lines if conns["healthy"].realm_id in line)
    assert "alice" in healthy and "Sandbox Company US 1" in healthy and "active" in healthy
    assert "in 37 min" in healthy and "in 99 days" in healthy and "in 5 years" in healthy
    expiring = next(line for line in lines if conns["expiring"].realm_id in line)
    assert "production" in expiring and "2 h ago" in expiring and "in 20 days" in expiring
    broken = next(line for line in lines if conns["broken"].realm_id in line)
    assert "mallory" in broken and "reauth_required" in broken
    assert "invalid_grant" in broken and "…" in broken and "z" * 60 not in broken
    gone = next(line for line in lines if line.startswith(f"{conns['gone'].pk} "))
    assert "disconnected" in gone and "in 1" not in gone and "years" not in gone
    assert "4 connections: 2 connected, 1 disconnected, 1 needs reconnecting." in text
    assert "API calls in " in text and "of the quota of 500,000" in text
    assert_no_tokens(text, fake_intuit)


def test_json(conns, fake_intuit):
    text = run("--json")
    data = json.loads(text)
    assert [d["id"] for d in data] == sorted(c.pk for c in conns.values())
    first = data[0]
    assert set(first) >= {
        "id",
        "owner",
        "company_name",
        "realm_id",
        "environment",
        "state",
        "state_label",
        "access_token_expires_at",
        "refresh_token_expires_at",
        "refresh_token_hard_expires_at",
        "last_refreshed_at",
        "consecutive_failures",
        "last_error",
    }
    assert not {"access_token", "refresh_token", "id_token"} & set(first)
    assert first["access_token_stored"] is True and first["refresh_token_stored"] is True
    gone = next(d for d in data if d["id"] == conns["gone"].pk)
    assert gone["refresh_token_stored"] is False and gone["state"] == "disconnected"
    row = QuickBooksConnection.objects.get(pk=first["id"])
    assert datetime.fromisoformat(first["access_token_expires_at"]) == row.access_token_expires_at
    assert first["owner"] == "alice" and first["state_label"] == "Connected"
    broken = next(d for d in data if d["id"] == conns["broken"].pk)
    assert broken["last_error"].endswith("z" * 80)  # in full for scripts
    assert_no_tokens(text, fake_intuit)


def test_json_keys_are_exactly_these_in_this_order(conns):
    data = json.loads(run("--json"))
    assert {tuple(d) for d in data} == {
        (
            "owner",
            "id",
            "company_name",
            "realm_id",
            "environment",
            "state",
            "access_token_expires_at",
            "refresh_token_expires_at",
            "refresh_token_hard_expires_at",
            "connected_at",
            "last_refreshed_at",
            "last_used_at",
            "consecutive_failures",
            "last_error",
            "last_error_at",
            "client_id",
            "tokens_unreadable_at",
            "state_label",
            "tokens_unreadable",
            "access_token_stored",
            "refresh_token_stored",
            "last_webhook_at",
            "api_calls_month",
        )
    }
    stored = {d["id"]: (d["access_token_stored"], d["refresh_token_stored"]) for d in data}
    assert stored == {
        conns["healthy"].pk: (True, True),
        conns["expiring"].pk: (True, True),
        conns["broken"].pk: (True, True),
        conns["gone"].pk: (False, False),
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--state", "active"], {"healthy", "expiring"}),
        (["--state", "reauth_required"], {"broken"}),
        (["--state", "disconnected"], {"gone"}),
        (["--state", "active", "--state", "reauth_required"], {"healthy", "expiring", "broken"}),
        (["--user", "mallory"], {"broken", "gone"}),
        (["--user", "alice", "--state", "active"], {"healthy", "expiring"}),
        (["--expiring-within", "30"], {"expiring"}),
        # The disconnected connection's old expiry is not a live refresh token's.
        (["--expiring-within", "200"], {"healthy", "expiring", "broken"}),
        (["--failing"], {"broken"}),
        (["--user", "nobody"], set()),
    ],
)
def test_filters(conns, args, expected):
    data = json.loads(run("--json", *args))
    assert {d["id"] for d in data} == {conns[name].pk for name in expected}


def test_empty_and_bad_arguments(db):
    assert run() == "No connections.\n"
    assert json.loads(run("--json")) == []
    with pytest.raises(CommandError):
        run("--expiring-within", "-1")
    with pytest.raises(CommandError):
        run("--state", "sleeping")


def test_the_last_webhook_event_of_each_realm(conns):
    from django.utils import timezone

    from qb_oauth.models import WebhookEvent

    realm = conns["healthy"].realm_id
    WebhookEvent.objects.create(
        dedupe_key="ce:1", realm_id=realm, entity="invoice", entity_id="1", operation="created"
    )
    WebhookEvent.objects.create(
        dedupe_key="ce:2",
        realm_id="555",
        entity="bill",
        entity_id="2",
        operation="created",
        unknown_realm=True,
        processed_at=timezone.now(),
    )
    WebhookEvent.objects.create(
        dedupe_key="ce:3", realm_id="555", entity="bill", entity_id="3", operation="x", failed=True
    )
    data = {d["realm_id"]: d["last_webhook_at"] for d in json.loads(run("--json"))}
    assert data[realm] is not None
    assert {r: v for r, v in data.items() if r != realm} == dict.fromkeys(set(data) - {realm})
    text = run()
    line = next(line for line in text.splitlines() if realm in line)
    assert line.rstrip().endswith("ago") or "now" in line
    assert "Webhook events: 1 pending, 1 failed." in text
    assert "Webhook events of realm 555, which no connection holds" in text

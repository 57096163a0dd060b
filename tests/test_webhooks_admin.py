"""The webhook events in the admin: list, filters, search, read-only, the re-send action."""

import pytest
from django.urls import reverse

from qb_oauth.models import WebhookEvent
from qb_oauth.signals import webhook_received
from tests.helpers import Recorder

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:qb_oauth_webhookevent_changelist"


@pytest.fixture
def events(user, connect_realm):
    conn = connect_realm(user, "9341452859140132")
    ok = WebhookEvent.objects.create(
        dedupe_key="ce:a",
        realm_id=conn.realm_id,
        entity="invoice",
        entity_id="95",
        operation="created",
    )
    ok.connections.add(conn)
    bad = WebhookEvent.objects.create(
        dedupe_key="ce:b",
        realm_id="777",
        entity="bill",
        entity_id="12",
        operation="deleted",
        failed=True,
        attempts=3,
        last_error="receiver raised RuntimeError",
        unknown_realm=True,
    )
    return ok, bad


def test_changelist_filters_and_search(admin_client, events):
    ok, bad = events
    url = reverse(CHANGELIST)
    page = admin_client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "invoice" in text and "bill" in text
    for query, shown, hidden in [
        ("state=failed", bad, ok),
        ("state=pending", ok, bad),
        ("state=unknown_realm", bad, ok),
        ("entity=invoice", ok, bad),
        ("operation=deleted", bad, ok),
        ("realm_id=777", bad, ok),
        ("q=95", ok, bad),
    ]:
        result = admin_client.get(f"{url}?{query}")
        assert result.status_code == 200, query
        pks = {o.pk for o in result.context["cl"].result_list}
        assert shown.pk in pks and hidden.pk not in pks, query


def test_the_change_page_is_read_only(admin_client, events):
    ok, _bad = events
    page = admin_client.get(reverse("admin:qb_oauth_webhookevent_change", args=[ok.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Sandbox Company US 1" in text  # its connections
    assert 'name="_save"' not in text
    assert admin_client.post(reverse("admin:qb_oauth_webhookevent_add")).status_code == 403


def test_resend_action(admin_client, events, django_capture_on_commit_callbacks):
    ok, bad = events
    with Recorder(webhook_received) as received, django_capture_on_commit_callbacks(execute=True):
        answer = admin_client.post(
            reverse(CHANGELIST),
            {"action": "resend_signal", "_selected_action": [ok.pk, bad.pk]},
            follow=True,
        )
    assert answer.status_code == 200
    assert "2 events are sent again" in answer.content.decode()
    assert sorted(c["event"].pk for c in received.calls) == sorted([ok.pk, bad.pk])
    bad.refresh_from_db()
    assert not bad.failed and bad.processed_at is not None and bad.attempts == 1


def test_resend_needs_the_change_permission(client, django_user_model, events):
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    client.force_login(staff)
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200 and "resend_signal" not in page.content.decode()
    staff.user_permissions.add(Permission.objects.get(codename="change_webhookevent"))
    staff = django_user_model.objects.get(pk=staff.pk)  # a fresh permission cache
    client.force_login(staff)
    assert "resend_signal" in client.get(reverse(CHANGELIST)).content.decode()

"""The operator's tools: no terminal control characters from Intuit's strings, and no
overflow from an absurd expiry window (admin filter, qb_status, the queryset)."""

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from qb_oauth.models import QuickBooksConnection

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:qb_oauth_quickbooksconnection_changelist"

#: What an Intuit-supplied string could hold: a title-setting OSC sequence, a CSI clear
#: screen, a bare C1 CSI (0x9B), BEL, DEL, and tabs and newlines (not NUL: PostgreSQL
#: stores no NUL in text, so no stored name holds one; the helper's own test has it).
HOSTILE_NAME = "Evil\x1b]0;pwned\x07 Corp\x1b[2J\x9b31m\x7f\x01\tLtd\nUK"
HOSTILE_ERROR = "Intuit said \x1b[1;31mNO\x1b[0m\r\x08\x08\x08 okay\x85really"
#: Every C0 control, DEL and every C1 control.
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


def no_controls(text):
    for line in text.split("\n"):  # the commands' own line breaks are fine
        assert not CONTROLS.search(line), repr(line)


@pytest.fixture
def hostile(fake_intuit, connect_realm, django_user_model):
    owner = django_user_model.objects.create_user("bob\x1b[5m", "bob@example.com", "pw")
    connection = connect_realm(owner)
    QuickBooksConnection.objects.filter(pk=connection.pk).update(
        company_name=HOSTILE_NAME,
        last_error=HOSTILE_ERROR,
        consecutive_failures=1,
        last_refreshed_at=timezone.now() - timedelta(days=3),  # due: keepalive
    )
    return connection


def run(command, *args):
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


# -- terminal control characters ------------------------------------------------------------------


def test_qb_status_table_strips_control_characters(hostile):
    text = run("qb_status")
    no_controls(text)
    assert "Evil]0;pwned Corp[2J31m Ltd UK" in text  # tabs and newlines became spaces
    assert "Intuit said [1;31mNO[0m okay really" in text
    assert "bob[5m" in text


def test_qb_status_json_escapes_them_and_keeps_the_value(hostile):
    text = run("qb_status", "--json")
    no_controls(text)
    assert "\\u001b" in text
    (row,) = json.loads(text)
    assert row["company_name"] == HOSTILE_NAME and row["last_error"] == HOSTILE_ERROR
    assert row["owner"] == "bob\x1b[5m"


def test_qb_refresh_dry_run_strips_control_characters(hostile):
    text = run("qb_refresh", "--dry-run")
    no_controls(text)
    assert "Evil]0;pwned Corp[2J31m Ltd UK" in text
    assert "bob[5m" in text


def test_the_helper_keeps_ordinary_text():
    from qb_oauth.management.terminal import terminal_safe

    assert terminal_safe("Café Ünïcødé  two spaces — 株式会社") == (
        "Café Ünïcødé  two spaces — 株式会社"
    )
    assert terminal_safe("a\tb\nc\r\nd\x0be\x0cf\x85g") == "a b c  d e f g"
    assert terminal_safe("\x1b[31mred\x1b[0m\x9b1m\x07\x7f\x00") == "[31mred[0m1m"
    assert terminal_safe(None) == "None"


# -- expiry windows -------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, admin_user, fake_intuit, connect_realm, user):
    connect_realm(user)
    client.force_login(admin_user)
    return client


@pytest.mark.parametrize(
    "value", ["99999999999", "36501", "-1", "1e300", "nan", "inf", "abc", "7 days"]
)
def test_admin_refresh_expiring_out_of_range_is_the_admins_error_page(admin_client, value):
    url = reverse(CHANGELIST)
    response = admin_client.get(url, {"refresh_expiring": value})
    assert response.status_code == 302
    assert response["Location"] == url + "?e=1"
    assert admin_client.get(response["Location"]).status_code == 200


@pytest.mark.parametrize("value", ["0", "7", "30", "36500"])
def test_admin_refresh_expiring_in_range_filters(admin_client, value):
    response = admin_client.get(reverse(CHANGELIST), {"refresh_expiring": value})
    assert response.status_code == 200
    listed = response.context["cl"].result_count
    assert listed == (1 if value == "36500" else 0)


@pytest.mark.parametrize("value", ["1e300", "36501", "-1", "nan", "inf"])
def test_qb_status_expiring_within_out_of_range_is_a_command_error(value):
    with pytest.raises(CommandError, match=r"0 to 36500"):
        call_command("qb_status", f"--expiring-within={value}", stdout=StringIO())


def test_qb_status_expiring_within_the_limit_works(admin_client):
    assert "1 connection" in run("qb_status", "--expiring-within", "36500")
    assert "No connections." in run("qb_status", "--expiring-within", "0")


@pytest.mark.parametrize(
    "seconds", [10**20, 36500 * 86400 + 1, -1, float("nan"), float("inf"), "soon", None]
)
def test_the_queryset_refuses_out_of_range_windows(seconds):
    with pytest.raises(ValueError, match="refresh_expiring_within"):
        QuickBooksConnection.objects.refresh_expiring_within(seconds)


def test_the_queryset_takes_the_whole_range(admin_client):
    qs = QuickBooksConnection.objects
    assert qs.refresh_expiring_within(36500 * 86400).count() == 1
    assert qs.refresh_expiring_within(0).count() == 0
    assert qs.refresh_expiring_within(7.5 * 86400).count() == 0

"""``manage.py qb_refresh``: the sweep for cron users, against the fake Intuit."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from qb_oauth.models import ConnectionState, QuickBooksConnection, SweepRun
from qb_oauth.testing import Company

pytestmark = pytest.mark.django_db(transaction=True)

QBC = QuickBooksConnection


class TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def conns(fake_intuit, connect_realm, django_user_model):
    """Four connections: two due (keepalive), one fresh, one needing reconnection."""
    made = []
    for i in range(4):
        realm = str(7_000_000 + i)
        fake_intuit.companies.append(Company(realm, f"Cron Company {i}"))
        user = django_user_model.objects.create_user(f"cron{i}", f"c{i}@example.com", "pw")
        made.append(connect_realm(user, realm))
    QBC.objects.filter(pk__in=[c.pk for c in made[:2]]).update(
        last_refreshed_at=timezone.now() - timedelta(days=2)
    )
    QBC.objects.filter(pk=made[3].pk).update(
        state=ConnectionState.REAUTH_REQUIRED, last_refreshed_at=timezone.now() - timedelta(days=2)
    )
    return made


def run(*args, stdout=None):
    out = stdout or io.StringIO()
    call_command("qb_refresh", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refreshed(fake, conn):
    return fake.refresh_counts[conn.refresh_token]


def test_due_by_default(conns, fake_intuit):
    out = run()
    assert [refreshed(fake_intuit, c) for c in conns] == [1, 1, 0, 0]
    assert "2 due, 2 refreshed" in out
    assert out.strip().splitlines()[-1].startswith("Sweep #")
    assert SweepRun.objects.get().refreshed == 2
    assert run("--due").count("0 due") == 1


def test_dry_run_lists_and_changes_nothing(conns, fake_intuit):
    before = list(QBC.objects.order_by("pk").values_list("token_version", "next_attempt_at"))
    out = run("--dry-run")
    assert fake_intuit.counts["token.refresh_token"] == 0
    assert list(QBC.objects.order_by("pk").values_list("token_version", "next_attempt_at")) == (
        before
    )
    assert not SweepRun.objects.exists()
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert "Cron Company 0" in lines[0] and "keepalive" in lines[0]
    # Relative times as the admin and qb_status write them.
    assert "access token expires in 59 min, last refreshed 2 days ago" in lines[0]
    assert "Cron Company 1" in lines[1]
    assert lines[-1] == "Dry run: 2 connections would be refreshed; nothing was changed."
    for conn in conns:
        assert conn.refresh_token not in out and conn.access_token not in out


def test_dry_run_all(conns):
    out = run("--all", "--dry-run")
    assert "3 connections would be refreshed" in out


def test_all_refreshes_every_active_connection(conns, fake_intuit):
    out = run("--all")
    assert [refreshed(fake_intuit, c) for c in conns] == [1, 1, 1, 0]
    assert "3 due, 3 refreshed" in out


def test_one_connection(conns, fake_intuit):
    out = run("--connection", str(conns[2].pk))
    assert [refreshed(fake_intuit, c) for c in conns] == [0, 0, 1, 0]
    assert "1 refreshed" in out


def test_one_connection_errors(conns, fake_intuit):
    with pytest.raises(CommandError, match="No QuickBooks connection with id 999999"):
        run("--connection", "999999")
    with pytest.raises(CommandError, match="reauth_required"):
        run("--connection", str(conns[3].pk))
    fake_intuit.inject_fault("token", "503")
    with pytest.raises(CommandError, match="not refreshed"):
        run("--connection", str(conns[0].pk))
    assert fake_intuit.counts["token.refresh_token"] == 1


def test_options_exclude_each_other(conns):
    with pytest.raises(CommandError):
        run("--all", "--connection", str(conns[0].pk))
    with pytest.raises(CommandError, match="--cluster works with --due only"):
        run("--all", "--cluster")


def test_progress_bar_on_a_terminal_only(conns):
    plain = run()
    assert "\r" not in plain and "[#" not in plain
    QBC.objects.filter(pk__in=[c.pk for c in conns[:3]]).update(
        last_refreshed_at=timezone.now() - timedelta(days=2)
    )
    out = run(stdout=TTY())
    assert "\r[" in out
    assert "3/3 100%" in out
    assert out.rstrip().splitlines()[-1].startswith("Sweep #")


def test_cluster_option_fans_out(conns, fake_intuit):
    # tests.settings: django-q2 sync=True, so the queued batch runs at once.
    out = run("--cluster")
    assert [refreshed(fake_intuit, c) for c in conns] == [1, 1, 0, 0]
    run_row = SweepRun.objects.get()
    assert run_row.fanned_out and run_row.refreshed == 2 and run_row.finished_at
    assert "handed 2 due connections to the cluster in 1 tasks" in out


def test_a_connection_of_the_other_environment_is_refused(conns, fake_intuit):
    QBC.objects.filter(pk=conns[0].pk).update(environment="production")
    with pytest.raises(CommandError, match="belongs to the production environment"):
        run("--connection", str(conns[0].pk))
    assert "1 connection would be refreshed" in run("--dry-run")
    assert fake_intuit.counts["token.refresh_token"] == 0


def test_failed_refreshes_make_the_command_fail_for_cron(conns, fake_intuit):
    fake_intuit.inject_fault("token", "503", times=10)
    out = io.StringIO()
    with pytest.raises(CommandError, match="2 refresh\\(es\\) failed"):
        call_command("qb_refresh", stdout=out, stderr=io.StringIO())
    assert "2 failed (Intuit unavailable)" in out.getvalue()  # the summary came first

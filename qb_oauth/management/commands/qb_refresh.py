"""``manage.py qb_refresh``: the scheduled refresh, for sites that run it from cron
(docs/commands.md).

The work is :mod:`qb_oauth.sweep`'s, so cron and the django-q2 schedule pick and
refresh the same connections the same way; this module only turns options into a
sweep and prints. Never a token, and no terminal control characters from Intuit's
strings (:mod:`qb_oauth.management.terminal`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.utils import timezone

from qb_oauth import sweep
from qb_oauth.conf import qb_settings
from qb_oauth.management.terminal import terminal_safe
from qb_oauth.models import ConnectionState, QuickBooksConnection
from qb_oauth.templatetags.qb_oauth_admin import ago_text

BAR_WIDTH = 30


class ProgressBar:
    """A one-line ``\\r`` progress bar, redrawn at most ten times a second."""

    def __init__(self, out: OutputWrapper, interval: float = 0.1) -> None:
        self.out = out
        self.interval = interval
        self.drawn_at = 0.0
        self.shown = False
        self.last: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None, *, force: bool = False) -> None:
        self.last = (done, total)
        now = time.monotonic()
        if not force and total and done < total and now - self.drawn_at < self.interval:
            return
        self.drawn_at = now
        total = total or 0
        filled = BAR_WIDTH if not total else min(BAR_WIDTH, BAR_WIDTH * done // total)
        percent = 100 if not total else min(100, 100 * done // total)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.out.write(f"\r[{bar}] {done}/{total} {percent:3d}%", ending="")
        self.out.flush()
        self.shown = True

    def close(self) -> None:
        if self.last is not None:
            self(*self.last, force=True)  # the final state, however fast it came
        if self.shown:
            self.out.write("")


def _reason(conn: QuickBooksConnection, now: datetime, mode: str) -> str:
    """Why ``conn`` would be refreshed (for the listing only; the sweep uses ``due()``)."""
    if mode != "due":
        return "requested"
    keepalive = now - timedelta(seconds=qb_settings.KEEPALIVE_AGE)
    if conn.last_refreshed_at is None or conn.last_refreshed_at <= keepalive:
        return "keepalive"
    return "access token expiring"


class Command(BaseCommand):
    help = (
        "Refresh QuickBooks connections now: the due ones (default), --all active ones, or "
        "--connection PK. --dry-run lists them. For sites that run the refresh from cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument(
            "--due",
            action="store_const",
            dest="mode",
            const="due",
            help="Only the connections that are due (the default): access token expiring "
            "and used lately, or not refreshed for KEEPALIVE_AGE; not backing off.",
        )
        which.add_argument(
            "--all",
            action="store_const",
            dest="mode",
            const="all",
            help="Every active connection, due or not, ignoring backoff.",
        )
        which.add_argument(
            "--connection",
            type=int,
            metavar="PK",
            help="Only this connection, due or not.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would be refreshed; change nothing and call nobody.",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            metavar="N",
            help="Refreshes at once (default: QB_OAUTH['SWEEP_CONCURRENCY']).",
        )
        parser.add_argument(
            "--cluster",
            action="store_true",
            help="Hand the due connections to the running django-q2 cluster in batches "
            "instead of refreshing them here.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        mode = "connection" if options["connection"] is not None else options["mode"] or "due"
        pk = options["connection"]
        if options["cluster"] and mode != "due":
            raise CommandError("--cluster works with --due only.")
        if options["concurrency"] is not None and options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1.")
        if mode == "connection":
            self._check_connection(pk)
        if options["dry_run"]:
            self._dry_run(mode, pk)
            return

        progress = None
        if self.stdout.isatty() and not options["cluster"]:
            progress = ProgressBar(self.stdout)
        try:
            stats = sweep.run_sweep(
                mode=mode,
                connection_id=pk,
                fan_out=options["cluster"],
                concurrency=options["concurrency"],
                warnings=mode == "due",
                progress=progress,
            )
        finally:
            if progress is not None:
                progress.close()
        self.stdout.write(stats.summary())
        if mode == "connection" and not stats.refreshed:
            row = QuickBooksConnection.objects.only("state", "last_error").get(pk=pk)
            if stats.skipped_locked:
                raise CommandError(f"Connection {pk} is being refreshed by another worker.")
            if stats.skipped_fresh:
                raise CommandError(f"Connection {pk} was refreshed by another worker meanwhile.")
            raise CommandError(
                f"Connection {pk} was not refreshed ({row.state}): {row.last_error or 'error'}"
            )
        failed = stats.failed_unavailable + stats.failed_other
        if failed:
            # A non-zero exit, so cron (MAILTO) or a monitor notices; the summary says which.
            raise CommandError(
                f"{failed} refresh(es) failed; they are retried with backoff. "
                "See the admin's last errors, or `qb_status --failing`."
            )

    def _check_connection(self, pk: int) -> None:
        row = QuickBooksConnection.objects.filter(pk=pk).values("state", "environment").first()
        if row is None:
            raise CommandError(f"No QuickBooks connection with id {pk}.")
        state = row["state"]
        if row["environment"] != qb_settings.ENVIRONMENT:
            raise CommandError(
                f"Connection {pk} belongs to the {row['environment']} environment; this site is "
                f"configured for {qb_settings.ENVIRONMENT} (QB_OAUTH['ENVIRONMENT'])."
            )
        if state != ConnectionState.ACTIVE:
            raise CommandError(
                f"Connection {pk} is {state}: only its user can reconnect it; "
                "there is nothing to refresh."
            )

    def _dry_run(self, mode: str, pk: int | None) -> None:
        now = timezone.now()
        count = 0
        for conn in sweep.iter_candidates(mode, pk, now):
            count += 1
            held = conn.refresh_lease_expires_at and conn.refresh_lease_expires_at > now
            self.stdout.write(
                f"{conn.pk:>8}  {terminal_safe(conn.user)}  "
                f"{terminal_safe(conn.company_name or '-')}  realm {conn.realm_id} "
                f"({conn.environment})  {_reason(conn, now, mode)}; access token expires "
                f"{ago_text(conn.access_token_expires_at, now) or '-'}, last refreshed "
                f"{ago_text(conn.last_refreshed_at, now) or '-'}"
                + ("  [refresh in progress]" if held else "")
            )
        noun = "connection" if count == 1 else "connections"
        self.stdout.write(f"Dry run: {count} {noun} would be refreshed; nothing was changed.")

"""``manage.py qb_status``: every connection's state, for operators without the admin
(docs/commands.md).

Never a token: the query reads named columns, the token columns not among them, and
whether a token is stored comes from the database (``with_token_presence()``). The
table passes Intuit's strings through :func:`~qb_oauth.management.terminal.terminal_safe`;
``--json`` needs nothing more, since JSON escapes every control character.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Max, OuterRef, Subquery
from django.utils import timezone

from qb_oauth import metering
from qb_oauth.adapter import get_adapter
from qb_oauth.conf import qb_settings
from qb_oauth.management.terminal import terminal_safe
from qb_oauth.models import (
    ConnectionState,
    QuickBooksConnection,
    WebhookEvent,
    expiry_window_seconds,
)
from qb_oauth.templatetags.qb_oauth_admin import ago_text

#: The columns read; the token columns are deliberately absent.
FIELDS = (
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
)

#: (header, key) of the table's columns.
COLUMNS = (
    ("ID", "id"),
    ("OWNER", "owner"),
    ("COMPANY", "company_name"),
    ("REALM", "realm_id"),
    ("ENV", "environment"),
    ("STATE", "state"),
    ("ACCESS EXPIRES", "access_token_expires_at"),
    ("REFRESH EXPIRES", "refresh_token_expires_at"),
    ("HARD EXPIRY", "refresh_token_hard_expires_at"),
    ("FAILURES", "consecutive_failures"),
    ("READS", "api_core_plus"),
    ("WRITES", "api_core"),
    ("LAST ERROR", "last_error"),
    ("LAST WEBHOOK", "last_webhook_at"),
)

ERROR_WIDTH = 50
COMPANY_WIDTH = 30

#: Whether the token an expiry belongs to is stored: the annotations of
#: ``with_token_presence()``, a database IS NULL test, so no token is read.
_STORED = {
    "access_token_expires_at": "qb_has_access_token",
    "refresh_token_expires_at": "qb_has_refresh_token",
    "refresh_token_hard_expires_at": "qb_has_refresh_token",
}


def _short(text: str, width: int) -> str:
    text = " ".join(terminal_safe(text).split())  # safe first, so the width counts what shows
    return text if len(text) <= width else text[: width - 1] + "…"


def _owner(text: str) -> Any:
    """The owner named by ``--owner app_label.model:pk``, or a CommandError."""
    label, _sep, pk = text.partition(":")
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        raise CommandError(f"--owner: no model {label[:80]!r} (app_label.model:pk).") from None
    try:
        return model._default_manager.get(pk=pk)
    except (model.DoesNotExist, ValueError, TypeError):
        raise CommandError(f"--owner: no {label} with pk {pk[:40]!r}.") from None


def _owner_names(keys: set[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """How the adapter names each owner: one query per kind of owner."""
    adapter = get_adapter()
    names: dict[tuple[int, str], str] = {}
    by_type: dict[int, set[str]] = {}
    for type_id, object_id in keys:
        by_type.setdefault(type_id, set()).add(object_id)
    for type_id, object_ids in by_type.items():
        model = ContentType.objects.get_for_id(type_id).model_class()
        found = model._default_manager.in_bulk(list(object_ids)) if model is not None else {}
        shown = {str(pk): adapter.owner_display(obj) for pk, obj in found.items()}
        for object_id in object_ids:
            names[(type_id, object_id)] = shown.get(object_id, f"(gone: {object_id})")
    return names


class Command(BaseCommand):
    help = (
        "List QuickBooks connections with their state, token expiries and this month's API "
        "calls (never a token). "
        "Filter with --state, --user, --owner and --expiring-within; --json for scripts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--state",
            action="append",
            choices=ConnectionState.values,
            help="Only connections in this state (repeat for several).",
        )
        parser.add_argument("--user", help="Only the connections this user connected (username).")
        parser.add_argument(
            "--owner",
            metavar="APP_LABEL.MODEL:PK",
            help="Only the connections of this owner, e.g. teams.team:3 or auth.user:1.",
        )
        parser.add_argument(
            "--expiring-within",
            type=float,
            metavar="DAYS",
            help="Only connections whose refresh token (rolling or hard) ends within DAYS.",
        )
        parser.add_argument(
            "--failing", action="store_true", help="Only connections with consecutive failures."
        )
        parser.add_argument(
            "--json", action="store_true", help="Print a JSON list with ISO 8601 times."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username = f"user__{get_user_model().USERNAME_FIELD}"
        qs = QuickBooksConnection.objects.with_token_presence()
        if options["state"]:
            qs = qs.filter(state__in=options["state"])
        if options["user"]:
            qs = qs.filter(**{username: options["user"]})
        if options["owner"]:
            qs = qs.owned_by(_owner(options["owner"]))
        if options["expiring_within"] is not None:
            try:
                seconds = expiry_window_seconds(options["expiring_within"])
            except ValueError as err:
                raise CommandError(f"--expiring-within: {err}") from None
            # Live refresh tokens only (the queryset's own test): a disconnected connection
            # keeps its old expiry dates.
            qs = qs.refresh_expiring_within(seconds)
        if options["failing"]:
            qs = qs.failing()
        flags = dict.fromkeys(_STORED.values())  # each once, in order
        # The last webhook event received for the connection's realm.
        last_webhook = (
            WebhookEvent.objects.filter(realm_id=OuterRef("realm_id"))
            .values("realm_id")
            .annotate(last=Max("received_at"))
            .values("last")
        )
        qs = qs.annotate(last_webhook_at=Subquery(last_webhook))
        owner_key = ("owner_content_type", "owner_object_id")
        rows = list(qs.order_by("pk").values(*FIELDS, *flags, "last_webhook_at", *owner_key))
        names = _owner_names({(r["owner_content_type"], r["owner_object_id"]) for r in rows})
        usage = metering.usage_by_connection(r["id"] for r in rows)
        for row in rows:
            row["owner"] = names[(row.pop("owner_content_type"), row.pop("owner_object_id"))]
            month = usage[row["id"]]
            row["api_core_plus"], row["api_core"] = month.core_plus, month.core

        if options["json"]:
            self.stdout.write(json.dumps([self._json_row(r) for r in rows], indent=2))
            return
        if not rows:
            self.stdout.write("No connections.")
            return
        self._table(rows)
        app = metering.app_usage()
        quota = qb_settings.API_MONTHLY_QUOTA
        self.stdout.write(
            f"API calls in {app.month:%Y-%m}: {app.core_plus:,} CorePlus (reads, "
            f"{app.core_plus * 100 / quota:.1f}% of the quota of {quota:,}), "
            f"{app.core:,} Core (writes)."
        )

    @staticmethod
    def _json_row(row: dict) -> dict:
        out = {"owner": row["owner"]}
        for key in FIELDS:
            value = row[key]
            out[key] = value.isoformat() if hasattr(value, "isoformat") else value
        out["state_label"] = str(ConnectionState(row["state"]).label)
        out["tokens_unreadable"] = row["tokens_unreadable_at"] is not None
        out["access_token_stored"] = row["qb_has_access_token"]
        out["refresh_token_stored"] = row["qb_has_refresh_token"]
        last = row["last_webhook_at"]
        out["last_webhook_at"] = last.isoformat() if last else None
        out["api_calls_month"] = {"core_plus": row["api_core_plus"], "core": row["api_core"]}
        return out

    def _cell(self, row: dict, key: str, now: datetime) -> str:
        return terminal_safe(self._text(row, key, now))

    def _text(self, row: dict, key: str, now: datetime) -> str:
        value = row[key]
        if key.startswith(("access_token", "refresh_token")) and not row[_STORED[key]]:
            return "-"  # the token is gone: its old expiry means nothing
        if key.endswith("_at"):
            return ago_text(value, now) or "-"
        if key == "state" and row["tokens_unreadable_at"] and value == ConnectionState.ACTIVE:
            return "tokens_unreadable"  # no key of FERNET_KEYS opens them: reconnect
        if key == "last_error":
            return _short(value, ERROR_WIDTH) or "-"
        if key == "company_name":
            return _short(value, COMPANY_WIDTH) or "-"
        return str(value)

    def _table(self, rows: list[dict]) -> None:
        now = timezone.now()
        cells = [[self._cell(r, key, now) for _h, key in COLUMNS] for r in rows]
        headers = [h for h, _k in COLUMNS]
        widths = [max(len(x) for x in col) for col in zip(headers, *cells, strict=True)]

        def line(values: list[str]) -> str:
            return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

        self.stdout.write(line(headers))
        for values in cells:
            self.stdout.write(line(values))
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        summary = ", ".join(
            f"{n} {ConnectionState(s).label.lower()}" for s, n in sorted(counts.items())
        )
        self.stdout.write(f"\n{len(rows)} connection{'s' if len(rows) != 1 else ''}: {summary}.")
        self._webhook_summary()

    def _webhook_summary(self) -> None:
        """Webhook events still pending or failed, and realms nobody connects."""
        pending = WebhookEvent.objects.pending().count()
        failed = WebhookEvent.objects.failed().count()
        unknown = (
            WebhookEvent.objects.filter(unknown_realm=True)
            .values("realm_id")
            .annotate(last=Max("received_at"))
            .order_by("-last")[:5]
        )
        if pending or failed:
            self.stdout.write(f"Webhook events: {pending} pending, {failed} failed.")
        now = timezone.now()
        for row in unknown:
            realm = terminal_safe(row["realm_id"])
            self.stdout.write(
                f"Webhook events of realm {realm}, which no connection holds: "
                f"last {ago_text(row['last'], now)}."
            )

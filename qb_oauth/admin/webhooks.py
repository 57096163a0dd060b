"""The webhook events Intuit sent: read-only, with an action to send the signal again."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import TOKEN_COLUMNS, WebhookEvent
from ..webhooks.process import resend
from .history import ReadOnlyAdmin


class WebhookStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("pending", _("Pending")),
            ("processed", _("Processed")),
            ("failed", _("Failed")),
            ("unknown_realm", _("Unknown realm")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "pending":
            return queryset.filter(processed_at__isnull=True, failed=False)
        if value == "processed":
            return queryset.filter(processed_at__isnull=False)
        if value == "failed":
            return queryset.filter(failed=True)
        if value == "unknown_realm":
            return queryset.filter(unknown_realm=True)
        return queryset


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    """Written by qb_oauth only (an edited row would falsify the record); never a secret:
    the signature and the body are not stored at all."""

    list_display = (
        "received_at",
        "realm_id",
        "entity",
        "entity_id",
        "operation",
        "occurred_at",
        "processed_at",
        "attempts",
        "failed",
        "unknown_realm",
    )
    list_filter = (WebhookStateFilter, "entity", "operation", "format", "realm_id")
    search_fields = ("entity_id", "=realm_id")
    date_hierarchy = "received_at"
    actions = ["resend_signal"]
    fields = (
        "realm_id",
        "entity",
        "entity_id",
        "operation",
        "event_type",
        "format",
        "occurred_at",
        "received_at",
        "processed_at",
        "attempts",
        "failed",
        "last_error",
        "unknown_realm",
        "connection_list",
        "dedupe_key",
    )
    readonly_fields = fields

    def has_resend_permission(self, request: HttpRequest) -> bool:
        user: Any = request.user
        return bool(user.has_perm("qb_oauth.change_webhookevent"))

    @admin.display(description=_("connections"))
    def connection_list(self, obj: WebhookEvent) -> str:
        rows = obj.connections.defer(*TOKEN_COLUMNS).select_related("user")
        return ", ".join(f"{c} ({c.user})" for c in rows) or "-"

    @admin.action(description=_("Send webhook_received again"), permissions=["resend"])
    def resend_signal(self, request: HttpRequest, queryset: QuerySet) -> None:
        n = resend(queryset.values_list("pk", flat=True))
        self.message_user(
            request,
            ngettext("%(n)d event is sent again.", "%(n)d events are sent again.", n) % {"n": n},
            messages.SUCCESS,
        )

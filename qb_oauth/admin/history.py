"""The history and the summaries: connection events, sweep runs and API usage, read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import metering
from ..conf import qb_settings
from ..models import TOKEN_COLUMNS, ApiUsage, ConnectionEvent, SweepRun
from ..templatetags.qb_oauth_admin import humanize_seconds


class ReadOnlyAdmin(admin.ModelAdmin):
    """Written by qb_oauth only: an edited or deleted row would falsify the record."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ConnectionEvent)
class ConnectionEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "connection", "kind", "actor", "intuit_tid", "detail_short")
    list_filter = ("kind",)
    list_select_related = ("connection", "actor")
    search_fields = ("connection__realm_id", "connection__company_name", "intuit_tid")
    date_hierarchy = "at"
    fields = ("connection", "kind", "at", "actor", "intuit_tid", "detail")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The connection is joined for its name: its tokens are never loaded.
        return super().get_queryset(request).defer(*(f"connection__{f}" for f in TOKEN_COLUMNS))

    @admin.display(description=gettext_lazy("detail"))
    def detail_short(self, obj: ConnectionEvent) -> str:
        return Truncator(obj.detail).chars(80)


@admin.register(SweepRun)
class SweepRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "finished_at",
        "duration",
        "due",
        "refreshed",
        "skipped_locked",
        "skipped_fresh",
        "failed_unavailable",
        "failed_other",
        "reauth_required",
        "warnings_sent",
        "fanned_out",
    )
    list_filter = ("fanned_out",)
    date_hierarchy = "started_at"

    @admin.display(description=gettext_lazy("duration"))
    def duration(self, obj: SweepRun) -> str:
        if obj.finished_at is None:
            return _("running or interrupted")
        return humanize_seconds((obj.finished_at - obj.started_at).total_seconds())


@admin.register(ApiUsage)
class ApiUsageAdmin(ReadOnlyAdmin):
    """Each connection's API calls per month, as the sweep folded them; the title says the
    app's total of this month (live, from the cache) against ``API_MONTHLY_QUOTA``."""

    list_display = ("month", "connection", "core_plus", "core", "updated_at")
    list_filter = ("month",)
    list_select_related = ("connection",)
    search_fields = ("connection__realm_id", "connection__company_name")
    ordering = ("-month", "-core_plus")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer(*(f"connection__{f}" for f in TOKEN_COLUMNS))

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        usage = metering.app_usage()
        quota = qb_settings.API_MONTHLY_QUOTA
        title = _(
            "API usage. This month (%(month)s), the app: %(core_plus)s CorePlus calls "
            "(reads, %(share)s%% of the quota of %(quota)s) and %(core)s Core calls (writes)"
        ) % {
            "month": f"{usage.month:%Y-%m}",
            "core_plus": f"{usage.core_plus:,}",
            "share": f"{usage.core_plus * 100 / quota:.1f}",
            "quota": f"{quota:,}",
            "core": f"{usage.core:,}",
        }
        return super().changelist_view(request, {**(extra_context or {}), "title": title})

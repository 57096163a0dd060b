"""The connection changelist's own filters: refresh tokens running out, and failures."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..models import QuickBooksConnectionQuerySet, expiry_window_seconds
from ..templatetags.qb_oauth_admin import DANGER_WINDOW, warning_window


class RefreshExpiringFilter(admin.SimpleListFilter):
    """Live refresh tokens (rolling or hard) ending within the danger or warning window."""

    title = gettext_lazy("refresh token expiry")
    parameter_name = "refresh_expiring"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        warning_days = int(warning_window().total_seconds() // 86400)
        danger_days = DANGER_WINDOW.days
        choices = [(str(danger_days), _("expires within %(n)d days") % {"n": danger_days})]
        if warning_days > danger_days:
            choices.append(
                (str(warning_days), _("expires within %(n)d days") % {"n": warning_days})
            )
        return choices

    def queryset(  # type: ignore[override]  # the changelist hands our own queryset
        self, request: HttpRequest, queryset: QuickBooksConnectionQuerySet
    ) -> QuickBooksConnectionQuerySet:
        value = self.value()
        if not value:
            return queryset
        try:
            seconds = expiry_window_seconds(value)
        except ValueError as err:
            # The changelist answers this with its standard "?e=1" page, not a 500.
            raise IncorrectLookupParameters(f"refresh_expiring: {err}") from None
        # Live refresh tokens only (the queryset's own test): a disconnected connection
        # keeps its old expiry dates.
        return queryset.refresh_expiring_within(seconds)


class FailingFilter(admin.SimpleListFilter):
    title = gettext_lazy("failing")
    parameter_name = "failing"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", _("failing (consecutive failures)")), ("no", _("no failures"))]

    def queryset(  # type: ignore[override]  # the changelist hands our own queryset
        self, request: HttpRequest, queryset: QuickBooksConnectionQuerySet
    ) -> QuickBooksConnectionQuerySet:
        if self.value() == "yes":
            return queryset.failing()
        if self.value() == "no":
            return queryset.filter(consecutive_failures=0)
        return queryset

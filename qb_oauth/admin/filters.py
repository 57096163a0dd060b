"""The connection changelist's own filters: refresh tokens running out, failures, and
the kind of owner (docs/ownership.md)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..models import QuickBooksConnection, QuickBooksConnectionQuerySet, expiry_window_seconds
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


def _type_name(content_type: ContentType) -> str:
    model = content_type.model_class()
    return str(model._meta.verbose_name) if model is not None else str(content_type)


class OwnerTypeFilter(admin.SimpleListFilter):
    """What the connections belong to: users, teams, organizations (the kinds present)."""

    title = gettext_lazy("owner type")
    parameter_name = "owner_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        present = QuickBooksConnection.objects.values("owner_content_type").distinct()
        types = ContentType.objects.filter(pk__in=present).order_by("app_label", "model")
        return [(str(t.pk), _type_name(t)) for t in types]

    def queryset(  # type: ignore[override]  # the changelist hands our own queryset
        self, request: HttpRequest, queryset: QuickBooksConnectionQuerySet
    ) -> QuickBooksConnectionQuerySet:
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            raise IncorrectLookupParameters("owner_type: not a content type id")
        return queryset.filter(owner_content_type_id=int(value))

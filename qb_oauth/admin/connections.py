"""The connection admin: every connection's token state at a glance, and its history.

Never a token: the querysets defer the three token columns, so no token is even
decrypted here; the change page shows only whether one is stored (a database
``IS NULL`` test) and when it expires. Connections are made by the OAuth flow only
(no add), and no form field edits one: every change goes through the actions
(:mod:`.actions`), which call :mod:`qb_oauth.tokens`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponseNotAllowed
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import metering
from ..adapter import get_adapter
from ..models import (
    TOKEN_COLUMNS,
    ApiUsage,
    ConnectionEvent,
    ConnectionState,
    EventKind,
    QuickBooksConnection,
    QuickBooksConnectionQuerySet,
)
from ..templatetags.qb_oauth_admin import absolute, ago_text, expiry_level, expiry_text, time_html
from .actions import ConnectionActionsAdmin
from .filters import FailingFilter, OwnerTypeFilter, RefreshExpiringFilter

#: Columns never loaded by the admin, never in a form.
TOKEN_FIELDS = TOKEN_COLUMNS
#: Internal columns of the single-flight refresh, never in a form.
INTERNAL_FIELDS = ("refresh_lease_owner", "refresh_lease_expires_at", "token_version")
#: How many events the change page shows (newest first).
EVENT_LIMIT = 50
#: Kinds of events whose intuit_tid belongs with the last error.
FAILURE_KINDS = (EventKind.REFRESH_FAILED, EventKind.REAUTH_REQUIRED, EventKind.CHECK_FAILED)


def _state_badge(state: str) -> SafeString:
    label = ConnectionState(state).label if state in ConnectionState.values else state
    return format_html('<span class="qb-badge qb-badge-{}">{}</span>', state, label)


def _username_field() -> str:
    return get_user_model().USERNAME_FIELD


@admin.register(QuickBooksConnection)
class QuickBooksConnectionAdmin(ConnectionActionsAdmin):
    list_display = (
        "company",
        "owner",
        "connected_by",
        "realm_id",
        "environment",
        "state_badge",
        "access_expiry",
        "refresh_expiry",
        "hard_expiry",
        "last_refresh",
        "failures",
        "last_error_short",
        "api_calls",
    )
    list_display_links = ("company",)
    list_filter = (
        "state",
        "environment",
        RefreshExpiringFilter,
        FailingFilter,
        OwnerTypeFilter,
        "client_id",
    )
    list_select_related = ("user",)
    list_per_page = 100
    actions = ("refresh_now", "revoke_and_disconnect", "check_connection")
    exclude = TOKEN_FIELDS + INTERNAL_FIELDS
    fieldsets = (
        (
            gettext_lazy("Connection"),
            {
                "fields": (
                    "owner_shown",
                    "user",
                    "company_name",
                    "realm_id",
                    "environment",
                    "state_badge",
                    "client_id",
                    "scopes",
                    "intuit_user_id",
                    "connected_at",
                    "created_at",
                    "updated_at",
                )
            },
        ),
        (
            gettext_lazy("Tokens"),
            {
                "description": gettext_lazy(
                    "Tokens are stored encrypted and are never shown; only whether one is "
                    "stored and when it expires."
                ),
                "fields": (
                    "access_token_stored",
                    "access_expiry_full",
                    "refresh_token_stored",
                    "refresh_expiry_full",
                    "hard_expiry_full",
                    "id_token_stored",
                    "last_refreshed_at",
                    "last_used_at",
                    "next_attempt_at",
                    "expiry_warning_sent_at",
                    "disconnect_checked_at",
                ),
            },
        ),
        (
            gettext_lazy("Errors"),
            {
                "fields": (
                    "consecutive_failures",
                    "tokens_unreadable_at",
                    "last_error_full",
                    "last_error_at",
                    "last_intuit_tid",
                )
            },
        ),
        (
            gettext_lazy("API calls"),
            {"fields": ("api_calls_month",)},
        ),
    )
    readonly_fields = tuple(str(f) for _name, opts in fieldsets for f in opts["fields"])

    # -- querysets and permissions -------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The tokens are never loaded: presence is a database IS NULL test.
        rows = super().get_queryset(request)
        assert isinstance(rows, QuickBooksConnectionQuerySet)
        month = metering.month_of()
        usage = ApiUsage.objects.filter(connection=OuterRef("pk"), month=month)
        return (
            rows.select_related("user")
            .prefetch_related("owner")
            .with_token_presence()
            .annotate(
                month_core_plus=Subquery(usage.values("core_plus")[:1]),
                month_core=Subquery(usage.values("core")[:1]),
            )
        )

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        user_model = get_user_model()
        fields = [f"user__{_username_field()}"]
        email = user_model.get_email_field_name()
        if email and email != _username_field():
            try:
                user_model._meta.get_field(email)
            except FieldDoesNotExist:  # a custom user model without an email column
                pass
            else:
                fields.append(f"user__{email}")
        return [*fields, "realm_id", "company_name"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Connections are made by the OAuth flow, never by hand.
        return False

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # Events cannot be deleted on their own, but a connection's history goes with it.
        to_delete, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(ConnectionEvent._meta.verbose_name)
        return to_delete, model_count, perms_needed, protected

    # -- columns -------------------------------------------------------------------

    @admin.display(description=gettext_lazy("company"), ordering="company_name")
    def company(self, obj: QuickBooksConnection) -> str:
        return obj.company_name or format_html("<em>{}</em>", _("(no name)"))

    @admin.display(description=gettext_lazy("owner"), ordering="owner_content_type__model")
    def owner(self, obj: QuickBooksConnection) -> str:
        # The adapter names it (a user by username); prefetched: one query per owner type.
        return get_adapter().owner_display(obj.owner)

    @admin.display(description=gettext_lazy("connected by"), ordering=f"user__{_username_field()}")
    def connected_by(self, obj: QuickBooksConnection) -> str:
        return obj.user.get_username()

    @admin.display(description=gettext_lazy("owner"))
    def owner_shown(self, obj: QuickBooksConnection) -> str:
        owner = obj.owner
        if owner is None:
            return _("(gone)")
        return f"{get_adapter().owner_display(owner)} ({owner._meta.verbose_name})"

    @admin.display(description=gettext_lazy("state"), ordering="state")
    def state_badge(self, obj: QuickBooksConnection) -> SafeString:
        badge = _state_badge(obj.state)
        if obj.tokens_unreadable_at is not None and obj.state == ConnectionState.ACTIVE:
            return format_html(
                '{} <span class="qb-badge qb-badge-reauth_required" title="{}">{}</span>',
                badge,
                _("No key of FERNET_KEYS decrypts its tokens"),
                _("tokens unreadable"),
            )
        return badge

    def _expiry(
        self,
        obj: QuickBooksConnection,
        value: datetime | None,
        styled: bool,
        token: str | None = None,
    ) -> SafeString | None:
        if token is not None and not getattr(obj, f"qb_has_{token}", True):
            return None  # no token stored: its old expiry means nothing in the list
        now = timezone.now()
        level = ""
        if obj.state != ConnectionState.ACTIVE:
            level = "muted"  # a dead or revoked token's expiry is history, not a warning
        elif styled:
            level = expiry_level(value, now)
        return time_html(expiry_text(value, now), value, level)

    @admin.display(description=gettext_lazy("access token"), ordering="access_token_expires_at")
    def access_expiry(self, obj: QuickBooksConnection) -> SafeString | None:
        return self._expiry(obj, obj.access_token_expires_at, styled=False, token="access_token")

    @admin.display(description=gettext_lazy("refresh token"), ordering="refresh_token_expires_at")
    def refresh_expiry(self, obj: QuickBooksConnection) -> SafeString | None:
        return self._expiry(obj, obj.refresh_token_expires_at, styled=True, token="refresh_token")

    @admin.display(
        description=gettext_lazy("hard expiry"), ordering="refresh_token_hard_expires_at"
    )
    def hard_expiry(self, obj: QuickBooksConnection) -> SafeString | None:
        return self._expiry(
            obj, obj.refresh_token_hard_expires_at, styled=True, token="refresh_token"
        )

    @admin.display(description=gettext_lazy("last refresh"), ordering="last_refreshed_at")
    def last_refresh(self, obj: QuickBooksConnection) -> SafeString | None:
        return time_html(ago_text(obj.last_refreshed_at), obj.last_refreshed_at)

    @admin.display(description=gettext_lazy("failures"), ordering="consecutive_failures")
    def failures(self, obj: QuickBooksConnection) -> str:
        if not obj.consecutive_failures:
            return "0"
        return format_html('<span class="qb-error">{}</span>', obj.consecutive_failures)

    @admin.display(description=gettext_lazy("last error"), ordering="last_error_at")
    def last_error_short(self, obj: QuickBooksConnection) -> SafeString | None:
        if not obj.last_error:
            return None
        return format_html(
            '<span class="qb-error" title="{}">{}</span>',
            obj.last_error,
            Truncator(obj.last_error).chars(48),
        )

    # -- change page fields --------------------------------------------------------------

    @admin.display(description=gettext_lazy("API calls this month"))
    def api_calls(self, obj: QuickBooksConnection) -> str:
        # As of the last sweep (folded rows): the change page has the live count.
        reads = getattr(obj, "month_core_plus", None) or 0
        writes = getattr(obj, "month_core", None) or 0
        return _("%(reads)s reads, %(writes)s writes") % {
            "reads": f"{reads:,}",
            "writes": f"{writes:,}",
        }

    @admin.display(description=gettext_lazy("this month"))
    def api_calls_month(self, obj: QuickBooksConnection) -> str:
        usage = metering.connection_usage(obj)
        return _(
            "%(reads)s CorePlus (reads and queries), %(writes)s Core (writes) in %(month)s"
        ) % {
            "reads": f"{usage.core_plus:,}",
            "writes": f"{usage.core:,}",
            "month": f"{usage.month:%Y-%m}",
        }

    def _stored(self, obj: QuickBooksConnection, name: str) -> str:
        if getattr(obj, f"qb_has_{name}", False):
            return _("stored, encrypted")
        return _("none")

    @admin.display(description=gettext_lazy("access token"))
    def access_token_stored(self, obj: QuickBooksConnection) -> str:
        return self._stored(obj, "access_token")

    @admin.display(description=gettext_lazy("refresh token"))
    def refresh_token_stored(self, obj: QuickBooksConnection) -> str:
        return self._stored(obj, "refresh_token")

    @admin.display(description=gettext_lazy("id token"))
    def id_token_stored(self, obj: QuickBooksConnection) -> str:
        return self._stored(obj, "id_token")

    def _expiry_full(
        self, obj: QuickBooksConnection, value: datetime | None, styled: bool
    ) -> SafeString | None:
        if value is None:
            return None
        return format_html(
            "{} <span class='qb-absolute'>({})</span>",
            self._expiry(obj, value, styled),
            absolute(value),
        )

    @admin.display(description=gettext_lazy("access token expires"))
    def access_expiry_full(self, obj: QuickBooksConnection) -> SafeString | None:
        return self._expiry_full(obj, obj.access_token_expires_at, styled=False)

    @admin.display(description=gettext_lazy("refresh token expires (rolling)"))
    def refresh_expiry_full(self, obj: QuickBooksConnection) -> SafeString | None:
        return self._expiry_full(obj, obj.refresh_token_expires_at, styled=True)

    @admin.display(description=gettext_lazy("refresh token hard expiry"))
    def hard_expiry_full(self, obj: QuickBooksConnection) -> SafeString | None:
        return self._expiry_full(obj, obj.refresh_token_hard_expires_at, styled=True)

    @admin.display(description=gettext_lazy("last error"))
    def last_error_full(self, obj: QuickBooksConnection) -> SafeString | None:
        if not obj.last_error:
            return None
        return format_html('<div class="qb-error-full">{}</div>', obj.last_error)

    @admin.display(description=gettext_lazy("Intuit transaction id (intuit_tid)"))
    def last_intuit_tid(self, obj: QuickBooksConnection) -> SafeString | None:
        event = (
            obj.events.filter(kind__in=FAILURE_KINDS)
            .exclude(intuit_tid="")
            .only("intuit_tid", "at", "kind")
            .first()
        )
        if event is None:
            return None
        return format_html(
            "<code>{}</code> ({}, {})",
            event.intuit_tid,
            event.get_kind_display(),
            ago_text(event.at),
        )

    # -- the change page: read-only, with the history and the buttons -------------------

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Nothing is edited here; a save would write back a stale row over the tokens.
        if request.method == "POST":
            return HttpResponseNotAllowed(["GET", "HEAD"])
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        raise PermissionDenied  # unreachable through the admin: see changeform_view

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            events = list(obj.events.select_related("actor")[: EVENT_LIMIT + 1])
            can_act = self.has_change_permission(request, obj)
            context.update(
                {
                    "show_save": False,
                    "show_save_and_continue": False,
                    "show_save_and_add_another": False,
                    "qb_events": events[:EVENT_LIMIT],
                    "qb_events_capped": len(events) > EVENT_LIMIT,
                    "qb_event_limit": EVENT_LIMIT,
                    "qb_can_act": can_act,
                }
            )
            if can_act:
                context.update(
                    {
                        "qb_refresh_url": self._url("refresh", obj.pk),
                        "qb_check_url": self._url("check", obj.pk),
                        "qb_revoke_url": self._url("revoke", obj.pk),
                    }
                )
        return super().render_change_form(request, context, add, change, form_url, obj)

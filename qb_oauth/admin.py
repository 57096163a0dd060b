"""The admin: every connection's token state at a glance, the actions an admin needs.

Never a token: the admin's querysets defer the three token columns, so no
token is even decrypted here; the change page shows only whether one is
stored (a database ``IS NULL`` test) and when it expires. Connections are
made by the OAuth flow only (no add), and no form field edits one: every
change goes through :mod:`qb_oauth.tokens` (refresh, revoke, check), which
records an event naming the admin.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from . import tokens
from .exceptions import (
    ConnectionNotActive,
    IntuitUnavailable,
    QuickBooksError,
    ReauthorizationRequired,
)
from .models import (
    ConnectionEvent,
    ConnectionState,
    EventKind,
    QuickBooksConnection,
    SweepRun,
    expiry_window_seconds,
)
from .templatetags.qb_oauth_admin import (
    DANGER_WINDOW,
    ago_text,
    expiry_level,
    expiry_text,
    humanize_seconds,
    time_html,
    warning_window,
)

#: Columns never loaded by the admin, never in a form.
TOKEN_FIELDS = ("access_token", "refresh_token", "id_token")
#: Internal columns of the single-flight refresh, never in a form.
INTERNAL_FIELDS = ("refresh_lease_owner", "refresh_lease_expires_at", "token_version")
#: How many events the change page shows (newest first).
EVENT_LIMIT = 50
#: How many connections an action reports one by one in the messages.
MESSAGE_LIMIT = 50
#: Kinds of events whose intuit_tid belongs with the last error.
FAILURE_KINDS = (EventKind.REFRESH_FAILED, EventKind.REAUTH_REQUIRED, EventKind.CHECK_FAILED)


def _state_badge(state: str):
    label = ConnectionState(state).label if state in ConnectionState.values else state
    return format_html('<span class="qb-badge qb-badge-{}">{}</span>', state, label)


class RefreshExpiringFilter(admin.SimpleListFilter):
    title = gettext_lazy("refresh token expiry")
    parameter_name = "refresh_expiring"

    def lookups(self, request, model_admin):
        warning_days = int(warning_window().total_seconds() // 86400)
        danger_days = DANGER_WINDOW.days
        choices = [(str(danger_days), _("expires within %(n)d days") % {"n": danger_days})]
        if warning_days > danger_days:
            choices.append(
                (str(warning_days), _("expires within %(n)d days") % {"n": warning_days})
            )
        return choices

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        try:
            seconds = expiry_window_seconds(value)
        except ValueError as err:
            # The changelist answers this with its standard "?e=1" page, not a 500.
            raise IncorrectLookupParameters(f"refresh_expiring: {err}") from None
        # Only live refresh tokens: a disconnected connection keeps its old expiry dates.
        return queryset.refresh_expiring_within(seconds).filter(refresh_token__isnull=False)


class FailingFilter(admin.SimpleListFilter):
    title = gettext_lazy("failing")
    parameter_name = "failing"

    def lookups(self, request, model_admin):
        return [("yes", _("failing (consecutive failures)")), ("no", _("no failures"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.failing()
        if self.value() == "no":
            return queryset.filter(consecutive_failures=0)
        return queryset


def _username_field() -> str:
    return get_user_model().USERNAME_FIELD


@admin.register(QuickBooksConnection)
class QuickBooksConnectionAdmin(admin.ModelAdmin):
    list_display = (
        "company",
        "owner",
        "realm_id",
        "environment",
        "state_badge",
        "access_expiry",
        "refresh_expiry",
        "hard_expiry",
        "last_refresh",
        "failures",
        "last_error_short",
    )
    list_display_links = ("company",)
    list_filter = ("state", "environment", RefreshExpiringFilter, FailingFilter, "client_id")
    list_select_related = ("user",)
    list_per_page = 100
    actions = ("refresh_now", "revoke_and_disconnect", "check_connection")
    exclude = TOKEN_FIELDS + INTERNAL_FIELDS
    fieldsets = (
        (
            gettext_lazy("Connection"),
            {
                "fields": (
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
    )
    readonly_fields = tuple(f for _name, opts in fieldsets for f in opts["fields"])

    # -- querysets and permissions -------------------------------------------------

    def get_queryset(self, request):
        # The tokens are never loaded: presence is a database IS NULL test.
        return super().get_queryset(request).select_related("user").with_token_presence()

    def get_search_fields(self, request):
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

    def has_add_permission(self, request):
        # Connections are made by the OAuth flow, never by hand.
        return False

    def get_deleted_objects(self, objs, request):
        # Events cannot be deleted on their own, but a connection's history goes with it.
        to_delete, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(ConnectionEvent._meta.verbose_name)
        return to_delete, model_count, perms_needed, protected

    # -- columns -------------------------------------------------------------------

    @admin.display(description=gettext_lazy("company"), ordering="company_name")
    def company(self, obj):
        return obj.company_name or format_html("<em>{}</em>", _("(no name)"))

    @admin.display(
        description=gettext_lazy("owner"), ordering=f"user__{get_user_model().USERNAME_FIELD}"
    )
    def owner(self, obj):
        return obj.user.get_username()

    @admin.display(description=gettext_lazy("state"), ordering="state")
    def state_badge(self, obj):
        badge = _state_badge(obj.state)
        if obj.tokens_unreadable_at is not None and obj.state == ConnectionState.ACTIVE:
            return format_html(
                '{} <span class="qb-badge qb-badge-reauth_required" title="{}">{}</span>',
                badge,
                _("No key of FERNET_KEYS decrypts its tokens"),
                _("tokens unreadable"),
            )
        return badge

    def _expiry(self, obj, value, styled: bool, token: str | None = None):
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
    def access_expiry(self, obj):
        return self._expiry(obj, obj.access_token_expires_at, styled=False, token="access_token")

    @admin.display(description=gettext_lazy("refresh token"), ordering="refresh_token_expires_at")
    def refresh_expiry(self, obj):
        return self._expiry(obj, obj.refresh_token_expires_at, styled=True, token="refresh_token")

    @admin.display(
        description=gettext_lazy("hard expiry"), ordering="refresh_token_hard_expires_at"
    )
    def hard_expiry(self, obj):
        return self._expiry(
            obj, obj.refresh_token_hard_expires_at, styled=True, token="refresh_token"
        )

    @admin.display(description=gettext_lazy("last refresh"), ordering="last_refreshed_at")
    def last_refresh(self, obj):
        return time_html(ago_text(obj.last_refreshed_at), obj.last_refreshed_at)

    @admin.display(description=gettext_lazy("failures"), ordering="consecutive_failures")
    def failures(self, obj):
        if not obj.consecutive_failures:
            return "0"
        return format_html('<span class="qb-error">{}</span>', obj.consecutive_failures)

    @admin.display(description=gettext_lazy("last error"), ordering="last_error_at")
    def last_error_short(self, obj):
        if not obj.last_error:
            return None
        return format_html(
            '<span class="qb-error" title="{}">{}</span>',
            obj.last_error,
            Truncator(obj.last_error).chars(48),
        )

    # -- change page fields --------------------------------------------------------------

    def _stored(self, obj, name: str) -> str:
        if getattr(obj, f"qb_has_{name}", False):
            return _("stored, encrypted")
        return _("none")

    @admin.display(description=gettext_lazy("access token"))
    def access_token_stored(self, obj):
        return self._stored(obj, "access_token")

    @admin.display(description=gettext_lazy("refresh token"))
    def refresh_token_stored(self, obj):
        return self._stored(obj, "refresh_token")

    @admin.display(description=gettext_lazy("id token"))
    def id_token_stored(self, obj):
        return self._stored(obj, "id_token")

    def _expiry_full(self, obj, value, styled: bool):
        if value is None:
            return None
        return format_html(
            "{} <span class='qb-absolute'>({})</span>",
            self._expiry(obj, value, styled),
            timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z"),
        )

    @admin.display(description=gettext_lazy("access token expires"))
    def access_expiry_full(self, obj):
        return self._expiry_full(obj, obj.access_token_expires_at, styled=False)

    @admin.display(description=gettext_lazy("refresh token expires (rolling)"))
    def refresh_expiry_full(self, obj):
        return self._expiry_full(obj, obj.refresh_token_expires_at, styled=True)

    @admin.display(description=gettext_lazy("refresh token hard expiry"))
    def hard_expiry_full(self, obj):
        return self._expiry_full(obj, obj.refresh_token_hard_expires_at, styled=True)

    @admin.display(description=gettext_lazy("last error"))
    def last_error_full(self, obj):
        if not obj.last_error:
            return None
        return format_html('<div class="qb-error-full">{}</div>', obj.last_error)

    @admin.display(description=gettext_lazy("Intuit transaction id (intuit_tid)"))
    def last_intuit_tid(self, obj):
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

    # -- custom URLs for one connection ------------------------------------------------

    def _url(self, name: str, pk) -> str:
        opts = self.opts
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{name}", args=[pk]
        )

    def get_urls(self):
        opts = self.opts
        prefix = f"{opts.app_label}_{opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/refresh/", wrap(self.refresh_view), name=f"{prefix}_refresh"),
            path("<path:object_id>/check/", wrap(self.check_view), name=f"{prefix}_check"),
            path("<path:object_id>/revoke/", wrap(self.revoke_view), name=f"{prefix}_revoke"),
            *super().get_urls(),
        ]

    def _object_to_act_on(self, request, object_id):
        if not self.has_change_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(_("No such QuickBooks connection."))
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        return obj

    def _back_to(self, obj) -> HttpResponseRedirect:
        opts = self.opts
        return HttpResponseRedirect(
            reverse(
                f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]
            )
        )

    def refresh_view(self, request, object_id):
        obj = self._object_to_act_on(request, object_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._refresh_all(request, [obj])
        return self._back_to(obj)

    def check_view(self, request, object_id):
        obj = self._object_to_act_on(request, object_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._check_all(request, [obj])
        return self._back_to(obj)

    def revoke_view(self, request, object_id):
        obj = self._object_to_act_on(request, object_id)
        if request.method == "POST":
            self._revoke_all(request, [obj])
            return self._back_to(obj)
        return self._revoke_confirmation(request, [obj], form_url=request.path, single=True)

    # -- changelist actions ----------------------------------------------------------------

    @admin.action(permissions=["change"], description=gettext_lazy("Refresh now (forced)"))
    def refresh_now(self, request, queryset):
        self._refresh_all(request, list(queryset))

    @admin.action(permissions=["change"], description=gettext_lazy("Revoke and disconnect…"))
    def revoke_and_disconnect(self, request, queryset):
        connections = list(queryset)
        if request.POST.get("post") == "yes":
            self._revoke_all(request, connections)
            return None
        return self._revoke_confirmation(request, connections, form_url="", single=False)

    @admin.action(
        permissions=["change"],
        description=gettext_lazy("Check connection (read CompanyInfo)"),
    )
    def check_connection(self, request, queryset):
        self._check_all(request, list(queryset))

    # -- what the actions and buttons do -----------------------------------------------------

    def _report(self, request, results: list[tuple[int, str]], summary: str) -> None:
        """One message per connection (up to MESSAGE_LIMIT), then a summary when many."""
        for level, text in results[:MESSAGE_LIMIT]:
            self.message_user(request, text, level)
        if len(results) > MESSAGE_LIMIT:
            self.message_user(request, summary, messages.INFO)

    def _refresh_all(self, request, connections) -> None:
        results: list[tuple[int, str]] = []
        counts = {"refreshed": 0, "reauth": 0, "unavailable": 0, "other": 0}
        for conn in connections:
            try:
                tokens.refresh(conn, force=True, actor=request.user)
            except ReauthorizationRequired as err:
                counts["reauth"] += 1
                results.append(
                    (
                        messages.WARNING,
                        _("%(c)s: needs reconnecting by its owner (%(e)s)")
                        % {"c": conn, "e": err.describe()},
                    )
                )
            except ConnectionNotActive:
                counts["other"] += 1
                results.append(
                    (
                        messages.WARNING,
                        _("%(c)s: disconnected, nothing to refresh") % {"c": conn},
                    )
                )
            except IntuitUnavailable as err:
                counts["unavailable"] += 1
                results.append(
                    (
                        messages.ERROR,
                        _("%(c)s: Intuit unavailable, nothing changed (%(e)s)")
                        % {"c": conn, "e": err.describe()},
                    )
                )
            except QuickBooksError as err:
                counts["other"] += 1
                results.append(
                    (
                        messages.ERROR,
                        _("%(c)s: refresh failed (%(e)s)") % {"c": conn, "e": err.describe()},
                    )
                )
            else:
                counts["refreshed"] += 1
                left = ""
                if conn.access_token_expires_at is not None:
                    left = humanize_seconds(
                        (conn.access_token_expires_at - timezone.now()).total_seconds()
                    )
                results.append(
                    (
                        messages.SUCCESS,
                        _("%(c)s: refreshed; the new access token expires in %(t)s")
                        % {"c": conn, "t": left or "?"},
                    )
                )
                self.log_change(request, conn, _("Refreshed the tokens at Intuit."))
        self._report(
            request,
            results,
            _(
                "%(r)d refreshed, %(a)d need reconnecting, %(u)d Intuit unavailable, "
                "%(o)d other failures."
            )
            % {
                "r": counts["refreshed"],
                "a": counts["reauth"],
                "u": counts["unavailable"],
                "o": counts["other"],
            },
        )

    def _check_all(self, request, connections) -> None:
        results: list[tuple[int, str]] = []
        ok = 0
        for conn in connections:
            try:
                name = tokens.check_connection(conn, actor=request.user)
            except QuickBooksError as err:
                level = messages.WARNING
                if isinstance(err, IntuitUnavailable):
                    level = messages.ERROR
                results.append(
                    (level, _("%(c)s: check failed (%(e)s)") % {"c": conn, "e": err.describe()})
                )
            else:
                ok += 1
                results.append(
                    (
                        messages.SUCCESS,
                        _("%(c)s: connection works; QuickBooks names the company “%(n)s”")
                        % {"c": conn, "n": name or _("(no name)")},
                    )
                )
        self._report(
            request,
            results,
            _("%(ok)d of %(n)d connections work.") % {"ok": ok, "n": len(connections)},
        )

    def _revoke_all(self, request, connections) -> None:
        results: list[tuple[int, str]] = []
        done = 0
        for conn in connections:
            try:
                tokens.revoke(conn, actor=request.user, by="admin")
            except QuickBooksError as err:
                level = messages.ERROR
                results.append(
                    (
                        level,
                        _("%(c)s: not disconnected, the tokens are kept (%(e)s)")
                        % {"c": conn, "e": err.describe()},
                    )
                )
            else:
                done += 1
                results.append(
                    (
                        messages.SUCCESS,
                        _("%(c)s: revoked at Intuit and disconnected") % {"c": conn},
                    )
                )
                self.log_change(request, conn, _("Revoked at Intuit and disconnected."))
        self._report(
            request,
            results,
            ngettext(
                "%(d)d of %(n)d connection revoked and disconnected.",
                "%(d)d of %(n)d connections revoked and disconnected.",
                len(connections),
            )
            % {"d": done, "n": len(connections)},
        )

    def _revoke_confirmation(self, request, connections, *, form_url: str, single: bool):
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": _("Revoke and disconnect"),
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "connections": connections,
            "single": single,
            "form_url": form_url,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request,
            f"admin/{opts.app_label}/{opts.model_name}/revoke_confirmation.html",
            context,
        )


class _ReadOnlyAdmin(admin.ModelAdmin):
    """History and summaries: written by qb_oauth only, never edited or deleted here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ConnectionEvent)
class ConnectionEventAdmin(_ReadOnlyAdmin):
    list_display = ("at", "connection", "kind", "actor", "intuit_tid", "detail_short")
    list_filter = ("kind",)
    list_select_related = ("connection", "actor")
    search_fields = ("connection__realm_id", "connection__company_name", "intuit_tid")
    date_hierarchy = "at"
    fields = ("connection", "kind", "at", "actor", "intuit_tid", "detail")

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*(f"connection__{f}" for f in TOKEN_FIELDS))

    @admin.display(description=gettext_lazy("detail"))
    def detail_short(self, obj):
        return Truncator(obj.detail).chars(80)


@admin.register(SweepRun)
class SweepRunAdmin(_ReadOnlyAdmin):
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
    def duration(self, obj):
        if obj.finished_at is None:
            return _("running or interrupted")
        return humanize_seconds((obj.finished_at - obj.started_at).total_seconds())

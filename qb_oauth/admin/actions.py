"""What an admin can do to connections: refresh now, check, revoke and disconnect.

The changelist's actions and the change page's buttons run the same :class:`Operation`
on each connection through :mod:`qb_oauth.tokens`, which records an event naming the
admin. Each outcome, success or :class:`~qb_oauth.exceptions.QuickBooksError`, becomes
one message; past :data:`MESSAGE_LIMIT` connections a summary says the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from .. import tokens
from ..exceptions import (
    ConnectionNotActive,
    IntuitUnavailable,
    QuickBooksError,
    ReauthorizationRequired,
)
from ..models import QuickBooksConnection
from ..templatetags.qb_oauth_admin import humanize_seconds

#: How many connections an action reports one by one in the messages.
MESSAGE_LIMIT = 50


@dataclass(frozen=True)
class Operation:
    """One thing done to each chosen connection, and the words for what came of it.

    ``run(connection, actor)`` does it; ``done(connection, result)`` words a success,
    tallied as ``"done"``. ``failures`` word an error: rows of (exception class, tally,
    message level, wording with ``%(c)s`` for the connection and ``%(e)s`` for the
    error), the first matching class winning, so the last row is for
    :class:`QuickBooksError`. ``summary(tally, total)`` stands for the messages past
    :data:`MESSAGE_LIMIT`; ``log`` is the admin log line of each success.
    """

    run: Callable[[QuickBooksConnection, Any], Any]
    done: Callable[[QuickBooksConnection, Any], str]
    failures: Sequence[tuple[type[QuickBooksError], str, int, str | Promise]]
    summary: Callable[[Counter[str], int], str]
    log: str | Promise | None = None

    def outcome(self, connection: QuickBooksConnection, actor: Any) -> tuple[str, int, str]:
        """(tally, level, message) of running this on ``connection``."""
        try:
            result = self.run(connection, actor)
        except QuickBooksError as err:
            _cls, tally, level, wording = next(
                row for row in self.failures if isinstance(err, row[0])
            )
            return tally, level, str(wording) % {"c": connection, "e": err.describe()}
        return "done", messages.SUCCESS, self.done(connection, result)


def _refreshed(connection: QuickBooksConnection, _result: Any) -> str:
    left = ""
    if connection.access_token_expires_at is not None:
        left = humanize_seconds(
            (connection.access_token_expires_at - timezone.now()).total_seconds()
        )
    return _("%(c)s: refreshed; the new access token expires in %(t)s") % {
        "c": connection,
        "t": left or "?",
    }


REFRESH = Operation(
    run=lambda connection, actor: tokens.refresh(connection, force=True, actor=actor),
    done=_refreshed,
    failures=(
        (
            ReauthorizationRequired,
            "reauth",
            messages.WARNING,
            gettext_lazy("%(c)s: needs reconnecting by its owner (%(e)s)"),
        ),
        (
            ConnectionNotActive,
            "other",
            messages.WARNING,
            gettext_lazy("%(c)s: disconnected, nothing to refresh"),
        ),
        (
            IntuitUnavailable,
            "unavailable",
            messages.ERROR,
            gettext_lazy("%(c)s: Intuit unavailable, nothing changed (%(e)s)"),
        ),
        (QuickBooksError, "other", messages.ERROR, gettext_lazy("%(c)s: refresh failed (%(e)s)")),
    ),
    summary=lambda tally, total: (
        _(
            "%(r)d refreshed, %(a)d need reconnecting, %(u)d Intuit unavailable, "
            "%(o)d other failures."
        )
        % {"r": tally["done"], "a": tally["reauth"], "u": tally["unavailable"], "o": tally["other"]}
    ),
    log=gettext_lazy("Refreshed the tokens at Intuit."),
)

CHECK = Operation(
    run=lambda connection, actor: tokens.check_connection(connection, actor=actor),
    done=lambda connection, name: (
        _("%(c)s: connection works; QuickBooks names the company “%(n)s”")
        % {"c": connection, "n": name or _("(no name)")}
    ),
    failures=(
        # An outage is the error; anything else is what the check was for.
        (IntuitUnavailable, "failed", messages.ERROR, gettext_lazy("%(c)s: check failed (%(e)s)")),
        (QuickBooksError, "failed", messages.WARNING, gettext_lazy("%(c)s: check failed (%(e)s)")),
    ),
    summary=lambda tally, total: (
        _("%(ok)d of %(n)d connections work.") % {"ok": tally["done"], "n": total}
    ),
)

REVOKE = Operation(
    run=lambda connection, actor: tokens.revoke(connection, actor=actor, by="admin"),
    done=lambda connection, _result: (
        _("%(c)s: revoked at Intuit and disconnected") % {"c": connection}
    ),
    failures=(
        (
            QuickBooksError,
            "failed",
            messages.ERROR,
            gettext_lazy("%(c)s: not disconnected, the tokens are kept (%(e)s)"),
        ),
    ),
    summary=lambda tally, total: (
        ngettext(
            "%(d)d of %(n)d connection revoked and disconnected.",
            "%(d)d of %(n)d connections revoked and disconnected.",
            total,
        )
        % {"d": tally["done"], "n": total}
    ),
    log=gettext_lazy("Revoked at Intuit and disconnected."),
)


class ConnectionActionsAdmin(admin.ModelAdmin):
    """The actions and the one-connection buttons (their URLs, checks and confirmation)."""

    # -- changelist actions ----------------------------------------------------------------

    @admin.action(permissions=["change"], description=gettext_lazy("Refresh now (forced)"))
    def refresh_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.run_operation(request, list(queryset), REFRESH)

    @admin.action(permissions=["change"], description=gettext_lazy("Revoke and disconnect…"))
    def revoke_and_disconnect(self, request: HttpRequest, queryset: QuerySet) -> Any:
        connections = list(queryset)
        if request.POST.get("post") == "yes":
            self.run_operation(request, connections, REVOKE)
            return None
        return self._revoke_confirmation(request, connections, form_url="", single=False)

    @admin.action(
        permissions=["change"],
        description=gettext_lazy("Check connection (read CompanyInfo)"),
    )
    def check_connection(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.run_operation(request, list(queryset), CHECK)

    def run_operation(
        self,
        request: HttpRequest,
        connections: Sequence[QuickBooksConnection],
        operation: Operation,
    ) -> None:
        """Run ``operation`` on each connection, then tell the admin what came of it."""
        results: list[tuple[int, str]] = []
        tally: Counter[str] = Counter()
        for connection in connections:
            key, level, text = operation.outcome(connection, request.user)
            tally[key] += 1
            results.append((level, text))
            if key == "done" and operation.log is not None:
                self.log_change(request, connection, str(operation.log))
        for level, text in results[:MESSAGE_LIMIT]:
            self.message_user(request, text, level)
        if len(results) > MESSAGE_LIMIT:
            self.message_user(request, operation.summary(tally, len(connections)), messages.INFO)

    # -- one connection's buttons ------------------------------------------------------------

    def _url(self, name: str, pk: Any) -> str:
        opts = self.opts
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{name}", args=[pk]
        )

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        prefix = f"{opts.app_label}_{opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/refresh/", wrap(self.refresh_view), name=f"{prefix}_refresh"),
            path("<path:object_id>/check/", wrap(self.check_view), name=f"{prefix}_check"),
            path("<path:object_id>/revoke/", wrap(self.revoke_view), name=f"{prefix}_revoke"),
            *super().get_urls(),
        ]

    def _object_to_act_on(self, request: HttpRequest, object_id: str) -> QuickBooksConnection:
        if not self.has_change_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(_("No such QuickBooks connection."))
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        return obj

    def _back_to(self, obj: QuickBooksConnection) -> HttpResponseRedirect:
        return HttpResponseRedirect(self._url("change", obj.pk))

    def _post_only(self, request: HttpRequest, object_id: str, operation: Operation) -> Any:
        obj = self._object_to_act_on(request, object_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self.run_operation(request, [obj], operation)
        return self._back_to(obj)

    def refresh_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._post_only(request, object_id, REFRESH)

    def check_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._post_only(request, object_id, CHECK)

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._object_to_act_on(request, object_id)
        if request.method == "POST":
            self.run_operation(request, [obj], REVOKE)
            return self._back_to(obj)
        return self._revoke_confirmation(request, [obj], form_url=request.path, single=True)

    def _revoke_confirmation(
        self,
        request: HttpRequest,
        connections: Sequence[QuickBooksConnection],
        *,
        form_url: str,
        single: bool,
    ) -> TemplateResponse:
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
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request,
            f"admin/{opts.app_label}/{opts.model_name}/revoke_confirmation.html",
            context,
        )

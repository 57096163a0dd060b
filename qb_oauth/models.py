"""The data of qb_oauth: connections, their history, the sweeps' summaries, webhook events.

No HTTP here: everything that speaks to Intuit lives in :mod:`qb_oauth.client`,
and everything that writes tokens in :mod:`qb_oauth.tokens`. The choices are in
:mod:`qb_oauth.choices` and the queries in :mod:`qb_oauth.querysets` (both also
importable from here). :class:`WebhookEvent` lives in :mod:`qb_oauth.webhooks.record`
and is importable from here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .backoff import BackoffMixin
from .choices import TOKEN_COLUMNS, ConnectionState, Environment, EventKind
from .conf import qb_settings
from .exceptions import ConnectionNotActive, CredentialsMismatch, ReauthorizationRequired
from .fields import TokenField
from .querysets import (
    EXPIRY_WINDOW_MAX_DAYS,
    QuickBooksConnectionQuerySet,
    expiry_window_seconds,
    fill_default_owner,
)
from .webhooks.record import WebhookEvent, WebhookEventQuerySet, WebhookFormat

__all__ = [
    "ApiUsage",
    "EXPIRY_WINDOW_MAX_DAYS",
    "TOKEN_COLUMNS",
    "ConnectionEvent",
    "ConnectionState",
    "Environment",
    "EventKind",
    "QuickBooksConnection",
    "QuickBooksConnectionQuerySet",
    "SweepRun",
    "WebhookEvent",
    "WebhookEventQuerySet",
    "WebhookFormat",
    "expiry_window_seconds",
]


class QuickBooksConnection(BackoffMixin, models.Model):
    """An owner's connection to one QuickBooks company (realm) in one environment.

    ``owner`` is whatever the site's adapter says a connection belongs to (by
    default the user who connected it: docs/ownership.md); ``user`` is who
    consented at Intuit, last.

    Tokens are Fernet-encrypted with ``settings.FERNET_KEYS`` and never appear
    in ``str()``, ``repr()``, the admin or a log line.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="quickbooks_connections",
        verbose_name=_("connected by"),
        help_text=_("The person who consented at Intuit (the last one, after a reconnect)."),
    )
    owner_content_type = models.ForeignKey(
        ContentType,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("owner type"),
    )
    owner_object_id = models.CharField(_("owner id"), max_length=64)
    #: What the connection belongs to: any model instance (a user, a team, an
    #: organization), chosen by the adapter's ``get_owner(request)`` at connect time.
    owner = GenericForeignKey("owner_content_type", "owner_object_id")
    realm_id = models.CharField(
        _("realm id"), max_length=32, help_text=_("Intuit's id of the QuickBooks company.")
    )
    environment = models.CharField(
        _("environment"), max_length=16, choices=Environment.choices, default=Environment.SANDBOX
    )
    company_name = models.CharField(_("company"), max_length=255, blank=True)
    scopes = models.CharField(
        _("scopes"),
        max_length=500,
        blank=True,
        help_text=_("Space-separated scopes asked for at Intuit."),
    )
    intuit_user_id = models.CharField(
        _("Intuit user id"),
        max_length=255,
        blank=True,
        help_text=_("The `sub` of the id token, when the openid scope was granted."),
    )

    client_id = models.CharField(
        _("Intuit app (client id)"),
        max_length=255,
        blank=True,
        help_text=_(
            "The client id of the Intuit app whose keys issued these tokens: only that app "
            "can refresh or revoke them. Empty for rows made before it was recorded."
        ),
    )

    access_token = TokenField(_("access token"), null=True, blank=True, editable=False)
    refresh_token = TokenField(_("refresh token"), null=True, blank=True, editable=False)
    id_token = TokenField(_("id token"), null=True, blank=True, editable=False)
    tokens_unreadable_at = models.DateTimeField(
        _("tokens unreadable since"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "Set when no key of FERNET_KEYS decrypts this row's tokens (a lost key, or "
            "corrupt data): the user must reconnect, unless the key is restored."
        ),
    )
    access_token_expires_at = models.DateTimeField(_("access token expires"), null=True, blank=True)
    refresh_token_expires_at = models.DateTimeField(
        _("refresh token expires"),
        null=True,
        blank=True,
        help_text=_("Intuit's rolling expiry (x_refresh_token_expires_in), renewed by refreshing."),
    )
    refresh_token_hard_expires_at = models.DateTimeField(
        _("refresh token hard expiry"),
        null=True,
        blank=True,
        help_text=_(
            "The grant's absolute end (x_refresh_token_hard_expires_in): reconnect before."
        ),
    )
    token_version = models.PositiveIntegerField(
        _("token version"),
        default=0,
        editable=False,
        help_text=_("Increases with every write of the tokens: the optimistic-concurrency check."),
    )

    state = models.CharField(
        _("state"),
        max_length=20,
        choices=ConnectionState.choices,
        default=ConnectionState.ACTIVE,
        db_index=True,
    )
    connected_at = models.DateTimeField(_("connected"), default=timezone.now)
    last_refreshed_at = models.DateTimeField(_("last refresh"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    # last_error, last_error_at, consecutive_failures, next_attempt_at: BackoffMixin.
    expiry_warning_sent_at = models.DateTimeField(
        _("expiry warning sent"), null=True, blank=True, editable=False
    )
    disconnect_checked_at = models.DateTimeField(
        _("Disconnect URL checked"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "When a visit of Intuit's Disconnect URL last asked Intuit whether the grant is "
            "alive: later visits within DISCONNECT_CHECK_INTERVAL answer from that check."
        ),
    )

    refresh_lease_owner = models.CharField(max_length=64, blank=True, editable=False)
    refresh_lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = QuickBooksConnectionQuerySet.as_manager()

    class Meta:
        verbose_name = _("QuickBooks connection")
        verbose_name_plural = _("QuickBooks connections")
        ordering = ["-connected_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner_content_type", "owner_object_id", "realm_id", "environment"],
                name="qb_oauth_unique_owner_realm_env",
            ),
        ]
        indexes = [
            models.Index(
                fields=["state", "access_token_expires_at"], name="qb_oauth_state_access_idx"
            ),
            models.Index(
                fields=["state", "last_refreshed_at"], name="qb_oauth_state_refreshed_idx"
            ),
            models.Index(fields=["realm_id"], name="qb_oauth_realm_idx"),
        ]

    def __str__(self) -> str:
        name = self.company_name or self.realm_id
        return f"{name} ({self.get_environment_display()})"

    def __repr__(self) -> str:
        return (
            f"<QuickBooksConnection pk={self.pk} realm_id={self.realm_id!r} "
            f"environment={self.environment!r} state={self.state!r}>"
        )

    def save(self, *args: Any, **kwargs: Any) -> None:
        fill_default_owner(self)
        super().save(*args, **kwargs)

    @property
    def is_active(self) -> bool:
        return self.state == ConnectionState.ACTIVE

    @property
    def needs_reconnect(self) -> bool:
        """Only the user can make it work again: Intuit refused the grant, or no key of
        ``FERNET_KEYS`` opens its tokens."""
        return self.state == ConnectionState.REAUTH_REQUIRED or (
            self.state == ConnectionState.ACTIVE and self.tokens_unreadable_at is not None
        )

    @property
    def shown_state(self) -> str:
        """The state its user is shown: one whose tokens no key opens needs reconnecting."""
        return ConnectionState.REAUTH_REQUIRED if self.needs_reconnect else self.state

    @property
    def shown_state_label(self) -> str:
        return str(ConnectionState(self.shown_state).label)

    @property
    def has_tokens(self) -> bool:
        annotated = getattr(self, "qb_has_refresh_token", None)
        if annotated is not None:  # QuickBooksConnectionQuerySet.with_token_presence()
            return bool(annotated)
        return bool(self.refresh_token)

    def raise_for_state(self) -> None:
        """Raise what a caller of a connection in this state must hear: the user must
        reconnect (``ReauthorizationRequired``), or there is no token at all
        (``ConnectionNotActive``)."""
        if self.state == ConnectionState.REAUTH_REQUIRED:
            raise ReauthorizationRequired(
                "This QuickBooks connection must be reconnected by its user."
            )
        if self.state == ConnectionState.DISCONNECTED:
            raise ConnectionNotActive("This QuickBooks connection is disconnected.")

    def raise_for_keys(self) -> None:
        """Refuse a connection whose tokens belong to other keys than the configured ones
        (``CredentialsMismatch``): another environment, or another Intuit app's client id.

        Intuit would answer ``invalid_grant`` (or refuse a revocation), and the
        connection would be marked lost for a setting: its state is left as it is.
        """
        environment = self.environment
        if environment and environment != qb_settings.ENVIRONMENT:
            raise CredentialsMismatch(
                f"This connection belongs to the {environment} environment; this site "
                f"is configured for {qb_settings.ENVIRONMENT} (QB_OAUTH['ENVIRONMENT'])."
            )
        issued_to = self.client_id
        if issued_to and issued_to != (qb_settings.CLIENT_ID or ""):
            raise CredentialsMismatch(
                f"This connection was made with the keys of another Intuit app (client id "
                f"{issued_to}); this site is configured with client id "
                f"{qb_settings.CLIENT_ID} (QB_OAUTH['CLIENT_ID'])."
            )

    def access_token_expired(self, margin: float = 0, now=None) -> bool:
        stored = getattr(self, "qb_has_access_token", None)  # with_token_presence(), a lease
        if stored is None:
            stored = bool(self.access_token)
        if not stored or self.access_token_expires_at is None:
            return True
        now = now or timezone.now()
        return self.access_token_expires_at - timedelta(seconds=margin) <= now

    def api_session(self, *, actor=None):
        """A ``requests`` session for this realm's Accounting API (see :mod:`qb_oauth.api`).

        ``actor``: the person on whose behalf it runs, recorded on a refresh it causes.
        """
        from .api import QuickBooksSession

        return QuickBooksSession(self, actor=actor)

    def quickbooks_client(self, **kwargs):
        """A ready ``quickbooks.QuickBooks`` client (needs ``qb_oauth[quickbooks]``)."""
        from .integrations.quickbooks import quickbooks_client

        return quickbooks_client(self, **kwargs)


def owner_key(owner: models.Model) -> tuple[ContentType, str]:
    """The (content type, object id) a connection stores for ``owner``."""
    if owner.pk is None:
        raise ValueError("A connection's owner must be saved first.")
    return ContentType.objects.get_for_model(owner), str(owner.pk)


class ConnectionEvent(models.Model):
    """Append-only history of a connection. ``detail`` never holds a token."""

    connection = models.ForeignKey(
        QuickBooksConnection,
        on_delete=models.CASCADE,
        related_name="events",
        verbose_name=_("connection"),
    )
    kind = models.CharField(_("event"), max_length=32, choices=EventKind.choices)
    at = models.DateTimeField(_("at"), default=timezone.now, db_index=True)
    detail = models.TextField(_("detail"), blank=True)
    intuit_tid = models.CharField(_("intuit_tid"), max_length=128, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("by"),
        help_text=_("The admin or user who caused the event, when it was a person."),
    )

    class Meta:
        verbose_name = _("connection event")
        verbose_name_plural = _("connection events")
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M:%S}"


class SweepRun(models.Model):
    """The summary of one run of the scheduled refresh (``refresh_due_connections``)."""

    started_at = models.DateTimeField(_("started"), default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    due = models.PositiveIntegerField(_("due"), default=0)
    refreshed = models.PositiveIntegerField(_("refreshed"), default=0)
    skipped_locked = models.PositiveIntegerField(_("skipped (locked)"), default=0)
    skipped_fresh = models.PositiveIntegerField(_("skipped (already fresh)"), default=0)
    failed_unavailable = models.PositiveIntegerField(_("failed (Intuit unavailable)"), default=0)
    failed_other = models.PositiveIntegerField(_("failed (other)"), default=0)
    reauth_required = models.PositiveIntegerField(_("marked reauth required"), default=0)
    warnings_sent = models.PositiveIntegerField(_("expiry warnings sent"), default=0)
    fanned_out = models.BooleanField(_("fanned out to the cluster"), default=False)

    class Meta:
        verbose_name = _("refresh sweep")
        verbose_name_plural = _("refresh sweeps")
        ordering = ["-started_at", "-pk"]

    def __str__(self) -> str:
        return f"Sweep at {self.started_at:%Y-%m-%d %H:%M:%S}"


class ApiUsage(models.Model):
    """A connection's Accounting API calls in one calendar month (UTC), as Intuit meters
    them: reads and queries ("CorePlus") and writes ("Core").

    Counted in the cache on every call (:mod:`qb_oauth.metering`) and folded in here
    by the scheduled refresh: never written per call.
    """

    connection = models.ForeignKey(
        QuickBooksConnection,
        on_delete=models.CASCADE,
        related_name="api_usage",
        verbose_name=_("connection"),
    )
    month = models.DateField(_("month"), help_text=_("The first day of the month (UTC)."))
    core_plus = models.PositiveBigIntegerField(_("CorePlus calls (reads)"), default=0)
    core = models.PositiveBigIntegerField(_("Core calls (writes)"), default=0)
    updated_at = models.DateTimeField(_("folded"), auto_now=True)

    class Meta:
        verbose_name = _("API usage")
        verbose_name_plural = _("API usage")
        ordering = ["-month", "connection_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "month"], name="qb_oauth_api_usage_one_per_month"
            )
        ]

    def __str__(self) -> str:
        return f"{self.connection_id} {self.month:%Y-%m}: {self.core_plus} + {self.core}"

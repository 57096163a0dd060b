"""What a webhook leaves behind: one :class:`WebhookEvent` per event Intuit notified.

No secret here: neither the verifier token, nor the signature, nor the raw body.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class WebhookFormat(models.TextChoices):
    CLOUDEVENTS = "cloudevents", _("CloudEvents")
    LEGACY = "legacy", _("Legacy (eventNotifications)")


class WebhookEventQuerySet(models.QuerySet):
    def pending(self):
        """Stored, not processed yet, not given up on."""
        return self.filter(processed_at__isnull=True, failed=False)

    def failed(self):
        return self.filter(failed=True)


class WebhookEvent(models.Model):
    """One change Intuit notified: an entity of a realm was created, updated, deleted...

    Stored once (``dedupe_key`` is unique: a delivery Intuit repeats adds
    nothing), then processed on the django-q2 cluster, which sends
    ``qb_oauth.signals.webhook_received`` with the realm's active connections.
    """

    dedupe_key = models.CharField(
        _("dedupe key"),
        max_length=255,
        unique=True,
        help_text=_(
            "The CloudEvent id, or a digest of realm, entity, id, operation and lastUpdated "
            "(legacy format): a repeated delivery is stored once."
        ),
    )
    format = models.CharField(
        _("format"), max_length=16, choices=WebhookFormat.choices, default=WebhookFormat.CLOUDEVENTS
    )
    realm_id = models.CharField(_("realm id"), max_length=32, db_index=True)
    entity = models.CharField(
        _("entity"),
        max_length=64,
        help_text=_('Lower case, as in the API\'s paths: "invoice", "customer", "journalentry".'),
    )
    entity_id = models.CharField(_("entity id"), max_length=64)
    operation = models.CharField(
        _("operation"),
        max_length=32,
        help_text=_(
            "created, updated, deleted, merged, voided (the legacy names mapped to these)."
        ),
    )
    event_type = models.CharField(
        _("event type"), max_length=128, blank=True, help_text=_("The CloudEvent type, if any.")
    )
    occurred_at = models.DateTimeField(
        _("occurred"),
        null=True,
        blank=True,
        help_text=_("When it happened at Intuit (CloudEvent time, or legacy lastUpdated)."),
    )
    received_at = models.DateTimeField(_("received"), default=timezone.now, db_index=True)
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)
    claimed_until = models.DateTimeField(
        _("claimed until"),
        null=True,
        blank=True,
        help_text=_("A worker is signalling it until then (keeps two workers apart)."),
    )
    attempts = models.PositiveIntegerField(
        _("attempts"), default=0, help_text=_("Times the signal was sent for it.")
    )
    failed = models.BooleanField(
        _("failed"),
        default=False,
        help_text=_("A receiver failed on every attempt: re-send it from the admin."),
    )
    last_error = models.CharField(_("last error"), max_length=255, blank=True)
    unknown_realm = models.BooleanField(
        _("unknown realm"),
        default=False,
        help_text=_("No active connection held its realm when it was processed."),
    )
    connections = models.ManyToManyField(
        "qb_oauth.QuickBooksConnection",
        blank=True,
        related_name="webhook_events",
        verbose_name=_("connections"),
        help_text=_("The active connections of its realm when it was processed."),
    )

    objects = WebhookEventQuerySet.as_manager()

    class Meta:
        app_label = "qb_oauth"
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ["-received_at", "-pk"]
        indexes = [
            models.Index(fields=["realm_id", "-received_at"], name="qb_oauth_hook_realm_idx"),
            models.Index(fields=["processed_at", "failed"], name="qb_oauth_hook_pending_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.entity} {self.entity_id} {self.operation} (realm {self.realm_id})"

    def __repr__(self) -> str:
        return (
            f"<WebhookEvent pk={self.pk} realm_id={self.realm_id!r} entity={self.entity!r} "
            f"entity_id={self.entity_id!r} operation={self.operation!r}>"
        )

"""The vocabulary of qb_oauth's data: environments, states, event kinds, token columns."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Environment(models.TextChoices):
    SANDBOX = "sandbox", _("Sandbox")
    PRODUCTION = "production", _("Production")


#: The encrypted columns: never loaded where a page only lists connections.
TOKEN_COLUMNS = ("access_token", "refresh_token", "id_token")


class ConnectionState(models.TextChoices):
    ACTIVE = "active", _("Connected")
    REAUTH_REQUIRED = "reauth_required", _("Needs reconnecting")
    DISCONNECTED = "disconnected", _("Disconnected")


class EventKind(models.TextChoices):
    CONNECTED = "connected", _("Connected")
    RECONNECTED = "reconnected", _("Reconnected")
    REFRESHED = "refreshed", _("Tokens refreshed")
    REFRESH_FAILED = "refresh_failed", _("Refresh failed")
    REAUTH_REQUIRED = "reauth_required", _("Reconnection required")
    REVOKED = "revoked", _("Revoked and disconnected")
    DISCONNECTED_AT_INTUIT = "disconnected_at_intuit", _("Disconnected inside QuickBooks")
    EXPIRY_WARNING = "expiry_warning", _("Refresh token expiring")
    CHECKED = "checked", _("Connection checked")
    CHECK_FAILED = "check_failed", _("Connection check failed")
    TOKENS_UNREADABLE = "tokens_unreadable", _("Tokens cannot be decrypted")

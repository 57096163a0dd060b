"""Settings for qb_oauth, read lazily from ``settings.QB_OAUTH``.

Every access reads ``django.conf.settings`` again, so ``override_settings``
and pytest-django's ``settings`` fixture take effect at once. Nothing is
cached here and nothing is written back into ``django.conf.settings``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

#: The defaults of every key of ``settings.QB_OAUTH``.
DEFAULTS: dict[str, Any] = {
    "CLIENT_ID": None,
    "CLIENT_SECRET": None,
    "ENVIRONMENT": "sandbox",
    "DISCOVERY_URL": None,
    "ENDPOINTS": {},
    "SCOPES": ["com.intuit.quickbooks.accounting"],
    "REDIRECT_URI": None,
    "REFRESH_MARGIN": 300,
    "KEEPALIVE_AGE": 86400,
    "SCHEDULE_MINUTES": 15,
    "HTTP_TIMEOUT": 10,
    "STATE_MAX_AGE": 600,
    "LOGIN_URL": None,
    "RECENT_USE_WINDOW": 7 * 86400,
    "SWEEP_CONCURRENCY": 8,
    "SWEEP_CHUNK_SIZE": 100,
    "BACKOFF_BASE": 60,
    "BACKOFF_MAX": 6 * 3600,
    "EXPIRY_WARNING_WINDOW": 30 * 86400,
    "MINOR_VERSION": 75,
    "REFRESH_LEASE_TTL": None,
    "DISCONNECT_CHECK_INTERVAL": 300,
}

ENVIRONMENTS = ("sandbox", "production")

#: Intuit's endpoints per environment (INTUIT.md).
INTUIT_ENDPOINTS: dict[str, dict[str, str]] = {
    "production": {
        "discovery": "https://developer.api.intuit.com/.well-known/openid_configuration",
        "authorization": "https://appcenter.intuit.com/connect/oauth2",
        "token": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
        "revocation": "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
        "userinfo": "https://accounts.platform.intuit.com/v1/openid_connect/userinfo",
        "jwks": "https://oauth.platform.intuit.com/op/v1/jwks",
        "issuer": "https://oauth.platform.intuit.com/op/v1",
        "api_base": "https://quickbooks.api.intuit.com",
    },
    "sandbox": {
        "discovery": "https://developer.api.intuit.com/.well-known/openid_sandbox_configuration",
        "authorization": "https://appcenter.intuit.com/connect/oauth2",
        "token": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
        "revocation": "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
        "userinfo": "https://sandbox-accounts.platform.intuit.com/v1/openid_connect/userinfo",
        "jwks": "https://oauth.platform.intuit.com/op/v1/jwks",
        "issuer": "https://oauth.platform.intuit.com/op/v1",
        "api_base": "https://sandbox-quickbooks.api.intuit.com",
    },
}

ENDPOINT_NAMES = ("authorization", "token", "revocation", "userinfo", "jwks", "issuer", "api_base")


def _seconds(value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


class QBSettings:
    """Typed accessors over ``settings.QB_OAUTH`` with :data:`DEFAULTS`."""

    def raw(self) -> dict[str, Any]:
        value = getattr(settings, "QB_OAUTH", None)
        return value if isinstance(value, dict) else {}

    def get(self, key: str) -> Any:
        return self.raw().get(key, DEFAULTS[key])

    @property
    def CLIENT_ID(self) -> str | None:  # noqa: N802 - settings keys are upper case
        return self.get("CLIENT_ID")

    @property
    def CLIENT_SECRET(self) -> str | None:  # noqa: N802
        return self.get("CLIENT_SECRET")

    @property
    def ENVIRONMENT(self) -> str:  # noqa: N802
        return self.get("ENVIRONMENT")

    @property
    def DISCOVERY_URL(self) -> str | None:  # noqa: N802
        return self.get("DISCOVERY_URL")

    @property
    def ENDPOINTS(self) -> dict[str, str]:  # noqa: N802
        return dict(self.get("ENDPOINTS") or {})

    @property
    def SCOPES(self) -> list[str]:  # noqa: N802
        scopes = self.get("SCOPES")
        if isinstance(scopes, str):
            return scopes.split()
        return list(scopes)

    @property
    def REDIRECT_URI(self) -> str | None:  # noqa: N802
        return self.get("REDIRECT_URI")

    @property
    def REFRESH_MARGIN(self) -> float:  # noqa: N802
        return _seconds(self.get("REFRESH_MARGIN"))

    @property
    def KEEPALIVE_AGE(self) -> float:  # noqa: N802
        return _seconds(self.get("KEEPALIVE_AGE"))

    @property
    def SCHEDULE_MINUTES(self) -> int:  # noqa: N802
        return int(self.get("SCHEDULE_MINUTES"))

    @property
    def HTTP_TIMEOUT(self) -> float:  # noqa: N802
        return _seconds(self.get("HTTP_TIMEOUT"))

    @property
    def STATE_MAX_AGE(self) -> float:  # noqa: N802
        return _seconds(self.get("STATE_MAX_AGE"))

    @property
    def LOGIN_URL(self) -> str | None:  # noqa: N802
        return self.get("LOGIN_URL")

    @property
    def RECENT_USE_WINDOW(self) -> float:  # noqa: N802
        return _seconds(self.get("RECENT_USE_WINDOW"))

    @property
    def SWEEP_CONCURRENCY(self) -> int:  # noqa: N802
        return max(1, int(self.get("SWEEP_CONCURRENCY")))

    @property
    def SWEEP_CHUNK_SIZE(self) -> int:  # noqa: N802
        return max(1, int(self.get("SWEEP_CHUNK_SIZE")))

    @property
    def BACKOFF_BASE(self) -> float:  # noqa: N802
        return _seconds(self.get("BACKOFF_BASE"))

    @property
    def BACKOFF_MAX(self) -> float:  # noqa: N802
        return _seconds(self.get("BACKOFF_MAX"))

    @property
    def EXPIRY_WARNING_WINDOW(self) -> float:  # noqa: N802
        return _seconds(self.get("EXPIRY_WARNING_WINDOW"))

    @property
    def MINOR_VERSION(self) -> int:  # noqa: N802
        return int(self.get("MINOR_VERSION"))

    @property
    def REFRESH_LEASE_TTL(self) -> float:  # noqa: N802
        """How long a refresh holds the row's lease before another caller may take over.

        Default: long enough for the slowest live holder (the discovery document, a
        refresh and its one retry, each with a connect and a read timeout) plus slack.
        """
        value = self.get("REFRESH_LEASE_TTL")
        if value is None:
            return self.HTTP_TIMEOUT * 6 + 30
        return _seconds(value)

    @property
    def DISCONNECT_CHECK_INTERVAL(self) -> float:  # noqa: N802
        """How long one check of Intuit's Disconnect URL answers later visits for the same
        connection: a forged link visited again and again costs one refresh per interval."""
        return _seconds(self.get("DISCONNECT_CHECK_INTERVAL"))


#: The most calls to Intuit a refresh makes while it holds the lease: the discovery
#: document (when not cached yet), the refresh, and its one retry with a newer token.
CALLS_UNDER_LEASE = 3

qb_settings = QBSettings()

"""qb_oauth's settings: one table of every key of ``settings.QB_OAUTH``.

Each key is one :class:`Setting` on :class:`QBSettings`: its default, its
kind (how a value is read and checked) and its meaning, written once. The
accessors read ``django.conf.settings`` on every access, so
``override_settings`` and pytest-django's ``settings`` fixture take effect at
once; nothing is cached and nothing is written back. The system checks
(:mod:`qb_oauth.checks`) validate every key from the same table. The keys are
documented in docs/settings.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

from django.conf import settings

T = TypeVar("T")

ENVIRONMENTS = ("sandbox", "production")

#: Intuit's published endpoints per environment.
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

#: The most calls to Intuit a refresh makes while it holds the lease: the discovery
#: document (when not cached yet), the refresh, and its one retry with a newer token.
CALLS_UNDER_LEASE = 3


class Invalid(ValueError):
    """A value a :class:`Setting` cannot use; the message says what it must be."""


def _seconds(value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise Invalid("a number of seconds (or a timedelta)")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise Invalid("a number of seconds (or a timedelta)") from None
    if not math.isfinite(seconds):
        raise Invalid("a finite number of seconds")
    return seconds


class Setting(Generic[T]):
    """One key of ``QB_OAUTH``: its default, how a value is read, and its meaning.

    ``read`` turns the configured (or default) value into what the code uses,
    and raises :class:`Invalid` for a value it cannot use: the system checks
    report that as ``qb_oauth.E011`` with the key and the default.
    """

    name: str

    def __init__(
        self,
        default: Any,
        read: Callable[[Any], T],
        doc: str,
        *,
        fallback: Callable[[QBSettings], T] | None = None,
    ) -> None:
        self.default = default
        self.read = read
        self.fallback = fallback
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Setting[T]: ...

    @overload
    def __get__(self, obj: QBSettings, owner: type) -> T: ...

    def __get__(self, obj: QBSettings | None, owner: type) -> Setting[T] | T:
        if obj is None:
            return self
        value = self.read(obj.get(self.name))
        if value is None and self.fallback is not None:
            return self.fallback(obj)
        return value


def seconds(minimum: float = 0.0, *, zero: bool = False) -> Callable[[Any], float]:
    """A duration: seconds or a ``timedelta``, more than ``minimum`` (or equal, with
    ``zero``)."""

    def read(value: Any) -> float:
        number = _seconds(value)
        if number < minimum or (number == minimum and not zero):
            raise Invalid("a number of 0 or more" if zero else "a number greater than 0")
        return number

    return read


def count(minimum: int = 1) -> Callable[[Any], int]:
    """A whole number of at least ``minimum``."""

    def read(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise Invalid(f"a whole number of {minimum} or more")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise Invalid(f"a whole number of {minimum} or more") from None
        if number < minimum:
            raise Invalid(f"a whole number of {minimum} or more")
        return number

    return read


def optional_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Invalid("a string")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("a string")
    return value


def scopes(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple) and all(isinstance(s, str) for s in value):
        return list(value)
    raise Invalid("a list of scope strings, or one space-separated string")


def endpoint_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"a dict of endpoint name ({', '.join(ENDPOINT_NAMES)}) to URL")
    return dict(value)


def verifier_tokens(value: Any) -> list[str]:
    """One verifier token, or a list of them while a new one is rolled in."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(t, str) and t for t in value):
        return list(value)
    raise Invalid("a verifier token string, or a list of non-empty strings")


def _lease_ttl(value: Any) -> float | None:
    return None if value is None else seconds()(value)


def _default_lease_ttl(conf: QBSettings) -> float:
    # Longer than the slowest live holder: CALLS_UNDER_LEASE calls, with slack.
    return conf.HTTP_TIMEOUT * 6 + 30


class QBSettings:
    """Typed accessors over ``settings.QB_OAUTH``, one :class:`Setting` per key."""

    CLIENT_ID = Setting(
        None, optional_text, "The Client ID of the app at Intuit (sandbox and production differ)."
    )
    CLIENT_SECRET = Setting(None, optional_text, "The Client Secret that goes with it.")
    ENVIRONMENT = Setting(
        "sandbox",
        text,
        '"sandbox" or "production": picks Intuit\'s endpoints and the Accounting API.',
    )
    DISCOVERY_URL = Setting(
        None,
        optional_text,
        "An OpenID discovery document to take the endpoints from (fetched once, cached).",
    )
    ENDPOINTS = Setting(
        {},
        endpoint_map,
        "Overrides of single endpoints by name; they win over DISCOVERY_URL.",
    )
    SCOPES = Setting(
        ["com.intuit.quickbooks.accounting"],
        scopes,
        "The scopes asked for; add openid (email, profile) for the user's Intuit identity.",
    )
    REDIRECT_URI = Setting(
        None,
        optional_text,
        "The callback's absolute URL as registered at Intuit; None builds it from the request.",
    )
    REFRESH_MARGIN = Setting(
        300,
        seconds(zero=True),
        "An access token this close to its expiry counts as expired.",
    )
    KEEPALIVE_AGE = Setting(
        86400,
        seconds(),
        "The sweep also refreshes every connection whose last refresh is older than this.",
    )
    SCHEDULE_MINUTES = Setting(15, count(), "How often the scheduled refresh runs.")
    HTTP_TIMEOUT = Setting(
        10,
        seconds(),
        "The most one call to Intuit may take, from connect to the last byte.",
    )
    STATE_MAX_AGE = Setting(
        600, seconds(), "Seconds a user has at Intuit's consent page before the state expires."
    )
    LOGIN_URL = Setting(
        None, optional_text, "Where qb_oauth's views send an anonymous user (else LOGIN_URL)."
    )
    RECENT_USE_WINDOW = Setting(
        7 * 86400,
        seconds(),
        "An expiring access token is renewed by the sweep only if used within this window.",
    )
    SWEEP_CONCURRENCY = Setting(8, count(), "Connections one sweep refreshes at once.")
    SWEEP_CHUNK_SIZE = Setting(100, count(), "Connections per claimed batch and per task.")
    BACKOFF_BASE = Setting(
        60, seconds(), "The first wait after an outage; it doubles with every failure."
    )
    BACKOFF_MAX = Setting(6 * 3600, seconds(), "The longest wait after outages.")
    EXPIRY_WARNING_WINDOW = Setting(
        30 * 86400,
        seconds(),
        "refresh_token_expiring is sent when an expiry falls within this window.",
    )
    MINOR_VERSION = Setting(75, count(), "The Accounting API minorversion of every request.")
    REFRESH_LEASE_TTL: Setting[float] = Setting(
        None,
        _lease_ttl,  # type: ignore[arg-type]  # None reads as the fallback
        "How long a refresh holds a connection's lease; None: HTTP_TIMEOUT x 6 + 30.",
        fallback=_default_lease_ttl,
    )
    DISCONNECT_CHECK_INTERVAL = Setting(
        300,
        seconds(),
        "One check of Intuit's Disconnect URL answers later visits for this long.",
    )
    # -- who owns a connection (docs/ownership.md) --
    ADAPTER = Setting(
        "qb_oauth.adapter.DefaultAdapter",
        text,
        "The dotted path of the class that decides whose a connection is (get_owner, "
        "connections_for, can_manage); the default: the user who connected it.",
    )

    # Intuit's webhooks (docs/webhooks.md).
    WEBHOOK_VERIFIER_TOKEN: Setting[list[str]] = Setting(
        None,
        verifier_tokens,
        "The app's webhook verifier token at Intuit, or a list while rolling in a new one.",
    )
    WEBHOOK_MAX_BODY = Setting(
        1024 * 1024,
        count(1024),
        "The largest webhook body accepted, in bytes; a larger one is answered 413.",
    )
    WEBHOOK_MAX_ATTEMPTS = Setting(
        3,
        count(),
        "Times a webhook event is signalled while a receiver fails, before it is flagged failed.",
    )

    # Calling the API within Intuit's limits (docs/usage.md, "Intuit's limits").
    CACHE = Setting(
        "default",
        text,
        "The Django cache (a key of CACHES) that holds the API limits and counts of every "
        "process: Redis or memcached in production.",
    )
    API_CONCURRENCY = Setting(10, count(), "The most API requests in flight per realm.")
    API_RATE_LIMIT = Setting(500, count(), "The most API requests per realm per API_RATE_WINDOW.")
    API_BATCH_RATE_LIMIT = Setting(
        120, count(), "The most Batch requests per realm per API_RATE_WINDOW."
    )
    API_RATE_WINDOW = Setting(
        60, seconds(minimum=1, zero=True), "The window of the rate limits (Intuit's: a minute)."
    )
    API_RETRIES = Setting(
        3, count(0), "Retries of a 429, and of a 502/503/504 to a read or a query."
    )
    API_RETRY_BACKOFF = Setting(
        0.5,
        seconds(),
        "The longest first pause before a retry; each retry doubles it (with full jitter).",
    )
    API_MONTHLY_QUOTA = Setting(
        500_000,
        count(),
        "CorePlus (read) calls of the app a month; api_quota_near is sent at 80 % and 95 %.",
    )
    API_WAIT = Setting(
        30,
        seconds(),
        "The longest a call waits for a slot under the limits before IntuitUnavailable.",
    )

    @classmethod
    def table(cls) -> Iterator[Setting[Any]]:
        """Every setting, in the order of the table."""
        for value in vars(cls).values():
            if isinstance(value, Setting):
                yield value

    def raw(self) -> dict[str, Any]:
        value = getattr(settings, "QB_OAUTH", None)
        return value if isinstance(value, dict) else {}

    def get(self, key: str) -> Any:
        """The configured value of ``key``, or its default; not read or checked."""
        return self.raw().get(key, getattr(type(self), key).default)

    @property
    def wait_limit(self) -> float:
        """How long a caller waits for another one's refresh (or its own helper thread)."""
        return self.HTTP_TIMEOUT * 2 + 5


qb_settings = QBSettings()

#: Every key of ``QB_OAUTH`` with its default (derived from the table).
DEFAULTS: dict[str, Any] = {s.name: s.default for s in QBSettings.table()}

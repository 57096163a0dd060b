"""System checks: each misconfiguration has an id and a hint (docs/checks.md).

==================  ===========================================================
qb_oauth.E001       CLIENT_ID or CLIENT_SECRET missing
qb_oauth.E002       ENVIRONMENT is neither "sandbox" nor "production"
qb_oauth.E003       an endpoint is not https (plain http to loopback allowed), DEBUG or not
qb_oauth.E004       FERNET_KEYS is malformed (not a non-empty list of strings)
qb_oauth.E005       the session middleware is missing
qb_oauth.E006       QB_OAUTH has unknown keys
qb_oauth.E007       REFRESH_LEASE_TTL does not outlast the longest refresh (3 x HTTP_TIMEOUT)
qb_oauth.E008       QB_OAUTH is not a dict
qb_oauth.E009       QB_OAUTH['ENDPOINTS'] is not a dict
qb_oauth.E010       QB_OAUTH['ENDPOINTS'] has unknown endpoint names
qb_oauth.E011       a QB_OAUTH value of the wrong kind or out of range
qb_oauth.E012       ADAPTER cannot be imported, or is not an adapter class
qb_oauth.E013       QB_OAUTH['CACHE'] names no cache of CACHES
qb_oauth.W001       FERNET_KEYS is not set: tokens would be encrypted with SECRET_KEY
qb_oauth.W002       django_q is not installed: nothing refreshes connections on schedule
qb_oauth.W003       REDIRECT_URI is not https outside DEBUG
qb_oauth.W004       stored connections were made with another Intuit app's client id
qb_oauth.W005       the webhook URL is included but WEBHOOK_VERIFIER_TOKEN is not set
qb_oauth.W006       the cache of the API limits is process-local while DEBUG is off
==================  ===========================================================
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from . import transport
from .conf import (
    CALLS_UNDER_LEASE,
    DEFAULTS,
    ENDPOINT_NAMES,
    ENVIRONMENTS,
    Invalid,
    QBSettings,
    qb_settings,
)


def _insecure(url: str) -> bool:
    return not transport.is_allowed(url)


def _values() -> tuple[dict[str, Any], list[CheckMessage]]:
    """Every setting read through the table, and an E011 for each one that can't be."""
    values: dict[str, Any] = {}
    errors: list[CheckMessage] = []
    for setting in QBSettings.table():
        try:  # its own value only: a fallback's error belongs to the setting it reads
            values[setting.name] = setting.read(qb_settings.get(setting.name))
        except Invalid as invalid:
            errors.append(
                Error(
                    f"QB_OAUTH['{setting.name}'] must be {invalid}.",
                    hint=f"The default is {setting.default!r}. {setting.__doc__}",
                    id="qb_oauth.E011",
                )
            )
    return values, errors


@register(Tags.security, "qb_oauth")
def check_settings(app_configs=None, **kwargs) -> list[CheckMessage]:
    raw = getattr(settings, "QB_OAUTH", None)
    if raw is not None and not isinstance(raw, dict):
        return [
            Error(
                "QB_OAUTH must be a dict.",
                hint="Set QB_OAUTH = {'CLIENT_ID': ..., 'CLIENT_SECRET': ...} in your settings.",
                id="qb_oauth.E008",
            )
        ]
    errors: list[CheckMessage] = []
    unknown = sorted(set(raw or {}) - set(DEFAULTS))
    if unknown:
        errors.append(
            Error(
                f"QB_OAUTH has unknown keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="qb_oauth.E006",
            )
        )
    if not isinstance(qb_settings.get("ENDPOINTS"), dict | None):
        errors.append(
            Error(
                "QB_OAUTH['ENDPOINTS'] must be a dict.",
                hint=f"Keys: {', '.join(ENDPOINT_NAMES)}.",
                id="qb_oauth.E009",
            )
        )
    values, invalid = _values()
    errors.extend(e for e in invalid if "['ENDPOINTS']" not in e.msg)
    missing = [k for k in ("CLIENT_ID", "CLIENT_SECRET") if not qb_settings.get(k)]
    if missing:
        errors.append(
            Error(
                f"QB_OAUTH is missing {' and '.join(missing)}.",
                hint="Copy your app's keys from the Intuit Developer portal (Keys & credentials); "
                "sandbox and production have different keys.",
                id="qb_oauth.E001",
            )
        )
    environment = qb_settings.get("ENVIRONMENT")
    if environment not in ENVIRONMENTS:
        errors.append(
            Error(
                f"QB_OAUTH['ENVIRONMENT'] is {environment!r}.",
                hint='Use "sandbox" or "production".',
                id="qb_oauth.E002",
            )
        )
    endpoints = values.get("ENDPOINTS", {})
    bad_names = sorted(set(endpoints) - set(ENDPOINT_NAMES))
    if bad_names:
        errors.append(
            Error(
                f"QB_OAUTH['ENDPOINTS'] has unknown names: {', '.join(bad_names)}.",
                hint=f"Known names: {', '.join(ENDPOINT_NAMES)}.",
                id="qb_oauth.E010",
            )
        )
    errors.extend(_check_transport(endpoints, values))
    errors.extend(_check_adapter(values))
    if not errors:
        errors.extend(_check_lease_outlasts_calls())
    return errors


def _check_transport(endpoints: dict[str, Any], values: dict[str, Any]) -> list[CheckMessage]:
    # DEBUG or not: the same rule qb_oauth applies at run time (qb_oauth.transport). Plain
    # http would carry the client secret and the tokens in clear text.
    found: list[CheckMessage] = []
    urls = {f"['ENDPOINTS']['{k}']": v for k, v in endpoints.items() if isinstance(v, str)}
    discovery = values.get("DISCOVERY_URL")
    if discovery:
        urls["['DISCOVERY_URL']"] = discovery
    for name, url in sorted(urls.items()):
        if name != "['ENDPOINTS']['issuer']" and url and _insecure(url):
            found.append(
                Error(
                    f"QB_OAUTH{name} is not https: {transport.shown(url)}",
                    hint="Use https (Intuit's own endpoints are built in: remove the "
                    "override). Plain http is allowed only to loopback (127.0.0.1, ::1, "
                    "localhost), where the fake Intuit runs. Setting "
                    "OAUTHLIB_INSECURE_TRANSPORT lets it through at run time but not past "
                    "this check; silence qb_oauth.E003 only for a development machine.",
                    id="qb_oauth.E003",
                )
            )
    redirect = values.get("REDIRECT_URI")
    if not settings.DEBUG and redirect and _insecure(redirect):
        found.append(
            Warning(
                f"QB_OAUTH['REDIRECT_URI'] is not https: {redirect}",
                hint="Intuit accepts only https redirect URIs in production (localhost "
                "is allowed in development).",
                id="qb_oauth.W003",
            )
        )
    return found


def _check_adapter(values: dict[str, Any]) -> list[CheckMessage]:
    from .adapter import adapter_problem

    path = values.get("ADAPTER")
    if not isinstance(path, str):
        return []  # the wrong kind: E011 says so
    problem = adapter_problem(path)
    if problem is None:
        return []
    return [
        Error(
            f"QB_OAUTH['ADAPTER'] is {path!r}, but {problem}.",
            hint="Name a class that subclasses qb_oauth.adapter.DefaultAdapter (the default), "
            "by its dotted path, e.g. 'myproject.qb.TeamAdapter' (docs/ownership.md).",
            id="qb_oauth.E012",
        )
    ]


#: Slack for the database work a refresh does while it holds the lease.
LEASE_SLACK = 5.0


def _check_lease_outlasts_calls() -> list[CheckMessage]:
    ttl, timeout = qb_settings.REFRESH_LEASE_TTL, qb_settings.HTTP_TIMEOUT
    longest = CALLS_UNDER_LEASE * timeout + LEASE_SLACK
    if ttl > longest:
        return []
    return [
        Error(
            f"QB_OAUTH['REFRESH_LEASE_TTL'] ({ttl:g} s) does not outlast the longest refresh: "
            f"{CALLS_UNDER_LEASE} calls to Intuit of up to HTTP_TIMEOUT ({timeout:g} s) each, "
            f"plus {LEASE_SLACK:g} s.",
            hint=f"Set REFRESH_LEASE_TTL above {longest:g} s, or leave it unset (default "
            "HTTP_TIMEOUT x 6 + 30 s). A lease that ends while its holder still waits for "
            "Intuit lets a second worker refresh with the same token.",
            id="qb_oauth.E007",
        )
    ]


@register(Tags.database, "qb_oauth")
def check_stored_client_ids(app_configs=None, databases=None, **kwargs):
    """Connections made with another Intuit app's keys are never refreshed with these."""
    if not databases:
        return []  # runs with `migrate` and `check --database`, like Django's own DB checks
    from django.db import DatabaseError

    from .models import QuickBooksConnection

    configured = qb_settings.CLIENT_ID or ""
    warnings = []
    for alias in databases:
        try:
            others = list(
                QuickBooksConnection.objects.using(alias)
                .exclude(client_id="")
                .exclude(client_id=configured)
                .values_list("client_id", flat=True)
                .distinct()[:5]
            )
        except DatabaseError:  # the table does not exist yet (before the first migrate)
            continue
        if others:
            count = (
                QuickBooksConnection.objects.using(alias)
                .exclude(client_id="")
                .exclude(client_id=configured)
                .count()
            )
            warnings.append(
                Warning(
                    f"{count} QuickBooks connection(s) in database '{alias}' were made with "
                    f"another Intuit app's keys (client id {', '.join(others)}); this site is "
                    f"configured with {configured or '(none)'}.",
                    hint="They are neither refreshed nor revoked with these keys, and nothing "
                    "marks them lost. Put the keys of the app that made them back in "
                    "QB_OAUTH, or have their users reconnect with the new app.",
                    id="qb_oauth.W004",
                )
            )
    return warnings


@register(Tags.security, "qb_oauth")
def check_fernet_keys(app_configs=None, **kwargs):
    keys = getattr(settings, "FERNET_KEYS", None)
    if keys is None:
        return [
            Warning(
                "FERNET_KEYS is not set: QuickBooks tokens would be encrypted with a key "
                "derived from SECRET_KEY.",
                hint="Set FERNET_KEYS = [<a long random secret>] (kept apart from SECRET_KEY); "
                "to rotate, put the new key first and keep the old ones after it, then run "
                "`manage.py qb_rotate_keys`.",
                id="qb_oauth.W001",
            )
        ]
    if (
        not isinstance(keys, list | tuple)
        or not keys
        or not all(isinstance(k, str | bytes) and len(k) > 0 for k in keys)
    ):
        return [
            Error(
                "FERNET_KEYS must be a non-empty list of non-empty strings.",
                hint="FERNET_KEYS = [os.environ['FERNET_KEY']]; the first key encrypts, "
                "every key decrypts.",
                id="qb_oauth.E004",
            )
        ]
    return []


@register("qb_oauth")
def check_installed(app_configs=None, **kwargs) -> list[CheckMessage]:
    from django.apps import apps

    errors: list[CheckMessage] = []
    if not apps.is_installed("django_q"):
        errors.append(
            Warning(
                "django_q is not in INSTALLED_APPS: nothing refreshes QuickBooks connections "
                "on schedule.",
                hint="Add 'django_q' to INSTALLED_APPS and run a cluster (manage.py qcluster), "
                "or run `manage.py qb_refresh` from cron.",
                id="qb_oauth.W002",
            )
        )
    middleware = getattr(settings, "MIDDLEWARE", []) or []
    if not any(m.endswith("SessionMiddleware") for m in middleware):
        errors.append(
            Error(
                "The session middleware is missing: the OAuth state needs the session.",
                hint="Add 'django.contrib.sessions.middleware.SessionMiddleware' to MIDDLEWARE.",
                id="qb_oauth.E005",
            )
        )
    return errors


@register(Tags.urls, "qb_oauth")
def check_webhook_token(app_configs=None, **kwargs) -> list[CheckMessage]:
    """W005: ``qb_oauth:webhooks`` resolves but no verifier token is set (every POST: 401)."""
    from django.urls import NoReverseMatch, reverse

    if not isinstance(getattr(settings, "QB_OAUTH", None), dict):
        return []  # E008 says so
    try:
        tokens = qb_settings.WEBHOOK_VERIFIER_TOKEN
    except Invalid:
        return []  # E011 says so
    if tokens:
        return []
    try:
        url = reverse("qb_oauth:webhooks")
    except NoReverseMatch:
        return []
    except Exception:  # an URLconf that does not import is Django's own check's business
        return []
    return [
        Warning(
            f"The webhook endpoint {url} is included, but QB_OAUTH['WEBHOOK_VERIFIER_TOKEN'] "
            "is not set: it answers every notification 401.",
            hint="Copy the verifier token from your app's Webhooks page at Intuit into "
            "QB_OAUTH['WEBHOOK_VERIFIER_TOKEN'] (docs/webhooks.md), or silence "
            "qb_oauth.W005 if you do not use webhooks.",
            id="qb_oauth.W005",
        )
    ]


#: Cache backends whose data one process (or one machine) keeps to itself.
_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.filebased.FileBasedCache",
)


@register("qb_oauth")
def check_limits_cache(app_configs=None, **kwargs) -> list[CheckMessage]:
    """The API limits and counts live in QB_OAUTH['CACHE']: it must exist, and be shared."""
    try:
        name = qb_settings.CACHE
    except Invalid:
        return []  # E011 says so
    caches = getattr(settings, "CACHES", None) or {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }
    if name not in caches:
        return [
            Error(
                f"QB_OAUTH['CACHE'] is {name!r}, which is not a key of CACHES.",
                hint="Name the cache that holds the QuickBooks API limits and counts "
                f"(one of {', '.join(sorted(caches)) or 'none configured'}).",
                id="qb_oauth.E013",
            )
        ]
    backend = str(caches[name].get("BACKEND", ""))
    if not settings.DEBUG and backend in _LOCAL_CACHES:
        return [
            Warning(
                f"QB_OAUTH['CACHE'] ({name!r}) is {backend.rsplit('.', 1)[-1]}: each process "
                "keeps its own QuickBooks API limits, so several processes together can "
                "exceed Intuit's limits (and meet 429s), and the API counts are per process.",
                hint="Point QB_OAUTH['CACHE'] at a cache every process shares (Redis or "
                "memcached), e.g. django.core.cache.backends.redis.RedisCache.",
                id="qb_oauth.W006",
            )
        ]
    return []

"""System checks: every misconfiguration has an id and a hint."""

import pytest
from django.core.checks import run_checks

from qb_oauth.conf import qb_settings

BASE = {"CLIENT_ID": "id", "CLIENT_SECRET": "secret", "WEBHOOK_VERIFIER_TOKEN": "verifier"}


def ids(**kwargs):
    found = run_checks()
    return sorted({m.id for m in found if m.id.startswith("qb_oauth.") and not m.is_silenced()})


def test_test_settings_are_clean():
    assert ids() == []


@pytest.mark.parametrize(
    "qb, expected",
    [
        ({}, "qb_oauth.E001"),
        ({"CLIENT_ID": "id"}, "qb_oauth.E001"),
        ({**BASE, "ENVIRONMENT": "staging"}, "qb_oauth.E002"),
        ({**BASE, "ENDPOINTS": {"token": "http://intuit.example.com/token"}}, "qb_oauth.E003"),
        ({**BASE, "DISCOVERY_URL": "http://intuit.example.com/.well-known"}, "qb_oauth.E003"),
        ({**BASE, "CLIENT_SCRET": "typo"}, "qb_oauth.E006"),
        ({**BASE, "ENDPOINTS": ["https://x"]}, "qb_oauth.E009"),
        ({**BASE, "ENDPOINTS": {"tokens": "https://x"}}, "qb_oauth.E010"),
        ({**BASE, "HTTP_TIMEOUT": 0}, "qb_oauth.E011"),
        ({**BASE, "REFRESH_MARGIN": -1}, "qb_oauth.E011"),
        ({**BASE, "SWEEP_CONCURRENCY": "many"}, "qb_oauth.E011"),
        ({**BASE, "BACKOFF_MAX": None}, "qb_oauth.E011"),
        ({**BASE, "HTTP_TIMEOUT": float("nan")}, "qb_oauth.E011"),
        ({**BASE, "SCOPES": 42}, "qb_oauth.E011"),
        ({**BASE, "REDIRECT_URI": "http://site.example.com/cb/"}, "qb_oauth.W003"),
    ],
)
def test_each_misconfiguration_has_its_id(settings, qb, expected):
    settings.QB_OAUTH = qb
    messages = [m for m in run_checks() if m.id == expected]
    assert messages, ids()
    assert all(m.hint for m in messages)


def test_loopback_http_is_allowed_for_the_fake(settings):
    settings.QB_OAUTH = {
        **BASE,
        "DISCOVERY_URL": "http://127.0.0.1:8765/.well-known/x",
        "ENDPOINTS": {"api_base": "http://localhost:8765/api"},
    }
    assert ids() == []


def test_non_loopback_http_is_refused_even_with_debug(settings):
    # DEBUG no longer lets plain http through (tests/test_transport_policy.py has the rest).
    settings.DEBUG = True
    settings.QB_OAUTH = {**BASE, "ENDPOINTS": {"token": "http://intuit.example.com/token"}}
    assert ids() == ["qb_oauth.E003"]


def test_qb_oauth_must_be_a_dict(settings):
    settings.QB_OAUTH = ["nope"]
    assert ids() == ["qb_oauth.E008"]


def test_one_id_per_problem(settings):
    # E006 once meant five things; each problem has its own id now, and one setting's bad
    # value does not hide another's.
    settings.QB_OAUTH = {
        **BASE,
        "TYPO": 1,
        "ENDPOINTS": {"tokens": "https://x"},
        "HTTP_TIMEOUT": "soon",
        "SWEEP_CHUNK_SIZE": 0,
    }
    messages = [m for m in run_checks() if m.id.startswith("qb_oauth.") and not m.is_silenced()]
    assert sorted(m.id for m in messages) == [
        "qb_oauth.E006",
        "qb_oauth.E010",
        "qb_oauth.E011",
        "qb_oauth.E011",
    ]
    texts = " ".join(m.msg for m in messages)
    assert "HTTP_TIMEOUT" in texts and "SWEEP_CHUNK_SIZE" in texts


def test_every_setting_is_in_the_table_once():
    from qb_oauth.conf import DEFAULTS, QBSettings

    names = [s.name for s in QBSettings.table()]
    assert len(names) == len(set(names)) == len(DEFAULTS)
    assert all(s.__doc__ for s in QBSettings.table())


def test_fernet_keys(settings):
    del settings.FERNET_KEYS
    assert ids() == ["qb_oauth.W001"]
    settings.FERNET_KEYS = []
    assert ids() == ["qb_oauth.E004"]
    settings.FERNET_KEYS = "a-string-not-a-list"
    assert ids() == ["qb_oauth.E004"]


def test_django_q_missing(settings):
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "django_q"]
    assert "qb_oauth.W002" in ids()


def test_session_middleware_missing(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "SessionMiddleware" not in m]
    assert "qb_oauth.E005" in ids()


def test_settings_are_read_lazily(settings):
    assert qb_settings.REFRESH_MARGIN == 300
    settings.QB_OAUTH = {**BASE, "REFRESH_MARGIN": 60}
    assert qb_settings.REFRESH_MARGIN == 60
    from datetime import timedelta

    settings.QB_OAUTH = {**BASE, "KEEPALIVE_AGE": timedelta(hours=12), "SCOPES": "a b"}
    assert qb_settings.KEEPALIVE_AGE == 43200
    assert qb_settings.SCOPES == ["a", "b"]


def test_webhook_url_included_without_a_verifier_token(settings):
    settings.QB_OAUTH = {"CLIENT_ID": "id", "CLIENT_SECRET": "secret"}
    messages = [m for m in run_checks() if m.id == "qb_oauth.W005"]
    assert len(messages) == 1 and "WEBHOOK_VERIFIER_TOKEN" in messages[0].hint
    assert "/quickbooks/webhooks/" in messages[0].msg


def test_webhook_url_not_included_needs_no_token(settings):
    settings.QB_OAUTH = {"CLIENT_ID": "id", "CLIENT_SECRET": "secret"}
    settings.ROOT_URLCONF = "tests.urls_without_qb_oauth"
    assert "qb_oauth.W005" not in ids()


@pytest.mark.parametrize("value", [["a", 3], 42, ["a", ""], {"a": 1}])
def test_webhook_verifier_token_of_the_wrong_kind(settings, value):
    settings.QB_OAUTH = {**BASE, "WEBHOOK_VERIFIER_TOKEN": value}
    found = [m for m in run_checks() if m.id == "qb_oauth.E011"]
    assert found and "WEBHOOK_VERIFIER_TOKEN" in found[0].msg
    assert "qb_oauth.W005" not in ids()


def test_webhook_verifier_token_list(settings):
    settings.QB_OAUTH = {**BASE, "WEBHOOK_VERIFIER_TOKEN": ["new", "old"]}
    assert ids() == []
    assert qb_settings.WEBHOOK_VERIFIER_TOKEN == ["new", "old"]


def test_the_limits_cache_must_exist(settings):
    settings.QB_OAUTH = {**BASE, "CACHE": "nowhere"}
    [message] = [m for m in run_checks() if m.id == "qb_oauth.E013"]
    assert "nowhere" in message.msg and "default" in message.hint


def test_a_process_local_limits_cache_is_warned_about_outside_debug(settings):
    settings.QB_OAUTH = dict(BASE)
    settings.DEBUG = False
    [message] = [m for m in run_checks() if m.id == "qb_oauth.W006"]
    assert "LocMemCache" in message.msg and message.hint
    settings.CACHES = {
        **settings.CACHES,
        "shared": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
        },
    }
    settings.QB_OAUTH = {**BASE, "CACHE": "shared"}
    assert not [m for m in run_checks() if m.id == "qb_oauth.W006"]
    settings.QB_OAUTH = dict(BASE)
    settings.DEBUG = True
    assert not [m for m in run_checks() if m.id == "qb_oauth.W006"]


@pytest.mark.parametrize("key", ["API_CONCURRENCY", "API_RATE_LIMIT", "API_MONTHLY_QUOTA"])
def test_bad_limit_numbers_are_e011(settings, key):
    settings.QB_OAUTH = {**BASE, key: 0}
    assert [m for m in run_checks() if m.id == "qb_oauth.E011" and key in m.msg]

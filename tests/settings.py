"""Settings of the test project.

``QB_TEST_DB=postgres`` runs the suite on PostgreSQL (127.0.0.1:5432, or
``QB_TEST_PG_HOST``/``QB_TEST_PG_PORT``/``QB_TEST_PG_USER``); anything else
runs it on SQLite (a file, so that threads and processes share it).
"""

import os
import tempfile

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
SECRET_KEY = "qb-oauth-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "qb_oauth",
    "tests.teams",  # the team adapter's tests (docs/ownership.md)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [os.path.join(BASE_DIR, "templates")],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

if os.environ.get("QB_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("QB_TEST_PG_NAME", "qb_oauth"),
            "USER": os.environ.get("QB_TEST_PG_USER", "postgres"),
            "HOST": os.environ.get("QB_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("QB_TEST_PG_PORT", "5432"),
            "CONN_MAX_AGE": 0,
            "TEST": {"NAME": os.environ.get("QB_TEST_PG_TEST_NAME", "test_qb_oauth")},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(tempfile.gettempdir(), "qb_oauth_tests.sqlite3"),
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
            "TEST": {
                "NAME": os.path.join(tempfile.gettempdir(), f"qb_oauth_test_{os.getpid()}.sqlite3")
            },
        }
    }

# Worker processes started by a test point at the test's own database.
if os.environ.get("QB_TEST_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["QB_TEST_DB_NAME"]

STATIC_URL = "/static/"
LOGIN_URL = "/accounts/login/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

FERNET_KEYS = ["qb-oauth-test-fernet-key-1"]

# The API limits live in the default cache, LocMem here (one process): the tests that
# run several processes point QB_OAUTH["CACHE"] at Redis. Hence the silenced warning.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SILENCED_SYSTEM_CHECKS = ["qb_oauth.W006"]

QB_OAUTH = {
    "CLIENT_ID": "qb-test-client",
    "CLIENT_SECRET": "qb-test-secret",
    "HTTP_TIMEOUT": 5,
    "WEBHOOK_VERIFIER_TOKEN": "qb-test-verifier-token",
    # Retries of the API's 429s and 503s pause for milliseconds, not seconds.
    "API_RETRY_BACKOFF": 0.01,
}

Q_CLUSTER = {
    "name": "qb_oauth_tests",
    "orm": "default",
    "workers": 2,
    "timeout": 60,
    "retry": 120,
    "sync": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"django-q": {"handlers": ["null"], "propagate": False}},
}

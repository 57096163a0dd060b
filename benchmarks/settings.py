"""Settings of the benchmarks: PostgreSQL when ``QB_BENCH_DB=postgres``, else SQLite.

The benchmark creates its own database (``qb_bench_*``) and drops it at the end.
"""

import os
import tempfile

SECRET_KEY = "qb-oauth-benchmarks-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_q",
    "qb_oauth",
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
FERNET_KEYS = ["qb-oauth-bench-fernet-key-1"]

if os.environ.get("QB_BENCH_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": os.environ.get("QB_TEST_PG_USER", "postgres"),
            "HOST": os.environ.get("QB_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("QB_TEST_PG_PORT", "5432"),
            "CONN_MAX_AGE": 0,
            "TEST": {"NAME": os.environ.get("QB_BENCH_DB_NAME", "qb_bench_sweep")},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(tempfile.gettempdir(), "qb_bench.sqlite3"),
            "OPTIONS": {"timeout": 60, "transaction_mode": "IMMEDIATE"},
            "TEST": {
                "NAME": os.path.join(tempfile.gettempdir(), f"qb_bench_{os.getpid()}.sqlite3")
            },
        }
    }

QB_OAUTH = {"CLIENT_ID": "qb-test-client", "CLIENT_SECRET": "qb-test-secret", "HTTP_TIMEOUT": 30}

# No cluster: the sweep refreshes here, on SWEEP_CONCURRENCY threads.
Q_CLUSTER = {"name": "qb_bench", "orm": "default", "sync": True, "timeout": 60, "retry": 120}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {
        "qb_oauth": {"handlers": ["null"], "propagate": False},
        "django-q": {"handlers": ["null"], "propagate": False},
    },
}

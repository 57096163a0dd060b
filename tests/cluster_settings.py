"""Settings of the qcluster processes that tests/test_cluster.py starts.

The test project's settings (PostgreSQL), pointed at the test's own database
and fake Intuit through the environment:

* ``QB_CLUSTER_DB_NAME``: the database the test uses (its test database);
* ``QB_CLUSTER_NAME``: the django-q2 cluster (and Redis queue) name, unique per run;
* ``QB_CLUSTER_QB_OAUTH``: the ``QB_OAUTH`` setting as JSON (the fake's URLs);
* ``QB_CLUSTER_REDIS_HOST`` / ``QB_CLUSTER_REDIS_PORT`` (default 127.0.0.1:6379);
* ``QB_CLUSTER_WEBHOOK_LOG``: a file every ``webhook_received`` is appended to
  (tests/webhook_counter), for test_webhooks_cluster.py.
"""

import json
import os

os.environ.setdefault("QB_TEST_DB", "postgres")

from tests.settings import *  # noqa: E402,F403
from tests.settings import DATABASES, INSTALLED_APPS, QB_OAUTH  # noqa: E402

DATABASES["default"]["NAME"] = os.environ["QB_CLUSTER_DB_NAME"]
DATABASES["default"]["TEST"] = {"NAME": os.environ["QB_CLUSTER_DB_NAME"]}

if os.environ.get("QB_CLUSTER_WEBHOOK_LOG"):
    INSTALLED_APPS = [*INSTALLED_APPS, "tests.webhook_counter.apps.WebhookCounterConfig"]

QB_OAUTH = {**QB_OAUTH, **json.loads(os.environ.get("QB_CLUSTER_QB_OAUTH", "{}"))}

Q_CLUSTER = {
    "name": os.environ.get("QB_CLUSTER_NAME", "qb_oauth_cluster_test"),
    "redis": {
        "host": os.environ.get("QB_CLUSTER_REDIS_HOST", "127.0.0.1"),
        "port": int(os.environ.get("QB_CLUSTER_REDIS_PORT", "6379")),
        "db": 0,
    },
    "workers": int(os.environ.get("QB_CLUSTER_WORKERS", "2")),
    "timeout": 90,
    "retry": 120,
    "save_limit": 0,
    "scheduler": False,
    "catch_up": False,
    "sync": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "qb_oauth": {"handlers": ["console"], "level": "INFO"},
        "django-q": {"handlers": ["console"], "level": "INFO"},
    },
}

"""Settings of the example site: SQLite, the admin, django-q2 on the ORM broker, qb_oauth.

By default it talks to the fake Intuit of ``qb_oauth.testing`` at
``QB_FAKE_INTUIT_URL`` (default http://127.0.0.1:8765, where
``manage.py qb_fake_intuit`` serves it; run_demo.py starts one and sets this).
With ``QB_CLIENT_ID`` and ``QB_CLIENT_SECRET`` in the environment it talks to
Intuit's real sandbox with those keys instead (register
http://localhost:8000/quickbooks/callback/ as a redirect URI of your app, and
open the site at http://localhost:8000/).

With ``QB_DEMO_ORGANIZATIONS=1`` the site runs in organization mode: companies belong
to an organization, shared by its members (example_project/organizations,
docs/ownership.md); run_demo.py then also creates a second member.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "qb_oauth",
    # Always installed, so that switching the mode on and off needs no migration dance.
    "example_project.organizations",
]

QB_DEMO_ORGANIZATIONS = os.environ.get("QB_DEMO_ORGANIZATIONS") == "1"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The site's templates come first: templates/qb_oauth/base.html puts qb_oauth's
        # pages inside the site's layout.
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("QB_EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
        # The site and the django-q2 cluster write at the same time: wait for the lock.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "/static/"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# The key that encrypts the stored tokens. Any real site keeps it apart from SECRET_KEY.
FERNET_KEYS = [os.environ.get("QB_FERNET_KEY", "example-project-fernet-key-not-a-secret")]

#: The fake Intuit signs the demo's webhooks with this (run_demo.py gives it the same).
DEMO_WEBHOOK_VERIFIER_TOKEN = "example-webhook-verifier-not-a-secret"

if os.environ.get("QB_CLIENT_ID") and os.environ.get("QB_CLIENT_SECRET"):
    QB_INTUIT = "Intuit's sandbox"
    QB_OAUTH = {
        "CLIENT_ID": os.environ["QB_CLIENT_ID"],
        "CLIENT_SECRET": os.environ["QB_CLIENT_SECRET"],
        "ENVIRONMENT": os.environ.get("QB_ENVIRONMENT", "sandbox"),
    }
    if os.environ.get("QB_REDIRECT_URI"):
        QB_OAUTH["REDIRECT_URI"] = os.environ["QB_REDIRECT_URI"]
    if os.environ.get("QB_WEBHOOK_VERIFIER_TOKEN"):  # your app's Webhooks page at Intuit
        QB_OAUTH["WEBHOOK_VERIFIER_TOKEN"] = os.environ["QB_WEBHOOK_VERIFIER_TOKEN"]
else:
    from qb_oauth.testing import FakeIntuit

    QB_INTUIT = "the fake Intuit"
    QB_FAKE_INTUIT_URL = os.environ.get("QB_FAKE_INTUIT_URL", "http://127.0.0.1:8765")
    # The settings that point qb_oauth at a fake served there (its discovery URL and API).
    QB_OAUTH = FakeIntuit(
        base_url=QB_FAKE_INTUIT_URL, webhook_verifier_token=DEMO_WEBHOOK_VERIFIER_TOKEN
    ).qb_oauth_settings()
    # Plain http to loopback needs no OAUTHLIB_INSECURE_TRANSPORT: qb_oauth allows it.

if QB_DEMO_ORGANIZATIONS:
    QB_OAUTH["ADAPTER"] = "example_project.organizations.adapter.OrganizationAdapter"

Q_CLUSTER = {
    "name": "qb_oauth_example",
    "orm": "default",
    "workers": 2,
    "timeout": 60,
    "retry": 120,
    "catch_up": False,
    "label": "Django Q2",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"mask_oauth": {"()": "example_project.log.MaskOAuthQuery"}},
    "formatters": {
        "server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "server": {
            "class": "logging.StreamHandler",
            "formatter": "server",
            "filters": ["mask_oauth"],
        },
    },
    "loggers": {
        "qb_oauth": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # runserver's request lines, with Intuit's one-time code and the state masked.
        "django.server": {"handlers": ["server"], "level": "INFO", "propagate": False},
    },
}

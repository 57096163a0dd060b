"""Fixtures of the test project: users, and connections made through the fake Intuit."""

import os

import pytest

from qb_oauth import client

pytest_plugins = ["qb_oauth.testing.pytest_plugin"]

CALLBACK = "http://testserver/quickbooks/callback/"


def pytest_report_header(config):
    from django.conf import settings

    return f"qb_oauth tests on {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"


@pytest.fixture(autouse=True)
def _fresh_discovery_cache():
    client.clear_discovery_cache()
    yield
    client.clear_discovery_cache()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw-alice")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("mallory", "mallory@example.com", "pw-mallory")


@pytest.fixture
def connect_realm(fake_intuit):
    """Connect ``user`` to a realm of the fake through the real code path (consent, exchange)."""
    from qb_oauth import tokens

    def make(user, realm_id=None, scopes=None):
        realm_id = realm_id or fake_intuit.companies[0].realm_id
        url = client.authorization_url(
            state="s-" + os.urandom(4).hex(), redirect_uri=CALLBACK, scopes=scopes
        )
        redirect = fake_intuit.consent(url, realm_id=realm_id)
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(redirect).query)
        connection, _created = tokens.connect(
            user=user,
            code=query["code"][0],
            realm_id=query["realmId"][0],
            redirect_uri=CALLBACK,
            scopes=scopes,
        )
        return connection

    return make


@pytest.fixture(autouse=True)
def _fresh_cache():
    """The API limits and counts live in the (LocMem) default cache: none leak between tests."""
    from django.core.cache import caches

    caches["default"].clear()
    yield

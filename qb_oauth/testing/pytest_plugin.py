"""pytest fixtures serving the fake Intuit.

Enable with ``pytest_plugins = ["qb_oauth.testing.pytest_plugin"]`` in a
conftest.py. Works with or without pytest-django: where Django is configured
and pytest-django's ``settings`` fixture exists, the fixtures also point
``settings.QB_OAUTH`` at the fake (keeping the site's other QB_OAUTH keys).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake import FakeIntuit
from .server import FakeIntuitServer

REDIRECT_URIS = (
    "http://testserver/quickbooks/callback/",
    "http://localhost/quickbooks/callback/",
)


def _point_settings_at(request: pytest.FixtureRequest, fake: FakeIntuit) -> None:
    try:
        from django.conf import settings as django_settings

        if not django_settings.configured:
            return
        settings = request.getfixturevalue("settings")
    except (ImportError, pytest.FixtureLookupError):
        return
    current = dict(getattr(settings, "QB_OAUTH", None) or {})
    redirect_uri = current.get("REDIRECT_URI")
    if redirect_uri and redirect_uri not in fake.redirect_uris:
        fake.redirect_uris.append(redirect_uri)
    current.update(fake.qb_oauth_settings())
    settings.QB_OAUTH = current


def _allow_plain_http(request: pytest.FixtureRequest) -> None:
    # The in-process fake's http://fake-intuit.test is not loopback: oauthlib (and
    # qb_oauth's own sessions) refuse it over plain http unless told otherwise.
    request.getfixturevalue("monkeypatch").setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture
def fake_intuit(request: pytest.FixtureRequest) -> Iterator[FakeIntuit]:
    """A FakeIntuit served over HTTP on a free loopback port for the test.

    Loopback http needs no ``OAUTHLIB_INSECURE_TRANSPORT``: qb_oauth's sessions allow it.
    """
    fake = FakeIntuit(redirect_uris=REDIRECT_URIS)
    with FakeIntuitServer(fake):
        _point_settings_at(request, fake)
        yield fake


@pytest.fixture
def fake_intuit_inprocess(request: pytest.FixtureRequest) -> Iterator[FakeIntuit]:
    """A FakeIntuit at http://fake-intuit.test, reached in-process by every requests session."""
    _allow_plain_http(request)
    fake = FakeIntuit(redirect_uris=REDIRECT_URIS)
    with fake.mounted():
        _point_settings_at(request, fake)
        yield fake

"""The API session sends the connection's token to the Accounting API's origin only.

A second HTTP server on loopback (``RecordingServer``) plays a stranger's host
and records whether a bearer token reached it. The fake Intuit cannot answer its
API with a redirect (its faults are statuses, malformed bodies, timeouts and
resets), so the redirect tests put a small redirecting server where the API is.
"""

from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from qb_oauth.exceptions import IntuitError, IntuitUnavailable
from qb_oauth.models import QuickBooksConnection

from .local_servers import RecordingServer

pytestmark = pytest.mark.django_db

FAULT_401 = {"fault": {"error": [{"message": "AuthenticationFailed", "code": "3200"}]}}


@pytest.fixture
def connection(fake_intuit, connect_realm, user):
    return connect_realm(user)


@pytest.fixture
def stranger():
    with RecordingServer(status=401).json(FAULT_401) as server:
        yield server


def expire_and_forget_use(connection):
    """Make any token read observable: a read would refresh (expired) and record use."""
    QuickBooksConnection.objects.filter(pk=connection.pk).update(
        access_token_expires_at=timezone.now(), last_used_at=None
    )
    connection.refresh_from_db()


def other_hosts(stranger, fake):
    api = urlsplit(fake.api_base)
    port = stranger.port
    return [
        stranger.url("/x"),  # the API's host, another port
        f"HTTP://127.0.0.1:{port}/x",
        stranger.url("/x", host="localhost"),
        f"//localhost:{port}/x",  # a network-path reference: urljoin keeps its host
        f"https://{api.netloc}/x",  # the API's host and port, another scheme
        f"http://localhost:{port}\\@{api.netloc}/x",  # urlsplit and requests disagree here
        f" http://localhost:{port}/x",
        "https://evil.invalid/v3/company/1/companyinfo/1",
        "ftp://127.0.0.1/x",
    ]


@pytest.mark.parametrize("index", range(9))
def test_a_url_off_the_api_origin_is_refused_before_anything(
    connection, fake_intuit, stranger, index
):
    url = other_hosts(stranger, fake_intuit)[index]
    expire_and_forget_use(connection)
    token_calls = fake_intuit.counts["token"]
    with connection.api_session() as session:
        with pytest.raises(ValueError) as caught:
            session.get(url)
    message = str(caught.value)
    refused = urlsplit(url.strip().replace("\\", "/")).scheme or "http"
    assert refused.lower() in message
    assert connection.access_token not in message and connection.refresh_token not in message
    assert stranger.received == []  # nothing sent, so no token either
    assert fake_intuit.counts["token"] == token_calls  # no refresh
    connection.refresh_from_db()
    assert connection.last_used_at is None  # no token read


def test_the_refused_host_is_named(connection, stranger):
    with connection.api_session() as session:
        with pytest.raises(ValueError, match=rf"http://localhost:{stranger.port}\b"):
            session.get(stranger.url("/secret/path?q=1", host="localhost"))


def test_the_api_origin_spelled_otherwise_is_accepted(connection, fake_intuit):
    api = urlsplit(fake_intuit.api_base)
    shouting = f"HTTP://{api.netloc.upper()}{api.path}/v3/company/{connection.realm_id}"
    with connection.api_session() as session:
        response = session.get(f"{shouting}/companyinfo/{connection.realm_id}")
        assert response.status_code == 200
        assert session.get(f"/companyinfo/{connection.realm_id}").status_code == 200
        assert session.get(f"companyinfo/{connection.realm_id}").status_code == 200


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://quickbooks.example.invalid:443/v3/company/1/companyinfo/1", True),
        ("HTTPS://QUICKBOOKS.EXAMPLE.INVALID/v3/company/1/companyinfo/1", True),
        ("https://quickbooks.example.invalid:8443/v3/company/1/companyinfo/1", False),
        ("http://quickbooks.example.invalid:443/v3/company/1/companyinfo/1", False),
    ],
)
def test_default_ports_are_normalised(connection, settings, url, allowed):
    settings.QB_OAUTH = {
        **settings.QB_OAUTH,
        "ENDPOINTS": {
            **settings.QB_OAUTH["ENDPOINTS"],
            "api_base": "https://quickbooks.example.invalid",
        },
    }
    with connection.api_session() as session:
        # Allowed: it goes out (and finds no such host). Refused: it never goes out.
        with pytest.raises(IntuitUnavailable if allowed else ValueError):
            session.get(url)


@pytest.mark.parametrize("target_host", ["127.0.0.1", "localhost"])
def test_a_redirect_off_the_api_carries_no_token_and_its_401_refreshes_nothing(
    connection, fake_intuit, stranger, settings, target_host
):
    with RecordingServer(status=302) as api:
        api.headers = {"Location": stranger.url("/landing", host=target_host)}
        settings.QB_OAUTH = {
            **settings.QB_OAUTH,
            "ENDPOINTS": {**settings.QB_OAUTH["ENDPOINTS"], "api_base": api.url("")},
        }
        token_calls = fake_intuit.counts["token"]
        with connection.api_session() as session:
            response = session.get(f"companyinfo/{connection.realm_id}")
    assert api.authorizations == [f"Bearer {connection.access_token}"]
    # requests drops Authorization when a redirect changes the host or the port.
    assert stranger.authorizations == [None]
    assert response.status_code == 401  # the stranger's, handed back as it is
    assert fake_intuit.counts["token"] == token_calls  # only Intuit's 401 forces a refresh


def test_intuits_own_401_still_refreshes_once(connection, fake_intuit):
    token_calls = fake_intuit.counts["token.refresh_token"]
    fake_intuit.clock.advance(3700)  # the access token is dead at Intuit, not yet here
    with connection.api_session() as session:
        response = session.get(f"companyinfo/{connection.realm_id}")
    assert response.status_code == 200
    assert fake_intuit.counts["token.refresh_token"] == token_calls + 1


@pytest.mark.parametrize(
    "status, body, error",
    [
        (429, b"<Fault>ThrottleExceeded</Fault>", IntuitUnavailable),
        (503, b"", IntuitUnavailable),
        (404, b'{"fault": {"error": [{"message": "Not found", "code": "610"}]}}', IntuitError),
        (200, b"[]", IntuitUnavailable),
    ],
)
def test_json_or_raise_classifies_as_the_client_does(connection, settings, status, body, error):
    with RecordingServer(status=status, body=body) as api:
        settings.QB_OAUTH = {
            **settings.QB_OAUTH,
            "ENDPOINTS": {**settings.QB_OAUTH["ENDPOINTS"], "api_base": api.url("")},
        }
        with connection.api_session() as session:
            # A 429 or 503 still there after the retries is raised by the call itself.
            with pytest.raises(error) as caught:
                response = session.get(f"companyinfo/{connection.realm_id}")
                session.json_or_raise(response, "CompanyInfo")
    assert caught.value.status == status
    assert isinstance(caught.value, IntuitUnavailable) == (error is IntuitUnavailable)
    assert connection.access_token not in str(caught.value)


def test_a_positional_argument_is_refused_before_any_token_is_read(connection, fake_intuit):
    expire_and_forget_use(connection)
    token_calls = fake_intuit.counts["token"]
    with connection.api_session() as session:
        with pytest.raises(TypeError):
            session.request("GET", f"companyinfo/{connection.realm_id}", {"q": "1"})
    assert fake_intuit.counts["token"] == token_calls  # no refresh
    connection.refresh_from_db()
    assert connection.last_used_at is None  # no token read

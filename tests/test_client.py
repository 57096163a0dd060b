"""qb_oauth.client: endpoints, discovery, headers and error mapping, against the fake."""

from urllib.parse import parse_qs, urlsplit

import pytest

from qb_oauth import __version__, client
from qb_oauth.conf import INTUIT_ENDPOINTS
from qb_oauth.exceptions import IntuitError, IntuitUnavailable, ReauthorizationRequired

from .local_servers import RecordingServer

CALLBACK = "http://testserver/quickbooks/callback/"
FAULT_401 = {"fault": {"error": [{"message": "AuthenticationFailed", "code": "3200"}]}}


def exchange(fake, realm_id=None, scopes=None):
    url = client.authorization_url(state="st", redirect_uri=CALLBACK, scopes=scopes)
    redirect = fake.consent(url, realm_id=realm_id or fake.companies[0].realm_id)
    code = parse_qs(urlsplit(redirect).query)["code"][0]
    return client.exchange_code(code=code, redirect_uri=CALLBACK)


def test_intuit_endpoints_without_discovery(settings):
    settings.QB_OAUTH = {"CLIENT_ID": "a", "CLIENT_SECRET": "b", "ENVIRONMENT": "production"}
    assert client.endpoints() == {
        k: v for k, v in INTUIT_ENDPOINTS["production"].items() if k != "discovery"
    }
    assert client.api_base("sandbox") == "https://sandbox-quickbooks.api.intuit.com"


def test_endpoint_overrides_win_over_discovery(fake_intuit, settings):
    settings.QB_OAUTH = {
        **settings.QB_OAUTH,
        "ENDPOINTS": {**settings.QB_OAUTH["ENDPOINTS"], "revocation": "https://example.com/revoke"},
    }
    eps = client.endpoints()
    assert eps["revocation"] == "https://example.com/revoke"
    assert eps["token"] == fake_intuit.token_url


def test_discovery_is_fetched_once(fake_intuit):
    for _ in range(5):
        client.endpoints()
    assert fake_intuit.counts["discovery"] == 1


def test_authorization_url_carries_intuit_parameters(fake_intuit, settings):
    url = client.authorization_url(
        state="abc", redirect_uri=CALLBACK, scopes=["com.intuit.quickbooks.accounting", "openid"]
    )
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert url.startswith(fake_intuit.authorization_url)
    assert query["client_id"] == ["qb-test-client"]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == [CALLBACK]
    assert query["state"] == ["abc"]
    assert query["scope"] == ["com.intuit.quickbooks.accounting openid"]
    assert "code_challenge" not in query


def test_exchange_sends_user_agent_and_hard_expiry_header(fake_intuit):
    tokens = exchange(fake_intuit)
    assert tokens.refresh_token_hard_expires_in and tokens.refresh_token_hard_expires_in > 0
    assert tokens.intuit_tid
    assert tokens.access_token not in repr(tokens) and tokens.refresh_token not in repr(tokens)
    sent = client.send(client.http_session(), "GET", fake_intuit.discovery_url)
    assert sent.request.headers["User-Agent"].startswith(f"qb_oauth/{__version__} ")


def test_used_code_is_invalid_grant(fake_intuit):
    url = client.authorization_url(state="st", redirect_uri=CALLBACK)
    code = parse_qs(urlsplit(fake_intuit.consent(url)).query)["code"][0]
    client.exchange_code(code=code, redirect_uri=CALLBACK)
    with pytest.raises(ReauthorizationRequired):
        client.exchange_code(code=code, redirect_uri=CALLBACK)


def test_wrong_secret_is_intuit_error_not_reauth(fake_intuit, settings):
    tokens = exchange(fake_intuit)
    settings.QB_OAUTH = {**settings.QB_OAUTH, "CLIENT_SECRET": "nope"}
    with pytest.raises(IntuitError) as info:
        client.refresh_tokens(tokens.refresh_token)
    assert not isinstance(info.value, ReauthorizationRequired)
    assert "invalid_client" in str(info.value)
    assert tokens.refresh_token not in str(info.value)


def test_outage_keeps_intuit_tid(fake_intuit):
    tokens = exchange(fake_intuit)
    fake_intuit.inject_fault("token", "503")
    with pytest.raises(IntuitUnavailable) as info:
        client.refresh_tokens(tokens.refresh_token)
    assert info.value.status == 503
    assert info.value.intuit_tid
    assert f"intuit_tid={info.value.intuit_tid}" in info.value.describe()


def test_unreachable_intuit_is_unavailable(settings):
    settings.QB_OAUTH = {
        "CLIENT_ID": "a",
        "CLIENT_SECRET": "b",
        "HTTP_TIMEOUT": 1,
        "ENDPOINTS": {"token": "http://127.0.0.1:9/token"},
    }
    with pytest.raises(IntuitUnavailable):
        client.refresh_tokens("RT1-anything")


def test_revoke_of_unknown_token_is_not_an_error(fake_intuit):
    client.revoke_token("RT1-not-a-token")
    tokens = exchange(fake_intuit)
    client.revoke_token(tokens.refresh_token)
    with pytest.raises(ReauthorizationRequired):
        client.refresh_tokens(tokens.refresh_token)


def test_userinfo_and_id_token(fake_intuit):
    tokens = exchange(fake_intuit, scopes=["com.intuit.quickbooks.accounting", "openid", "email"])
    claims = client.verify_id_token(tokens.id_token)
    assert claims.realm_id == fake_intuit.companies[0].realm_id
    info = client.userinfo(tokens.access_token)
    assert info["sub"] == claims.sub and "email" in info


def test_forged_id_token_is_refused(fake_intuit):
    import jwt

    forged = jwt.encode(
        {"sub": "x", "aud": ["qb-test-client"]},
        "a-secret-of-at-least-thirty-two-bytes",
        algorithm="HS256",
    )
    with pytest.raises(IntuitError):
        client.verify_id_token(forged)


def test_company_info(fake_intuit):
    tokens = exchange(fake_intuit)
    realm = fake_intuit.companies[0].realm_id
    assert (
        client.company_info(tokens.access_token, realm)["CompanyName"]
        == fake_intuit.companies[0].name
    )


def test_in_process_fake_goes_through_the_same_client(fake_intuit_inprocess):
    tokens = exchange(fake_intuit_inprocess)
    again = client.refresh_tokens(tokens.refresh_token)
    assert again.access_token != tokens.access_token
    assert fake_intuit_inprocess.counts["token.refresh_token"] == 1


def test_requests_oauthlib_debug_logs_are_dropped(fake_intuit, caplog):
    import logging

    with caplog.at_level(logging.DEBUG):
        tokens = exchange(fake_intuit)
        client.refresh_tokens(tokens.refresh_token)
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in fake_intuit.issued_tokens():
        assert secret not in text


def test_api_401_error_keeps_message_and_code_not_detail(fake_intuit):
    token = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..not-a-live-token"
    realm = fake_intuit.companies[0].realm_id
    with pytest.raises(IntuitError) as info:
        client.company_info(token, realm)
    assert info.value.status == 401
    assert "AuthenticationFailed" in str(info.value)
    assert token[:12] not in str(info.value)


TOKEN_ANSWER = {
    "token_type": "bearer",
    "access_token": "eyJ-access",
    "refresh_token": "RT1-rotated",
    "expires_in": 3600,
    "x_refresh_token_expires_in": 8726400,
}


@pytest.fixture
def token_server(settings):
    with RecordingServer().json(TOKEN_ANSWER) as server:
        settings.QB_OAUTH = {
            "CLIENT_ID": "a",
            "CLIENT_SECRET": "b",
            "ENDPOINTS": {"token": server.url("/token")},
        }
        yield server


def test_each_token_answer_brings_back_its_own_intuit_tid(token_server):
    token_server.headers = {"Content-Type": "application/json", "intuit_tid": "1-first"}
    first = client.refresh_tokens("RT1-anything")
    token_server.headers = {"Content-Type": "application/json", "intuit-tid": "1-second"}
    second = client.refresh_tokens("RT1-anything")
    token_server.headers = {"Content-Type": "application/json"}
    third = client.refresh_tokens("RT1-anything")
    assert (first.intuit_tid, second.intuit_tid, third.intuit_tid) == ("1-first", "1-second", None)
    assert first.refresh_token == "RT1-rotated" and first.expires_in == 3600


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_an_outage_is_one_rule_for_the_token_endpoint_and_every_other_answer(token_server, status):
    token_server.status = status
    token_server.body = b"<Fault>ThrottleExceeded</Fault>"  # a 429 may come as XML
    token_server.headers = {"Content-Type": "application/xml", "intuit_tid": "1-busy"}
    assert client.is_outage(status)
    with pytest.raises(IntuitUnavailable) as from_token:
        client.refresh_tokens("RT1-anything")
    answer = client.send(client.http_session(), "GET", token_server.url("/other"))
    with pytest.raises(IntuitUnavailable) as from_other:
        client.raise_for_status(answer, "other endpoint")
    for caught in (from_token.value, from_other.value):
        assert (caught.status, caught.intuit_tid) == (status, "1-busy")


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_error_statuses_are_not_outages(token_server, status):
    token_server.status = status
    token_server.json(FAULT_401 if status == 401 else {"error": "invalid_request"})
    assert not client.is_outage(status)
    answer = client.send(client.http_session(), "GET", token_server.url("/other"))
    with pytest.raises(IntuitError) as caught:
        client.raise_for_status(answer, "other endpoint")
    assert not isinstance(caught.value, IntuitUnavailable)
    assert caught.value.status == status
    client.raise_for_status(answer, "other endpoint", ok=(status,))  # accepted: no error


def test_json_body_is_an_object_or_an_outage(token_server):
    token_server.body = b"[1, 2]"
    answer = client.send(client.http_session(), "GET", token_server.url("/list"))
    with pytest.raises(IntuitUnavailable, match="malformed list"):
        client.json_body(answer, "list")
    token_server.json({"ok": True})
    answer = client.send(client.http_session(), "GET", token_server.url("/object"))
    assert client.json_body(answer, "object") == {"ok": True}


@pytest.mark.parametrize(
    "info, name",
    [
        ({"CompanyName": "Craig's Design", "LegalName": "Craig's Design LLC"}, "Craig's Design"),
        ({"CompanyName": "", "LegalName": "Craig's Design LLC"}, "Craig's Design LLC"),
        ({"LegalName": "Craig's Design LLC"}, "Craig's Design LLC"),
        ({"CompanyName": None, "LegalName": None}, ""),
        ({}, ""),
    ],
)
def test_company_name_is_company_name_then_legal_name(info, name):
    assert client.company_name(info) == name

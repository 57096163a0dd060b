"""The fake Intuit itself: every protocol behaviour, in-process and over real HTTP."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests

from qb_oauth.testing import (
    Company,
    FakeClock,
    FakeIntuit,
    FakeIntuitError,
    FakeIntuitServer,
)

CALLBACK = "http://testserver/quickbooks/callback/"
ACCOUNTING = "com.intuit.quickbooks.accounting"
T0 = 1_800_000_000.0
DAY = 86400


@pytest.fixture
def fake():
    return FakeIntuit(clock=FakeClock(T0, frozen=True), seed=7)


@pytest.fixture(params=["inprocess", "server"])
def mode(request):
    return request.param


@pytest.fixture
def http(fake, mode):
    """A requests session reaching ``fake`` in-process or over a real socket."""
    session = requests.Session()
    if mode == "inprocess":
        session.mount(fake.base_url, fake.adapter())
        yield session
    else:
        with FakeIntuitServer(fake):
            yield session
    session.close()


def auth_url(fake, scopes=(ACCOUNTING,), state="st-1", **extra):
    params = {
        "client_id": fake.client_id,
        "response_type": "code",
        "scope": " ".join(scopes),
        "redirect_uri": CALLBACK,
    }
    if state is not None:
        params["state"] = state
    params.update(extra)
    return fake.authorization_url + "?" + urlencode(params)


def query_of(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def get_code(fake, scopes=(ACCOUNTING,), realm_id=None):
    q = query_of(fake.consent(auth_url(fake, scopes), realm_id=realm_id))
    return q["code"], q.get("realmId")


def token_post(http, fake, data, auth="basic", headers=None):
    kwargs = {"data": data, "headers": dict(headers or {}), "timeout": 5}
    if auth == "basic":
        kwargs["auth"] = (fake.client_id, fake.client_secret)
    elif auth == "post":
        kwargs["data"] = {**data, "client_id": fake.client_id, "client_secret": fake.client_secret}
    return http.post(fake.token_url, **kwargs)


def connect(http, fake, scopes=(ACCOUNTING,), realm_id=None, headers=None):
    code, realm = get_code(fake, scopes, realm_id)
    r = token_post(
        http,
        fake,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json(), realm


def refresh(http, fake, refresh_token, **kw):
    return token_post(
        http, fake, {"grant_type": "refresh_token", "refresh_token": refresh_token}, **kw
    )


def company_info(http, fake, token, realm, accept_json=True, base=None, pk=None):
    headers = {"Authorization": f"Bearer {token}"}
    if accept_json:
        headers["Accept"] = "application/json"
    base = base or fake.api_base
    url = f"{base}/v3/company/{realm}/companyinfo/{pk or realm}?minorversion=75"
    return http.get(url, headers=headers, timeout=5)


# ---------------------------------------------------------------- discovery


def test_discovery_documents(http, fake):
    for url, env in ((fake.discovery_url, "production"), (fake.sandbox_discovery_url, "sandbox")):
        r = http.get(url)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["intuit_tid"]
        doc = r.json()
        assert doc["issuer"] == fake.issuer
        assert doc["authorization_endpoint"] == fake.authorization_url
        assert doc["token_endpoint"] == fake.token_url
        assert doc["revocation_endpoint"] == fake.revocation_url
        assert doc["jwks_uri"] == fake.jwks_url
        assert doc["userinfo_endpoint"] == fake.userinfo_url_for(env)
        assert doc["response_types_supported"] == ["code"]
        assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
        assert set(doc["token_endpoint_auth_methods_supported"]) == {
            "client_secret_post",
            "client_secret_basic",
        }
        assert "realmid" in doc["claims_supported"]
    assert fake.discovery_url_for("sandbox") == fake.sandbox_discovery_url
    # intuit-oauth's own URLs end with a slash
    assert http.get(fake.discovery_url + "/").status_code == 200
    assert fake.userinfo_url == fake.userinfo_url_for("sandbox")


def test_urls_follow_base_url_and_settings(fake):
    assert fake.authorization_url == "http://fake-intuit.test/connect/oauth2"
    assert fake.token_url == "http://fake-intuit.test/oauth2/v1/tokens/bearer"
    assert fake.revocation_url == "http://fake-intuit.test/v2/oauth2/tokens/revoke"
    assert fake.api_base != fake.api_base_for("production")
    conf = fake.qb_oauth_settings(SCOPES=["openid"])
    assert conf == {
        "CLIENT_ID": "qb-test-client",
        "CLIENT_SECRET": "qb-test-secret",
        "ENVIRONMENT": "sandbox",
        "DISCOVERY_URL": fake.sandbox_discovery_url,
        "ENDPOINTS": {"api_base": fake.api_base},
        "SCOPES": ["openid"],
    }
    with FakeIntuitServer(fake) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert fake.discovery_url.startswith(server.url)
    assert fake.base_url == "http://fake-intuit.test"


def test_default_companies_have_numeric_realm_ids(fake):
    assert len(fake.companies) == 3
    for company in fake.companies:
        assert re.fullmatch(r"\d{16,19}", company.realm_id)
        assert company.name
    with pytest.raises(ValueError):
        Company("abc", "Not numeric")


# ---------------------------------------------------------------- authorize


def test_consent_page_lists_companies_and_buttons(http, fake):
    r = http.get(auth_url(fake, state="<st&1>"))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    html = r.text
    for company in fake.companies:
        assert f'name="realm_id" value="{company.realm_id}"' in html
        assert f'<label for="realm-{company.realm_id}">' in html
        assert company.name in html
    assert ">Connect</button>" in html
    assert ">Cancel</button>" in html
    assert 'method="post"' in html
    assert 'value="&lt;st&amp;1&gt;"' in html  # the state, escaped, posted back
    assert "<st&1>" not in html


def test_consent_post_connect_and_cancel(http, fake):
    form = query_of(auth_url(fake))
    realm = fake.companies[1].realm_id
    r = http.post(
        fake.authorization_url,
        data={**form, "realm_id": realm, "action": "connect"},
        allow_redirects=False,
    )
    assert r.status_code == 302
    location = r.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    q = query_of(location)
    assert q["state"] == "st-1" and q["realmId"] == realm and len(q["code"]) >= 40

    r = http.post(fake.authorization_url, data={**form, "action": "cancel"}, allow_redirects=False)
    assert r.status_code == 302
    assert query_of(r.headers["Location"]) == {"error": "access_denied", "state": "st-1"}


def test_consent_helper(fake):
    redirect = fake.consent(auth_url(fake), realm_id=fake.companies[2].realm_id)
    q = query_of(redirect)
    assert set(q) == {"code", "state", "realmId"}
    assert q["realmId"] == fake.companies[2].realm_id
    assert query_of(fake.consent(auth_url(fake)))["realmId"] == fake.companies[0].realm_id
    cancelled = fake.consent(auth_url(fake), action="cancel")
    assert query_of(cancelled) == {"error": "access_denied", "state": "st-1"}
    no_state = fake.consent(auth_url(fake, state=None))
    assert "state" not in query_of(no_state)
    with pytest.raises(FakeIntuitError) as err:
        fake.consent(auth_url(fake), realm_id="1234567890123456")
    assert err.value.error == "invalid_request"
    assert fake.counts["authorize"] == 5


def test_unknown_client_or_redirect_uri_shows_error_page(http, fake):
    bad_client = auth_url(fake, client_id="someone-else")
    r = http.get(bad_client, allow_redirects=False)
    assert r.status_code == 400 and "Location" not in r.headers
    assert "invalid_client" in r.text
    for uri in (CALLBACK.rstrip("/"), "http://evil.example/quickbooks/callback/", ""):
        r = http.get(auth_url(fake, redirect_uri=uri), allow_redirects=False)
        assert r.status_code == 400 and "Location" not in r.headers
        assert "redirect_uri" in r.text
        with pytest.raises(FakeIntuitError) as err:
            fake.consent(auth_url(fake, redirect_uri=uri))
        assert err.value.error == "invalid_redirect_uri"
    with pytest.raises(FakeIntuitError) as err:
        fake.consent(bad_client)
    assert err.value.error == "invalid_client"
    fake.redirect_uris.append("https://site.example/qb/cb/")
    assert fake.consent(auth_url(fake, redirect_uri="https://site.example/qb/cb/")).startswith(
        "https://site.example/qb/cb/?code="
    )


def test_bad_scope_or_response_type_redirects_with_error(http, fake):
    r = http.get(auth_url(fake, scopes=(ACCOUNTING, "com.intuit.secret")), allow_redirects=False)
    assert r.status_code == 302
    assert query_of(r.headers["Location"]) == {"error": "invalid_scope", "state": "st-1"}
    assert query_of(fake.consent(auth_url(fake, scopes=("nope",))))["error"] == "invalid_scope"
    r = http.get(auth_url(fake, response_type="token"), allow_redirects=False)
    assert query_of(r.headers["Location"])["error"] == "unsupported_response_type"


def test_openid_only_consent_has_no_company(http, fake):
    r = http.get(auth_url(fake, scopes=("openid", "email")))
    assert 'name="realm_id"' not in r.text
    q = query_of(fake.consent(auth_url(fake, scopes=("openid", "email"))))
    assert "realmId" not in q and q["code"]


# -------------------------------------------------------------------- token

RT_RE = re.compile(r"RT1-206-H0-\d{10}[a-z0-9]{20}")


def test_code_exchange_response(http, fake):
    code, realm = get_code(fake)
    r = token_post(
        http, fake, {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert r.headers["cache-control"] == "no-cache, no-store"
    assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", r.headers["intuit_tid"])
    body = r.json()
    assert set(body) == {
        "x_refresh_token_expires_in",
        "refresh_token",
        "access_token",
        "token_type",
        "expires_in",
    }
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 8726400
    assert RT_RE.fullmatch(body["refresh_token"])
    segments = body["access_token"].split(".")
    assert len(segments) == 5 and 550 < len(body["access_token"]) < 700
    assert json.loads(base64.urlsafe_b64decode(segments[0] + "==")) == {
        "enc": "A128CBC-HS256",
        "alg": "dir",
    }
    grant = fake.grant_for_realm(realm)
    assert grant.current_refresh_token == body["refresh_token"]
    assert body["access_token"] in grant.access_tokens
    assert grant.scopes == [ACCOUNTING] and grant.environment == "sandbox"
    assert grant.created_at == T0 and grant.hard_expires_at == T0 + 5 * 365 * DAY
    assert fake.current_refresh_token(realm) == body["refresh_token"]
    assert {body["access_token"], body["refresh_token"]} <= fake.issued_tokens()


def test_hard_expiry_field_only_on_opt_in_header(http, fake):
    body, _ = connect(http, fake, headers={"x-include-refresh-token-hard-expires-in": "true"})
    assert body["x_refresh_token_hard_expires_in"] == 5 * 365 * DAY
    fake.clock.advance(DAY)
    r = refresh(http, fake, body["refresh_token"])
    assert "x_refresh_token_hard_expires_in" not in r.json()
    r = refresh(
        http,
        fake,
        r.json()["refresh_token"],
        headers={"X-Include-Refresh-Token-Hard-Expires-In": "true"},
    )
    assert r.json()["x_refresh_token_hard_expires_in"] == 5 * 365 * DAY - DAY


def test_client_secret_post_is_accepted(http, fake):
    code, _ = get_code(fake)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    assert token_post(http, fake, data, auth="post").status_code == 200


@pytest.mark.parametrize(
    "auth",
    [
        None,
        ("qb-test-client", "wrong"),
        ("other-client", "qb-test-secret"),
    ],
)
def test_bad_client_credentials(http, fake, auth):
    code, _ = get_code(fake)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    r = http.post(fake.token_url, data=data, auth=auth)
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_client"}
    r = http.post(
        fake.token_url, data={**data, "client_id": fake.client_id, "client_secret": "nope"}
    )
    assert r.status_code == 401
    # the code was not spent by the refused attempts
    assert token_post(http, fake, data).status_code == 200


def test_token_endpoint_rejects_what_our_client_never_sends(http, fake):
    code, _ = get_code(fake)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    creds = (fake.client_id, fake.client_secret)
    r = http.post(fake.token_url, json=data, auth=creds)  # JSON instead of a form
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = token_post(http, fake, {"code": code, "redirect_uri": CALLBACK})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = token_post(http, fake, {**data, "grant_type": "password"})
    assert r.json()["error"] == "unsupported_grant_type"
    r = token_post(http, fake, {"grant_type": "authorization_code", "code": code})
    assert r.json()["error"] == "invalid_request"
    r = http.get(fake.token_url)
    assert r.status_code == 405
    r = token_post(http, fake, {**data, "redirect_uri": "http://localhost/quickbooks/callback/"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert token_post(http, fake, data).status_code == 200


def test_code_is_single_use_and_reuse_kills_the_grant(http, fake):
    code, realm = get_code(fake)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    first = token_post(http, fake, data)
    assert first.status_code == 200
    second = token_post(http, fake, data)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert fake.grant_for_realm(realm) is None
    assert fake.grants[0].revoked
    assert refresh(http, fake, first.json()["refresh_token"]).json()["error"] == "invalid_grant"
    assert company_info(http, fake, first.json()["access_token"], realm).status_code == 401


def test_code_expires_after_ten_minutes(http, fake):
    code, _ = get_code(fake)
    fake.clock.advance(601)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    r = token_post(http, fake, data)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = token_post(http, fake, {**data, "code": "AB11-never-issued"})
    assert r.json()["error"] == "invalid_grant"


def test_id_token_only_with_openid(http, fake):
    body, _ = connect(http, fake, scopes=(ACCOUNTING,))
    assert "id_token" not in body
    body, _ = connect(http, fake, scopes=(ACCOUNTING, "openid"))
    assert body["id_token"] in fake.issued_tokens()


# ------------------------------------------------------------------ refresh


def test_refresh_rotation_without_grace(http, fake):
    body, realm = connect(http, fake)
    rt0 = body["refresh_token"]
    fake.clock.advance(3600)
    r = refresh(http, fake, rt0)
    assert r.status_code == 200
    assert r.json()["refresh_token"] == rt0  # same value inside the rotation interval
    assert r.json()["x_refresh_token_expires_in"] == 8726400 - 3600  # shrinking
    assert r.json()["access_token"] != body["access_token"]
    fake.clock.advance(DAY - 3600)
    r = refresh(http, fake, rt0)
    rt1 = r.json()["refresh_token"]
    assert rt1 != rt0 and RT_RE.fullmatch(rt1)
    assert r.json()["x_refresh_token_expires_in"] == 8726400
    grant = fake.grant_for_realm(realm)
    assert grant.current_refresh_token == rt1 and grant.previous_refresh_token == rt0
    # grace 0: the old value died at once
    r = refresh(http, fake, rt0)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    latest = refresh(http, fake, rt1)
    assert latest.status_code == 200
    assert fake.refresh_counts[rt0] == 3 and fake.refresh_counts[rt1] == 1
    assert fake.counts["token.refresh_token"] == 4
    assert fake.counts["token.authorization_code"] == 1
    # earlier access tokens live until they expire
    assert company_info(http, fake, body["access_token"], realm).status_code == 401
    assert company_info(http, fake, latest.json()["access_token"], realm).status_code == 200


def test_refresh_rotation_with_grace(http, fake):
    fake.rotation_interval = 100
    fake.rotation_grace = 30
    body, _ = connect(http, fake)
    rt0 = body["refresh_token"]
    fake.clock.advance(100)
    rt1 = refresh(http, fake, rt0).json()["refresh_token"]
    assert rt1 != rt0
    fake.clock.advance(29)
    r = refresh(http, fake, rt0)
    assert r.status_code == 200 and r.json()["refresh_token"] == rt1
    fake.clock.advance(1)
    r = refresh(http, fake, rt0)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_rolling_expiry(http, fake):
    body, _ = connect(http, fake)
    fake.clock.advance(8726400)
    r = refresh(http, fake, body["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_rolling_expiry_is_renewed_by_use(http, fake):
    body, realm = connect(http, fake)
    rt = body["refresh_token"]
    for _ in range(150):  # 150 days, a refresh a day: never reaches the 101-day limit
        fake.clock.advance(DAY)
        r = refresh(http, fake, rt)
        assert r.status_code == 200
        rt = r.json()["refresh_token"]
    assert fake.grant_for_realm(realm).live


def test_hard_expiry_ends_the_grant(http, fake):
    fake.hard_lifetime = 3 * DAY
    body, realm = connect(http, fake, headers={"x-include-refresh-token-hard-expires-in": "true"})
    assert body["x_refresh_token_hard_expires_in"] == 3 * DAY
    assert body["x_refresh_token_expires_in"] == 3 * DAY  # capped by the hard expiry
    rt = body["refresh_token"]
    for _ in range(2):
        fake.clock.advance(DAY)
        rt = refresh(http, fake, rt).json()["refresh_token"]
    fake.clock.advance(DAY)
    r = refresh(http, fake, rt)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert fake.grant_for_realm(realm) is None


def test_revoked_grant_refuses_refresh(http, fake):
    body, realm = connect(http, fake)
    assert fake.revoke_grant(realm) == 1
    r = refresh(http, fake, body["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert company_info(http, fake, body["access_token"], realm).status_code == 401
    with pytest.raises(LookupError):
        fake.current_refresh_token(realm)


def test_disconnect_from_quickbooks(http, fake):
    with pytest.raises(ValueError):
        fake.disconnect_from_quickbooks("123")
    fake.disconnect_url = "http://testserver/quickbooks/intuit-disconnect/"
    body, realm = connect(http, fake)
    url = fake.disconnect_from_quickbooks(realm)
    assert url == f"http://testserver/quickbooks/intuit-disconnect/?realmId={realm}"
    assert refresh(http, fake, body["refresh_token"]).json()["error"] == "invalid_grant"


def test_reconnect_makes_a_new_grant(http, fake):
    first, realm = connect(http, fake)
    second, _ = connect(http, fake, realm_id=realm)
    assert fake.grant_for_realm(realm).current_refresh_token == second["refresh_token"]
    assert len(fake.grants) == 2


# ------------------------------------------------------------------ revoke


def revoke(http, fake, token, form=False, auth=True):
    kwargs = {"auth": (fake.client_id, fake.client_secret) if auth else None}
    if form:
        kwargs["data"] = {"token": token}
    else:
        kwargs["json"] = {"token": token}
    return http.post(fake.revocation_url, **kwargs)


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
def test_revocation_ends_the_grant(http, fake, which):
    body, realm = connect(http, fake)
    r = revoke(http, fake, body[which])
    assert r.status_code == 200 and r.content == b""
    assert r.headers["intuit_tid"]
    assert fake.grant_for_realm(realm) is None
    assert refresh(http, fake, body["refresh_token"]).json()["error"] == "invalid_grant"
    assert company_info(http, fake, body["access_token"], realm).status_code == 401
    again = revoke(http, fake, body[which])
    assert again.status_code == 400 and again.content == b""


def test_revocation_form_body_unknown_token_and_auth(http, fake):
    body, _ = connect(http, fake)
    assert revoke(http, fake, "RT1-nonsense").status_code == 400
    assert revoke(http, fake, body["refresh_token"], auth=False).status_code == 401
    r = http.post(fake.revocation_url, data="token=x", auth=(fake.client_id, "wrong"))
    assert r.status_code == 401
    assert revoke(http, fake, body["refresh_token"], form=True).status_code == 200


# ----------------------------------------------------------- userinfo, jwks


def userinfo(http, fake, token):
    return http.get(fake.userinfo_url, headers={"Authorization": f"Bearer {token}"})


def test_userinfo_by_scope(http, fake):
    body, _ = connect(http, fake, scopes=("openid",))
    assert userinfo(http, fake, body["access_token"]).json() == {"sub": fake.user["sub"]}
    all_scopes = (ACCOUNTING, "openid", "email", "profile", "phone", "address")
    body, _ = connect(http, fake, scopes=all_scopes)
    r = userinfo(http, fake, body["access_token"])
    assert r.status_code == 200
    info = r.json()
    assert set(info) == {
        "sub",
        "email",
        "emailVerified",
        "givenName",
        "familyName",
        "phoneNumber",
        "phoneNumberVerified",
        "address",
    }
    assert set(info["address"]) == {
        "streetAddress",
        "locality",
        "region",
        "postalCode",
        "country",
    }
    body, _ = connect(http, fake, scopes=(ACCOUNTING, "email"))
    assert userinfo(http, fake, body["access_token"]).status_code == 403
    assert userinfo(http, fake, "not-a-token").status_code == 401
    assert http.get(fake.userinfo_url).status_code == 401


def test_id_token_verifies_against_jwks(http, fake, mode):
    fake.clock = FakeClock()  # PyJWT checks iat/exp against the real time
    body, realm = connect(http, fake, scopes=(ACCOUNTING, "openid", "email"))
    id_token = body["id_token"]
    id_token.encode("ascii")
    jwks = http.get(fake.jwks_url).json()
    assert jwks["keys"][0]["kid"] == fake.kid and jwks["keys"][0]["kty"] == "RSA"
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "RS256" and header["kid"] == fake.kid
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]].key
    claims = jwt.decode(
        id_token, key, algorithms=["RS256"], audience=fake.client_id, issuer=fake.issuer
    )
    assert claims["aud"] == [fake.client_id]
    assert claims["realmid"] == realm
    assert claims["sub"] == fake.user["sub"]
    assert claims["exp"] == claims["iat"] + 3600
    assert {"auth_time", "iat", "exp", "iss"} <= set(claims)
    other = FakeIntuit()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            id_token,
            jwt.PyJWKSet.from_dict(other.jwks())[other.kid].key,
            algorithms=["RS256"],
            audience=fake.client_id,
        )


# ---------------------------------------------------------------------- API


def test_company_info_json_and_xml(http, fake):
    body, realm = connect(http, fake, realm_id=fake.companies[1].realm_id)
    r = company_info(http, fake, body["access_token"], realm)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["intuit_tid"]
    info = r.json()["CompanyInfo"]
    assert info["CompanyName"] == fake.companies[1].name
    assert info["Country"] == "US" and info["Id"] == "1" and "MetaData" in info
    assert "time" in r.json()
    r = company_info(http, fake, body["access_token"], realm, accept_json=False)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/xml")
    assert r.text.startswith("<?xml")
    assert f"<CompanyName>{fake.companies[1].name}</CompanyName>" in r.text
    r = company_info(http, fake, body["access_token"], realm, pk="1")
    assert r.json()["CompanyInfo"]["Id"] == "1"


def test_company_info_query(http, fake):
    body, realm = connect(http, fake)
    headers = {"Authorization": f"Bearer {body['access_token']}", "Accept": "application/json"}
    url = f"{fake.api_base}/v3/company/{realm}/query"
    r = http.get(url, params={"query": "select * from CompanyInfo"}, headers=headers)
    assert r.json()["QueryResponse"]["CompanyInfo"][0]["CompanyName"] == fake.companies[0].name
    r = http.post(
        url,
        data="SELECT * FROM CompanyInfo",
        headers={**headers, "Content-Type": "application/text"},
        params={"minorversion": 75},
    )
    assert r.status_code == 200 and "QueryResponse" in r.json()
    r = http.get(url, params={"query": "select * from Invoice"}, headers=headers)
    assert r.status_code == 400 and r.json()["Fault"]["Error"][0]["code"] == "4000"


@pytest.mark.parametrize("how", ["unknown", "expired", "revoked", "missing"])
def test_api_401_fault_envelope(http, fake, how):
    body, realm = connect(http, fake)
    token = body["access_token"]
    if how == "unknown":
        token = token[:-4] + "AAAA"
    elif how == "expired":
        fake.clock.advance(3600)
    elif how == "revoked":
        fake.revoke_grant(realm)
    headers = {"Accept": "application/json"}
    if how != "missing":
        headers["Authorization"] = f"Bearer {token}"
    url = f"{fake.api_base}/v3/company/{realm}/companyinfo/{realm}"
    r = http.get(url, headers=headers)
    assert r.status_code == 401
    assert r.headers["intuit_tid"]
    fault = r.json()["fault"]
    assert fault["type"] == "AUTHENTICATION"
    error = fault["error"][0]
    assert error["code"] == "3200"
    assert error["message"] == "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    del headers["Accept"]
    r = http.get(url, headers=headers)
    assert r.status_code == 401 and "errorCode=003200" in r.text and r.text.startswith("<?xml")


def test_api_403_other_realm_environment_or_scope(http, fake):
    body, realm = connect(http, fake, realm_id=fake.companies[0].realm_id)
    other = fake.companies[1].realm_id
    for r in (
        company_info(http, fake, body["access_token"], other),
        company_info(http, fake, body["access_token"], realm, base=fake.api_base_for("production")),
    ):
        assert r.status_code == 403
        error = r.json()["Fault"]["Error"][0]
        assert "errorCode=003100" in error["Message"] and error["code"] == "3100"
    openid_only, _ = connect(http, fake, scopes=("openid",))
    r = company_info(http, fake, openid_only["access_token"], realm)
    assert r.status_code == 403


def test_api_throttle(http, fake):
    fake.throttle_per_minute = 3
    body, realm = connect(http, fake)
    statuses = [company_info(http, fake, body["access_token"], realm).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    r = company_info(http, fake, body["access_token"], realm)
    error = r.json()["Fault"]["Error"][0]
    assert "ThrottleExceeded" in error["Message"] and "errorCode=003001" in error["Message"]
    assert error["code"] == "3001"
    fake.clock.advance(61)
    assert company_info(http, fake, body["access_token"], realm).status_code == 200


def test_unknown_path_is_404(http, fake):
    r = http.get(fake.base_url + "/nothing-here")
    assert r.status_code == 404 and r.headers["intuit_tid"]
    assert fake.counts["unknown"] == 1


# ------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["500", "502", "503", "429"])
@pytest.mark.parametrize("endpoint", ["token", "api", "discovery", "revoke"])
def test_http_error_faults(http, fake, endpoint, kind):
    body, realm = connect(http, fake)
    fake.inject_fault(endpoint, kind, times=2)

    def call():
        if endpoint == "token":
            return refresh(http, fake, body["refresh_token"])
        if endpoint == "api":
            return company_info(http, fake, body["access_token"], realm)
        if endpoint == "discovery":
            return http.get(fake.discovery_url)
        return revoke(http, fake, "RT1-unknown")

    for _ in range(2):
        r = call()
        assert r.status_code == int(kind)
        assert r.headers["intuit_tid"]
        assert r.headers["Content-Type"].split(";")[0] in ("text/html", "application/json")
    if endpoint == "api" and kind == "429":
        assert "errorCode=003001" in r.text
    assert call().status_code in (200, 400)  # the faults are used up


@pytest.mark.parametrize("endpoint", ["token", "api", "discovery", "jwks", "userinfo"])
def test_malformed_fault(http, fake, endpoint):
    body, realm = connect(http, fake, scopes=(ACCOUNTING, "openid"))
    fake.inject_fault(endpoint, "malformed")
    urls = {
        "discovery": fake.discovery_url,
        "jwks": fake.jwks_url,
        "userinfo": fake.userinfo_url,
        "api": f"{fake.api_base}/v3/company/{realm}/companyinfo/{realm}",
    }
    if endpoint == "token":
        r = refresh(http, fake, body["refresh_token"])
    else:
        r = http.get(urls[endpoint], headers={"Authorization": "Bearer " + body["access_token"]})
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()


def test_reset_fault(http, fake):
    fake.inject_fault("token", "reset")
    code, _ = get_code(fake)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    with pytest.raises(requests.exceptions.ConnectionError):
        token_post(http, fake, data)
    assert token_post(http, fake, data).status_code == 200  # nothing happened at Intuit


def test_timeout_fault(http, fake, mode):
    fake.timeout_seconds = 5
    fake.inject_fault("discovery", "timeout")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(fake.discovery_url, timeout=0.2)
    assert time.monotonic() - started < 3
    assert http.get(fake.discovery_url, timeout=5).status_code == 200


def test_timeout_fault_server_closes_after_timeout_seconds(fake):
    fake.timeout_seconds = 0.2
    fake.inject_fault("discovery", "timeout")
    with FakeIntuitServer(fake):
        with pytest.raises(requests.exceptions.ConnectionError) as err:
            requests.get(fake.discovery_url, timeout=5)
        assert not isinstance(err.value, requests.exceptions.ReadTimeout)


@pytest.mark.parametrize("kind", ["reset_after", "timeout_after"])
def test_answer_lost_after_processing(http, fake, kind):
    fake.timeout_seconds = 5
    fake.rotation_interval = 0
    body, realm = connect(http, fake)
    fake.inject_fault("token", kind)
    lost = (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout)
    with pytest.raises(lost):
        http.post(
            fake.token_url,
            data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
            auth=(fake.client_id, fake.client_secret),
            timeout=0.2,
        )
    # Intuit did rotate: the refresh token the client holds is dead
    assert fake.current_refresh_token(realm) != body["refresh_token"]
    assert refresh(http, fake, body["refresh_token"]).status_code == 400


def answer_size(r):
    """Bytes of ``r`` as the server writes them: status line, headers, blank line, body."""
    head = f"HTTP/1.1 {r.status_code} {r.reason}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in r.headers.items()) + "\r\n"
    return len(head.encode("latin-1")) + len(r.content)


@pytest.mark.parametrize("endpoint", ["token", "api"])
def test_trickle_fault_answers_in_full_slowly(http, fake, endpoint):
    fake.rotation_interval = 0
    body, realm = connect(http, fake)
    pause = 0.0003
    fake.inject_fault(endpoint, "trickle", seconds=pause)
    started = time.monotonic()
    if endpoint == "token":
        r = refresh(http, fake, body["refresh_token"])
    else:
        r = company_info(http, fake, body["access_token"], realm)
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.headers["intuit_tid"]
    if endpoint == "token":  # processed as usual: the refresh token rotated
        assert r.json()["refresh_token"] == fake.current_refresh_token(realm)
        assert r.json()["refresh_token"] != body["refresh_token"]
    else:
        assert r.json()["CompanyInfo"]["CompanyName"] == fake.companies[0].name
    # In-process the adapter sleeps pause x the answer's size; over HTTP each byte waits.
    assert elapsed >= pause * (answer_size(r) - 1)


def test_trickle_fault_outlasts_a_read_timeout_over_http(fake):
    # Each byte comes well within the 1 s read timeout, so requests never times out,
    # while the whole answer (about 1,060 bytes for a refresh) takes about 2 s.
    fake.rotation_interval = 0
    pause = 0.0018
    with FakeIntuitServer(fake):
        body, realm = connect(requests.Session(), fake)
        fake.inject_fault("token", "trickle", seconds=pause)
        started = time.monotonic()
        r = requests.post(
            fake.token_url,
            data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
            auth=(fake.client_id, fake.client_secret),
            timeout=1,
        )
        elapsed = time.monotonic() - started
    assert r.status_code == 200
    assert r.json()["refresh_token"] == fake.current_refresh_token(realm)
    assert elapsed >= pause * (answer_size(r) - 1)
    assert elapsed > 1.5


def test_trickle_fault_needs_its_pause(fake):
    with pytest.raises(ValueError):
        fake.inject_fault("token", "trickle")
    with pytest.raises(ValueError):
        fake.inject_fault("token", "trickle", seconds=-1)
    with pytest.raises(ValueError):
        fake.inject_fault("token", "timeout", seconds=1)
    fake.inject_fault("*", "trickle", seconds=0, times=None)


def test_fault_rate_is_seeded_and_counted(fake):
    http = requests.Session()
    http.mount(fake.base_url, fake.adapter())

    def run(seed):
        f = FakeIntuit(seed=seed)
        s = requests.Session()
        s.mount(f.base_url, f.adapter())
        f.inject_fault("discovery", "503", rate=0.3, times=None)
        return [s.get(f.discovery_url).status_code for _ in range(200)]

    a, b = run(1), run(1)
    assert a == b
    assert 30 < a.count(503) < 90
    fake.inject_fault("discovery", "500", rate=1.0, times=3)
    assert [http.get(fake.discovery_url).status_code for _ in range(4)] == [500, 500, 500, 200]
    fake.inject_fault("*", "502", times=None)
    assert http.get(fake.jwks_url).status_code == 502
    fake.clear_faults()
    assert http.get(fake.jwks_url).status_code == 200
    assert fake.counts["discovery"] == 4 and fake.counts["jwks"] == 2
    with pytest.raises(ValueError):
        fake.inject_fault("tokens", "500")
    with pytest.raises(ValueError):
        fake.inject_fault("token", "418")


def test_latency_is_applied_outside_the_lock(fake):
    fake.latency = {"token": 0.4}
    with FakeIntuitServer(fake):
        http = requests.Session()
        timings = {}

        def slow():
            started = time.monotonic()
            refresh(http, fake, "RT1-unknown")
            timings["token"] = time.monotonic() - started

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.05)
        started = time.monotonic()
        assert requests.get(fake.discovery_url, timeout=5).status_code == 200
        timings["discovery"] = time.monotonic() - started
        thread.join()
    assert timings["token"] >= 0.4
    assert timings["discovery"] < 0.3


# ------------------------------------------------------------ counters, clock


def test_counters_and_requests_log(http, fake):
    body, realm = connect(http, fake)
    company_info(http, fake, body["access_token"], realm)
    http.get(fake.discovery_url)
    assert fake.counts["token"] == 1
    assert fake.counts["token.authorization_code"] == 1
    assert fake.counts["api"] == 1 and fake.counts["discovery"] == 1
    assert fake.counts["revoke"] == 0
    assert (
        "api",
        "GET",
        f"{urlsplit(fake.api_base).path}/v3/company/{realm}/companyinfo/{realm}",
    ) in (fake.requests)
    assert fake.requests[-1] == ("discovery", "GET", "/.well-known/openid_configuration")
    fake.reset_counters()
    assert fake.counts == {} and fake.requests == [] and fake.refresh_counts == {}


def test_concurrent_refresh_with_one_token_over_http(fake):
    fake.rotation_interval = 0
    with FakeIntuitServer(fake):
        http = requests.Session()
        body, realm = connect(http, fake)
        results = []
        barrier = threading.Barrier(12)

        def worker():
            s = requests.Session()
            barrier.wait()
            results.append(refresh(s, fake, body["refresh_token"]).status_code)

        threads = [threading.Thread(target=worker) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == [200] + [400] * 11
    assert fake.refresh_counts[body["refresh_token"]] == 12
    assert fake.counts["token.refresh_token"] == 12


def test_fake_clock():
    clock = FakeClock(1000.0, frozen=True)
    assert clock.now() == 1000.0
    clock.advance(5)
    assert clock.now() == 1005.0
    clock.set(50)
    assert clock.now() == 50.0
    live = FakeClock()
    assert abs(live.now() - time.time()) < 1
    live.advance(3600)
    assert abs(live.now() - time.time() - 3600) < 1
    live.set(T0)
    assert abs(live.now() - T0) < 1


def test_default_clock_follows_time_machine():
    import time_machine

    fake = FakeIntuit()
    with time_machine.travel(T0 + 123, tick=False):
        assert fake.clock.now() == T0 + 123
        fake.clock.advance(10)
        assert fake.clock.now() == T0 + 133


def test_mounted_patches_new_sessions_and_restores(fake):
    original = requests.Session.__init__
    with fake.mounted():
        assert requests.get(fake.discovery_url).json()["issuer"] == fake.issuer
        assert requests.Session().get(fake.jwks_url).status_code == 200
        other = FakeIntuit(base_url="http://other-intuit.test")
        with other.mounted():
            assert requests.get(other.discovery_url).json()["issuer"] == other.issuer
            assert requests.get(fake.discovery_url).status_code == 200
    assert requests.Session.__init__ is original
    assert fake.base_url + "/" not in requests.Session().adapters


def test_api_fault_bodies_follow_accept(http, fake):
    body, realm = connect(http, fake)
    fake.inject_fault("api", "500", times=2)
    r = company_info(http, fake, body["access_token"], realm)
    assert r.status_code == 500 and r.json()["Fault"]["type"] == "SERVICE"
    r = company_info(http, fake, body["access_token"], realm, accept_json=False)
    assert r.status_code == 500 and r.text.startswith("<?xml")
    fake.inject_fault("api", "503")
    r = company_info(http, fake, body["access_token"], realm)
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("text/html")


def test_swapping_the_clock_applies_to_existing_grants(http, fake):
    body, realm = connect(http, fake)
    fake.clock = FakeClock(T0 + 3600, frozen=True)
    assert fake.grant_for_realm(realm).access_tokens == set()
    assert company_info(http, fake, body["access_token"], realm).status_code == 401


def test_form_encoded_basic_credentials(http, fake):
    fake.client_secret = "s3cret/with+chars"
    code, _ = get_code(fake)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    raw = base64.b64encode(b"qb-test-client:s3cret%2Fwith%2Bchars").decode()
    r = http.post(fake.token_url, data=data, headers={"Authorization": f"Basic {raw}"})
    assert r.status_code == 200

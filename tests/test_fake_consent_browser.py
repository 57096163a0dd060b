"""The fake's consent page in a real browser (Playwright, the system's Chromium)."""

from __future__ import annotations

import os
import shutil
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from qb_oauth.testing import FakeIntuit, FakeIntuitServer

pytestmark = pytest.mark.e2e

CALLBACK = "http://testserver/quickbooks/callback/"
CHROMIUM = os.environ.get("QB_TEST_CHROMIUM") or shutil.which("chromium")


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM:
        pytest.skip("no Chromium on this machine")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        # testserver does not resolve: answer the callback in the browser itself.
        page.route(
            "http://testserver/**",
            lambda route: route.fulfill(status=200, body="callback", content_type="text/plain"),
        )
        yield page
        browser.close()


def open_consent(page, fake):
    params = {
        "client_id": fake.client_id,
        "response_type": "code",
        "scope": "com.intuit.quickbooks.accounting openid",
        "redirect_uri": CALLBACK,
        "state": "browser-state",
    }
    page.goto(fake.authorization_url + "?" + urlencode(params))


def test_connect_with_a_chosen_company(page):
    fake = FakeIntuit(redirect_uris=[CALLBACK])
    with FakeIntuitServer(fake):
        open_consent(page, fake)
        page.get_by_label(fake.companies[2].name).check()
        with page.expect_request(lambda r: r.url.startswith(CALLBACK)) as request:
            page.get_by_role("button", name="Connect", exact=True).click()
    query = parse_qs(urlsplit(request.value.url).query)
    assert query["realmId"] == [fake.companies[2].realm_id]
    assert query["state"] == ["browser-state"]
    assert query["code"][0]


def test_cancel(page):
    fake = FakeIntuit(redirect_uris=[CALLBACK])
    with FakeIntuitServer(fake):
        open_consent(page, fake)
        with page.expect_request(lambda r: r.url.startswith(CALLBACK)) as request:
            page.get_by_role("button", name="Cancel").click()
    query = parse_qs(urlsplit(request.value.url).query)
    assert query == {"error": ["access_denied"], "state": ["browser-state"]}

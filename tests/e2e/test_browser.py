"""End to end in a real browser: the site (live_server) and the fake Intuit, over HTTP.

The site runs at http://localhost:<port> and the fake Intuit at
http://127.0.0.1:<port>: two different sites to the browser, as the real
Intuit is, so Chromium applies SameSite=Lax to the session cookie on the way
back from Intuit's consent page (a form POST answered by a redirect).
"""

import re

import pytest

from qb_oauth.models import ConnectionState, QuickBooksConnection

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def site(live_server, fake_intuit, settings, user):
    """The live site wired to the fake: callback and Disconnect URL registered there."""
    assert "localhost" in live_server.url
    callback = live_server.url + "/quickbooks/callback/"
    fake_intuit.redirect_uris.append(callback)
    fake_intuit.disconnect_url = live_server.url + "/quickbooks/intuit/disconnect/"
    settings.QB_OAUTH = {**settings.QB_OAUTH, "REDIRECT_URI": callback}
    settings.SESSION_COOKIE_SAMESITE = "Lax"
    return live_server.url


def sign_in(page, site, next_path="/quickbooks/"):
    page.goto(f"{site}/accounts/login/?next={next_path}")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Sign in").click()


def connect(page, fake, company_name):
    page.get_by_role("button", name="Connect to QuickBooks").click()
    page.wait_for_url(fake.authorization_url + "*")
    assert page.get_by_role("heading", name="Connect to QuickBooks").is_visible()
    page.get_by_label(re.compile(re.escape(company_name))).check()
    page.get_by_role("button", name="Connect", exact=True).click()


def row_of(page, company_name):
    return page.locator("tr.qb-oauth-connection", has_text=company_name)


def test_connect_use_and_disconnect(page, site, fake_intuit):
    company = fake_intuit.companies[1]
    sign_in(page, site)
    page.wait_for_url(f"{site}/quickbooks/")
    assert page.get_by_role("heading", name="Your QuickBooks companies").is_visible()

    connect(page, fake_intuit, company.name)
    page.wait_for_url(f"{site}/quickbooks/")
    assert page.get_by_role("status").filter(has_text=f"Connected to {company.name}.").is_visible()
    row = row_of(page, company.name)
    assert row.locator(".qb-oauth-state").inner_text() == "Connected"
    connection = QuickBooksConnection.objects.get()
    assert connection.realm_id == company.realm_id
    assert connection.company_name == company.name
    # The session cookie really was Lax and the browser still sent it back from Intuit.
    [cookie] = [c for c in page.context.cookies() if c["name"] == "sessionid"]
    assert cookie["sameSite"] == "Lax"

    # The access token's hour passes at Intuit: reading the company still works (a refresh).
    refreshes = fake_intuit.counts["token.refresh_token"]
    fake_intuit.clock.advance(3700)
    page.goto(f"{site}/e2e/company/{connection.pk}/")
    assert page.locator("#company").inner_text() == company.name
    assert fake_intuit.counts["token.refresh_token"] >= refreshes + 1

    page.goto(f"{site}/quickbooks/")
    row_of(page, company.name).get_by_role("link", name=re.compile("Disconnect")).click()
    assert page.get_by_role("heading", name=f"Disconnect {company.name}?").is_visible()
    page.get_by_role("button", name="Disconnect").click()
    page.wait_for_url(f"{site}/quickbooks/")
    assert page.get_by_role("status").filter(has_text=f"Disconnected from {company.name}.").count()
    assert row_of(page, company.name).locator(".qb-oauth-state").inner_text() == "Disconnected"
    assert row_of(page, company.name).get_by_role("button", name=re.compile("Reconnect")).count()
    connection.refresh_from_db()
    assert connection.state == ConnectionState.DISCONNECTED
    assert connection.refresh_token is None
    assert fake_intuit.grant_for_realm(company.realm_id) is None
    assert all(g.revoked for g in fake_intuit.grants if g.realm_id == company.realm_id)


def test_cancel_at_the_consent_page(page, site, fake_intuit):
    sign_in(page, site)
    page.get_by_role("button", name="Connect to QuickBooks").click()
    page.wait_for_url(fake_intuit.authorization_url + "*")
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_url(f"{site}/quickbooks/")
    message = page.get_by_role("status").filter(has_text="You chose not to connect")
    assert message.inner_text() == "You chose not to connect to QuickBooks. Nothing was changed."
    assert QuickBooksConnection.objects.count() == 0
    assert "haven't connected a QuickBooks company yet" in page.content()


def test_disconnected_inside_quickbooks(page, site, fake_intuit):
    company = fake_intuit.companies[0]
    sign_in(page, site)
    connect(page, fake_intuit, company.name)
    page.wait_for_url(f"{site}/quickbooks/")
    assert row_of(page, company.name).locator(".qb-oauth-state").inner_text() == "Connected"

    url = fake_intuit.disconnect_from_quickbooks(company.realm_id)
    page.goto(url)
    assert page.get_by_role("heading", name="Disconnected from QuickBooks").is_visible()
    assert page.get_by_text(f"You disconnected {company.name} from this site").is_visible()
    assert page.get_by_role("button", name="Reconnect").is_visible()
    page.get_by_role("link", name="Back to your QuickBooks companies").click()
    assert row_of(page, company.name).locator(".qb-oauth-state").inner_text() == "Disconnected"
    assert QuickBooksConnection.objects.get().state == ConnectionState.DISCONNECTED


def test_disconnected_inside_quickbooks_while_signed_out(browser, site, fake_intuit):
    company = fake_intuit.companies[0]
    first = browser.new_context()
    page = first.new_page()
    sign_in(page, site)
    connect(page, fake_intuit, company.name)
    page.wait_for_url(f"{site}/quickbooks/")
    first.close()

    url = fake_intuit.disconnect_from_quickbooks(company.realm_id)
    later = browser.new_context()  # another browser, signed out
    try:
        page = later.new_page()
        page.goto(url)
        assert "/accounts/login/" in page.url
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill("pw-alice")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("heading", name="Disconnected from QuickBooks").is_visible()
    finally:
        later.close()
    assert QuickBooksConnection.objects.get().state == ConnectionState.DISCONNECTED


def test_the_button_works_from_the_keyboard(page, site, fake_intuit):
    sign_in(page, site)
    button = page.get_by_role("button", name="Connect to QuickBooks")
    for _ in range(20):
        page.keyboard.press("Tab")
        if button.evaluate("b => b === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the Connect to QuickBooks button")
    style = button.evaluate(
        "b => { const s = getComputedStyle(b);"
        " return [s.backgroundColor, s.color, s.outlineStyle, s.fontWeight, s.fontSize]; }"
    )
    assert style[0] == "rgb(44, 160, 28)"  # Intuit's green, #2CA01C
    assert style[1] == "rgb(255, 255, 255)"
    assert style[2] == "solid"  # a visible focus ring
    assert int(style[3]) >= 700 and float(style[4].removesuffix("px")) >= 18.66  # large text
    page.keyboard.press("Enter")
    page.wait_for_url(fake_intuit.authorization_url + "*")

"""The admin in Chromium: the changelist and a change page, with screenshots for the docs.

The PNGs go to docs/images/ only with ``QB_UPDATE_SCREENSHOTS=1`` (then commit
them); otherwise to a temporary directory, so test runs never dirty the tree.
"""

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from qb_oauth import tokens
from qb_oauth.models import ConnectionState, Environment, QuickBooksConnection
from qb_oauth.testing.fake import Company

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
OPENID = ["com.intuit.quickbooks.accounting", "openid", "email", "profile"]


@pytest.fixture
def images_dir(tmp_path):
    if os.environ.get("QB_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        return DOCS_IMAGES
    return tmp_path


@pytest.fixture
def connections(fake_intuit, connect_realm, django_user_model):
    """Connections in every state an admin meets, made through the fake Intuit."""
    fake_intuit.companies.extend(
        [
            Company("5550001112223334", "Dune Bakery", "US"),
            Company("5550001112229999", "Harbor Freight Logistics", "US"),
            Company("5550001112227777", "Maple Leaf Dental", "CA"),
        ]
    )
    realms = [c.realm_id for c in fake_intuit.companies]
    users = {
        name: django_user_model.objects.create_user(name, f"{name}@shop.example", f"pw-{name}")
        for name in ("alice", "bob", "carol", "dave", "erin", "frank")
    }
    now = timezone.now()

    healthy = connect_realm(users["alice"], realms[0], scopes=OPENID)
    tokens.check_connection(healthy)

    expiring = connect_realm(users["bob"], realms[1])
    QuickBooksConnection.objects.filter(pk=expiring.pk).update(
        environment=Environment.PRODUCTION,
        access_token_expires_at=now - timedelta(hours=2, minutes=10),
        refresh_token_expires_at=now + timedelta(days=21, hours=3),
        last_refreshed_at=now - timedelta(days=79),
    )

    hard = connect_realm(users["carol"], realms[2])
    QuickBooksConnection.objects.filter(pk=hard.pk).update(
        refresh_token_hard_expires_at=now + timedelta(days=4, hours=6)
    )

    reauth = connect_realm(users["dave"], realms[3])
    fake_intuit.revoke_grant(realms[3])
    with pytest.raises(Exception, match="invalid_grant"):
        tokens.refresh(reauth, force=True)

    gone = connect_realm(users["erin"], realms[4])
    tokens.revoke(gone, by="user")

    failing = connect_realm(users["frank"], realms[5], scopes=OPENID)
    fake_intuit.inject_fault("token", "503", times=2)
    for _attempt in range(2):
        with pytest.raises(Exception, match="503"):
            tokens.refresh(failing, force=True)

    # Refreshed at different times, as a real fleet is.
    for conn, minutes in ((healthy, 22), (hard, 190), (reauth, 2900), (gone, 4400), (failing, 75)):
        QuickBooksConnection.objects.filter(pk=conn.pk).update(
            last_refreshed_at=now - timedelta(minutes=minutes),
            access_token_expires_at=now + timedelta(minutes=60 - minutes % 60),
        )
    for conn in (healthy, expiring, hard, reauth, gone, failing):
        conn.refresh_from_db()
    assert reauth.state == ConnectionState.REAUTH_REQUIRED
    assert gone.state == ConnectionState.DISCONNECTED
    return {"healthy": healthy, "failing": failing}


def token_values(fake):
    values = set(fake.issued_tokens())
    for conn in QuickBooksConnection.objects.all():
        values |= {conn.access_token, conn.refresh_token, conn.id_token} - {None}
    return values


def test_admin_changelist_and_change_page(
    page, live_server, fake_intuit, admin_user, connections, images_dir
):
    secrets = token_values(fake_intuit)
    assert secrets
    page.set_viewport_size({"width": 1920, "height": 900})
    # The admin's navigation sidebar folded away: the table gets the width.
    page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/qb_oauth/quickbooksconnection/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/qb_oauth/quickbooksconnection/")

    assert page.locator(".qb-badge-active").first.is_visible()
    assert page.locator(".qb-badge-reauth_required", has_text="Needs reconnecting").is_visible()
    assert page.locator(".qb-badge-disconnected", has_text="Disconnected").is_visible()
    assert page.locator(".qb-time.qb-warning").count() >= 1
    assert page.locator(".qb-time.qb-danger").count() >= 1
    title = page.locator(".qb-time", has_text="expires in 21 days").get_attribute("title")
    assert title and title.endswith("UTC")
    html = page.content()
    assert not [s for s in secrets if s in html]
    page.screenshot(path=str(images_dir / "admin-changelist.png"), full_page=True)

    conn = connections["failing"]
    page.goto(f"{live_server.url}/admin/qb_oauth/quickbooksconnection/{conn.pk}/change/")
    page.get_by_role("button", name="Check connection").click()
    page.wait_for_url(f"**/quickbooksconnection/{conn.pk}/change/")
    assert page.locator(".messagelist .success", has_text="connection works").is_visible()
    assert page.get_by_role("heading", name="History").is_visible()
    assert page.get_by_text("stored, encrypted").count() == 3
    html = page.content()
    assert not [s for s in secrets | token_values(fake_intuit) if s in html]
    page.screenshot(path=str(images_dir / "admin-change.png"), full_page=True)

    assert (images_dir / "admin-changelist.png").stat().st_size > 10_000
    assert (images_dir / "admin-change.png").stat().st_size > 10_000

"""The fake's own control page (/_fake/): the demo's way to do by hand what tests do in code."""

from urllib.parse import urlencode

import requests

from qb_oauth.testing import FakeIntuit, FakeIntuitServer

CALLBACK = "http://localhost/quickbooks/callback/"
DISCONNECT = "http://localhost/quickbooks/intuit/disconnect/"


def connect(fake, realm_id):
    url = (
        fake.authorization_url
        + "?"
        + urlencode(
            {
                "client_id": fake.client_id,
                "redirect_uri": CALLBACK,
                "response_type": "code",
                "scope": "com.intuit.quickbooks.accounting",
                "state": "s",
            }
        )
    )
    back = fake.consent(url, realm_id=realm_id)
    code = back.split("code=")[1].split("&")[0]
    answer = requests.post(
        fake.token_url,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
        auth=(fake.client_id, fake.client_secret),
        headers={"Accept": "application/json"},
        timeout=5,
    )
    assert answer.status_code == 200
    return answer.json()


def test_control_page_lists_companies_and_moves_the_clock():
    fake = FakeIntuit(redirect_uris=[CALLBACK], disconnect_url=DISCONNECT)
    with FakeIntuitServer(fake):
        realm = fake.companies[0].realm_id
        connect(fake, realm)
        page = requests.get(fake.base_url + "/_fake/", timeout=5)
        assert page.status_code == 200
        assert fake.companies[0].name in page.text and "Disconnect inside QuickBooks" in page.text
        before = fake.clock.now()
        moved = requests.post(
            fake.base_url + "/_fake/clock",
            data={"seconds": "3700"},
            allow_redirects=False,
            timeout=5,
        )
        assert moved.status_code == 303
        assert fake.clock.now() - before >= 3700


def test_control_page_disconnects_inside_quickbooks():
    fake = FakeIntuit(redirect_uris=[CALLBACK], disconnect_url=DISCONNECT)
    with FakeIntuitServer(fake):
        realm = fake.companies[1].realm_id
        tokens = connect(fake, realm)
        gone = requests.post(
            fake.base_url + "/_fake/disconnect",
            data={"realmId": realm},
            allow_redirects=False,
            timeout=5,
        )
        assert gone.status_code == 303
        assert gone.headers["Location"] == f"{DISCONNECT}?realmId={realm}"
        assert fake.grant_for_realm(realm) is None
        refused = requests.post(
            fake.token_url,
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            auth=(fake.client_id, fake.client_secret),
            headers={"Accept": "application/json"},
            timeout=5,
        )
        assert refused.json()["error"] == "invalid_grant"
        assert "revoked" in requests.get(fake.base_url + "/_fake/", timeout=5).text


def test_control_page_sends_a_webhook():
    from tests.local_servers import RecordingServer

    with RecordingServer() as site:
        fake = FakeIntuit(
            redirect_uris=[CALLBACK],
            webhook_url=site.url("/quickbooks/webhooks/"),
            webhook_verifier_token="verifier",
        )
        with FakeIntuitServer(fake):
            page = requests.get(fake.base_url + "/_fake/", timeout=5).text
            assert "Send a webhook" in page and site.url("/quickbooks/webhooks/") in page
            sent = requests.post(
                fake.base_url + "/_fake/webhook",
                data={
                    "realmId": fake.companies[0].realm_id,
                    "entity": "Invoice",
                    "id": "42",
                    "operation": "updated",
                    "format": "legacy",
                },
                allow_redirects=False,
                timeout=5,
            )
            assert sent.status_code == 303
            assert fake.webhook_deliveries[0].wait(5)
            fake.stop_webhooks()
    body = site.received[0].body
    assert b'"eventNotifications"' in body and b'"42"' in body
    assert site.received[0].headers["intuit-signature"] == fake.sign_webhook(body)


def test_control_page_without_a_webhook_url_says_how():
    fake = FakeIntuit(redirect_uris=[CALLBACK])
    with FakeIntuitServer(fake):
        page = requests.get(fake.base_url + "/_fake/", timeout=5).text
        assert "--webhook-url" in page
        refused = requests.post(fake.base_url + "/_fake/webhook", data={"realmId": "1"}, timeout=5)
        assert refused.status_code == 400

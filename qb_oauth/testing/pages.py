"""HTML of the fake Intuit's consent and error pages (plain strings, no template engine)."""

from __future__ import annotations

from html import escape

SCOPE_TEXT = {
    "com.intuit.quickbooks.accounting": "Your QuickBooks Online accounting data",
    "com.intuit.quickbooks.payment": "Your QuickBooks Payments data",
    "openid": "Your Intuit identity",
    "profile": "Your name",
    "email": "Your email address",
    "phone": "Your phone number",
    "address": "Your address",
}

_STYLE = """
body { font-family: system-ui, sans-serif; background: #f4f5f8; color: #222; margin: 0; }
main { max-width: 32rem; margin: 3rem auto; background: #fff; padding: 2rem;
       border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); }
h1 { font-size: 1.4rem; margin-top: 0; }
fieldset { border: 1px solid #ccc; border-radius: 6px; margin: 1rem 0; }
.company { margin: .4rem 0; }
.actions { display: flex; gap: 1rem; margin-top: 1.5rem; }
button { font-size: 1rem; padding: .6rem 1.4rem; border-radius: 4px; cursor: pointer; }
#connect { background: #2ca01c; color: #fff; border: 0; }
#cancel { background: #fff; border: 1px solid #888; }
.note { color: #666; font-size: .85rem; margin-top: 2rem; }
.error { color: #b00020; }
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n"
        '<p class="note">This is a fake Intuit, a local stand-in used for testing. '
        "No real QuickBooks data is involved.</p>\n"
        "</main>\n</body>\n</html>\n"
    )


def consent_page(
    *,
    action: str,
    params: dict[str, str],
    scopes: list[str],
    companies: list,
    ask_company: bool,
) -> str:
    """The consent page: which company, Connect or Cancel, POSTing back ``params``."""
    hidden = "\n".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items()
    )
    wanted = "\n".join(f"<li>{escape(SCOPE_TEXT.get(s, s))}</li>" for s in scopes)
    choice = ""
    if ask_company:
        rows = []
        for i, company in enumerate(companies):
            rid = escape(company.realm_id)
            checked = " checked" if i == 0 else ""
            rows.append(
                f'<div class="company"><input type="radio" id="realm-{rid}" name="realm_id" '
                f'value="{rid}"{checked}> <label for="realm-{rid}">{escape(company.name)} '
                f"<small>(company ID {rid})</small></label></div>"
            )
        choice = (
            "<fieldset>\n<legend>Choose the company to connect</legend>\n"
            + "\n".join(rows)
            + "\n</fieldset>\n"
        )
    body = (
        "<h1>Connect to QuickBooks</h1>\n"
        f"<p>The app <strong>{escape(params.get('client_id', ''))}</strong> "
        "is asking for access to:</p>\n"
        f"<ul>\n{wanted}\n</ul>\n"
        f'<form method="post" action="{escape(action)}" aria-label="Authorize the app">\n'
        f"{hidden}\n{choice}"
        '<div class="actions">\n'
        '<button type="submit" id="connect" name="action" value="connect">Connect</button>\n'
        '<button type="submit" id="cancel" name="action" value="cancel">Cancel</button>\n'
        "</div>\n</form>"
    )
    return _page("Connect to QuickBooks - Fake Intuit", body)


def error_page(error: str, description: str) -> str:
    """What Intuit shows instead of redirecting when the client or redirect URI is wrong."""
    body = (
        '<h1 class="error">We couldn\'t connect your app</h1>\n'
        f'<p role="alert"><strong id="error">{escape(error)}</strong>: '
        f'<span id="error-description">{escape(description)}</span></p>'
    )
    return _page("Error - Fake Intuit", body)


GATEWAY_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
)


def webhook_form(webhook_url: str | None, realms: list[str], sent: int) -> str:
    """The control page's "Send a webhook" form (or why there is none)."""
    if not webhook_url:
        return (
            "<h2>Webhooks</h2><p>No webhook URL set: start the fake with "
            "<code>--webhook-url</code> and <code>--webhook-verifier-token</code>.</p>"
        )
    options = "".join(f'<option value="{escape(r)}">{escape(r)}</option>' for r in realms)
    realm_field = (
        f'<select name="realmId" id="wh-realm">{options}</select>'
        if realms
        else '<input name="realmId" id="wh-realm" value="9341452859140132">'
    )

    def select(name: str, values: tuple[str, ...]) -> str:
        items = "".join(f'<option value="{v}">{v}</option>' for v in values)
        return f'<select name="{name}" id="wh-{name}">{items}</select>'

    return f"""<h2>Webhooks</h2>
<p>Signed notifications go to {escape(webhook_url)} ({sent} sent so far).</p>
<form method="post" action="/_fake/webhook">
<label for="wh-realm">Realm</label> {realm_field}
<label for="wh-entity">Entity</label> {select("entity", ("Invoice", "Customer", "Bill", "Payment"))}
<label for="wh-id">Id</label> <input name="id" id="wh-id" value="1" size="6">
<label for="wh-operation">Operation</label>
{select("operation", ("created", "updated", "deleted", "voided", "merged"))}
<label for="wh-format">Format</label> {select("format", ("cloudevents", "legacy"))}
<button type="submit">Send a webhook</button>
</form>"""


def control_page(
    *,
    now: str,
    offset_hours: float,
    companies: list,
    disconnect_url: str | None,
    webhooks: str = "",
) -> str:
    """The fake's own control page (``/_fake/``): what a test does in code, by hand.

    Not part of Intuit: a person trying the demo uses it to move the fake's
    clock past an access token's hour, or to disconnect the app "inside
    QuickBooks" and be sent to the site's Disconnect URL.
    """
    rows = []
    for company_name, realm_id, alive in companies:
        realm = escape(str(realm_id))
        name = escape(str(company_name))
        if not alive:
            action = "revoked"
        elif disconnect_url:
            action = (
                '<form method="post" action="/_fake/disconnect">'
                f'<input type="hidden" name="realmId" value="{realm}">'
                f'<button type="submit" aria-label="Disconnect {name} inside QuickBooks">'
                "Disconnect inside QuickBooks</button></form>"
            )
        else:
            action = "live (no Disconnect URL set)"
        rows.append(f"<tr><td>{name}</td><td>{realm}</td><td>{action}</td></tr>")
    table = (
        "<table><thead><tr><th>Company</th><th>Realm</th><th></th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else "<p>No company is connected yet.</p>"
    )
    body = f"""<h1>Fake Intuit: controls</h1>
<p>The fake's clock: {escape(now)} ({offset_hours:+.1f} h from real time).</p>
<form method="post" action="/_fake/clock">
<input type="hidden" name="seconds" value="3700">
<button type="submit">Move the clock 1 hour ahead</button>
</form>
<p>Access tokens issued before then are expired at the fake, as at Intuit: the
site's next API call gets a 401 and refreshes once.</p>
<h2>Connected companies</h2>
{table}
{webhooks}"""
    return _page("Fake Intuit: controls", body)

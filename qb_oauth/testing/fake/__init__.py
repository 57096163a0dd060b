"""The fake Intuit: Intuit's OAuth 2.0 / OpenID service and CompanyInfo, as one WSGI app.

Held in memory, driven by a clock the test controls (see docs/testing.md).
``FakeIntuit.wsgi_app`` is the single implementation every transport runs.
Each module has one job:

- ``intuit``: ``FakeIntuit``, its settings and state, its URLs and the dispatch
- ``records``: companies, grants, codes, and what their values look like
- ``routes``: the endpoints' paths and the router
- ``wsgi``: request and response objects, environ parsing, the WSGI answer
- ``faults``: the fault kinds, their injection and their answers
- ``authorize``, ``tokens``, ``openid``: the OAuth 2.0 and OpenID endpoints
- ``accounting``: the Accounting API (CompanyInfo)
- ``controls``: counters, look-ups and revocation for tests; the ``/_fake/`` page
- ``webhooks``: signed webhook notifications to the site, retried on Intuit's schedule

Importing it needs neither Django nor a network.
"""

from ..clock import FakeClock as FakeClock
from ..errors import DropConnection, FakeIntuitError
from .authorize import CODE_LIFETIME as CODE_LIFETIME
from .faults import FAULT_KINDS
from .intuit import FakeIntuit
from .records import ACCOUNTING as ACCOUNTING
from .records import DEFAULT_COMPANIES as DEFAULT_COMPANIES
from .records import PAYMENT as PAYMENT
from .records import SCOPES, Company, Grant
from .routes import API_PATHS as API_PATHS
from .routes import AUTHORIZE_PATH as AUTHORIZE_PATH
from .routes import CONTROL_PATH as CONTROL_PATH
from .routes import DISCOVERY_PATHS as DISCOVERY_PATHS
from .routes import ENDPOINTS
from .routes import ISSUER_PATH as ISSUER_PATH
from .routes import JWKS_PATH as JWKS_PATH
from .routes import REVOKE_PATH as REVOKE_PATH
from .routes import TOKEN_PATH as TOKEN_PATH
from .routes import USERINFO_PATHS as USERINFO_PATHS
from .webhooks import INTUIT_RETRY_SCHEDULE as INTUIT_RETRY_SCHEDULE
from .webhooks import WebhookDelivery
from .wsgi import JSON_TYPE as JSON_TYPE
from .wsgi import NO_STORE as NO_STORE
from .wsgi import XML_TYPE as XML_TYPE

# The names above with "as" are importable from here as before the split; __all__ is unchanged.
__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "SCOPES",
    "Company",
    "DropConnection",
    "FakeIntuit",
    "FakeIntuitError",
    "Grant",
    "WebhookDelivery",
]

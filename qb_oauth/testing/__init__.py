"""A faithful offline stand-in for Intuit's OAuth 2.0 service and CompanyInfo.

For this project's tests and for the tests of sites that use qb_oauth; see
docs/testing.md. Importing it needs neither Django nor a network.
"""

from .adapter import FakeIntuitAdapter
from .clock import FakeClock
from .errors import DropConnection, FakeIntuitError
from .fake import ENDPOINTS, FAULT_KINDS, SCOPES, Company, FakeIntuit, Grant, WebhookDelivery
from .server import FakeIntuitServer

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "SCOPES",
    "Company",
    "DropConnection",
    "FakeClock",
    "FakeIntuit",
    "FakeIntuitAdapter",
    "FakeIntuitError",
    "FakeIntuitServer",
    "Grant",
    "WebhookDelivery",
]

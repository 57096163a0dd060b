"""The admin: state, history and actions, never a token (docs/admin.md).

Django's autodiscovery imports this package; importing :mod:`.connections` and
:mod:`.history` registers the admins:

- :mod:`.connections`: the connection changelist and change page;
- :mod:`.filters`: its refresh-expiry and failing filters;
- :mod:`.actions`: refresh now, check, revoke and disconnect, as actions and buttons;
- :mod:`.history`: connection events, sweep runs and API usage, read-only;
- :mod:`.webhooks`: webhook events, read-only, with an action to send the signal again.
"""

from .actions import MESSAGE_LIMIT, ConnectionActionsAdmin, Operation
from .connections import (
    EVENT_LIMIT,
    FAILURE_KINDS,
    INTERNAL_FIELDS,
    TOKEN_FIELDS,
    QuickBooksConnectionAdmin,
)
from .filters import FailingFilter, RefreshExpiringFilter
from .history import ApiUsageAdmin, ConnectionEventAdmin, SweepRunAdmin
from .webhooks import WebhookEventAdmin, WebhookStateFilter

__all__ = [
    "ApiUsageAdmin",
    "EVENT_LIMIT",
    "FAILURE_KINDS",
    "INTERNAL_FIELDS",
    "MESSAGE_LIMIT",
    "TOKEN_FIELDS",
    "ConnectionActionsAdmin",
    "ConnectionEventAdmin",
    "FailingFilter",
    "Operation",
    "QuickBooksConnectionAdmin",
    "RefreshExpiringFilter",
    "SweepRunAdmin",
    "WebhookEventAdmin",
    "WebhookStateFilter",
]

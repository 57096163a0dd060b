"""The web flow: the user's companies, Connect to QuickBooks, the callback, disconnect,
and the landing pages of Intuit's Disconnect and Reconnect URLs (docs/web-flow.md).

Views only call :mod:`qb_oauth.tokens` (which writes tokens) and
:mod:`qb_oauth.client` (which builds Intuit's URL); every failure becomes a
page or a message, never a 500, and nothing stored changes unless the
operation succeeded. No token ever reaches a template, a message or a log.

``qb_oauth.urls`` and sites import the views from here; where each one lives:

- :mod:`.common`: what every page shares (login, the error page, configuration mistakes,
  the checks on ``next`` and realm ids);
- :mod:`.flow`: ``connect`` and ``callback``;
- :mod:`.companies`: ``connections`` and ``disconnect``;
- :mod:`.intuit_urls`: ``intuit_disconnect`` and ``reconnect``;
- :mod:`.webhooks`: ``webhooks``, Intuit's webhook endpoint (docs/webhooks.md).
"""

from .common import logger, login_required
from .companies import connections, disconnect
from .flow import callback, connect
from .intuit_urls import intuit_disconnect, reconnect
from .webhooks import webhooks

__all__ = [
    "callback",
    "connect",
    "connections",
    "disconnect",
    "intuit_disconnect",
    "logger",
    "login_required",
    "reconnect",
    "webhooks",
]

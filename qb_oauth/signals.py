"""Signals of a connection's lifecycle.

Every signal is sent after the change it reports has been committed
(``transaction.on_commit``), with ``sender=QuickBooksConnection``, and carries
``owner`` besides the arguments below: what the connection belongs to
(docs/ownership.md; by default the user who connected it), or None if it no
longer exists.
"""

from django.dispatch import Signal

#: A user connected a company, or reconnected one its owner already had.
#: Arguments: ``connection``, ``owner``, ``created`` (bool: a new row), ``user`` (who
#: consented).
connection_created = Signal()

#: New tokens were stored after a refresh. Arguments: ``connection``, ``owner``,
#: ``rotated`` (bool: Intuit issued a new refresh token value).
tokens_refreshed = Signal()

#: Intuit refused the grant; the user must reconnect. Arguments:
#: ``connection``, ``owner``, ``reason`` (a short, non-secret text).
reauthorization_required = Signal()

#: The connection was disconnected. Arguments: ``connection``, ``owner``, ``by``
#: ("user", "admin" or "intuit": the user disconnected inside QuickBooks).
connection_disconnected = Signal()

#: The refresh token will expire soon for good: the user should reconnect.
#: Arguments: ``connection``, ``owner``, ``expires_at`` (aware datetime), ``kind``
#: ("hard": the five-year limit of the grant, or "rolling": refreshing failed).
refresh_token_expiring = Signal()

#: Intuit notified a change by webhook (sent once per stored event, on the cluster,
#: after the event committed). Arguments: ``event`` (a
#: :class:`~qb_oauth.models.WebhookEvent`: realm, entity, entity id, operation),
#: ``connections`` (a list of the realm's active connections, possibly empty).
#: A receiver that raises makes the event be sent again (up to
#: ``WEBHOOK_MAX_ATTEMPTS`` times), then flagged failed.
webhook_received = Signal()

#: The app's CorePlus (read) calls of the month reached 80 % or 95 % of
#: ``API_MONTHLY_QUOTA``; sent once per month and threshold. Arguments:
#: ``connection`` (None: the quota is the app's), ``month`` (a date, its first
#: day), ``percent`` (80 or 95), ``core_plus``, ``core`` (the month's counts so
#: far) and ``quota``.
api_quota_near = Signal()

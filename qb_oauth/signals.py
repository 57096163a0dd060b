"""Signals of a connection's lifecycle.

Every signal is sent after the change it reports has been committed
(``transaction.on_commit``), with ``sender=QuickBooksConnection``.
"""

from django.dispatch import Signal

#: A user connected a company, or reconnected one they already had.
#: Arguments: ``connection``, ``created`` (bool: a new row), ``user``.
connection_created = Signal()

#: New tokens were stored after a refresh. Arguments: ``connection``,
#: ``rotated`` (bool: Intuit issued a new refresh token value).
tokens_refreshed = Signal()

#: Intuit refused the grant; the user must reconnect. Arguments:
#: ``connection``, ``reason`` (a short, non-secret text).
reauthorization_required = Signal()

#: The connection was disconnected. Arguments: ``connection``, ``by``
#: ("user", "admin" or "intuit": the user disconnected inside QuickBooks).
connection_disconnected = Signal()

#: The refresh token will expire soon for good: the user should reconnect.
#: Arguments: ``connection``, ``expires_at`` (aware datetime), ``kind``
#: ("hard": the five-year limit of the grant, or "rolling": refreshing failed).
refresh_token_expiring = Signal()

#: The app's CorePlus (read) calls of the month reached 80 % or 95 % of
#: ``API_MONTHLY_QUOTA``; sent once per month and threshold. Arguments:
#: ``connection`` (None: the quota is the app's), ``month`` (a date, its first
#: day), ``percent`` (80 or 95), ``core_plus``, ``core`` (the month's counts so
#: far) and ``quota``.
api_quota_near = Signal()

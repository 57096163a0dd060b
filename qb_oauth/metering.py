"""Every Accounting API call counted, per connection and calendar month, as Intuit meters.

Intuit's App Partner Program meters the calls that read data out ("CorePlus":
reads and queries) per app per month, and cuts a Builder-tier app off after
500,000 of them; writes ("Core") are counted apart. :func:`count_call` adds
one call to counters in the Django cache named by ``QB_OAUTH["CACHE"]`` (one
per connection and kind, one per app and kind): an ``incr``, never a database
write. :func:`fold_usage`, run by every sweep, writes the counters into
:class:`~qb_oauth.models.ApiUsage`.

The counters hold the month's running totals, not increments, so folding is
idempotent (a row takes the larger of its value and the counter's). A counter
the cache lost (a restart, an eviction) starts again from the row, read once
when the key is missing: what is lost is at most the calls since the last fold.

``API_MONTHLY_QUOTA``: when the app's CorePlus count of the month reaches 80 %
and 95 % of it, :data:`~qb_oauth.signals.api_quota_near` is sent, once per
month and threshold across all processes (a ``cache.add`` of a marker key
decides which process sends it; the sweep checks again from the folded rows).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Sum
from django.utils import timezone

from .conf import qb_settings
from .events import send_robust
from .models import ApiUsage, QuickBooksConnection
from .signals import api_quota_near
from .throttle import KEY_PREFIX, incr_many, limits_cache

__all__ = [
    "THRESHOLDS",
    "MonthUsage",
    "app_usage",
    "connection_usage",
    "count_call",
    "fold_usage",
    "month_of",
    "usage_by_connection",
]

logger = logging.getLogger("qb_oauth.api")

#: The shares of ``API_MONTHLY_QUOTA`` at which api_quota_near is sent, in percent.
THRESHOLDS = (80, 95)
#: How long a month's counters and markers stay in the cache: past the month's end.
_KEEP = 40 * 86400
_READ, _WRITE = "r", "w"


@dataclass(frozen=True)
class MonthUsage:
    """Calls of one month: ``core_plus`` (reads and queries) and ``core`` (writes)."""

    month: date
    core_plus: int = 0
    core: int = 0

    @property
    def total(self) -> int:
        return self.core_plus + self.core


def month_of(moment: datetime | None = None) -> date:
    """The first day of the (UTC) calendar month of ``moment`` (default: now)."""
    moment = moment or timezone.now()
    return moment.astimezone(UTC).date().replace(day=1)


def _key(month: date, who: int | str, kind: str) -> str:
    return f"{KEY_PREFIX}:use:{month:%Y-%m}:{who}:{kind}"


def _stored(month: date, pk: int | None, kind: str) -> int:
    """The folded count: of connection ``pk``, or of the app (``pk`` None)."""
    field = "core_plus" if kind == _READ else "core"
    rows = ApiUsage.objects.filter(month=month)
    if pk is not None:
        rows = rows.filter(connection_id=pk)
    return int(rows.aggregate(n=Sum(field))["n"] or 0)


def count_call(connection: QuickBooksConnection, *, read: bool) -> None:
    """Count one API call of ``connection`` (a read or query when ``read``, else a write).

    Both counters (the connection's, the app's) in one round trip on Redis. A counter
    just made (the month's first call, or one the cache lost) is given the folded count
    first. Never raises: a cache that fails loses a count, never the caller's answer.
    """
    month = month_of()
    kind = _READ if read else _WRITE
    keys = [_key(month, connection.pk, kind), _key(month, "app", kind)]
    try:
        mine, app_count = incr_many(limits_cache(), keys, _KEEP)
        before = app_count - 1  # the app's count this call moved from
        for key, value, pk in ((keys[0], mine, connection.pk), (keys[1], app_count, None)):
            if value == 1:  # made now: start from the database's count
                seed = _stored(month, pk, kind)
                if seed:
                    limits_cache().incr(key, seed)
                    app_count += seed if pk is None else 0
    except Exception:  # noqa: BLE001 - metering must not break a call
        logger.warning("Could not count a QuickBooks API call in the cache.", exc_info=True)
        return
    if read:
        # Only the call that moved the count across a threshold looks for its marker:
        # the calls after it (the rest of a busy month) cost no extra round trip.
        _maybe_signal(month, app_count, since=before)


def _maybe_signal(
    month: date, core_plus: int, core: int | None = None, *, since: int | None = None
) -> int:
    """Send api_quota_near for each threshold ``core_plus`` has reached (and ``since``, the
    count before, had not) and no process has announced yet this month; returns how many
    were sent."""
    quota = qb_settings.API_MONTHLY_QUOTA
    sent = 0
    for percent in THRESHOLDS:
        if core_plus * 100 < quota * percent:
            break
        if since is not None and since * 100 >= quota * percent:
            continue  # crossed before this call: announced then (or by the sweep)
        marker = f"{KEY_PREFIX}:quota:{month:%Y-%m}:{percent}"
        if not limits_cache().add(marker, 1, timeout=_KEEP):
            continue
        if core is None:
            core = app_usage(month).core
        send_robust(
            api_quota_near,
            connection=None,
            month=month,
            percent=percent,
            core_plus=core_plus,
            core=core,
            quota=quota,
        )
        sent += 1
    return sent


def _live(keys: Iterable[str]) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in limits_cache().get_many(list(keys)).items()}
    except Exception:  # noqa: BLE001 - the folded rows still answer
        logger.warning("Could not read the API counts from the cache.", exc_info=True)
        return {}


def connection_usage(connection: QuickBooksConnection | int, month: date | None = None):
    """The month's calls of a connection: the larger of its folded row and its counters."""
    month = month or month_of()
    pk = connection if isinstance(connection, int) else connection.pk
    row = ApiUsage.objects.filter(connection_id=pk, month=month).first()
    live = _live([_key(month, pk, _READ), _key(month, pk, _WRITE)])
    return MonthUsage(
        month,
        max(row.core_plus if row else 0, live.get(_key(month, pk, _READ), 0)),
        max(row.core if row else 0, live.get(_key(month, pk, _WRITE), 0)),
    )


def usage_by_connection(pks: Iterable[int], month: date | None = None) -> dict[int, MonthUsage]:
    """:func:`connection_usage` of many connections: one query and one cache read."""
    month = month or month_of()
    pks = list(pks)
    rows = {r.connection_id: r for r in ApiUsage.objects.filter(month=month, connection_id__in=pks)}
    live = _live(_key(month, pk, kind) for pk in pks for kind in (_READ, _WRITE))
    out = {}
    for pk in pks:
        row = rows.get(pk)
        out[pk] = MonthUsage(
            month,
            max(row.core_plus if row else 0, live.get(_key(month, pk, _READ), 0)),
            max(row.core if row else 0, live.get(_key(month, pk, _WRITE), 0)),
        )
    return out


def app_usage(month: date | None = None) -> MonthUsage:
    """The app's calls of the month: the larger of the folded rows' sum and its counters."""
    month = month or month_of()
    totals = ApiUsage.objects.filter(month=month).aggregate(r=Sum("core_plus"), w=Sum("core"))
    live = _live([_key(month, "app", _READ), _key(month, "app", _WRITE)])
    return MonthUsage(
        month,
        max(int(totals["r"] or 0), live.get(_key(month, "app", _READ), 0)),
        max(int(totals["w"] or 0), live.get(_key(month, "app", _WRITE), 0)),
    )


def fold_usage(now: datetime | None = None, *, chunk: int = 500) -> int:
    """Write the cache's counts of this month (and the last, for its final calls) into
    :class:`ApiUsage`; returns how many rows changed. Idempotent: run it as often as
    you like. Then checks the quota against the folded totals."""
    now = now or timezone.now()
    this_month = month_of(now)
    last_month = month_of(datetime.combine(this_month, datetime.min.time()) - timedelta(days=1))
    changed = 0
    pks = list(QuickBooksConnection.objects.order_by("pk").values_list("pk", flat=True))
    for month in (last_month, this_month):
        for start in range(0, len(pks), chunk):
            changed += _fold_chunk(month, pks[start : start + chunk])
    usage = app_usage(this_month)
    _maybe_signal(this_month, usage.core_plus, usage.core)
    return changed


def _fold_chunk(month: date, pks: list[int]) -> int:
    keys = {(pk, kind): _key(month, pk, kind) for pk in pks for kind in (_READ, _WRITE)}
    live = _live(keys.values())
    if not live:
        return 0
    rows = {
        row.connection_id: row
        for row in ApiUsage.objects.filter(month=month, connection_id__in=pks)
    }
    changed = 0
    for pk in pks:
        reads = live.get(keys[(pk, _READ)])
        writes = live.get(keys[(pk, _WRITE)])
        if reads is None and writes is None:
            continue
        row = rows.get(pk)
        core_plus = max(row.core_plus if row else 0, reads or 0)
        core = max(row.core if row else 0, writes or 0)
        if row is not None and (row.core_plus, row.core) == (core_plus, core):
            continue
        _, _created = ApiUsage.objects.update_or_create(
            connection_id=pk,
            month=month,
            defaults={"core_plus": core_plus, "core": core},
        )
        changed += 1
    return changed

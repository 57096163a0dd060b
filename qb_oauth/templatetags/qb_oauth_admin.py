"""Relative times and expiry styles for the admin and the management commands.

``{% load qb_oauth_admin %}`` gives ``{{ value|qb_ago }}`` (a relative time
with the absolute one on hover). The plain functions are shared with
:mod:`qb_oauth.admin`, ``qb_status`` and ``qb_refresh``, so all say the same thing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..conf import qb_settings

register = template.Library()

#: A refresh token this close to its end is shown in the danger style.
DANGER_WINDOW = timedelta(days=7)


def warning_window() -> timedelta:
    """The window of the warning style: ``QB_OAUTH["EXPIRY_WARNING_WINDOW"]`` (30 days)."""
    return timedelta(seconds=qb_settings.EXPIRY_WARNING_WINDOW)


def humanize_seconds(seconds: float) -> str:
    """``37 min``, ``2 h``, ``12 days``, ``5 years``: a duration in one unit (rounded down,
    except years)."""
    s = int(abs(seconds))
    if s < 60:
        return _("%(n)d s") % {"n": s}
    if s < 90 * 60:
        return _("%(n)d min") % {"n": s // 60}
    if s < 48 * 3600:
        return _("%(n)d h") % {"n": s // 3600}
    days = s // 86400
    if days < 730:
        return ngettext("%(n)d day", "%(n)d days", days) % {"n": days}
    years = round(days / 365.25)
    return ngettext("%(n)d year", "%(n)d years", years) % {"n": years}


def _relative(value: datetime | None, now: datetime | None, ahead: str, past: str) -> str:
    """``ahead`` or ``past`` (each with ``%(d)s``), by the side of now ``value`` is on; now
    itself counts as past, so a token expiring this second reads as expired."""
    if value is None:
        return ""
    delta = (value - (now or timezone.now())).total_seconds()
    return (ahead if delta > 0 else past) % {"d": humanize_seconds(delta)}


def expiry_text(value: datetime | None, now: datetime | None = None) -> str:
    """``expires in 37 min`` or ``expired 2 h ago``; empty for None."""
    return _relative(value, now, _("expires in %(d)s"), _("expired %(d)s ago"))


def ago_text(value: datetime | None, now: datetime | None = None) -> str:
    """``2 h ago`` (or ``in 5 min`` for a time still ahead); empty for None."""
    return _relative(value, now, _("in %(d)s"), _("%(d)s ago"))


def absolute(value: datetime | None) -> str:
    """The absolute time in the current time zone, for the hover title."""
    if value is None:
        return ""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def expiry_level(value: datetime | None, now: datetime | None = None) -> str:
    """``danger`` within :data:`DANGER_WINDOW` (or past), ``warning`` within the warning window."""
    if value is None:
        return ""
    left = value - (now or timezone.now())
    if left <= DANGER_WINDOW:
        return "danger"
    if left <= warning_window():
        return "warning"
    return ""


def time_html(text: str, value: datetime | None, level: str = "") -> SafeString | None:
    """A relative time in a span whose title holds the absolute time."""
    if value is None:
        return None
    css = f"qb-time qb-{level}" if level else "qb-time"
    return format_html('<span class="{}" title="{}">{}</span>', css, absolute(value), text)


@register.filter
def qb_ago(value: datetime | None) -> SafeString | str:
    """``{{ event.at|qb_ago }}``: ``3 h ago`` with the absolute time on hover."""
    html = time_html(ago_text(value), value) if value is not None else None
    return html if html is not None else ""

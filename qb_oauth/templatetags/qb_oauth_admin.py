"""Relative times and expiry styles for the admin and ``qb_status``.

``{% load qb_oauth_admin %}`` gives ``{{ value|qb_ago }}`` (a relative time
with the absolute one on hover). The plain functions are shared with
:mod:`qb_oauth.admin` and the ``qb_status`` command, so both say the same thing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html
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


def expiry_text(value: datetime | None, now: datetime | None = None) -> str:
    """``expires in 37 min`` or ``expired 2 h ago``; empty for None."""
    if value is None:
        return ""
    now = now or timezone.now()
    delta = (value - now).total_seconds()
    if delta > 0:
        return _("expires in %(d)s") % {"d": humanize_seconds(delta)}
    return _("expired %(d)s ago") % {"d": humanize_seconds(delta)}


def ago_text(value: datetime | None, now: datetime | None = None) -> str:
    """``2 h ago`` (or ``in 5 min`` for a time still ahead); empty for None."""
    if value is None:
        return ""
    now = now or timezone.now()
    delta = (value - now).total_seconds()
    if delta > 0:
        return _("in %(d)s") % {"d": humanize_seconds(delta)}
    return _("%(d)s ago") % {"d": humanize_seconds(delta)}


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


def time_html(text: str, value: datetime | None, level: str = ""):
    """A relative time in a span whose title holds the absolute time."""
    if value is None:
        return None
    css = f"qb-time qb-{level}" if level else "qb-time"
    return format_html('<span class="{}" title="{}">{}</span>', css, absolute(value), text)


@register.filter
def qb_ago(value: datetime | None):
    """``{{ event.at|qb_ago }}``: ``3 h ago`` with the absolute time on hover."""
    if value is None:
        return ""
    return time_html(ago_text(value), value)

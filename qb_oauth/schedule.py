"""The django-q2 schedule of the refresh sweep, kept in line with ``SCHEDULE_MINUTES``."""

from __future__ import annotations

import logging

from django.apps import apps as global_apps
from django.db import DEFAULT_DB_ALIAS

from .conf import qb_settings

logger = logging.getLogger("qb_oauth.schedule")

SCHEDULE_NAME = "qb_oauth: refresh due QuickBooks connections"
TASK = "qb_oauth.tasks.refresh_due_connections"


def ensure_schedule(sender=None, using: str = DEFAULT_DB_ALIAS, apps=global_apps, **kwargs) -> None:
    """Create or update the sweep's ``Schedule`` (post_migrate receiver; safe to run again).

    Does nothing when django_q is not installed (check qb_oauth.W005 says so).
    """
    if not global_apps.is_installed("django_q"):
        return
    try:
        from django_q.models import Schedule
    except ImportError:  # pragma: no cover - django_q listed but not importable
        return
    from django.db import connections

    if "django_q_schedule" not in connections[using].introspection.table_names():
        return
    minutes = qb_settings.SCHEDULE_MINUTES
    schedule, created = Schedule.objects.using(using).update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
        },
    )
    logger.info(
        "%s schedule %r every %s minutes.",
        "Created" if created else "Updated",
        SCHEDULE_NAME,
        minutes,
    )

"""The django-q2 schedule of the refresh sweep, kept in line with ``SCHEDULE_MINUTES``.

:func:`ensure_schedule` runs after every ``migrate`` (a ``post_migrate``
receiver connected in ``QbOAuthConfig.ready``). It keeps exactly one
``Schedule`` named :data:`SCHEDULE_NAME` running :data:`TASK` every
``SCHEDULE_MINUTES``: created the first time, updated when the setting
changed, left alone otherwise (its ``next_run`` is not reset by a deploy).
Rows with the same name made by hand or by a race of two ``migrate`` runs are
folded into one. A site that edits the schedule in django-q2's admin and
wants to keep its edits should not use the same name.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.apps import apps as global_apps
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from .conf import qb_settings

logger = logging.getLogger("qb_oauth.schedule")

SCHEDULE_NAME = "qb_oauth: refresh due QuickBooks connections"
TASK = "qb_oauth.tasks.refresh_due_connections"


def ensure_schedule(sender=None, using: str = DEFAULT_DB_ALIAS, apps=global_apps, **kwargs):
    """Create or update the sweep's ``Schedule``; return it (None without django_q).

    Safe to run again and again: never makes a second schedule. Does nothing
    when django_q is not installed (check qb_oauth.W002 says so) or its
    tables do not exist yet.
    """
    if not global_apps.is_installed("django_q"):
        return None
    try:
        from django_q.models import Schedule
    except ImportError:  # pragma: no cover - django_q listed but not importable
        return None
    if "django_q_schedule" not in connections[using].introspection.table_names():
        return None

    minutes = qb_settings.SCHEDULE_MINUTES
    wanted = {
        "func": TASK,
        "schedule_type": Schedule.MINUTES,
        "minutes": minutes,
        "repeats": -1,
    }
    manager = Schedule.objects.using(using)
    with transaction.atomic(using=using):
        rows = list(manager.select_for_update().filter(name=SCHEDULE_NAME).order_by("pk"))
        if not rows:
            schedule = manager.create(name=SCHEDULE_NAME, next_run=timezone.now(), **wanted)
            logger.info("Created schedule %r: every %s minutes.", SCHEDULE_NAME, minutes)
            return schedule
        schedule, extra = rows[0], rows[1:]
        if extra:
            manager.filter(pk__in=[s.pk for s in extra]).delete()
            logger.warning("Removed %s duplicate schedule(s) %r.", len(extra), SCHEDULE_NAME)
        changed = [name for name, value in wanted.items() if getattr(schedule, name) != value]
        if changed:
            for name in changed:
                setattr(schedule, name, wanted[name])
            # A shorter period applies now, not after the old, longer wait.
            soonest = timezone.now() + timedelta(minutes=minutes)
            if schedule.next_run is None or schedule.next_run > soonest:
                schedule.next_run = soonest
                changed.append("next_run")
            schedule.save(using=using, update_fields=changed)
            logger.info("Updated schedule %r: every %s minutes.", SCHEDULE_NAME, minutes)
        return schedule

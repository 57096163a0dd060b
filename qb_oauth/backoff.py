"""The backoff columns of a connection and the only policy that writes them.

In the manner of django-otp's ``ThrottlingMixin``: the columns that count
failures and say when to try again live beside the code that computes their
values, so every writer (an outage, a refusal, an unreadable row, a success)
writes the same thing. The sweep reads ``next_attempt_at`` to leave a
connection alone until then (docs/scheduled-refresh.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import F
from django.utils.translation import gettext_lazy as _

from .conf import qb_settings

#: The longest text kept of an error.
ERROR_LIMIT = 2000


def backoff_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive outages: exponential, capped."""
    if failures <= 0:
        return 0.0
    return min(qb_settings.BACKOFF_MAX, qb_settings.BACKOFF_BASE * 2 ** min(failures - 1, 30))


class BackoffMixin(models.Model):
    """Consecutive failures, the last error and when to try again; see the module docstring."""

    last_error = models.TextField(_("last error"), blank=True)
    last_error_at = models.DateTimeField(_("last error at"), null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(_("consecutive failures"), default=0)
    next_attempt_at = models.DateTimeField(
        _("next attempt"),
        null=True,
        blank=True,
        help_text=_("Backoff after outages: the sweep leaves the connection alone until then."),
    )

    class Meta:
        abstract = True

    @staticmethod
    def backoff_success_values() -> dict[str, Any]:
        """What a success writes: no failures, no error, no wait."""
        return {
            "consecutive_failures": 0,
            "last_error": "",
            "last_error_at": None,
            "next_attempt_at": None,
        }

    @staticmethod
    def backoff_cleared_values() -> dict[str, Any]:
        """What ending a connection writes: no failures in a row, no wait; the last error
        stays readable in the history."""
        return {"consecutive_failures": 0, "next_attempt_at": None}

    @staticmethod
    def backoff_failure_values(
        error: str, now: datetime, *, failures: int | None = None
    ) -> dict[str, Any]:
        """What a failure writes, in the same statement as whatever else it changes.

        ``failures``: the count this failure makes (read beforehand): the wait grows
        with it. Without it, the connection is not retried on schedule at all (a
        refusal only its user can fix): ``next_attempt_at`` is cleared.
        """
        wait = None if failures is None else now + timedelta(seconds=backoff_delay(failures))
        return {
            "consecutive_failures": F("consecutive_failures") + 1,
            "last_error": error[:ERROR_LIMIT],
            "last_error_at": now,
            "next_attempt_at": wait,
        }

    def _backoff_extra_values(self, now: datetime) -> dict[str, Any]:
        """Other columns a failure touches: ``updated_at`` where the model has one
        (``QuerySet.update()`` does not apply ``auto_now``)."""
        names = {f.name for f in self._meta.concrete_fields}
        return {"updated_at": now} if "updated_at" in names else {}

    def backoff_failure(self, error: str, now: datetime) -> int:
        """Count one more failure of this row with its backoff; return the new count.

        Reads the stored count first (another process may have counted one meanwhile),
        then writes the four columns in one UPDATE, and updates this instance.
        """
        rows = type(self)._default_manager.filter(pk=self.pk)
        failures = (rows.values_list("consecutive_failures", flat=True).first() or 0) + 1
        values = self.backoff_failure_values(error, now, failures=failures)
        rows.update(**values, **self._backoff_extra_values(now))
        self.consecutive_failures = failures
        self.last_error = error[:ERROR_LIMIT]
        self.last_error_at = now
        self.next_attempt_at = now + timedelta(seconds=backoff_delay(failures))
        return failures

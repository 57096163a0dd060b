"""The queries qb_oauth asks of its connections: which are due, refreshable, expiring."""

from __future__ import annotations

import math
from datetime import timedelta

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import BooleanField, Case, Q, Value, When
from django.utils import timezone

from .choices import TOKEN_COLUMNS, ConnectionState
from .conf import qb_settings

#: The longest window ``refresh_expiring_within`` takes: 100 years. Intuit's refresh
#: tokens live five years at most; beyond a datetime's range the query would overflow.
EXPIRY_WINDOW_MAX_DAYS = 36500


def expiry_window_seconds(days) -> float:
    """``days`` (a number, or its text) as seconds, for ``refresh_expiring_within``.

    Raises ``ValueError`` unless it is a number from 0 to :data:`EXPIRY_WINDOW_MAX_DAYS`:
    the admin's filter and ``qb_status --expiring-within`` turn that into their own errors.
    """
    try:
        value = float(days)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value <= EXPIRY_WINDOW_MAX_DAYS:  # NaN compares false: refused too
        raise ValueError(
            f"the number of days must be from 0 to {EXPIRY_WINDOW_MAX_DAYS}, "
            f"not {str(days)[:40]!r}."
        )
    return value * 86400


def fill_default_owner(connection) -> None:
    """Without an owner, a connection belongs to its user (the default adapter's rule),
    so code that makes rows directly (``create``, ``bulk_create``) keeps working."""
    if connection.owner_content_type_id is None and connection.user_id is not None:
        user_model = connection._meta.get_field("user").related_model
        connection.owner_content_type = ContentType.objects.get_for_model(user_model)
        connection.owner_object_id = str(connection.user_id)


class QuickBooksConnectionQuerySet(models.QuerySet):
    def active(self):
        return self.filter(state=ConnectionState.ACTIVE)

    def for_user(self, user):
        """The connections ``user`` consented to (whoever owns them)."""
        return self.filter(user=user)

    def owned_by(self, owner):
        """The connections that belong to ``owner``: a model instance (a user, a team), or
        a queryset of them (all of a user's teams, in one query).

        ``QuickBooksConnection.objects.owned_by(team).get(realm_id=...)`` is how a
        background job finds a team's company (docs/ownership.md).
        """
        if isinstance(owner, models.QuerySet):
            # The object id is str(pk): made in Python, not by a database cast, which
            # spells a UUID differently on SQLite (one query more, the same everywhere).
            keys = [str(pk) for pk in owner.order_by().values_list("pk", flat=True)]
            return self.filter(
                owner_content_type=ContentType.objects.get_for_model(owner.model),
                owner_object_id__in=keys,
            )
        if owner is None or owner.pk is None:
            return self.none()
        return self.filter(
            owner_content_type=ContentType.objects.get_for_model(owner),
            owner_object_id=str(owner.pk),
        )

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        for obj in objs:
            fill_default_owner(obj)
        return super().bulk_create(objs, *args, **kwargs)

    def failing(self):
        return self.filter(consecutive_failures__gt=0)

    def for_client_id(self, client_id: str | None):
        """Connections whose tokens the Intuit app ``client_id`` may use (rows made before
        the client id was recorded count as the configured app's)."""
        return self.filter(Q(client_id="") | Q(client_id=client_id or ""))

    def with_token_presence(self):
        """Defer the token columns and annotate ``qb_has_<column>`` (a database ``IS NULL``
        test): whether a token is stored, without decrypting one."""
        return self.defer(*TOKEN_COLUMNS).annotate(
            **{
                f"qb_has_{name}": Case(
                    When(**{f"{name}__isnull": True}, then=Value(False)),
                    default=Value(True),
                    output_field=BooleanField(),
                )
                for name in TOKEN_COLUMNS
            }
        )

    def refresh_expiring_within(self, seconds: float, now=None):
        """Connections whose refresh token (rolling or hard) ends within ``seconds``.

        ``seconds`` from 0 to 100 years (:data:`EXPIRY_WINDOW_MAX_DAYS`); anything else
        (negative, NaN, not a number, far enough to overflow a datetime) is ``ValueError``.
        """
        try:
            value = float(seconds)
        except (TypeError, ValueError):
            value = math.nan
        if not 0 <= value <= EXPIRY_WINDOW_MAX_DAYS * 86400:
            raise ValueError(
                f"refresh_expiring_within() takes 0 to {EXPIRY_WINDOW_MAX_DAYS * 86400} seconds "
                f"({EXPIRY_WINDOW_MAX_DAYS} days), not {str(seconds)[:40]!r}."
            )
        now = now or timezone.now()
        limit = now + timedelta(seconds=value)
        return self.filter(refresh_token__isnull=False).filter(
            Q(refresh_token_expires_at__lte=limit) | Q(refresh_token_hard_expires_at__lte=limit)
        )

    def due(self, now=None):
        """Active connections of the configured environment that the scheduled sweep should
        refresh now (see qb_oauth.tasks)."""
        now = now or timezone.now()
        margin = now + timedelta(seconds=qb_settings.REFRESH_MARGIN)
        recent = now - timedelta(seconds=qb_settings.RECENT_USE_WINDOW)
        keepalive = now - timedelta(seconds=qb_settings.KEEPALIVE_AGE)
        expiring_and_used = Q(access_token_expires_at__lte=margin) & Q(last_used_at__gte=recent)
        stale = Q(last_refreshed_at__lte=keepalive) | Q(last_refreshed_at__isnull=True)
        not_backing_off = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        return self.refreshable().filter(expiring_and_used | stale).filter(not_backing_off)

    def refreshable(self):
        """Active connections whose tokens this site's keys may use: the configured
        environment and Intuit app (client id). Others are never refreshed or marked lost."""
        return (
            self.active()
            .filter(environment=qb_settings.ENVIRONMENT)
            .for_client_id(qb_settings.CLIENT_ID)
        )

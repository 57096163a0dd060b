"""Who owns a connection: the adapter a site overrides (docs/ownership.md).

In the manner of django-allauth's adapters: one class, named by
``QB_OAUTH["ADAPTER"]``, decides whose a connection is. Every view, Intuit's
Disconnect and Reconnect URLs, the admin and ``qb_status`` ask it.
:class:`DefaultAdapter` keeps the per-user behaviour: a connection belongs to
the user who connected it. A site whose companies belong to a team or an
organization subclasses it and overrides :meth:`~DefaultAdapter.get_owner`
and :meth:`~DefaultAdapter.connections_for` (and :meth:`~DefaultAdapter.can_manage`
when some members may only look).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import models
from django.http import HttpRequest
from django.utils.module_loading import import_string

from .conf import qb_settings
from .exceptions import ImproperlyConfigured
from .models import QuickBooksConnection, owner_key

if TYPE_CHECKING:
    from .models import QuickBooksConnectionQuerySet

#: What an adapter must offer: the methods every view calls.
ADAPTER_METHODS = ("get_owner", "connections_for", "can_manage", "owner_display")


class DefaultAdapter:
    """A connection belongs to the user who connected it: what a site that sets nothing gets."""

    def get_owner(self, request: HttpRequest) -> models.Model | None:
        """What a new connection made by ``request`` belongs to: by default its user.

        Called when Connect to QuickBooks is pressed; the answer is remembered in the
        OAuth state, so the callback stores the owner chosen then. ``None`` refuses the
        connect (404), for instance a user who belongs to no team.
        """
        user = getattr(request, "user", None)
        return user if getattr(user, "is_authenticated", False) else None

    def connections_for(self, request: HttpRequest) -> QuickBooksConnectionQuerySet:
        """The connections ``request`` may see: the connections page lists these, and
        a connection outside them is a 404 everywhere."""
        return QuickBooksConnection.objects.owned_by(self.get_owner(request))

    def can_manage(self, request: HttpRequest, connection: QuickBooksConnection) -> bool:
        """May ``request`` disconnect or reconnect ``connection``? By default: whoever
        sees it in ``connections_for`` (override to let some members only look)."""
        if type(self).connections_for is DefaultAdapter.connections_for:
            owner = self.get_owner(request)  # the default rule, answered without a query
            if owner is None:
                return False
            content_type, object_id = owner_key(owner)
            return (
                connection.owner_content_type_id == content_type.pk
                and connection.owner_object_id == object_id
            )
        return self.connections_for(request).filter(pk=connection.pk).exists()

    def owner_display(self, owner: Any) -> str:
        """How ``owner`` is named in the admin and ``qb_status``: a user by their username,
        anything else by ``str()``."""
        if owner is None:
            return "-"
        get_username = getattr(owner, "get_username", None)
        return str(get_username()) if callable(get_username) else str(owner)


def get_adapter() -> DefaultAdapter:
    """An instance of the configured ``QB_OAUTH["ADAPTER"]`` (read at each call, so
    ``override_settings`` takes effect at once). One that cannot be imported is
    :class:`~qb_oauth.exceptions.ImproperlyConfigured` (``qb_oauth.E012`` at startup)."""
    try:
        adapter_class = import_string(qb_settings.ADAPTER)
    except ImportError as err:
        raise ImproperlyConfigured(
            f"QB_OAUTH['ADAPTER'] cannot be imported: {qb_settings.ADAPTER!r}."
        ) from err
    return adapter_class()


def adapter_problem(path: str) -> str | None:
    """Why ``path`` cannot be the adapter (for the system check), or None."""
    try:
        adapter_class = import_string(path)
    except ImportError as err:
        return f"it cannot be imported ({err})"
    if not isinstance(adapter_class, type):
        return "it is not a class"
    missing = [name for name in ADAPTER_METHODS if not callable(getattr(adapter_class, name, None))]
    if missing:
        return f"it has no {', '.join(missing)} (subclass qb_oauth.adapter.DefaultAdapter)"
    return None


def owner_of(content_type_id: Any, object_id: Any) -> models.Model | None:
    """The owner stored as (content type, object id), or None when it no longer exists."""
    try:
        model = ContentType.objects.get_for_id(int(content_type_id)).model_class()
    except (ContentType.DoesNotExist, TypeError, ValueError):
        return None
    if model is None:
        return None
    try:
        return model._default_manager.get(pk=object_id)
    except (ObjectDoesNotExist, TypeError, ValueError, ValidationError):
        return None

"""The OAuth ``state`` of a pending connection: single-use, bound to the session, short-lived.

Modelled on django-allauth's ``socialaccount/internal/statekit.py``: the
states a session has handed out live in the session itself, at most
:data:`MAX_PENDING` of them (the oldest goes first), each with the time it was
made and what the callback needs to finish the flow (the page to come back to,
the redirect URI and scopes sent to Intuit, the user who asked).

A state is removed from the session the moment a callback presents it,
whatever happens next, so it works once. The session only holds a SHA-256 of
each state, so a leaked session row does not hold a usable state, and a few
digests of recently used states, so a reused link gets a precise message.

Another session's state is simply unknown here: the session is the binding.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from django.utils import timezone

from .conf import qb_settings
from .exceptions import InvalidState

SESSION_KEY = "qb_oauth_states"
USED_SESSION_KEY = "qb_oauth_used_states"

#: How many unfinished flows one session may have at once (several tabs).
MAX_PENDING = 5
#: How many used states are remembered, to tell "already used" from "unknown".
MAX_USED = 10

#: Why a state was refused; :class:`InvalidState` carries one as ``reason``.
MISSING = "missing"
UNKNOWN = "unknown"
EXPIRED = "expired"
REUSED = "reused"
OTHER_USER = "other_user"


@dataclass(frozen=True)
class PendingState:
    """What :func:`issue` remembered about one flow, returned by :func:`consume`."""

    next_url: str
    redirect_uri: str
    scopes: list[str] = field(default_factory=list)
    user_id: str | None = None
    realm_id: str | None = None
    created_at: float = 0.0
    #: The owner chosen when the flow started (docs/ownership.md): its content type id
    #: and object id; None in states issued before owners existed.
    owner: tuple[int, str] | None = None


class StateRefused(InvalidState):
    """A callback's ``state`` was refused; ``reason`` is one of the module's constants."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> float:
    # timezone.now() rather than time.time(): both follow time-machine, this one reads better.
    return timezone.now().timestamp()


def _pending(request) -> dict[str, dict[str, Any]]:
    states = request.session.get(SESSION_KEY)
    return dict(states) if isinstance(states, dict) else {}


def _drop_expired(states: dict[str, dict[str, Any]], now: float) -> None:
    max_age = qb_settings.STATE_MAX_AGE
    for key in [k for k, v in states.items() if now - float(v.get("created_at", 0)) > max_age]:
        del states[key]


def issue(
    request,
    *,
    next_url: str,
    redirect_uri: str,
    scopes: list[str],
    realm_id: str | None = None,
    owner: tuple[int, str] | None = None,
) -> str:
    """Make a new state for ``request``'s session and remember the flow; return the state.

    ``owner``: (content type id, object id) of what the connection will belong to."""
    now = _now()
    states = _pending(request)
    _drop_expired(states, now)
    while len(states) >= MAX_PENDING:
        oldest = min(states, key=lambda k: float(states[k].get("created_at", 0)))
        del states[oldest]
    state = secrets.token_urlsafe(32)
    user = getattr(request, "user", None)
    pending = PendingState(
        next_url=next_url,
        redirect_uri=redirect_uri,
        scopes=list(scopes),
        user_id=_user_id(user),
        realm_id=realm_id,
        created_at=now,
        owner=owner,
    )
    states[_digest(state)] = asdict(pending)
    request.session[SESSION_KEY] = states
    return state


def consume(request, state: str | None) -> PendingState:
    """Take ``state`` out of the session and return its flow, or raise :class:`StateRefused`.

    The state is removed before anything is checked, so it can never be
    presented twice, even when this call raises.
    """
    if not state:
        raise StateRefused(MISSING, "The callback carries no state.")
    if len(state) > 512:
        raise StateRefused(UNKNOWN, "The callback's state is not one this session issued.")
    key = _digest(state)
    now = _now()
    states = _pending(request)
    entry = states.pop(key, None)
    _drop_expired(states, now)
    request.session[SESSION_KEY] = states
    if entry is None:
        used = request.session.get(USED_SESSION_KEY) or []
        if key in used:
            raise StateRefused(REUSED, "The callback's state was already used.")
        raise StateRefused(UNKNOWN, "The callback's state is not one this session issued.")
    used = [k for k in (request.session.get(USED_SESSION_KEY) or []) if k != key]
    request.session[USED_SESSION_KEY] = (used + [key])[-MAX_USED:]
    known = {name: entry[name] for name in PendingState.__dataclass_fields__ if name in entry}
    pending = PendingState(**known)
    if now - pending.created_at > qb_settings.STATE_MAX_AGE or pending.created_at > now + 60:
        raise StateRefused(EXPIRED, "The callback's state has expired.")
    if pending.user_id != _user_id(getattr(request, "user", None)):
        raise StateRefused(OTHER_USER, "The callback's state was issued to another user.")
    return pending


def pending_count(request) -> int:
    """How many unexpired flows ``request``'s session has open (for tests and templates)."""
    states = _pending(request)
    _drop_expired(states, _now())
    return len(states)


def _user_id(user: Any) -> str | None:
    """The signed-in user's pk as text, or None for an anonymous (or missing) user."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)

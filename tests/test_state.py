"""The OAuth state kept in the session: single use, expiry, bound to session and user."""

import json
import time

import pytest
import time_machine
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.test import RequestFactory

from qb_oauth import state
from qb_oauth.exceptions import InvalidState

pytestmark = pytest.mark.django_db


@pytest.fixture
def request_for(user):
    def make(who=user, session=None):
        request = RequestFactory().get("/quickbooks/callback/")
        request.session = session if session is not None else SessionStore()
        request.user = who
        return request

    return make


def issue(request, **kwargs):
    values = {
        "next_url": "/back/",
        "redirect_uri": "http://testserver/quickbooks/callback/",
        "scopes": ["com.intuit.quickbooks.accounting"],
    }
    values.update(kwargs)
    return state.issue(request, **values)


def test_issue_then_consume_returns_the_flow(request_for, user):
    request = request_for()
    value = issue(request, realm_id="123")
    assert len(value) >= 40
    pending = state.consume(request, value)
    assert pending.next_url == "/back/"
    assert pending.redirect_uri == "http://testserver/quickbooks/callback/"
    assert pending.scopes == ["com.intuit.quickbooks.accounting"]
    assert pending.realm_id == "123"
    assert pending.user_id == str(user.pk)


def test_states_are_unpredictable(request_for):
    request = request_for()
    values = {issue(request) for _ in range(50)}
    assert len(values) == 50


def test_a_state_works_once(request_for):
    request = request_for()
    value = issue(request)
    state.consume(request, value)
    with pytest.raises(state.StateRefused) as refused:
        state.consume(request, value)
    assert refused.value.reason == state.REUSED


def test_refusals_are_invalid_state_and_suspicious(request_for):
    with pytest.raises(InvalidState):
        state.consume(request_for(), "nope")
    from django.core.exceptions import SuspiciousOperation

    assert issubclass(state.StateRefused, SuspiciousOperation)


@pytest.mark.parametrize("value,reason", [(None, state.MISSING), ("", state.MISSING)])
def test_missing(request_for, value, reason):
    with pytest.raises(state.StateRefused) as refused:
        state.consume(request_for(), value)
    assert refused.value.reason == reason


def test_unknown(request_for):
    request = request_for()
    issue(request)
    with pytest.raises(state.StateRefused) as refused:
        state.consume(request, "something-else")
    assert refused.value.reason == state.UNKNOWN
    assert state.pending_count(request) == 1  # the real one survives


def test_expired_and_consumed(request_for, settings):
    request = request_for()
    value = issue(request)
    with time_machine.travel(time.time() + 601, tick=False):
        with pytest.raises(state.StateRefused) as refused:
            state.consume(request, value)
    assert refused.value.reason == state.EXPIRED
    with pytest.raises(state.StateRefused) as refused:
        state.consume(request, value)
    assert refused.value.reason == state.REUSED


def test_still_valid_just_before_max_age(request_for):
    request = request_for()
    value = issue(request)
    with time_machine.travel(time.time() + 590, tick=False):
        state.consume(request, value)


def test_max_age_setting(request_for, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "STATE_MAX_AGE": 30}
    request = request_for()
    value = issue(request)
    with time_machine.travel(time.time() + 31, tick=False):
        with pytest.raises(state.StateRefused) as refused:
            state.consume(request, value)
    assert refused.value.reason == state.EXPIRED


def test_another_session_does_not_know_the_state(request_for):
    mine = request_for()
    value = issue(mine)
    theirs = request_for()
    with pytest.raises(state.StateRefused) as refused:
        state.consume(theirs, value)
    assert refused.value.reason == state.UNKNOWN
    state.consume(mine, value)


def test_bound_to_the_user_who_asked(request_for, other_user):
    session = SessionStore()
    value = issue(request_for(session=session))
    with pytest.raises(state.StateRefused) as refused:
        state.consume(request_for(who=other_user, session=session), value)
    assert refused.value.reason == state.OTHER_USER


def test_bound_to_the_user_even_when_signed_out(request_for):
    session = SessionStore()
    value = issue(request_for(session=session))
    with pytest.raises(state.StateRefused) as refused:
        state.consume(request_for(who=AnonymousUser(), session=session), value)
    assert refused.value.reason == state.OTHER_USER


def test_at_most_max_pending_the_oldest_goes(request_for):
    request = request_for()
    values = []
    for i in range(state.MAX_PENDING + 2):
        with time_machine.travel(time.time() + i, tick=False):
            values.append(issue(request))
    assert state.pending_count(request) == state.MAX_PENDING
    for old in values[:2]:
        with pytest.raises(state.StateRefused):
            state.consume(request, old)
    for value in values[2:]:
        state.consume(request, value)


def test_the_session_holds_no_usable_state(request_for):
    request = request_for()
    value = issue(request)
    request.session.save()
    stored = json.dumps(SessionStore(session_key=request.session.session_key).load())
    assert value not in stored
    assert state.SESSION_KEY in stored


def test_overlong_state_is_refused_cheaply(request_for):
    with pytest.raises(state.StateRefused) as refused:
        state.consume(request_for(), "x" * 10_000)
    assert refused.value.reason == state.UNKNOWN


def test_expired_states_are_dropped_when_issuing(request_for):
    request = request_for()
    issue(request)
    with time_machine.travel(time.time() + 700, tick=False):
        issue(request)
        assert len(request.session[state.SESSION_KEY]) == 1

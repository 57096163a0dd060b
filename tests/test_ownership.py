"""Who owns a connection (docs/ownership.md): the adapter, through Django's test client
against the fake Intuit, with the team adapter of ``tests.teams``."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from qb_oauth import signals
from qb_oauth.adapter import DefaultAdapter, get_adapter
from qb_oauth.models import ConnectionEvent, ConnectionState, EventKind, QuickBooksConnection
from tests.helpers import Recorder
from tests.teams.adapter import TeamAdapter
from tests.teams.models import Membership, Team

pytestmark = pytest.mark.django_db

CONNECTIONS = "/quickbooks/"
TEAM_ADAPTER = "tests.teams.adapter.TeamAdapter"


@pytest.fixture
def team_mode(settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "ADAPTER": TEAM_ADAPTER}


@pytest.fixture
def people(django_user_model):
    make = django_user_model.objects.create_user
    return {
        name: make(name, f"{name}@example.com", f"pw-{name}")
        for name in ("ann", "ben", "val", "nick")
    }


@pytest.fixture
def team(people):
    """Acme: ann and ben are admins, val a viewer; nick belongs to another team."""
    acme = Team.objects.create(name="Acme")
    Membership.objects.create(team=acme, user=people["ann"])
    Membership.objects.create(team=acme, user=people["ben"])
    Membership.objects.create(team=acme, user=people["val"], role=Membership.VIEWER)
    other = Team.objects.create(name="Other")
    Membership.objects.create(team=other, user=people["nick"])
    return acme


def browser(user):
    client = Client()
    client.force_login(user)
    return client


def connect_through_the_page(client, fake_intuit, realm, **data):
    """Press Connect (or a Reconnect button, with ``data``), consent at the fake, come back."""
    response = client.post(reverse("qb_oauth:connect"), data)
    assert response.status_code == 302, response.content
    back = fake_intuit.consent(response["Location"], realm_id=realm)
    return client.get(back)


# -- the team adapter --------------------------------------------------------------------


def test_two_members_share_one_connection(
    team_mode, team, people, fake_intuit, django_capture_on_commit_callbacks
):
    realm = fake_intuit.companies[0]
    ann, ben = browser(people["ann"]), browser(people["ben"])
    with (
        Recorder(signals.connection_created) as created,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = connect_through_the_page(ann, fake_intuit, realm.realm_id)
    assert response.status_code == 302
    connection = QuickBooksConnection.objects.get()
    assert connection.owner == team and connection.user == people["ann"]
    assert created.calls[0]["owner"] == team and created.calls[0]["user"] == people["ann"]

    for client in (ann, ben):
        page = client.get(CONNECTIONS).content.decode()
        assert realm.name in page
        assert reverse("qb_oauth:disconnect", args=[connection.pk]) in page
    assert list(QuickBooksConnection.objects.owned_by(team)) == [connection]
    # A background job finds the team's company by its realm.
    assert QuickBooksConnection.objects.owned_by(team).get(realm_id=realm.realm_id) == connection


def test_connecting_the_teams_realm_again_replaces_its_tokens(team_mode, team, people, fake_intuit):
    realm = fake_intuit.companies[0]
    connect_through_the_page(browser(people["ann"]), fake_intuit, realm.realm_id)
    first = QuickBooksConnection.objects.get()
    old_refresh = first.refresh_token
    response = connect_through_the_page(browser(people["ben"]), fake_intuit, realm.realm_id)
    assert response.status_code == 302
    again = QuickBooksConnection.objects.get()  # one row: no second grant to refresh
    assert again.pk == first.pk and again.owner == team
    assert again.user == people["ben"]  # who consented, last
    assert again.refresh_token != old_refresh
    assert again.refresh_token == fake_intuit.current_refresh_token(realm.realm_id)
    actors = list(again.events.order_by("pk").values_list("kind", "actor__username"))
    assert actors == [(EventKind.CONNECTED, "ann"), (EventKind.RECONNECTED, "ben")]


def test_reconnect_by_the_second_member_keeps_the_same_row(team_mode, team, people, fake_intuit):
    realm = fake_intuit.companies[0]
    connect_through_the_page(browser(people["ann"]), fake_intuit, realm.realm_id)
    connection = QuickBooksConnection.objects.get()
    QuickBooksConnection.objects.filter(pk=connection.pk).update(
        state=ConnectionState.REAUTH_REQUIRED
    )
    ben = browser(people["ben"])
    page = ben.get(CONNECTIONS).content.decode()
    assert f'name="connection" value="{connection.pk}"' in page  # the Reconnect button
    response = connect_through_the_page(
        ben, fake_intuit, realm.realm_id, realm_id=realm.realm_id, connection=connection.pk
    )
    assert response.status_code == 302
    connection.refresh_from_db()
    assert QuickBooksConnection.objects.count() == 1
    assert connection.state == ConnectionState.ACTIVE and connection.user == people["ben"]
    assert connection.events.filter(kind=EventKind.RECONNECTED, actor=people["ben"]).exists()


def test_a_non_member_sees_nothing_and_gets_404(team_mode, team, people, fake_intuit):
    realm = fake_intuit.companies[0]
    connect_through_the_page(browser(people["ann"]), fake_intuit, realm.realm_id)
    connection = QuickBooksConnection.objects.get()
    nick = browser(people["nick"])
    page = nick.get(CONNECTIONS).content.decode()
    assert realm.name not in page and f"qb-connection-{connection.pk}" not in page
    url = reverse("qb_oauth:disconnect", args=[connection.pk])
    assert nick.get(url).status_code == 404
    assert nick.post(url).status_code == 404
    # Nor through a Reconnect button made up for it, nor Intuit's URLs.
    response = nick.post(reverse("qb_oauth:connect"), {"connection": connection.pk})
    assert response.status_code == 404
    query = f"?realmId={realm.realm_id}"
    response = nick.get(reverse("qb_oauth:intuit_disconnect") + query)
    assert response.status_code == 404
    response = nick.get(reverse("qb_oauth:reconnect") + query)
    assert f'name="connection" value="{connection.pk}"' not in response.content.decode()
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE and connection.refresh_token


def test_a_member_the_adapter_refuses_gets_404(team_mode, team, people, fake_intuit):
    realm = fake_intuit.companies[0]
    connect_through_the_page(browser(people["ann"]), fake_intuit, realm.realm_id)
    connection = QuickBooksConnection.objects.get()
    val = browser(people["val"])  # a viewer: sees the company, may not manage it
    page = val.get(CONNECTIONS).content.decode()
    assert realm.name in page
    url = reverse("qb_oauth:disconnect", args=[connection.pk])
    assert url not in page
    assert val.post(url).status_code == 404
    assert val.post(reverse("qb_oauth:connect"), {"connection": connection.pk}).status_code == 404
    connection.refresh_from_db()
    assert connection.state == ConnectionState.ACTIVE


def test_any_admin_member_disconnects_and_the_signal_carries_the_owner(
    team_mode, team, people, fake_intuit, django_capture_on_commit_callbacks
):
    realm = fake_intuit.companies[0]
    connect_through_the_page(browser(people["ann"]), fake_intuit, realm.realm_id)
    connection = QuickBooksConnection.objects.get()
    with (
        Recorder(signals.connection_disconnected) as disconnected,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = browser(people["ben"]).post(reverse("qb_oauth:disconnect", args=[connection.pk]))
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.state == ConnectionState.DISCONNECTED
    assert disconnected.calls[0]["owner"] == team and disconnected.calls[0]["by"] == "user"
    assert ConnectionEvent.objects.filter(kind=EventKind.REVOKED, actor=people["ben"]).exists()


def test_the_owner_is_the_one_chosen_at_connect_time(team_mode, team, people, fake_intuit):
    ann = browser(people["ann"])
    response = ann.post(reverse("qb_oauth:connect"))
    # ann moves to another team while she is at Intuit: the flow finishes for Acme.
    elsewhere = Team.objects.create(name="Elsewhere")
    Membership.objects.filter(user=people["ann"]).delete()
    Membership.objects.create(team=elsewhere, user=people["ann"])
    Membership.objects.create(team=team, user=people["ann"])
    ann.get(fake_intuit.consent(response["Location"]))
    assert QuickBooksConnection.objects.get().owner == team


def test_an_owner_deleted_during_the_flow_stores_nothing(team_mode, team, people, fake_intuit):
    ann = browser(people["ann"])
    response = ann.post(reverse("qb_oauth:connect"))
    back = fake_intuit.consent(response["Location"])
    team.delete()
    response = ann.get(back)
    assert response.status_code == 400 and response.context["reason"] == "owner_gone"
    assert not QuickBooksConnection.objects.exists()


def test_a_user_without_a_team_cannot_connect(team_mode, django_user_model):
    loner = django_user_model.objects.create_user("loner", "l@example.com", "pw")
    assert browser(loner).post(reverse("qb_oauth:connect")).status_code == 404


def test_intuit_disconnect_url_finds_the_teams_connection(team_mode, team, people, fake_intuit):
    realm = fake_intuit.companies[0]
    connect_through_the_page(browser(people["ann"]), fake_intuit, realm.realm_id)
    connection = QuickBooksConnection.objects.get()
    ben = browser(people["ben"])
    response = ben.get(reverse("qb_oauth:reconnect") + f"?realmId={realm.realm_id}")
    assert f'name="connection" value="{connection.pk}"' in response.content.decode()
    response = ben.get(reverse("qb_oauth:intuit_disconnect") + f"?realmId={realm.realm_id}")
    assert response.status_code == 200  # the grant is alive at Intuit: a forged link
    assert response.context["results"] == [(connection, "still_connected")]


def test_deleting_a_team_deletes_its_connections(team_mode, team, people, fake_intuit):
    connect_through_the_page(browser(people["ann"]), fake_intuit, fake_intuit.companies[0].realm_id)
    team.delete()
    assert not QuickBooksConnection.objects.exists()


# -- the admin and qb_status -------------------------------------------------------------


def test_admin_shows_the_owner_and_filters_by_its_type(
    team_mode, team, people, fake_intuit, connect_realm, admin_client
):
    connect_through_the_page(browser(people["ann"]), fake_intuit, fake_intuit.companies[0].realm_id)
    mine = connect_realm(people["nick"], realm_id=fake_intuit.companies[1].realm_id)
    changelist = reverse("admin:qb_oauth_quickbooksconnection_changelist")
    response = admin_client.get(changelist)
    html = response.content.decode()
    assert ">Acme<" in html and ">nick<" in html and ">ann<" in html
    team_type = ContentType.objects.get_for_model(Team)
    response = admin_client.get(changelist + f"?owner_type={team_type.pk}")
    assert [c.owner for c in response.context["cl"].result_list] == [team]
    user_type = ContentType.objects.get_for_model(get_user_model())
    response = admin_client.get(changelist + f"?owner_type={user_type.pk}")
    assert [c.pk for c in response.context["cl"].result_list] == [mine.pk]
    assert "?e=1" in admin_client.get(changelist + "?owner_type=x")["Location"]
    team_row = QuickBooksConnection.objects.owned_by(team).get()
    page = admin_client.get(
        reverse("admin:qb_oauth_quickbooksconnection_change", args=[team_row.pk])
    ).content.decode()
    assert "Acme (team)" in page


def test_qb_status_names_the_owner_and_filters_by_it(
    team_mode, team, people, fake_intuit, connect_realm, capsys
):
    connect_through_the_page(browser(people["ann"]), fake_intuit, fake_intuit.companies[0].realm_id)
    connect_realm(people["nick"], realm_id=fake_intuit.companies[1].realm_id)
    import json

    call_command("qb_status", "--json")
    data = json.loads(capsys.readouterr().out)
    assert sorted(d["owner"] for d in data) == ["Acme", "nick"]
    call_command("qb_status", "--json", "--owner", f"teams.team:{team.pk}")
    data = json.loads(capsys.readouterr().out)
    assert [d["owner"] for d in data] == ["Acme"]
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no model"):
        call_command("qb_status", "--owner", "nope.nothing:1")
    with pytest.raises(CommandError, match="no teams.team"):
        call_command("qb_status", "--owner", "teams.team:999999")


# -- the default adapter, the setting and its check ----------------------------------------


def test_the_default_adapter_owns_by_user(
    user, other_user, connect_realm, fake_intuit, django_capture_on_commit_callbacks
):
    assert type(get_adapter()) is DefaultAdapter
    with (
        Recorder(signals.connection_created) as created,
        django_capture_on_commit_callbacks(execute=True),
    ):
        connection = connect_realm(user)
    assert connection.owner == user and connection.user == user
    assert created.calls[0]["owner"] == user
    assert list(QuickBooksConnection.objects.owned_by(user)) == [connection]
    assert not QuickBooksConnection.objects.owned_by(other_user).exists()
    assert not QuickBooksConnection.objects.owned_by(None).exists()


def test_rows_made_directly_belong_to_their_user(user):
    made = QuickBooksConnection.objects.create(user=user, realm_id="1")
    (bulk,) = QuickBooksConnection.objects.bulk_create(
        [QuickBooksConnection(user=user, realm_id="2")]
    )
    assert made.owner == user and bulk.owner == user
    owned = QuickBooksConnection.objects.owned_by(user).values_list("realm_id", flat=True)
    assert sorted(owned) == ["1", "2"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("tests.teams.adapter.Nowhere", "cannot be imported"),
        ("tests.teams.adapter.__doc__", "not a class"),
        ("tests.teams.models.Team", "has no get_owner"),
    ],
)
def test_a_bad_adapter_is_check_e012(settings, value, problem):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "ADAPTER": value}
    errors = [e for e in run_checks() if e.id == "qb_oauth.E012"]
    assert len(errors) == 1 and problem in errors[0].msg


def test_a_good_adapter_passes_the_check(team_mode):
    assert not [e for e in run_checks() if e.id in ("qb_oauth.E011", "qb_oauth.E012")]
    assert isinstance(get_adapter(), TeamAdapter)


def test_an_adapter_of_the_wrong_kind_is_e011(settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "ADAPTER": 42}
    ids = [e.id for e in run_checks()]
    assert "qb_oauth.E011" in ids and "qb_oauth.E012" not in ids


def test_an_adapter_that_cannot_be_imported_is_the_misconfigured_page(user, client, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "ADAPTER": "tests.teams.adapter.Nowhere"}
    client.force_login(user)
    response = client.post(reverse("qb_oauth:connect"))
    assert response.status_code == 503 and response.context["reason"] == "misconfigured"

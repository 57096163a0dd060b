"""Migration 0003_ownership on a database with existing connections: each one's owner is
the user who connected it (docs/ownership.md)."""

import pytest
from django.conf import settings
from django.db import IntegrityError
from django.db import connection as db_connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("qb_oauth", "0002_hardening")]
AFTER = [("qb_oauth", "0003_ownership")]


def migrate(targets):
    executor = MigrationExecutor(db_connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(db_connection).loader.project_state(targets).apps


@pytest.fixture
def at_0002():
    apps = migrate(BEFORE)
    yield apps
    # Back to the latest schema, whatever the test did.
    executor = MigrationExecutor(db_connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_existing_rows_belong_to_their_user(at_0002):
    User = at_0002.get_model(settings.AUTH_USER_MODEL)
    Connection = at_0002.get_model("qb_oauth", "QuickBooksConnection")
    alice = User.objects.create(username="alice")
    bob = User.objects.create(username="bob")
    rows = {
        "alice-1": Connection.objects.create(user=alice, realm_id="111", company_name="A1"),
        "alice-2": Connection.objects.create(user=alice, realm_id="222", company_name="A2"),
        # The same realm under two users: two owners after the migration too.
        "bob-1": Connection.objects.create(user=bob, realm_id="111", company_name="B1"),
        "alice-prod": Connection.objects.create(
            user=alice, realm_id="111", environment="production"
        ),
    }

    apps = migrate(AFTER)
    Connection = apps.get_model("qb_oauth", "QuickBooksConnection")
    ContentType = apps.get_model("contenttypes", "ContentType")
    user_type = ContentType.objects.get(app_label=User._meta.app_label, model=User._meta.model_name)
    owners = {
        c.pk: (c.owner_content_type_id, c.owner_object_id, c.user_id)
        for c in Connection.objects.all()
    }
    assert owners == {
        rows["alice-1"].pk: (user_type.pk, str(alice.pk), alice.pk),
        rows["alice-2"].pk: (user_type.pk, str(alice.pk), alice.pk),
        rows["bob-1"].pk: (user_type.pk, str(bob.pk), bob.pk),
        rows["alice-prod"].pk: (user_type.pk, str(alice.pk), alice.pk),
    }
    # The uniqueness is now the owner's, with realm and environment.
    with pytest.raises(IntegrityError):
        Connection.objects.create(
            user_id=bob.pk,
            realm_id="222",
            owner_content_type=user_type,
            owner_object_id=str(alice.pk),
        )


def test_the_migration_on_an_empty_table_and_back(at_0002):
    apps = migrate(AFTER)
    assert not apps.get_model("qb_oauth", "QuickBooksConnection").objects.exists()
    apps = migrate(BEFORE)  # reversible: the owner columns go, the user's uniqueness is back
    Connection = apps.get_model("qb_oauth", "QuickBooksConnection")
    assert "owner_object_id" not in {f.name for f in Connection._meta.get_fields()}

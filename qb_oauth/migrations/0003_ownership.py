# Who owns a connection (docs/ownership.md): a generic owner, filled from the user.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models.functions import Cast


INTEGER_KEYS = ("AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField")


def owners_from_users(apps, schema_editor):
    """Every existing connection belongs to the user who connected it: today's behaviour,
    and what the default adapter keeps doing."""
    alias = schema_editor.connection.alias
    Connection = apps.get_model("qb_oauth", "QuickBooksConnection")
    if not Connection.objects.using(alias).exists():
        return
    ContentType = apps.get_model("contenttypes", "ContentType")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    # Content types are made after migrate (post_migrate): the user's may not exist yet.
    user_type, _created = ContentType.objects.using(alias).get_or_create(
        app_label=User._meta.app_label, model=User._meta.model_name
    )
    rows = Connection.objects.using(alias).filter(owner_content_type__isnull=True)
    if User._meta.pk.get_internal_type() in INTEGER_KEYS:
        # One statement: an integer's text is the same on every database.
        rows.update(
            owner_content_type=user_type,
            owner_object_id=Cast("user_id", output_field=models.CharField(max_length=64)),
        )
    else:
        # Other keys (a UUID) are spelled by Python, as the model does: str(pk).
        for user_id in list(rows.values_list("user_id", flat=True).distinct()):
            rows.filter(user_id=user_id).update(
                owner_content_type=user_type, owner_object_id=str(user_id)
            )
    if schema_editor.connection.vendor == "postgresql":
        # Check the new foreign keys now: PostgreSQL refuses the ALTER TABLE that follows
        # while deferred checks of this transaction are pending.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("qb_oauth", "0002_hardening"),
    ]

    operations = [
        migrations.AddField(
            model_name="quickbooksconnection",
            name="owner_content_type",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="contenttypes.contenttype",
                verbose_name="owner type",
            ),
        ),
        migrations.AddField(
            model_name="quickbooksconnection",
            name="owner_object_id",
            field=models.CharField(default="", max_length=64, verbose_name="owner id"),
            preserve_default=False,
        ),
        migrations.RunPython(owners_from_users, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="quickbooksconnection",
            name="owner_content_type",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="contenttypes.contenttype",
                verbose_name="owner type",
            ),
        ),
        migrations.RemoveConstraint(
            model_name="quickbooksconnection",
            name="qb_oauth_unique_user_realm_env",
        ),
        migrations.AddConstraint(
            model_name="quickbooksconnection",
            constraint=models.UniqueConstraint(
                fields=("owner_content_type", "owner_object_id", "realm_id", "environment"),
                name="qb_oauth_unique_owner_realm_env",
            ),
        ),
        migrations.AlterField(
            model_name="quickbooksconnection",
            name="user",
            field=models.ForeignKey(
                help_text="The person who consented at Intuit (the last one, after a reconnect).",
                on_delete=django.db.models.deletion.CASCADE,
                related_name="quickbooks_connections",
                to=settings.AUTH_USER_MODEL,
                verbose_name="connected by",
            ),
        ),
    ]

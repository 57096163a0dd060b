from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.db import models


class Team(models.Model):
    name = models.CharField(max_length=100)
    # Deleting a team deletes its QuickBooks connections (a generic relation has no
    # cascade of its own).
    quickbooks_connections = GenericRelation(
        "qb_oauth.QuickBooksConnection",
        content_type_field="owner_content_type",
        object_id_field="owner_object_id",
    )

    def __str__(self):
        return self.name


class Membership(models.Model):
    ADMIN = "admin"
    VIEWER = "viewer"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=10, default=ADMIN)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership")]

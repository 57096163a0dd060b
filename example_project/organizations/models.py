from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.db import models


class Organization(models.Model):
    name = models.CharField(max_length=100)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="organizations")
    quickbooks_connections = GenericRelation(
        "qb_oauth.QuickBooksConnection",
        content_type_field="owner_content_type",
        object_id_field="owner_object_id",
    )

    def __str__(self):
        return self.name

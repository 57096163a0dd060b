"""A site that does not include qb_oauth's URLs (check qb_oauth.W005 stays quiet)."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class QbOAuthConfig(AppConfig):
    name = "qb_oauth"
    label = "qb_oauth"
    verbose_name = _("QuickBooks connections")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from . import checks  # noqa: F401  (registers the system checks)
        from .schedule import ensure_schedule

        post_migrate.connect(ensure_schedule, sender=self, dispatch_uid="qb_oauth.ensure_schedule")

"""``manage.py qb_fake_intuit``: serve the fake Intuit until Ctrl-C."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from qb_oauth.testing import cli


class Command(BaseCommand):
    help = (
        "Serve the fake Intuit (OAuth 2.0, OpenID and CompanyInfo) on a local port, and print "
        "its discovery URL and the QB_OAUTH setting that points this site at it."
    )

    def add_arguments(self, parser):
        conf = getattr(settings, "QB_OAUTH", None) or {}
        token = conf.get("WEBHOOK_VERIFIER_TOKEN")
        if isinstance(token, list | tuple):
            token = token[0] if token else None  # the newest one signs
        cli.add_arguments(
            parser,
            defaults={
                "client_id": conf.get("CLIENT_ID") or "qb-test-client",
                "client_secret": conf.get("CLIENT_SECRET") or "qb-test-secret",
                "environment": conf.get("ENVIRONMENT") or "sandbox",
                "webhook_verifier_token": token or None,
            },
        )

    def handle(self, *args, **options):
        redirect_uris = list(options.get("redirect_uris") or cli.DEFAULT_REDIRECT_URIS)
        configured = (getattr(settings, "QB_OAUTH", None) or {}).get("REDIRECT_URI")
        if configured and configured not in redirect_uris:
            redirect_uris.append(configured)
        options["redirect_uris"] = redirect_uris
        fake = cli.build(options)
        cli.serve(fake, options["host"], options["port"], out=self.stdout)

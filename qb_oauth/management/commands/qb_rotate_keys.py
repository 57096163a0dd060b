"""Re-encrypt every stored token with the first key of FERNET_KEYS."""

from django.core.management.base import BaseCommand

from qb_oauth.tokens import reencrypt_all


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored QuickBooks token with the first key of FERNET_KEYS. "
        "Put the new key first, keep the old ones after it, run this, then drop the old keys."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=200)

    def handle(self, *args, batch_size, **options):
        count = reencrypt_all(batch_size=batch_size)
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted the tokens of {count} connection(s)."))

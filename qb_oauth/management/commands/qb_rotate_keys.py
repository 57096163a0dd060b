"""Re-encrypt every stored token with the first key of FERNET_KEYS."""

from django.core.management.base import BaseCommand, CommandError

from qb_oauth.tokens import reencrypt_all


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored QuickBooks token with the first key of FERNET_KEYS. "
        "Put the new key first, keep the old ones after it, run this, then drop the old keys. "
        "Rows that no key decrypts are left as they are and reported (exit status 1)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=200)

    def handle(self, *args, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        result = reencrypt_all(batch_size=batch_size)
        self.stdout.write(
            self.style.SUCCESS(f"Re-encrypted the tokens of {result.rewritten} connection(s).")
        )
        if result.unreadable:
            shown = ", ".join(str(pk) for pk in result.unreadable[:20])
            more = " …" if len(result.unreadable) > 20 else ""
            raise CommandError(
                f"{len(result.unreadable)} connection(s) could not be read with any key of "
                f"FERNET_KEYS and were left as they are (ids {shown}{more}). Add the key that "
                "encrypted them back to FERNET_KEYS and run this again, or have their users "
                "reconnect."
            )

from django.core.management.base import BaseCommand, CommandError

from core.credentials import UnreadableCredential
from proxy.services import channel_credentials_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every channel credential with the newest key of CHANNEL_CREDENTIAL_KEYS. "
        "Key rotation: prepend a new key to CHANNEL_CREDENTIAL_KEYS, restart, run this, then "
        "drop the old key. Safe to run again; all or nothing."
    )

    def handle(self, *args, **options) -> None:
        try:
            result = channel_credentials_reencrypt()
        except UnreadableCredential as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Re-encrypted {result.reencrypted} channel credential(s) with the newest key; "
            f"{result.already_current} already used it."
        )

"""Channel credentials encrypted at rest: the column is renamed so that no code can keep
reading it as clear text, widened for a Fernet token, and every stored value is encrypted
with the newest key of CHANNEL_CREDENTIAL_KEYS (reversed: decrypted back)."""

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import migrations, models


def _cipher() -> MultiFernet:
    # Built here rather than imported from proxy.credentials: a migration must keep working
    # whatever that module becomes. The keys were validated at start-up (ProxyConfig.ready).
    return MultiFernet([Fernet(key.strip()) for key in settings.CHANNEL_CREDENTIAL_KEYS])


def encrypt_credentials(apps, schema_editor):
    Channel = apps.get_model("proxy", "Channel")
    cipher = _cipher()
    for pk, plaintext in Channel.objects.exclude(encrypted_credential="").values_list(
        "pk", "encrypted_credential"
    ):
        # update(), not save(): updated_at is the relay's channel version, and the credential
        # the relay uses is unchanged.
        Channel.objects.filter(pk=pk).update(
            encrypted_credential=cipher.encrypt(plaintext.encode()).decode("ascii")
        )


def decrypt_credentials(apps, schema_editor):
    Channel = apps.get_model("proxy", "Channel")
    cipher = _cipher()
    for pk, token in Channel.objects.exclude(encrypted_credential="").values_list(
        "pk", "encrypted_credential"
    ):
        Channel.objects.filter(pk=pk).update(encrypted_credential=cipher.decrypt(token).decode())


class Migration(migrations.Migration):

    dependencies = [
        ("proxy", "0002_channel_base_url_http"),
    ]

    operations = [
        migrations.RenameField(
            model_name="channel",
            old_name="credential",
            new_name="encrypted_credential",
        ),
        migrations.AlterField(
            model_name="channel",
            name="encrypted_credential",
            field=models.TextField(blank=True, editable=False),
        ),
        migrations.RunPython(encrypt_credentials, decrypt_credentials),
    ]

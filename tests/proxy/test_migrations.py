"""proxy's migrations: 0003 encrypts the credentials stored in clear before it, and back."""

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.db import connection

from tests.migrating import at_migration, migrate

BEFORE = ("proxy", "0002_channel_base_url_http")
ENCRYPTED = ("proxy", "0003_channel_encrypted_credential")


def raw_rows() -> dict[str, str]:
    """name -> what the credential column holds, read with SQL, whichever its name."""
    with connection.cursor() as cursor:
        columns = connection.introspection.get_table_description(cursor, "proxy_channel")
        [column] = [c.name for c in columns if c.name in ("credential", "encrypted_credential")]
        cursor.execute(f"SELECT name, {column} FROM proxy_channel")  # noqa: S608
        return dict(cursor.fetchall())


@pytest.fixture
def before_encryption(transactional_db):
    yield from at_migration(BEFORE)


def test_stored_credentials_are_encrypted_and_decrypted_back(before_encryption):
    channel_model = before_encryption.get_model("proxy", "Channel")
    channel_model.objects.create(
        name="legacy", provider="anthropic", base_url="https://a.test", credential="sk-legacy"
    )
    channel_model.objects.create(name="bare", provider="mock", credential="")
    versions = dict(channel_model.objects.values_list("name", "updated_at"))

    encrypted_apps = migrate(ENCRYPTED)

    rows = raw_rows()
    assert rows["bare"] == ""
    assert "sk-legacy" not in rows["legacy"]
    assert Fernet(settings.CHANNEL_CREDENTIAL_KEYS[0]).decrypt(rows["legacy"]) == b"sk-legacy"
    channel_model = encrypted_apps.get_model("proxy", "Channel")
    assert dict(channel_model.objects.values_list("name", "updated_at")) == versions

    migrate(BEFORE)

    assert raw_rows() == {"legacy": "sk-legacy", "bare": ""}

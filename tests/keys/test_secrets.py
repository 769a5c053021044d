"""A key's plaintext exists only in the return value of the service that creates or rotates it.

The scan reads every column of every row of every table with raw SQL, so a secret cannot hide
in a table, a column or a serialised form the models do not show.
"""

import logging
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from keys import services
from keys.models import ApiKey, AuditEvent
from keys.secret_formats import RELAY_KEY

from ..factories import make_key

# Any run of this many characters from the hidden part of a key counts as a leak: 16 URL-safe
# characters are 96 bits, so a match by chance is out of the question.
LEAK_WINDOW = 16
KEY_PREFIX = RELAY_KEY.prefix
DISPLAY_PREFIX_LENGTH = RELAY_KEY.display_prefix_length


def as_text(value) -> str:
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def every_cell() -> list[tuple[str, str, str]]:
    """(table, column, text) for every cell in the database."""
    cells = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            columns = [column[0] for column in cursor.description]
            for record in cursor.fetchall():
                cells.extend(
                    (table, column, as_text(value))
                    for column, value in zip(columns, record, strict=True)
                    if value is not None
                )
    return cells


def leaks(plaintext: str) -> list[tuple[str, str]]:
    """Where the plaintext, its random part, or any long run of its hidden part is stored."""
    hidden = plaintext[DISPLAY_PREFIX_LENGTH:]
    needles = {plaintext, plaintext.removeprefix(KEY_PREFIX)} | {
        hidden[start : start + LEAK_WINDOW] for start in range(len(hidden) - LEAK_WINDOW + 1)
    }
    return sorted(
        {(table, column) for table, column, text in every_cell() if any(n in text for n in needles)}
    )


def test_the_scan_finds_a_stored_secret(issued):
    """The scan itself works: a plaintext written anywhere is found."""
    ApiKey.objects.filter(pk=issued.key.pk).update(name=issued.plaintext[20:40])
    assert leaks(issued.plaintext) == [("keys_apikey", "name")]


def test_plaintext_is_stored_nowhere_after_creation(team, member, lead, group):
    issued = make_key(
        team=team,
        owner=member,
        group=group,
        actor=lead,
        allowed_ips="10.0.0.1",
        quota_limit_usd="5",
        rate_limit="60/m",
        expires_at=timezone.now() + timedelta(days=1),
    )
    assert AuditEvent.objects.filter(key=issued.key).exists()
    assert leaks(issued.plaintext) == []


def test_plaintext_is_stored_nowhere_after_rotation_update_and_deletion(issued, lead):
    rotated = services.api_key_rotate(key=issued.key, actor=lead)
    services.api_key_update(key=issued.key, actor=lead, name="renamed", rate_limit="1/s")
    services.api_key_disable(key=issued.key, actor=lead)
    assert leaks(issued.plaintext) == []
    assert leaks(rotated.plaintext) == []
    services.api_key_delete(key=issued.key, actor=lead)
    assert leaks(issued.plaintext) == []
    assert leaks(rotated.plaintext) == []


def test_events_never_hold_the_plaintext_or_the_digest(issued, lead):
    digests = {issued.key.digest}
    plaintexts = {issued.plaintext}
    rotated = services.api_key_rotate(key=issued.key, actor=lead)
    digests.add(rotated.key.digest)
    plaintexts.add(rotated.plaintext)
    services.api_key_update(key=issued.key, actor=lead, name="renamed")
    services.api_key_delete(key=issued.key, actor=lead)

    assert AuditEvent.objects.filter(subject_type="key").count() == 4
    for event in AuditEvent.objects.filter(subject_type="key"):
        stored = f"{event.subject_label} {event.subject_prefix} {event.changes}"
        for secret in digests | plaintexts:
            assert secret not in stored
        assert "digest" not in event.changes


def test_the_issued_key_does_not_show_its_plaintext_in_repr(issued):
    assert issued.plaintext not in repr(issued)
    assert issued.plaintext not in str(issued)
    assert issued.plaintext not in repr(issued.key)


def test_plaintext_is_never_logged(caplog, team, member, lead, group):
    with caplog.at_level(logging.DEBUG):
        issued = make_key(team=team, owner=member, group=group, actor=lead)
        rotated = services.api_key_rotate(key=issued.key, actor=lead)
        services.api_key_delete(key=issued.key, actor=lead)
    for plaintext in (issued.plaintext, rotated.plaintext):
        assert plaintext not in caplog.text
        assert plaintext.removeprefix(KEY_PREFIX) not in caplog.text

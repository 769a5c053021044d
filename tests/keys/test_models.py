import base64
import hashlib
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from keys.models import ApiKey, digest_key
from keys.secret_formats import RELAY_KEY

from ..factories import GroupFactory, TeamFactory, make_key

KEY_PREFIX = RELAY_KEY.prefix
DISPLAY_PREFIX_LENGTH = RELAY_KEY.display_prefix_length
generate_key = RELAY_KEY.generate
URL_SAFE_KEY = re.compile(r"^sk-hc-[A-Za-z0-9_-]{43,}$")


# --- format, digest, prefix -----------------------------------------------------------------


def test_generated_key_is_prefixed_url_safe_and_carries_32_random_bytes():
    plaintext = generate_key()
    assert URL_SAFE_KEY.match(plaintext)
    random_part = plaintext.removeprefix(KEY_PREFIX)
    raw = base64.urlsafe_b64decode(random_part + "=" * (-len(random_part) % 4))
    assert len(raw) >= 32


def test_generated_keys_differ():
    assert len({generate_key() for _ in range(200)}) == 200


def test_digest_is_sha256_hex_of_the_whole_key():
    plaintext = "sk-hc-" + "A" * 43
    assert digest_key(plaintext) == hashlib.sha256(plaintext.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest_key(plaintext))


def test_created_key_stores_digest_and_display_prefix_only(issued):
    key = ApiKey.objects.get(pk=issued.key.pk)
    assert URL_SAFE_KEY.match(issued.plaintext)
    assert key.digest == hashlib.sha256(issued.plaintext.encode()).hexdigest()
    assert key.prefix == issued.plaintext[:DISPLAY_PREFIX_LENGTH]
    assert len(key.prefix) == len(KEY_PREFIX) + 6
    assert key.prefix.startswith(KEY_PREFIX)
    assert str(key) == f"claude-code-main ({key.prefix}…)"


def test_lookup_by_digest_finds_the_key(issued):
    assert ApiKey.objects.get(digest=digest_key(issued.plaintext)) == issued.key


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: "",
        lambda p: p[:-1],
        lambda p: p[:DISPLAY_PREFIX_LENGTH],
        lambda p: p.upper(),
        lambda p: p + " ",
        lambda p: " " + p,
        lambda p: p + "\n",
        lambda p: p.removeprefix(KEY_PREFIX),
        lambda p: p.replace("sk-hc-", "sk-HC-"),
        lambda p: p[:-1] + ("A" if p[-1] != "A" else "B"),
    ],
    ids=[
        "empty",
        "cut-short",
        "display-prefix",
        "upper-cased",
        "trailing-space",
        "leading-space",
        "trailing-newline",
        "no-prefix",
        "prefix-case",
        "last-char-changed",
    ],
)
def test_damaged_key_matches_no_digest(issued, damage):
    damaged = damage(issued.plaintext)
    assert damaged != issued.plaintext
    assert not ApiKey.objects.filter(digest=digest_key(damaged)).exists()


def test_digest_is_unique(issued, team, member, group):
    other = make_key(team=team, owner=member, group=group, name="second")
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=other.key.pk).update(digest=issued.key.digest)


# --- usable() -------------------------------------------------------------------------------


NOW = timezone.now().replace(microsecond=0)
EXPIRY_CASES = {
    "never": (None, True),
    "tomorrow": (NOW + timedelta(days=1), True),
    "one-second-later": (NOW + timedelta(seconds=1), True),
    "now": (NOW, False),
    "yesterday": (NOW - timedelta(days=1), False),
}


def _set_expiry(key: ApiKey, expires_at) -> ApiKey:
    # The services refuse a past expiry, which is right; tests need one to check the filter.
    ApiKey.objects.filter(pk=key.pk).update(expires_at=expires_at)
    key.refresh_from_db()
    return key


@pytest.mark.parametrize(("expires_at", "usable"), EXPIRY_CASES.values(), ids=EXPIRY_CASES)
def test_usable_checks_expiry(issued, expires_at, usable):
    key = _set_expiry(issued.key, expires_at)
    assert ApiKey.objects.usable(now=NOW).filter(pk=key.pk).exists() is usable
    assert key.is_expired(now=NOW) is not usable
    assert ApiKey.objects.expired_but_enabled(now=NOW).filter(pk=key.pk).exists() is not usable


@pytest.mark.parametrize(("expires_at", "usable"), EXPIRY_CASES.values(), ids=EXPIRY_CASES)
def test_disabled_key_is_never_usable(issued, expires_at, usable):
    key = _set_expiry(issued.key, expires_at)
    ApiKey.objects.filter(pk=key.pk).update(status=ApiKey.Status.DISABLED)
    assert not ApiKey.objects.usable(now=NOW).filter(pk=key.pk).exists()
    assert not ApiKey.objects.expired_but_enabled(now=NOW).filter(pk=key.pk).exists()


def test_usable_defaults_to_the_current_time(issued):
    _set_expiry(issued.key, timezone.now() - timedelta(seconds=1))
    assert not ApiKey.objects.usable().filter(pk=issued.key.pk).exists()
    _set_expiry(issued.key, timezone.now() + timedelta(minutes=5))
    assert ApiKey.objects.usable().filter(pk=issued.key.pk).exists()


# --- state ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expires_in", "quota", "spent", "state"),
    [
        ("enabled", None, "0", "1000", "enabled"),  # 0 = unlimited
        ("enabled", timedelta(days=1), "10", "9.99", "enabled"),
        ("enabled", None, "10", "10", "quota_used_up"),
        ("enabled", None, "10", "10.5", "quota_used_up"),
        ("enabled", timedelta(days=-1), "10", "10", "expired"),
        ("disabled", timedelta(days=-1), "10", "10", "disabled"),
        ("disabled", None, "0", "0", "disabled"),
    ],
)
def test_state(issued, status, expires_in, quota, spent, state):
    ApiKey.objects.filter(pk=issued.key.pk).update(
        status=status,
        expires_at=timezone.now() + expires_in if expires_in else None,
        quota_limit_usd=Decimal(quota),
        spent_usd=Decimal(spent),
    )
    issued.key.refresh_from_db()
    assert issued.key.state == state


# --- groups and teams -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("claude-sonnet-4-5", True),
        ("claude-", True),
        ("gpt-4o", True),
        ("gpt-4o-mini", False),
        ("Claude-sonnet", False),  # case-sensitive: model names are exact identifiers
        ("xclaude-sonnet", False),
        ("", False),
    ],
)
def test_group_allows_model(db, model, allowed):
    group = GroupFactory(models=["claude-*", "gpt-4o"])
    assert group.allows_model(model) is allowed


def test_group_without_models_allows_none(db):
    assert not GroupFactory(models=[]).allows_model("claude-sonnet-4-5")


def test_available_groups_empty_allow_list_means_every_active_group(db):
    team = TeamFactory()
    active = GroupFactory(name="Active")
    GroupFactory(name="Inactive", is_active=False)
    assert list(team.available_groups()) == [active]


def test_available_groups_follow_the_allow_list(db):
    team = TeamFactory()
    allowed, _other = GroupFactory(name="Allowed"), GroupFactory(name="Other")
    allowed_but_inactive = GroupFactory(name="Allowed but inactive", is_active=False)
    team.allowed_groups.set([allowed, allowed_but_inactive])
    assert list(team.available_groups()) == [allowed]

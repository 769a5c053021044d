import fnmatch
from decimal import Decimal
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from billing.models import ModelPrice
from keys.models import ApiKey, AuditEvent, Group, Membership, Team, digest_key
from proxy.management.commands.seed_demo import DEMO_PRICES
from proxy.models import Channel, Route
from proxy.services import channel_upsert
from tests.factories import GroupFactory, UserFactory

SECRET = "sk-ant-upstream-secret-0123456789"


def run(command: str, *options: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(command, *options, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- upsert_channel -------------------------------------------------------------------------


@pytest.fixture
def groups(db):
    return [GroupFactory(name="Official"), GroupFactory(name="Kiro")]


def routed(channel: Channel) -> list[str]:
    return sorted(channel.routes.values_list("group__name", flat=True))


def test_creates_a_mock_channel_without_url_or_routes(db):
    out, err = run("upsert_channel", "local", "--provider", "mock")

    assert out == (
        "Created channel local (mock, active, timeout 600 s)\n"
        "Credential: none\n"
        "Groups routed: none\n"
    )
    assert err == ""
    channel = Channel.objects.get()
    assert (channel.name, channel.provider, channel.base_url, channel.encrypted_credential) == (
        "local",
        "mock",
        "",
        "",
    )
    assert not Route.objects.exists()


def test_creates_a_channel_with_credential_from_the_environment(groups, monkeypatch):
    monkeypatch.setenv("HCAI_TEST_UPSTREAM_KEY", SECRET)

    out, err = run(
        "upsert_channel",
        "official",
        "--provider",
        "anthropic",
        "--base-url",
        "https://api.anthropic.com",
        "--credential-env",
        "HCAI_TEST_UPSTREAM_KEY",
        "--groups",
        " Official , Kiro,Official",
        "--timeout",
        "120",
    )

    assert out == (
        "Created channel official (anthropic, https://api.anthropic.com, active, timeout 120 s)\n"
        "Credential: stored from HCAI_TEST_UPSTREAM_KEY\n"
        "Groups routed: Kiro, Official\n"
    )
    assert err == ""
    channel = Channel.objects.get()
    assert channel.decrypt_credential() == SECRET
    assert channel.timeout_seconds == 120
    assert routed(channel) == ["Kiro", "Official"]


def test_updates_the_channel_keeping_credential_and_routes_when_not_given(groups):
    channel, _ = channel_upsert(
        name="official",
        provider="anthropic",
        base_url="https://api.anthropic.com",
        credential=SECRET,
        groups=groups,
    )

    out, err = run(
        "upsert_channel",
        "official",
        "--provider",
        "openai",
        "--base-url",
        "https://api.openai.com/v1",
        "--timeout",
        "30",
        "--inactive",
    )

    assert out == (
        "Updated channel official (openai, https://api.openai.com/v1, inactive, timeout 30 s)\n"
        "Credential: unchanged\n"
        "Groups routed: Kiro, Official\n"
    )
    assert err == ""
    assert Channel.objects.count() == 1
    channel.refresh_from_db()
    assert (channel.provider, channel.base_url, channel.is_active, channel.timeout_seconds) == (
        "openai",
        "https://api.openai.com/v1",
        False,
        30,
    )
    assert channel.decrypt_credential() == SECRET
    assert routed(channel) == ["Kiro", "Official"]


def test_groups_option_routes_exactly_the_named_groups(groups, monkeypatch):
    channel, _ = channel_upsert(name="local", provider="mock", groups=groups)
    monkeypatch.setenv("HCAI_TEST_UPSTREAM_KEY", "replacement-secret")

    out, _ = run(
        "upsert_channel",
        "local",
        "--provider",
        "mock",
        "--groups",
        "Kiro",
        "--credential-env",
        "HCAI_TEST_UPSTREAM_KEY",
    )

    assert out.splitlines()[1:] == [
        "Credential: stored from HCAI_TEST_UPSTREAM_KEY",
        "Groups routed: Kiro",
    ]
    assert routed(channel) == ["Kiro"]
    channel.refresh_from_db()
    assert channel.decrypt_credential() == "replacement-secret"

    out, _ = run("upsert_channel", "local", "--provider", "mock", "--groups", "")

    assert out.splitlines()[-1] == "Groups routed: none"
    assert not Route.objects.exists()


def test_a_new_route_goes_after_the_groups_existing_channels(groups):
    channel_upsert(name="first", provider="mock", groups=groups[:1])

    run("upsert_channel", "second", "--provider", "mock", "--groups", "Official")

    assert list(Route.objects.filter(group=groups[0]).values_list("channel__name", "priority")) == [
        ("first", 100),
        ("second", 110),
    ]


def test_warns_when_a_real_provider_has_no_credential(db):
    out, err = run(
        "upsert_channel", "official", "--provider", "anthropic", "--base-url", "https://a.example"
    )

    assert out.splitlines()[1] == "Credential: none"
    assert err == (
        "Warning: channel official has no credential; requests routed to it will fail until "
        "one is set with --credential-env.\n"
    )
    assert Channel.objects.filter(name="official").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--provider", "azure", "--base-url", "https://a.example"],
            "Error: argument --provider: invalid choice: 'azure' "
            "(choose from 'anthropic', 'openai', 'mock')",
        ),
        (
            ["--base-url", "https://a.example"],
            "Error: the following arguments are required: --provider",
        ),
        (
            ["--provider", "anthropic"],
            "--base-url: A base URL is required for the Anthropic provider.",
        ),
        (
            ["--provider", "openai", "--base-url", ""],
            "--base-url: A base URL is required for the OpenAI provider.",
        ),
        (
            ["--provider", "openai", "--base-url", "api.openai.com"],
            "--base-url: Enter a valid URL.",
        ),
        (
            ["--provider", "anthropic", "--base-url", "ftp://files.example.com"],
            "--base-url: Enter a valid URL.",
        ),
        (
            ["--provider", "mock", "--base-url", "https://exa mple.com"],
            "--base-url: Enter a valid URL.",
        ),
        (
            ["--provider", "mock", "--credential-env", "HCAI_TEST_UNSET"],
            "--credential-env: Environment variable HCAI_TEST_UNSET is not set or empty.",
        ),
        (
            ["--provider", "mock", "--credential-env", "HCAI_TEST_EMPTY"],
            "--credential-env: Environment variable HCAI_TEST_EMPTY is not set or empty.",
        ),
        (
            ["--provider", "mock", "--credential-env", "HCAI_TEST_LONG"],
            "--credential-env: Ensure this value has at most 500 characters (it has 501).",
        ),
        (
            ["--provider", "mock", "--groups", "Official,Nope,Gone"],
            "--groups: No group named “Nope”, “Gone”. Known groups: “Kiro”, “Official”.",
        ),
        (
            ["--provider", "mock", "--timeout", "soon"],
            "Error: argument --timeout: invalid int value: 'soon'",
        ),
        (
            ["--provider", "mock", "--timeout", "0"],
            "--timeout: Ensure this value is greater than or equal to 1.",
        ),
        (
            ["--provider", "mock", "--timeout", "3601"],
            "--timeout: Ensure this value is less than or equal to 3600.",
        ),
    ],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_bad_argument_is_named_and_nothing_is_written(
    groups, monkeypatch, options, message, existing
):
    monkeypatch.delenv("HCAI_TEST_UNSET", raising=False)
    monkeypatch.setenv("HCAI_TEST_EMPTY", "")
    monkeypatch.setenv("HCAI_TEST_LONG", "k" * 501)
    if existing:
        channel_upsert(
            name="official",
            provider="anthropic",
            base_url="https://api.anthropic.com",
            credential=SECRET,
            groups=groups[:1],
        )
    before = list(Channel.objects.values())

    with pytest.raises(CommandError) as error:
        run("upsert_channel", "official", *options)

    assert str(error.value) == message
    assert list(Channel.objects.values()) == before
    assert list(Route.objects.values_list("channel__name", "group__name")) == (
        [("official", "Official")] if existing else []
    )


def test_several_problems_are_reported_together(groups, monkeypatch):
    monkeypatch.delenv("HCAI_TEST_UNSET", raising=False)

    with pytest.raises(CommandError) as error:
        run(
            "upsert_channel",
            "official",
            "--provider",
            "anthropic",
            "--credential-env",
            "HCAI_TEST_UNSET",
            "--groups",
            "Nope",
        )

    assert str(error.value).splitlines() == [
        "--base-url: A base URL is required for the Anthropic provider.",
        "--credential-env: Environment variable HCAI_TEST_UNSET is not set or empty.",
        "--groups: No group named “Nope”. Known groups: “Kiro”, “Official”.",
    ]
    assert not Channel.objects.exists()


# --- seed_demo ------------------------------------------------------------------------------


@pytest.fixture
def debug_on(settings):
    """seed_demo runs where DEBUG is on (the quickstart's settings); tests run with it off."""
    settings.DEBUG = True


DEMO_GROUPS = {
    "CC Official Channel": (Decimal("1.0"), ["claude-*"]),
    "CC Kiro Channel": (Decimal("0.6"), ["claude-*"]),
    "gpt 0.25 CNY / $1 quota": (Decimal("0.25"), ["gpt-*", "o[0-9]*"]),
}


def snapshot() -> dict[str, object]:
    """Everything seed_demo writes except keys, which it issues anew each run."""
    return {
        "users": sorted(
            get_user_model().objects.values_list("username", "is_superuser", "is_staff")
        ),
        "teams": list(Team.objects.values_list("slug", "name")),
        "memberships": sorted(
            Membership.objects.values_list("team__slug", "user__username", "role")
        ),
        "groups": list(Group.objects.values_list("name", "multiplier", "models", "is_active")),
        "prices": list(
            ModelPrice.objects.values_list(
                "model",
                "input_per_mtok",
                "output_per_mtok",
                "cache_write_per_mtok",
                "cache_read_per_mtok",
            )
        ),
        "channels": list(Channel.objects.values_list("name", "provider", "base_url", "is_active")),
        "routes": sorted(Route.objects.values_list("group__name", "channel__name", "priority")),
    }


def issued_key(out: str) -> str:
    marker = 'export ANTHROPIC_AUTH_TOKEN="'
    line = next(line for line in out.splitlines() if line.startswith(marker))
    return line.removeprefix(marker).removesuffix('"')


def key_block(key: str, base_url: str) -> str:
    return (
        "# Windows PowerShell\n"
        f'$env:ANTHROPIC_AUTH_TOKEN="{key}"\n'
        f'$env:ANTHROPIC_BASE_URL="{base_url}"\n'
        "# macOS/Linux\n"
        f'export ANTHROPIC_AUTH_TOKEN="{key}"\n'
        f'export ANTHROPIC_BASE_URL="{base_url}"\n'
    )


@pytest.mark.usefixtures("debug_on")
@override_settings(PUBLIC_BASE_URL="https://keys.example.com")
def test_seed_demo_builds_the_demo_and_prints_logins_and_a_usable_key(db):
    out, err = run("seed_demo")

    assert err == ""
    key = issued_key(out)
    assert out == (
        "Logins (portal https://keys.example.com/, staff admin https://keys.example.com/admin/):\n"
        "  created admin / demo-admin-pass (superuser)\n"
        "  created lead / demo-lead-pass (lead of team demo)\n"
        "  created member / demo-member-pass (member of team demo)\n"
        "Team demo: groups CC Official Channel, CC Kiro Channel, gpt 0.25 CNY / $1 quota; "
        f"{len(DEMO_PRICES)} model prices; channel mock routed to every demo group.\n"
        "\n"
        "New key “demo key” for lead in group CC Official Channel. It is shown only this once:\n"
        "\n" + key_block(key, "https://keys.example.com")
    )

    User = get_user_model()
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password("demo-admin-pass")
    assert User.objects.get(username="lead").check_password("demo-lead-pass")
    assert User.objects.get(username="member").check_password("demo-member-pass")
    assert snapshot()["memberships"] == [
        ("demo", "lead", Membership.Role.LEAD),
        ("demo", "member", Membership.Role.MEMBER),
    ]
    assert {
        group.name: (group.multiplier, group.models) for group in Group.objects.all()
    } == DEMO_GROUPS

    stored = ApiKey.objects.get(digest=digest_key(key))
    assert (stored.team.slug, stored.owner.username, stored.group.name, stored.name) == (
        "demo",
        "lead",
        "CC Official Channel",
        "demo key",
    )
    assert stored.state == "enabled"
    assert AuditEvent.objects.get(key=stored).action == AuditEvent.Action.KEY_CREATED

    mock = Channel.objects.get(name="mock")
    assert mock.provider == Channel.Provider.MOCK
    assert routed(mock) == sorted(DEMO_GROUPS)


@pytest.mark.usefixtures("debug_on")
def test_seed_demo_prices_include_cache_rates_and_every_model_is_in_a_group(db):
    run("seed_demo", "--no-key")

    sonnet = ModelPrice.objects.get(model="claude-sonnet-4-5")
    assert (
        sonnet.input_per_mtok,
        sonnet.output_per_mtok,
        sonnet.cache_write_per_mtok,
        sonnet.cache_read_per_mtok,
    ) == (Decimal("3"), Decimal("15"), Decimal("3.75"), Decimal("0.30"))
    mini = ModelPrice.objects.get(model="gpt-4o-mini")
    assert (mini.input_per_mtok, mini.output_per_mtok, mini.cache_read_per_mtok) == (
        Decimal("0.15"),
        Decimal("0.60"),
        Decimal("0.075"),
    )
    patterns = [pattern for _, models in DEMO_GROUPS.values() for pattern in models]
    for price in ModelPrice.objects.all():
        assert any(fnmatch.fnmatchcase(price.model, pattern) for pattern in patterns), price.model


@pytest.mark.usefixtures("debug_on")
def test_seed_demo_twice_keeps_one_demo_key_and_rotates_it(db):
    first_out, _ = run("seed_demo")
    first = snapshot()
    demo_key = ApiKey.objects.get()
    User = get_user_model()
    admin = User.objects.get(username="admin")
    admin.set_password("changed-by-the-operator")
    admin.save()

    second_out, err = run("seed_demo")

    assert err == ""
    assert snapshot() == first
    assert issued_key(first_out) != issued_key(second_out)
    # One demo key, the same row, now opened by the second secret only.
    assert list(ApiKey.objects.values_list("pk", "name", "digest")) == [
        (demo_key.pk, "demo key", digest_key(issued_key(second_out)))
    ]
    assert list(
        AuditEvent.objects.filter(subject_type="key")
        .order_by("pk")
        .values_list("action", "actor", "key")
    ) == [
        (AuditEvent.Action.KEY_CREATED, None, demo_key.pk),
        (AuditEvent.Action.KEY_ROTATED, None, demo_key.pk),
    ]
    assert (
        "\nRotated key “demo key” for lead in group CC Official Channel: its previous secret no "
        "longer works. The new one is shown only this once:\n\n"
    ) in second_out
    assert second_out.splitlines()[1:4] == [
        "  admin already existed (password unchanged)",
        "  lead already existed (password unchanged)",
        "  member already existed (password unchanged)",
    ]
    assert User.objects.get(username="admin").check_password("changed-by-the-operator")


@pytest.mark.usefixtures("debug_on")
def test_seed_demo_no_key_issues_none(db):
    out, _ = run("seed_demo", "--no-key")

    assert not ApiKey.objects.exists()
    assert "ANTHROPIC_AUTH_TOKEN" not in out
    assert "sk-hc-" not in out


@pytest.mark.usefixtures("debug_on")
def test_seed_demo_repairs_roles_and_keeps_other_routes_of_the_mock_channel(db):
    team = Team.objects.create(slug="demo", name="Demo")
    Membership.objects.create(team=team, user=UserFactory(username="lead"), role="member")
    Membership.objects.create(team=team, user=UserFactory(username="member"), role="lead")
    extra = GroupFactory(name="Operator group")
    channel_upsert(name="mock", provider="mock", groups=[extra])

    out, _ = run("seed_demo", "--no-key")

    assert snapshot()["memberships"] == [
        ("demo", "lead", Membership.Role.LEAD),
        ("demo", "member", Membership.Role.MEMBER),
    ]
    assert routed(Channel.objects.get(name="mock")) == sorted([*DEMO_GROUPS, "Operator group"])
    assert "  lead already existed (password unchanged)" in out.splitlines()


def test_seed_demo_refuses_when_debug_is_off(db):
    with pytest.raises(CommandError) as error:
        run("seed_demo")

    assert str(error.value) == (
        "DEBUG is off, so this looks like a real deployment, and seed_demo would create the "
        "superuser admin with the published password demo-admin-pass. Nothing was written. "
        "Pass --force if this deployment is only a demo."
    )
    assert not get_user_model().objects.exists()
    assert not Team.objects.exists()
    assert not ApiKey.objects.exists()


def test_seed_demo_force_seeds_with_debug_off(db):
    out, _ = run("seed_demo", "--no-key", "--force")

    assert get_user_model().objects.get(username="admin").is_superuser
    assert snapshot()["teams"] == [("demo", "Demo")]
    assert "Logins" in out


# --- reencrypt_channel_credentials ------------------------------------------------------------

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def stored_tokens() -> dict[str, str]:
    return dict(Channel.objects.values_list("name", "encrypted_credential"))


def test_key_rotation_re_encrypts_every_credential_with_the_new_key(db):
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_A]):
        channel_upsert(name="first", provider="mock", credential="sk-first")
        channel_upsert(name="second", provider="mock", credential="sk-second")
        channel_upsert(name="bare", provider="mock")
    before = list(Channel.objects.values_list("name", "updated_at").order_by("name"))

    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_B, KEY_A]):
        out, err = run("reencrypt_channel_credentials")

    assert (out, err) == (
        "Re-encrypted 2 channel credential(s) with the newest key; 0 already used it.\n",
        "",
    )
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_B]):
        assert {c.name: c.decrypt_credential() for c in Channel.objects.exclude(name="bare")} == {
            "first": "sk-first",
            "second": "sk-second",
        }
    assert stored_tokens()["bare"] == ""
    # The clear text is unchanged, so the relay's workers need not reload (no new version).
    assert list(Channel.objects.values_list("name", "updated_at").order_by("name")) == before


def test_running_it_again_changes_nothing(db):
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_A]):
        channel_upsert(name="old", provider="mock", credential="sk-old")
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_B, KEY_A]):
        channel_upsert(name="new", provider="mock", credential="sk-new")
        first, _ = run("reencrypt_channel_credentials")
        after_first = stored_tokens()
        second, _ = run("reencrypt_channel_credentials")

    assert (first, second) == (
        "Re-encrypted 1 channel credential(s) with the newest key; 1 already used it.\n",
        "Re-encrypted 0 channel credential(s) with the newest key; 2 already used it.\n",
    )
    assert stored_tokens() == after_first


def test_a_credential_no_key_decrypts_stops_it_and_nothing_is_written(db):
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_A]):
        channel_upsert(name="readable", provider="mock", credential="sk-readable")
    other = Fernet.generate_key().decode()
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[other]):
        channel_upsert(name="lost-b", provider="mock", credential="sk-lost")
        channel_upsert(name="lost-a", provider="mock", credential="sk-lost")
    before = stored_tokens()

    with (
        override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_B, KEY_A]),
        pytest.raises(CommandError) as error,
    ):
        run("reencrypt_channel_credentials")

    assert str(error.value) == (
        "No key in CHANNEL_CREDENTIAL_KEYS decrypts the credential of lost-a, lost-b. Nothing "
        "was re-encrypted: put back the key they were encrypted with, or set new credentials "
        "for them."
    )
    assert stored_tokens() == before


def test_without_channels_it_says_so(db):
    out, _ = run("reencrypt_channel_credentials")
    assert out == "Re-encrypted 0 channel credential(s) with the newest key; 0 already used it.\n"

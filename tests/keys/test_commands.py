import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from keys.models import ApiKey, AuditEvent, digest_key
from keys.services import team_set_allowed_groups
from tests.factories import GroupFactory, distinct_ips

KEY_LINE = re.compile(r"sk-hc-[A-Za-z0-9_-]{43}\n")


@pytest.fixture
def setup(team, lead, member, group, outsider):
    """Team Acme may use only “CC Official Channel”; two other groups it may not use."""
    GroupFactory(name="GPT", models=["gpt-*"])
    GroupFactory(name="Retired", is_active=False)
    team_set_allowed_groups(team=team, groups=[group], actor=None)


def create_key(*options: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_key", *options, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


REQUIRED = {
    "--team": "acme",
    "--owner": "member",
    "--group": "CC Official Channel",
    "--name": "laptop",
}


def argv(**changes: str | None) -> list[str]:
    """The required options, with some replaced (or dropped with None) and others added."""
    values = dict(REQUIRED)
    values.update({"--" + option.replace("_", "-"): value for option, value in changes.items()})
    return [
        item for option, value in values.items() if value is not None for item in (option, value)
    ]


def test_prints_only_the_key_and_records_its_creation(setup, member):
    out, err = create_key(*argv())

    assert KEY_LINE.fullmatch(out)
    assert err == ""
    plaintext = out.strip()
    key = ApiKey.objects.get()
    assert key.digest == digest_key(plaintext)
    assert (key.name, key.owner, key.team.slug, key.group.name) == (
        "laptop",
        member,
        "acme",
        "CC Official Channel",
    )
    assert (key.quota_limit_usd, key.rate_limit, key.allowed_ips, key.expires_at) == (
        0,
        "",
        [],
        None,
    )
    assert (
        key.daily_limit_usd,
        key.weekly_limit_usd,
        key.monthly_limit_usd,
        key.max_concurrency,
    ) == (0, 0, 0, 0)
    assert key.created_by is None
    event = AuditEvent.objects.filter(subject_type="key").get()
    assert (event.key, event.action, event.actor) == (key, AuditEvent.Action.KEY_CREATED, None)


def test_every_setting_is_passed_to_the_service(setup, lead):
    out, _ = create_key(
        *argv(
            quota_usd="25.50",
            rate_limit="60 / M",
            expires="2030-01-31T18:00:00Z",
            allowed_ips="203.0.113.7, 2001:db8::/32",
            actor="lead",
            daily_usd="5",
            weekly_usd="20.50",
            monthly_usd="60",
            max_concurrency="3",
        )
    )

    key = ApiKey.objects.get(digest=digest_key(out.strip()))
    assert (
        key.daily_limit_usd,
        key.weekly_limit_usd,
        key.monthly_limit_usd,
        key.max_concurrency,
    ) == (Decimal("5"), Decimal("20.50"), Decimal("60"), 3)
    assert key.quota_limit_usd == Decimal("25.50")
    assert key.rate_limit == "60/m"
    assert key.expires_at == datetime(2030, 1, 31, 18, 0, tzinfo=UTC)
    assert key.allowed_ips == ["203.0.113.7", "2001:db8::/32"]
    assert key.created_by == lead
    assert AuditEvent.objects.filter(subject_type="key").get().actor == lead


@pytest.mark.parametrize(
    ("expires", "expected_utc"),
    [
        # No offset: read in TIME_ZONE (UTC+8), so 08:00 there is midnight UTC.
        ("2030-01-31T08:00", datetime(2030, 1, 31, 0, 0, tzinfo=UTC)),
        ("2030-01-31", datetime(2030, 1, 30, 16, 0, tzinfo=UTC)),
        ("2030-01-31T08:00:00Z", datetime(2030, 1, 31, 8, 0, tzinfo=UTC)),
        ("2030-01-31T08:00-05:00", datetime(2030, 1, 31, 13, 0, tzinfo=UTC)),
    ],
)
@override_settings(TIME_ZONE="Asia/Shanghai")
def test_expiry_without_an_offset_is_read_in_the_configured_time_zone(setup, expires, expected_utc):
    out, _ = create_key(*argv(expires=expires))

    assert ApiKey.objects.get(digest=digest_key(out.strip())).expires_at == expected_utc


IP_EXAMPLES = "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32)"
EXPIRES_EXAMPLES = (
    "(for example 2030-01-31, 2030-01-31T18:00, 2030-01-31T18:00:00Z or 2030-01-31T18:00+08:00)"
)
QUOTA_NUMBER = (
    "--quota-usd: Enter the quota limit in US dollars with at most 2 decimal places (whole "
    "cents), e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means unlimited."
)
RATE_LIMIT = (
    "--rate-limit: Enter a rate limit like 60/m: a whole number of at least 1, then /s, /m, /h "
    "or /d (per second, minute, hour or day)."
)
MAX_CONCURRENCY = (
    "--max-concurrency: Enter max concurrent requests as a whole number, e.g. 4, up to 10,000; "
    "0 means unlimited."
)
PAST = "--expires: Key expiration must be in the future. Leave it empty for never."


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"team": "nope"}, "--team: No team with slug “nope”."),
        ({"owner": "ghost"}, "--owner: No user named “ghost”."),
        ({"owner": "outsider"}, "--owner: outsider is not a member of team Acme."),
        (
            {"group": "Nope"},
            "--group: No group named “Nope”. Groups available to team Acme: “CC Official Channel”.",
        ),
        ({"group": "Retired"}, "--group: Group “Retired” is not active."),
        ({"group": "GPT"}, "--group: Group “GPT” is not available to team Acme."),
        ({"name": ""}, "--name: Name is required."),
        ({"name": "   "}, "--name: Name is required."),
        ({"name": "x" * 101}, "--name: Name can be at most 100 characters."),
        ({"quota_usd": "abc"}, QUOTA_NUMBER),
        ({"quota_usd": "NaN"}, QUOTA_NUMBER),
        ({"quota_usd": "\u0665"}, QUOTA_NUMBER),  # Arabic-Indic five
        ({"quota_usd": "1_000"}, QUOTA_NUMBER),
        ({"quota_usd": "1e-400"}, QUOTA_NUMBER),
        (
            {"quota_usd": "0.004"},
            "--quota-usd: A quota limit below 0.01 US dollars would be stored as 0, which means "
            "unlimited. Enter at least 0.01, or 0 for unlimited.",
        ),
        ({"quota_usd": "-1"}, "--quota-usd: Quota limit cannot be negative. Use 0 for unlimited."),
        ({"quota_usd": "1.234"}, QUOTA_NUMBER),
        (
            {"quota_usd": "0.000001"},
            "--quota-usd: A quota limit below 0.01 US dollars would be stored as 0, which means "
            "unlimited. Enter at least 0.01, or 0 for unlimited.",
        ),
        ({"quota_usd": "1e400"}, QUOTA_NUMBER),
        ({"quota_usd": "1" * 30}, QUOTA_NUMBER),
        ({"rate_limit": "0/m"}, RATE_LIMIT),
        ({"rate_limit": "60/w"}, RATE_LIMIT),
        ({"rate_limit": "fast"}, RATE_LIMIT),
        (
            {"expires": "soon"},
            f"--expires: “soon” is not an ISO-8601 date and time {EXPIRES_EXAMPLES}.",
        ),
        (
            {"expires": "2030-13-01"},
            f"--expires: “2030-13-01” is not an ISO-8601 date and time {EXPIRES_EXAMPLES}.",
        ),
        ({"expires": "2020-01-01T00:00:00Z"}, PAST),
        ({"expires": "2020-01-01T00:00"}, PAST),
        (
            {"allowed_ips": "203.0.113.7, 10.0.0.300"},
            f"--allowed-ips: “10.0.0.300” is not a valid IPv4 or IPv6 address or CIDR range "
            f"{IP_EXAMPLES}.",
        ),
        (
            {"allowed_ips": "10.0.0.1/8"},
            f"--allowed-ips: “10.0.0.1/8” is not a valid IPv4 or IPv6 address or CIDR range "
            f"{IP_EXAMPLES}.",
        ),
        (
            {"allowed_ips": "2001:db8::/129"},
            f"--allowed-ips: “2001:db8::/129” is not a valid IPv4 or IPv6 address or CIDR range "
            f"{IP_EXAMPLES}.",
        ),
        (
            {"allowed_ips": ",".join(distinct_ips(1001))},
            "--allowed-ips: IP restriction can hold at most 1,000 addresses or ranges; this one "
            "has 1,001.",
        ),
        ({"actor": "ghost"}, "--actor: No user named “ghost”."),
        (
            {"daily_usd": "-1"},
            "--daily-usd: Daily limit cannot be negative. Use 0 for no daily limit.",
        ),
        (
            {"daily_usd": "ten"},
            "--daily-usd: Enter the daily limit in US dollars with at most 2 decimal places "
            "(whole cents), e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no daily limit.",
        ),
        (
            {"weekly_usd": "1.234"},
            "--weekly-usd: Enter the weekly limit in US dollars with at most 2 decimal places "
            "(whole cents), e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no weekly limit.",
        ),
        (
            {"monthly_usd": "0.001"},
            "--monthly-usd: A monthly limit below 0.01 US dollars would be stored as 0, which "
            "means no monthly limit. Enter at least 0.01, or 0 for no monthly limit.",
        ),
        (
            {"max_concurrency": "-2"},
            "--max-concurrency: Max concurrent requests cannot be negative. Use 0 for unlimited.",
        ),
        ({"max_concurrency": "2.5"}, MAX_CONCURRENCY),
        ({"max_concurrency": "many"}, MAX_CONCURRENCY),
        ({"max_concurrency": "10001"}, MAX_CONCURRENCY),
    ],
)
def test_bad_argument_is_named_and_nothing_is_written(setup, changes, message):
    with pytest.raises(CommandError) as error:
        create_key(*argv(**changes))

    assert str(error.value) == message
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


def test_every_bad_budget_is_reported_at_once(setup):
    with pytest.raises(CommandError) as error:
        create_key(*argv(daily_usd="x", max_concurrency="-1"))

    assert str(error.value).splitlines() == [
        "--daily-usd: Enter the daily limit in US dollars with at most 2 decimal places (whole "
        "cents), e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no daily limit.",
        "--max-concurrency: Max concurrent requests cannot be negative. Use 0 for unlimited.",
    ]
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


def test_every_problem_is_reported_at_once(setup):
    with pytest.raises(CommandError) as error:
        create_key(*argv(team="nope", owner="ghost", group="Nope", expires="soon"))

    assert str(error.value).splitlines() == [
        "--team: No team with slug “nope”.",
        "--owner: No user named “ghost”.",
        "--group: No group named “Nope”.",
        f"--expires: “soon” is not an ISO-8601 date and time {EXPIRES_EXAMPLES}.",
    ]
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("missing", ["team", "owner", "group", "name"])
def test_missing_required_option_is_refused(setup, missing):
    with pytest.raises(CommandError) as error:
        create_key(*argv(**{missing: None}))

    assert str(error.value) == f"Error: the following arguments are required: --{missing}"
    assert not ApiKey.objects.exists()


def test_real_process_exits_non_zero_with_the_message_on_stderr(tmp_path):
    """The CLI as operators run it, on a throwaway SQLite database (never the test database)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hcai.settings.test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        "REDIS_URL": "",
        "HCAI_VAR_DIR": str(tmp_path),
        "PYTHONIOENCODING": "utf-8",
    }

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), *args],
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
        )

    assert manage("migrate", "--verbosity", "0").returncode == 0
    assert manage("seed_demo", "--no-key", "--force").returncode == 0

    unknown_team = manage("create_key", *argv(team="nope", owner="lead"))
    assert unknown_team.returncode == 1
    assert unknown_team.stdout == ""
    assert unknown_team.stderr == "CommandError: --team: No team with slug “nope”.\n"

    missing = manage("create_key", "--team", "demo")
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.endswith(
        "manage.py create_key: error: the following arguments are required: "
        "--owner, --group, --name\n"
    )

    created = manage("create_key", *argv(team="demo", owner="lead"))
    assert created.returncode == 0
    assert KEY_LINE.fullmatch(created.stdout)
    with closing(sqlite3.connect(tmp_path / "cli.sqlite3")) as database:
        digests = [row[0] for row in database.execute("SELECT digest FROM keys_apikey")]
    assert digests == [digest_key(created.stdout.strip())]

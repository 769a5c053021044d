"""manage.py set_budget: a team's monthly budget and time zone, or a member's monthly cap; bad
arguments are a CommandError naming the option, and nothing is written."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError

from core.keyspace import snapshot_cache_key
from keys.models import AuditEvent, Membership, Team

from ..audit_trail import audit_rows
from ..factories import UserFactory, make_key

AMOUNT_MESSAGE = (
    "Enter {what} in US dollars with at most 2 decimal places (whole cents), e.g. 25 or 25.50, "
    "up to 9,999,999,999.99; 0 means {zero}."
)


def set_budget(*options: str) -> str:
    out = StringIO()
    call_command("set_budget", *options, stdout=out, stderr=StringIO())
    return out.getvalue()


def stored(team, member) -> tuple:
    return (
        *Team.objects.filter(pk=team.pk).values_list("monthly_budget_usd", "time_zone").get(),
        Membership.objects.get(team=team, user=member).monthly_limit_usd,
    )


def test_sets_a_teams_budget_and_time_zone_as_the_system(team, member):
    out = set_budget("--team", "acme", "--monthly-usd", "500", "--time-zone", "Asia/Shanghai")
    assert out == "Acme: monthly budget 500.00 USD, time zone Asia/Shanghai.\n"
    assert stored(team, member) == (Decimal("500"), "Asia/Shanghai", Decimal("0"))
    assert audit_rows(action="team.budget_updated") == [
        (
            "team.budget_updated",
            None,
            "acme",
            "Acme",
            {"monthly_budget_usd": ["0", "500"], "time_zone": ["UTC", "Asia/Shanghai"]},
        )
    ]


def test_the_time_zone_alone_and_zero_clears_the_budget(team, member):
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=40)
    assert set_budget("--team", "acme", "--time-zone", "Europe/Berlin") == (
        "Acme: monthly budget 40.00 USD, time zone Europe/Berlin.\n"
    )
    assert set_budget("--team", "acme", "--monthly-usd", "0") == (
        "Acme: no monthly budget, time zone Europe/Berlin.\n"
    )
    assert stored(team, member) == (Decimal("0"), "Europe/Berlin", Decimal("0"))


def test_sets_a_members_cap_and_drops_their_keys_snapshots(
    team, member, group, django_capture_on_commit_callbacks
):
    key = make_key(team=team, owner=member, group=group).key
    cache.set(snapshot_cache_key(key.digest), "snapshot")
    with django_capture_on_commit_callbacks(execute=True):
        out = set_budget("--team", "acme", "--member", "member", "--monthly-usd", "20.5")
    assert out == "member in Acme: monthly cap 20.50 USD.\n"
    assert stored(team, member) == (Decimal("0"), "UTC", Decimal("20.5"))
    assert cache.get(snapshot_cache_key(key.digest)) is None
    assert audit_rows(action="member.cap_updated") == [
        ("member.cap_updated", None, "acme", "member", {"monthly_limit_usd": ["0", "20.5"]})
    ]
    assert set_budget("--team", "acme", "--member", "member", "--monthly-usd", "0") == (
        "member in Acme: no monthly cap.\n"
    )


def test_the_actor_is_recorded_when_named(team, member, lead):
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    set_budget("--team", "acme", "--monthly-usd", "9", "--actor", staff.username)
    set_budget("--team", "acme", "--member", "member", "--monthly-usd", "3", "--actor", "lead")
    assert [row[:2] for row in audit_rows()] == [
        ("team.budget_updated", "root"),
        ("member.cap_updated", "lead"),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--team", "nope", "--monthly-usd", "5"], "--team: No team with slug “nope”."),
        (
            ["--team", "acme", "--member", "ghost", "--monthly-usd", "5"],
            "--member: No user named “ghost”.",
        ),
        (
            ["--team", "acme", "--member", "outsider", "--monthly-usd", "5"],
            "--member: outsider is not a member of Acme.",
        ),
        (
            ["--team", "acme", "--monthly-usd", "lots"],
            "--monthly-usd: " + AMOUNT_MESSAGE.format(what="a monthly budget", zero="no budget"),
        ),
        (
            ["--team", "acme", "--member", "member", "--monthly-usd", "1.234"],
            "--monthly-usd: " + AMOUNT_MESSAGE.format(what="a monthly cap", zero="no cap"),
        ),
        (
            ["--team", "acme", "--monthly-usd", "-3"],
            "--monthly-usd: A monthly budget cannot be negative. Use 0 for no budget.",
        ),
        (
            ["--team", "acme", "--monthly-usd", "5", "--time-zone", "Moon/Base"],
            "--time-zone: “Moon/Base” is not a time zone. Use an IANA name such as "
            "Asia/Shanghai or UTC.",
        ),
        (["--team", "acme"], "--monthly-usd: required (0 clears it)."),
        (
            ["--team", "acme", "--member", "member", "--time-zone", "UTC"],
            "--time-zone: the time zone is the team's; set it without --member.\n"
            "--monthly-usd: required (0 clears it).",
        ),
        (
            ["--team", "nope", "--monthly-usd", "5", "--actor", "ghost"],
            "--team: No team with slug “nope”.\n--actor: No user named “ghost”.",
        ),
        (
            ["--team", "acme", "--monthly-usd", "5", "--actor", "lead"],
            "--monthly-usd: Only staff can set a team's monthly budget.",
        ),
        (
            ["--team", "acme", "--member", "member", "--monthly-usd", "5", "--actor", "member"],
            "--monthly-usd: Only a lead of Acme can set its members' monthly caps.",
        ),
    ],
)
def test_bad_arguments_name_the_option_and_write_nothing(
    team, lead, member, outsider, options, message
):
    with pytest.raises(CommandError) as caught:
        set_budget(*options)
    assert str(caught.value) == message
    assert stored(team, member) == (Decimal("0"), "UTC", Decimal("0"))
    assert not AuditEvent.objects.exists()

"""A team's monthly budget and time zone (staff) and a member's monthly cap (leads): who may set
them, the exact messages, one audit row per change and nothing written on refusal, and the
relay's snapshots of the keys they govern dropped after the commit."""

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError

from core.keyspace import snapshot_cache_key
from keys import services
from keys.models import AuditEvent, Membership, Team
from keys.policy import PERMISSION_DENIED

from ..audit_trail import audit_rows
from ..factories import MembershipFactory, UserFactory, grant, make_key

BUDGET_STAFF_ONLY = "Only staff can set a team's monthly budget."
TIME_ZONE_STAFF_ONLY = "Only staff can change a team's time zone."
CAP_LEADS_ONLY = "Only a lead of Acme can set its members' monthly caps."


def budget_message(what: str, zero: str) -> str:
    return (
        f"Enter {what} in US dollars with at most 2 decimal places (whole cents), e.g. 25 or "
        f"25.50, up to 9,999,999,999.99; 0 means {zero}."
    )


def team_row(team: Team) -> tuple:
    return Team.objects.filter(pk=team.pk).values_list("monthly_budget_usd", "time_zone").get()


@pytest.fixture
def staff(db):
    return grant(UserFactory(username="staff", is_staff=True), "keys.change_team")


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


# --- the team's budget and time zone --------------------------------------------------------


@pytest.mark.parametrize("who", ["staff", "superuser", None])
def test_staff_and_the_system_set_a_budget_and_time_zone(request, team, who):
    actor = request.getfixturevalue(who) if who else None
    services.team_budget_update(
        actor=actor, team=team, monthly_budget_usd="250.50", time_zone=" Asia/Shanghai "
    )
    assert team_row(team) == (Decimal("250.50"), "Asia/Shanghai")
    assert (team.monthly_budget_usd, team.time_zone) == (Decimal("250.50"), "Asia/Shanghai")
    assert audit_rows(action="team.budget_updated") == [
        (
            "team.budget_updated",
            getattr(actor, "username", None),
            "acme",
            "Acme",
            {"monthly_budget_usd": ["0", "250.5"], "time_zone": ["UTC", "Asia/Shanghai"]},
        )
    ]


@pytest.mark.parametrize("cleared", ["0", 0, "", " 0.00 "])
def test_zero_or_empty_clears_the_budget(team, staff, cleared):
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=100)
    team.refresh_from_db()
    services.team_budget_update(actor=staff, team=team, monthly_budget_usd=cleared)
    assert team_row(team) == (Decimal("0"), "UTC")
    assert audit_rows(action="team.budget_updated")[0][4] == {"monthly_budget_usd": ["100", "0"]}


def test_only_the_fields_given_change_and_no_change_writes_no_row(team, staff):
    services.team_budget_update(actor=staff, team=team, time_zone="Europe/Berlin")
    assert team_row(team) == (Decimal("0"), "Europe/Berlin")
    services.team_budget_update(actor=staff, team=team, time_zone="Europe/Berlin")
    services.team_budget_update(actor=staff, team=team, monthly_budget_usd="0")
    services.team_budget_update(actor=staff, team=team)
    assert [row[4] for row in audit_rows(action="team.budget_updated")] == [
        {"time_zone": ["UTC", "Europe/Berlin"]}
    ]


@pytest.mark.parametrize(
    ("who", "changes", "refused"),
    [
        ("lead", {"monthly_budget_usd": "10"}, {"monthly_budget_usd": [BUDGET_STAFF_ONLY]}),
        ("member", {"time_zone": "Asia/Tokyo"}, {"time_zone": [TIME_ZONE_STAFF_ONLY]}),
        (
            "lead",
            {"monthly_budget_usd": "10", "time_zone": "Asia/Tokyo"},
            {"monthly_budget_usd": [BUDGET_STAFF_ONLY], "time_zone": [TIME_ZONE_STAFF_ONLY]},
        ),
        ("staff_without_permission", {"monthly_budget_usd": "1"}, None),
        ("inactive_superuser", {"monthly_budget_usd": "1"}, None),
    ],
)
def test_anyone_else_is_refused_and_nothing_is_written(request, team, who, changes, refused):
    if who == "staff_without_permission":
        actor = grant(UserFactory(is_staff=True), "keys.change_membership", "keys.view_team")
    elif who == "inactive_superuser":
        actor = UserFactory(is_staff=True, is_superuser=True, is_active=False)
    else:
        actor = request.getfixturevalue(who)
    with pytest.raises(ValidationError) as caught:
        services.team_budget_update(actor=actor, team=team, **changes)
    assert caught.value.message_dict == (refused or {"monthly_budget_usd": [BUDGET_STAFF_ONLY]})
    assert {error.code for errors in caught.value.error_dict.values() for error in errors} == {
        PERMISSION_DENIED
    }
    assert team_row(team) == (Decimal("0"), "UTC")
    assert not AuditEvent.objects.filter(action="team.budget_updated").exists()


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        (
            {"monthly_budget_usd": "abc"},
            {"monthly_budget_usd": [budget_message("a monthly budget", "no budget")]},
        ),
        (
            {"monthly_budget_usd": "25.001"},
            {"monthly_budget_usd": [budget_message("a monthly budget", "no budget")]},
        ),
        (
            {"monthly_budget_usd": "1e3"},
            {"monthly_budget_usd": [budget_message("a monthly budget", "no budget")]},
        ),
        (
            {"monthly_budget_usd": "0.001"},
            {
                "monthly_budget_usd": [
                    "A monthly budget below 0.01 US dollars would be stored as 0, which means "
                    "no budget. Enter at least 0.01, or 0 for no budget."
                ]
            },
        ),
        (
            {"monthly_budget_usd": "-5"},
            {"monthly_budget_usd": ["A monthly budget cannot be negative. Use 0 for no budget."]},
        ),
        (
            {"time_zone": "Mars/Olympus"},
            {
                "time_zone": [
                    "“Mars/Olympus” is not a time zone. Use an IANA name such as Asia/Shanghai "
                    "or UTC."
                ]
            },
        ),
        (
            {"monthly_budget_usd": "x", "time_zone": ""},
            {
                "monthly_budget_usd": [budget_message("a monthly budget", "no budget")],
                "time_zone": [
                    "“” is not a time zone. Use an IANA name such as Asia/Shanghai or UTC."
                ],
            },
        ),
    ],
)
def test_bad_values_are_refused_with_every_message_and_nothing_is_written(
    team, staff, changes, errors
):
    with pytest.raises(ValidationError) as caught:
        services.team_budget_validate(actor=staff, team=team, **changes)
    assert caught.value.message_dict == errors
    with pytest.raises(ValidationError) as caught:
        services.team_budget_update(actor=staff, team=team, **changes)
    assert caught.value.message_dict == errors
    assert team_row(team) == (Decimal("0"), "UTC")
    assert (team.monthly_budget_usd, team.time_zone) == (Decimal("0"), "UTC")
    assert not AuditEvent.objects.filter(action="team.budget_updated").exists()


def test_validate_returns_the_values_as_stored_and_writes_nothing(team, staff):
    assert services.team_budget_validate(
        actor=staff, team=team, monthly_budget_usd=" 25.50 ", time_zone="Asia/Tokyo"
    ) == {"monthly_budget_usd": Decimal("25.50"), "time_zone": "Asia/Tokyo"}
    assert team_row(team) == (Decimal("0"), "UTC")


@pytest.mark.parametrize("changes", [{"monthly_budget_usd": "9"}, {"time_zone": "Asia/Tokyo"}])
def test_a_budget_change_drops_every_key_of_the_team_after_commit(
    team, other_team, group, member, lead, staff, changes, django_capture_on_commit_callbacks
):
    keys = [make_key(team=team, owner=owner, group=group).key for owner in (member, lead)]
    elsewhere = make_key(team=other_team, group=group).key
    for key in [*keys, elsewhere]:
        cache.set(snapshot_cache_key(key.digest), "snapshot")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.team_budget_update(actor=staff, team=team, **changes)
        # Not before the commit: a request racing the transaction would reload the old state.
        assert all(cache.get(snapshot_cache_key(key.digest)) == "snapshot" for key in keys)
    assert len(callbacks) == 1
    assert [cache.get(snapshot_cache_key(key.digest)) for key in keys] == [None, None]
    assert cache.get(snapshot_cache_key(elsewhere.digest)) == "snapshot"


def test_a_refused_or_unchanged_budget_keeps_the_snapshots(
    team, group, member, lead, staff, django_capture_on_commit_callbacks
):
    key = make_key(team=team, owner=member, group=group).key
    cache.set(snapshot_cache_key(key.digest), "snapshot")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(ValidationError):
            services.team_budget_update(actor=lead, team=team, monthly_budget_usd="9")
        services.team_budget_update(actor=staff, team=team, time_zone="UTC")
    assert callbacks == []
    assert cache.get(snapshot_cache_key(key.digest)) == "snapshot"


def test_team_save_leaves_the_budget_to_its_own_action(team, staff):
    """The admin's general team save cannot write the budget or the clock unaudited."""
    team.name = "Acme Corp"
    team.monthly_budget_usd = Decimal("5")
    team.time_zone = "Asia/Tokyo"
    services.team_save(team=team, actor=staff)
    assert Team.objects.filter(pk=team.pk).values_list(
        "name", "monthly_budget_usd", "time_zone"
    ).get() == ("Acme Corp", Decimal("0"), "UTC")


# --- a member's monthly cap -----------------------------------------------------------------


def membership_of(user, team) -> Membership:
    return Membership.objects.select_related("team", "user").get(team=team, user=user)


def stored_cap(user, team) -> Decimal:
    return Membership.objects.get(team=team, user=user).monthly_limit_usd


@pytest.mark.parametrize("who", ["lead", "staff_with_permission", None])
def test_leads_staff_and_the_system_set_a_members_cap(request, team, member, who):
    if who == "staff_with_permission":
        actor = grant(UserFactory(username="ops", is_staff=True), "keys.change_membership")
    else:
        actor = request.getfixturevalue(who) if who else None
    membership = membership_of(member, team)
    services.membership_limit_update(actor=actor, membership=membership, monthly_limit_usd="20")
    assert stored_cap(member, team) == membership.monthly_limit_usd == Decimal("20")
    assert audit_rows(action="member.cap_updated") == [
        (
            "member.cap_updated",
            getattr(actor, "username", None),
            "acme",
            "member",
            {"monthly_limit_usd": ["0", "20"]},
        )
    ]


def test_a_lead_clears_a_cap_and_an_unchanged_cap_writes_no_row(team, lead, member):
    membership = membership_of(member, team)
    services.membership_limit_update(actor=lead, membership=membership, monthly_limit_usd="20")
    services.membership_limit_update(actor=lead, membership=membership, monthly_limit_usd="20.00")
    services.membership_limit_update(actor=lead, membership=membership, monthly_limit_usd="")
    assert stored_cap(member, team) == Decimal("0")
    assert [row[4] for row in audit_rows(action="member.cap_updated")] == [
        {"monthly_limit_usd": ["0", "20"]},
        {"monthly_limit_usd": ["20", "0"]},
    ]


@pytest.mark.parametrize(
    "who", ["member_on_self", "member_on_other", "outsider", "staff_without_permission"]
)
def test_members_and_strangers_cannot_set_a_cap(request, team, lead, member, who):
    other = MembershipFactory(team=team, user__username="second").user
    actor, target = {
        "member_on_self": (member, member),
        "member_on_other": (member, other),
        "outsider": (request.getfixturevalue("outsider"), member),
        "staff_without_permission": (
            grant(UserFactory(is_staff=True), "keys.change_team", "keys.view_membership"),
            member,
        ),
    }[who]
    Membership.objects.filter(team=team, user=target).update(monthly_limit_usd=10)
    with pytest.raises(ValidationError) as caught:
        services.membership_limit_update(
            actor=actor, membership=membership_of(target, team), monthly_limit_usd="500"
        )
    assert caught.value.message_dict == {"monthly_limit_usd": [CAP_LEADS_ONLY]}
    assert caught.value.error_dict["monthly_limit_usd"][0].code == PERMISSION_DENIED
    assert stored_cap(target, team) == Decimal("10")
    assert not AuditEvent.objects.filter(action="member.cap_updated").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("twenty", budget_message("a monthly cap", "no cap")),
        ("20.005", budget_message("a monthly cap", "no cap")),
        ("10000000000", budget_message("a monthly cap", "no cap")),
        (
            "0.004",
            "A monthly cap below 0.01 US dollars would be stored as 0, which means no cap. "
            "Enter at least 0.01, or 0 for no cap.",
        ),
        ("-1", "A monthly cap cannot be negative. Use 0 for no cap."),
    ],
)
def test_a_bad_cap_is_refused_with_its_message_and_nothing_is_written(
    team, lead, member, value, message
):
    membership = membership_of(member, team)
    with pytest.raises(ValidationError) as caught:
        services.membership_limit_validate(
            actor=lead, membership=membership, monthly_limit_usd=value
        )
    assert caught.value.message_dict == {"monthly_limit_usd": [message]}
    with pytest.raises(ValidationError) as caught:
        services.membership_limit_update(actor=lead, membership=membership, monthly_limit_usd=value)
    assert caught.value.message_dict == {"monthly_limit_usd": [message]}
    assert stored_cap(member, team) == Decimal("0")
    assert not AuditEvent.objects.filter(action="member.cap_updated").exists()


def test_a_cap_drops_only_that_members_keys_in_that_team_after_commit(
    team, other_team, group, lead, member, django_capture_on_commit_callbacks
):
    own = [make_key(team=team, owner=member, group=group, name=f"k{n}").key for n in (1, 2)]
    leads_key = make_key(team=team, owner=lead, group=group).key
    # The same person's key in another team obeys that team's cap, not this one.
    MembershipFactory(team=other_team, user=member)
    elsewhere = make_key(team=other_team, owner=member, group=group).key
    for key in [*own, leads_key, elsewhere]:
        cache.set(snapshot_cache_key(key.digest), "snapshot")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.membership_limit_update(
            actor=lead, membership=membership_of(member, team), monthly_limit_usd="15"
        )
        assert cache.get(snapshot_cache_key(own[0].digest)) == "snapshot"
    assert len(callbacks) == 1
    assert [cache.get(snapshot_cache_key(key.digest)) for key in own] == [None, None]
    assert cache.get(snapshot_cache_key(leads_key.digest)) == "snapshot"
    assert cache.get(snapshot_cache_key(elsewhere.digest)) == "snapshot"

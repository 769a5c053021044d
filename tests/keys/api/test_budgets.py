"""The REST API's spend controls above the keys: a team's monthly budget and time zone on
/api/v1/teams/{slug}/ (everyone in the team reads them, staff set them, a lead is refused with
403 and nothing written, another team's lead finds nothing), and a member's monthly cap on
/api/v1/teams/{slug}/members/{username}/ (leads and staff set it; members are refused)."""

from decimal import Decimal

import pytest
from django.core.cache import cache

from core.keyspace import snapshot_cache_key
from keys.models import AuditEvent, Membership, Team

from ...audit_trail import audit_rows
from ...factories import make_key

TEAM = "/api/v1/teams/acme/"


def member_url(username: str) -> str:
    return f"{TEAM}members/{username}/"


def stored_team(team: Team) -> tuple:
    return Team.objects.filter(pk=team.pk).values_list("monthly_budget_usd", "time_zone").get()


def stored_cap(team: Team, username: str) -> Decimal:
    return Membership.objects.get(team=team, user__username=username).monthly_limit_usd


def budget_rows() -> list:
    """The rows of what these endpoints change (the API token a client uses has its own)."""
    return list(AuditEvent.objects.exclude(subject_type="token"))


AMOUNT_MESSAGE = (
    "Enter {what} in US dollars with at most 2 decimal places (whole cents), e.g. 25 or 25.50, "
    "up to 9,999,999,999.99; 0 means {zero}."
)


# --- the team's budget and time zone --------------------------------------------------------


@pytest.mark.parametrize("who", ["lead", "member"])
def test_the_team_reads_its_budget_and_time_zone(api, actors, team, who):
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=250, time_zone="Asia/Shanghai")
    body = api(actors[who]).get(TEAM).json()
    assert (body["monthly_budget_usd"], body["time_zone"]) == ("250.00", "Asia/Shanghai")
    listed = api(actors[who]).get("/api/v1/teams/").json()["results"]
    assert [(row["slug"], row["monthly_budget_usd"]) for row in listed] == [("acme", "250.00")]


@pytest.mark.parametrize("kind", ["superuser", "staff_with_permission"])
def test_staff_set_the_budget_and_time_zone(
    api, actor_of_kind, team, member, group, kind, django_capture_on_commit_callbacks
):
    staff = actor_of_kind(kind, "keys.change_team")
    key = make_key(team=team, owner=member, group=group).key
    cache.set(snapshot_cache_key(key.digest), "snapshot")
    with django_capture_on_commit_callbacks(execute=True):
        response = api(staff).patch(
            TEAM, {"monthly_budget_usd": 500, "time_zone": "Asia/Shanghai"}, format="json"
        )
    assert response.status_code == 200
    body = response.json()
    assert {
        field: body[field] for field in ("slug", "role", "monthly_budget_usd", "time_zone")
    } == {
        "slug": "acme",
        "role": None,
        "monthly_budget_usd": "500.00",
        "time_zone": "Asia/Shanghai",
    }
    assert stored_team(team) == (Decimal("500"), "Asia/Shanghai")
    assert audit_rows(action="team.budget_updated") == [
        (
            "team.budget_updated",
            staff.username,
            "acme",
            "Acme",
            {"monthly_budget_usd": ["0", "500"], "time_zone": ["UTC", "Asia/Shanghai"]},
        )
    ]
    assert cache.get(snapshot_cache_key(key.digest)) is None


def test_null_or_zero_clears_the_budget(api, staff, team):
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=9)
    response = api(staff).patch(TEAM, {"monthly_budget_usd": None}, format="json")
    assert (response.status_code, response.json()["monthly_budget_usd"]) == (200, "0.00")
    assert stored_team(team) == (Decimal("0"), "UTC")


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {"monthly_budget_usd": "5.555"},
            {
                "monthly_budget_usd": [
                    AMOUNT_MESSAGE.format(what="a monthly budget", zero="no budget")
                ]
            },
        ),
        ({"monthly_budget_usd": True}, {"monthly_budget_usd": ["A valid number is required."]}),
        (
            {"time_zone": "Europe/Nowhere"},
            {
                "time_zone": [
                    "“Europe/Nowhere” is not a time zone. Use an IANA name such as "
                    "Asia/Shanghai or UTC."
                ]
            },
        ),
    ],
)
def test_bad_values_are_400_with_the_services_messages(api, staff, team, body, errors):
    response = api(staff).patch(TEAM, body, format="json")
    assert response.status_code == 400
    assert response.json() == errors
    assert stored_team(team) == (Decimal("0"), "UTC")
    assert not budget_rows()


@pytest.mark.parametrize(
    ("who", "body", "errors"),
    [
        (
            "lead",
            {"monthly_budget_usd": "1000"},
            {"monthly_budget_usd": ["Only staff can set a team's monthly budget."]},
        ),
        (
            "lead",
            {"time_zone": "Asia/Tokyo"},
            {"time_zone": ["Only staff can change a team's time zone."]},
        ),
        (
            "member",
            {"monthly_budget_usd": "1000"},
            {"monthly_budget_usd": ["Only staff can set a team's monthly budget."]},
        ),
    ],
)
def test_leads_and_members_are_refused_and_nothing_is_written(api, actors, team, who, body, errors):
    response = api(actors[who]).patch(TEAM, body, format="json")
    assert response.status_code == 403
    assert response.json() == errors
    assert stored_team(team) == (Decimal("0"), "UTC")
    assert not budget_rows()


@pytest.mark.parametrize("kind", ["lead_elsewhere", "staff_without_permission"])
def test_anyone_else_finds_no_team(api, actor_of_kind, team, kind):
    response = api(actor_of_kind(kind, "keys.change_team")).patch(
        TEAM, {"monthly_budget_usd": "1"}, format="json"
    )
    assert response.status_code == 404
    assert stored_team(team) == (Decimal("0"), "UTC")
    assert Team.objects.filter(slug="acme").exists()


def test_nobody_renames_a_team_here(api, staff, team):
    response = api(staff).patch(TEAM, {"name": "Renamed"}, format="json")
    assert response.status_code == 200
    assert Team.objects.get(pk=team.pk).name == "Acme"
    assert not budget_rows()


# --- a member's monthly cap -----------------------------------------------------------------


def test_a_lead_sets_a_members_cap(
    api, lead, member, team, group, django_capture_on_commit_callbacks
):
    key = make_key(team=team, owner=member, group=group).key
    cache.set(snapshot_cache_key(key.digest), "snapshot")
    with django_capture_on_commit_callbacks(execute=True):
        response = api(lead).patch(member_url("member"), {"monthly_limit_usd": "20"}, format="json")
    assert response.status_code == 200
    assert (response.json()["user"], response.json()["monthly_limit_usd"]) == ("member", "20.00")
    assert stored_cap(team, "member") == Decimal("20")
    assert audit_rows(action="member.cap_updated") == [
        ("member.cap_updated", "lead", "acme", "member", {"monthly_limit_usd": ["0", "20"]})
    ]
    assert cache.get(snapshot_cache_key(key.digest)) is None
    listed = api(lead).get(f"{TEAM}members/").json()["results"]
    assert [(row["user"], row["monthly_limit_usd"]) for row in listed] == [
        ("lead", "0.00"),
        ("member", "20.00"),
    ]


def test_role_and_cap_together_write_one_row_each(api, lead, member, team):
    response = api(lead).patch(
        member_url("member"), {"role": "lead", "monthly_limit_usd": 7.5}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["role"], response.json()["monthly_limit_usd"]) == ("lead", "7.50")
    assert [row[0] for row in audit_rows(action__startswith="member.")] == [
        "member.role_changed",
        "member.cap_updated",
    ]


def test_a_bad_cap_changes_nothing_not_even_the_role(api, lead, member, team):
    response = api(lead).patch(
        member_url("member"), {"role": "lead", "monthly_limit_usd": "-2"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {
        "monthly_limit_usd": ["A monthly cap cannot be negative. Use 0 for no cap."]
    }
    assert Membership.objects.get(team=team, user=member).role == "member"
    assert stored_cap(team, "member") == Decimal("0")
    assert not budget_rows()


def test_staff_with_the_permission_set_a_cap(api, actor_of_kind, member, team):
    staff = actor_of_kind("staff_with_permission", "keys.change_membership")
    response = api(staff).patch(member_url("member"), {"monthly_limit_usd": "3"}, format="json")
    assert response.status_code == 200
    assert stored_cap(team, "member") == Decimal("3")


@pytest.mark.parametrize(
    ("who", "username", "status"),
    [("member", "member", 403), ("member", "teammate", 403), ("outsider", "member", 404)],
)
def test_members_cannot_set_caps_and_other_teams_find_nothing(
    api, actors, team, teammate, who, username, status
):
    Membership.objects.filter(team=team).update(monthly_limit_usd=10)
    response = api(actors[who]).patch(
        member_url(username), {"monthly_limit_usd": "999"}, format="json"
    )
    assert response.status_code == status
    if status == 403:
        assert response.json() == {"detail": "Only a lead of Acme can manage its members."}
    assert stored_cap(team, username) == Decimal("10")
    assert not budget_rows()

"""/api/v1/teams/, its members, and /api/v1/me/."""

import pytest

from keys.models import ApiKey, AuditEvent, Membership

from ...factories import MembershipFactory, UserFactory, make_key

TEAMS = "/api/v1/teams/"
MEMBERS = "/api/v1/teams/acme/members/"


def member_url(username: str, team: str = "acme") -> str:
    return f"/api/v1/teams/{team}/members/{username}/"


def roles(team) -> dict[str, str]:
    return dict(Membership.objects.filter(team=team).values_list("user__username", "role"))


# --- teams ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "teams"),
    [
        ("lead", [{"slug": "acme", "name": "Acme", "role": "lead"}]),
        ("member", [{"slug": "acme", "name": "Acme", "role": "member"}]),
        ("outsider", [{"slug": "globex", "name": "Globex", "role": "lead"}]),
        (
            "staff",
            [
                {"slug": "acme", "name": "Acme", "role": None},
                {"slug": "globex", "name": "Globex", "role": None},
            ],
        ),
    ],
)
def test_teams_lists_the_callers_teams_and_role(api, actors, actor, teams):
    response = api(actors[actor]).get(TEAMS)

    assert response.status_code == 200
    assert [
        {key: team[key] for key in ("slug", "name", "role")} for team in response.json()["results"]
    ] == teams


def test_a_team_by_slug(api, member):
    response = api(member).get(f"{TEAMS}acme/")

    assert response.status_code == 200
    assert response.json()["role"] == "member"


@pytest.mark.parametrize("slug", ["globex", "nope"])
def test_another_or_unknown_team_is_404(api, member, other_team, slug):
    assert api(member).get(f"{TEAMS}{slug}/").status_code == 404


def test_teams_are_created_and_deleted_in_the_admin_only(api, staff):
    client = api(staff)

    assert client.post(TEAMS, {"slug": "new", "name": "New"}, format="json").status_code == 405
    assert client.delete(f"{TEAMS}acme/").status_code == 405


# --- members --------------------------------------------------------------------------------


def test_members_list_for_the_leads(api, lead, member, team):
    response = api(lead).get(MEMBERS)

    assert response.status_code == 200
    assert [(row["user"], row["email"], row["role"]) for row in response.json()["results"]] == [
        ("lead", "lead@example.com", "lead"),
        ("member", "member@example.com", "member"),
    ]


def test_members_list_is_not_found_for_members(api, lead, member, team):
    """Like the portal's team page: a member does not read the others' email addresses."""
    response = api(member).get(MEMBERS)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert "lead@example.com" not in response.content.decode()


@pytest.mark.parametrize("actor", ["lead", "staff"])
def test_nobody_adds_members_directly(api, actors, team, actor):
    """People join by accepting an invitation (test_invitations.py); staff add them in the
    admin. A POST here would let a lead pick any user of the deployment."""
    UserFactory(username="newbie")
    before = roles(team)

    response = api(actors[actor]).post(MEMBERS, {"user": "newbie"}, format="json")

    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "POST" not allowed.'}
    assert roles(team) == before


def test_a_lead_changes_a_role(api, lead, member, team):
    response = api(lead).patch(member_url("member"), {"role": "lead"}, format="json")

    assert response.status_code == 200
    assert response.json()["role"] == "lead"
    assert roles(team)["member"] == "lead"


def test_the_last_lead_cannot_step_down(api, lead, team):
    response = api(lead).patch(member_url("lead"), {"role": "member"}, format="json")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Cannot change the role of the last lead of Acme: add another first."
    }
    assert roles(team)["lead"] == "lead"


def test_a_patch_without_a_role_changes_nothing(api, lead, member, team):
    before = roles(team)

    response = api(lead).patch(member_url("member"), {}, format="json")

    assert response.status_code == 200
    assert response.json()["role"] == "member"
    assert roles(team) == before


def test_changing_a_role_needs_a_valid_role(api, lead, member, team):
    response = api(lead).patch(member_url("member"), {"role": "owner"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"role": ["Value 'owner' is not a valid choice."]}
    assert roles(team)["member"] == "member"


def test_removing_a_member_disables_their_keys(api, lead, member, team, group):
    key = make_key(team=team, owner=member, group=group).key

    response = api(lead).delete(member_url("member"))

    assert response.status_code == 200
    assert response.json() == {"keys_disabled": 1}
    assert "member" not in roles(team)
    key.refresh_from_db()
    assert key.status == ApiKey.Status.DISABLED
    assert AuditEvent.objects.filter(key=key, action="key.disabled", actor=lead).count() == 1


def test_the_last_lead_cannot_be_removed(api, lead, team):
    response = api(lead).delete(member_url("lead"))

    assert response.status_code == 409
    assert response.json() == {"detail": "Cannot remove the last lead of Acme: add another first."}
    assert roles(team)["lead"] == "lead"


def test_an_unknown_member_is_404(api, lead, outsider):
    assert (
        api(lead).patch(member_url("outsider"), {"role": "lead"}, format="json").status_code == 404
    )
    assert api(lead).delete(member_url("ghost")).status_code == 404


# (method, path, body)
MEMBER_WRITES = [
    ("patch", member_url("teammate"), {"role": "lead"}),
    ("delete", member_url("teammate"), None),
]


@pytest.mark.parametrize(("method", "path", "body"), MEMBER_WRITES)
@pytest.mark.parametrize(
    ("actor", "status"), [("member", 403), ("outsider", 404), ("anonymous", 401)]
)
def test_only_leads_manage_members(api, actors, team, group, method, path, body, actor, status):
    UserFactory(username="newbie")
    key = make_key(team=team, owner=actors["teammate"], group=group).key
    before = roles(team)

    response = getattr(api(actors[actor]), method)(path, body, format="json")

    assert response.status_code == status
    if status == 403:
        assert response.json() == {"detail": "Only a lead of Acme can manage its members."}
    assert roles(team) == before
    key.refresh_from_db()
    assert key.status == ApiKey.Status.ENABLED


def test_another_teams_members_are_404(api, lead, other_team, outsider):
    assert api(lead).get("/api/v1/teams/globex/members/").status_code == 404


def test_staff_manage_any_teams_members(api, staff, member, team):
    response = api(staff).patch(member_url("member"), {"role": "lead"}, format="json")

    assert response.status_code == 200
    assert roles(team)["member"] == "lead"


# --- me -------------------------------------------------------------------------------------


def test_me_shows_the_caller_and_their_teams(api, member, other_team):
    MembershipFactory(team=other_team, user=member, role=Membership.Role.LEAD)

    response = api(member).get("/api/v1/me/")

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": member.pk,
        "username": "member",
        "email": "member@example.com",
        "is_staff": False,
        "teams": [
            {
                "slug": "acme",
                "name": "Acme",
                "role": "member",
                "monthly_budget_usd": "0.00",
                "time_zone": "UTC",
                "created_at": body["teams"][0]["created_at"],
            },
            {
                "slug": "globex",
                "name": "Globex",
                "role": "lead",
                "monthly_budget_usd": "0.00",
                "time_zone": "UTC",
                "created_at": body["teams"][1]["created_at"],
            },
        ],
    }


def test_me_needs_credentials(api, db):
    assert api(None).get("/api/v1/me/").status_code == 401

"""/api/v1/groups/: what the caller's teams may use; staff create and edit."""

from decimal import Decimal

import pytest

from keys.models import Group

from ...factories import GroupFactory

GROUPS = "/api/v1/groups/"


@pytest.fixture
def groups(team, other_team, group):
    premium = GroupFactory(name="Premium", multiplier=Decimal("2.5"), models=["gpt-4o"])
    GroupFactory(name="Retired", is_active=False)
    other_team.allowed_groups.set([premium])
    return {"official": group, "premium": premium}


@pytest.mark.parametrize(
    ("actor", "visible"),
    [
        ("member", ["CC Official Channel", "Premium"]),
        ("lead", ["CC Official Channel", "Premium"]),
        ("outsider", ["Premium"]),
        ("staff", ["CC Official Channel", "Premium", "Retired"]),
    ],
)
def test_list_shows_the_groups_the_callers_teams_may_use(api, actors, groups, actor, visible):
    response = api(actors[actor]).get(GROUPS)

    assert response.status_code == 200
    assert [group["name"] for group in response.json()["results"]] == visible


def test_list_filters_by_team(api, member, team, groups):
    team.allowed_groups.set([groups["official"]])

    response = api(member).get(GROUPS, {"team": "acme"})
    elsewhere = api(member).get(GROUPS, {"team": "globex"})

    assert [group["name"] for group in response.json()["results"]] == ["CC Official Channel"]
    assert elsewhere.json()["results"] == []


def test_a_group_shows_name_multiplier_and_models(api, outsider, groups):
    premium = groups["premium"]

    response = api(outsider).get(f"{GROUPS}{premium.pk}/")

    assert response.status_code == 200
    assert response.json() == {
        "id": premium.pk,
        "name": "Premium",
        "description": "",
        "multiplier": "2.5000",
        "models": ["gpt-4o"],
        "is_active": True,
    }


def test_a_group_the_team_may_not_use_is_404(api, outsider, groups):
    response = api(outsider).get(f"{GROUPS}{groups['official'].pk}/")

    assert response.status_code == 404


def test_anonymous_is_401(api, groups):
    assert api(None).get(GROUPS).status_code == 401


def test_staff_create_a_group(api, staff):
    response = api(staff).post(
        GROUPS,
        {"name": "Batch", "multiplier": 0.25, "models": ["claude-*"], "description": "cheap"},
        format="json",
    )

    assert response.status_code == 201
    group = Group.objects.get(name="Batch")
    assert (group.multiplier, group.models, group.description) == (
        Decimal("0.25"),
        ["claude-*"],
        "cheap",
    )
    assert response.json()["id"] == group.pk


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"name": ""}, {"name": ["This field cannot be blank."]}),
        ({"name": "a\x00"}, {"name": ["Null characters are not allowed."]}),
        (
            {"name": "x", "multiplier": "0"},
            {"multiplier": ["The multiplier must be greater than 0 (for example 0.25 or 1.0)."]},
        ),
        (
            {"name": "x", "multiplier": "lots"},
            {"multiplier": ["“lots” value must be a decimal number."]},
        ),
        ({"name": "x", "multiplier": True}, {"multiplier": ["A valid number is required."]}),
        (
            {"name": "x", "multiplier": "0.00001"},
            {"multiplier": ["Ensure that there are no more than 4 decimal places."]},
        ),
        (
            {"name": "x", "models": "claude-*"},
            {"models": ["Models must be a list of model names or patterns such as claude-*."]},
        ),
        (
            {"name": "x", "models": ["claude-*", ""]},
            {"models": ["Models must be a list of model names or patterns such as claude-*."]},
        ),
        ({"name": "x", "models": ["a\x00"]}, {"models": ["Null characters are not allowed."]}),
        ({"name": "x", "is_active": "maybe"}, {"is_active": ["Must be a valid boolean."]}),
        ({}, {"name": ["This field is required."]}),
    ],
)
def test_create_reports_a_bad_field_and_writes_nothing(api, staff, group, body, errors):
    response = api(staff).post(GROUPS, body, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert list(Group.objects.values_list("name", flat=True)) == ["CC Official Channel"]


def test_a_group_name_already_taken_is_a_conflict(api, staff, group):
    response = api(staff).post(GROUPS, {"name": "CC Official Channel"}, format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": "Group with this Name already exists."}
    assert list(Group.objects.values_list("name", flat=True)) == ["CC Official Channel"]


def test_staff_edit_a_group(api, staff, groups):
    premium = groups["premium"]

    response = api(staff).patch(
        f"{GROUPS}{premium.pk}/", {"multiplier": "3", "is_active": False}, format="json"
    )

    assert response.status_code == 200
    premium.refresh_from_db()
    assert (premium.multiplier, premium.is_active, premium.name) == (Decimal("3"), False, "Premium")


def test_a_failed_edit_changes_nothing(api, staff, groups):
    premium = groups["premium"]

    response = api(staff).patch(f"{GROUPS}{premium.pk}/", {"multiplier": "-1"}, format="json")

    assert response.status_code == 400
    premium.refresh_from_db()
    assert premium.multiplier == Decimal("2.5")


@pytest.mark.parametrize("actor", ["member", "lead", "outsider"])
def test_only_staff_write_groups(api, actors, groups, actor):
    client = api(actors[actor])
    premium = groups["premium"]

    created = client.post(GROUPS, {"name": "Mine"}, format="json")
    edited = client.patch(f"{GROUPS}{premium.pk}/", {"multiplier": "0.1"}, format="json")

    assert created.status_code == edited.status_code == 403
    assert created.json() == {
        "detail": "Creating a group takes the staff permission “Can add group”."
    }
    assert edited.json() == {
        "detail": "Changing a group takes the staff permission “Can change group”."
    }
    assert not Group.objects.filter(name="Mine").exists()
    premium.refresh_from_db()
    assert premium.multiplier == Decimal("2.5")


def test_groups_cannot_be_deleted_here(api, staff, groups):
    response = api(staff).delete(f"{GROUPS}{groups['premium'].pk}/")

    assert response.status_code == 405
    assert Group.objects.filter(pk=groups["premium"].pk).exists()

"""/api/v1/teams/{slug}/key-settings/: whether members create keys and where a member's new key
starts. The team's members read them; its leads change them (one audit row); members are
refused (403); anyone else finds nothing (404)."""

from decimal import Decimal

import pytest

from keys.models import AuditEvent, Team
from keys.validators import MAX_EXPIRY_DAYS, QUOTA_MESSAGE, RATE_LIMIT_MESSAGE

from ...factories import GroupFactory, UserFactory

SETTINGS = "/api/v1/teams/acme/key-settings/"
UNCHANGED = {
    "members_can_create_keys": True,
    "default_group": None,
    "default_quota_limit_usd": "0.00",
    "default_rate_limit": "",
    "default_expiry_days": None,
}


def stored(team: Team) -> dict:
    return Team.objects.filter(pk=team.pk).values(*UNCHANGED).get()


def team_rows() -> int:
    return AuditEvent.objects.filter(action="team.updated").count()


@pytest.mark.parametrize("who", ["lead", "member"])
def test_the_team_s_members_read_its_key_settings(api, actors, who):
    response = api(actors[who]).get(SETTINGS)

    assert response.status_code == 200
    assert response.json() == UNCHANGED


def test_a_lead_changes_them_with_one_audit_row(api, team, lead, group):
    response = api(lead).patch(
        SETTINGS,
        {
            "members_can_create_keys": False,
            "default_group": group.pk,
            "default_quota_limit_usd": "5",
            "default_rate_limit": "30 / M",
            "default_expiry_days": 30,
        },
        format="json",
    )

    assert response.status_code == 200
    assert response.json() == {
        "members_can_create_keys": False,
        "default_group": group.pk,
        "default_quota_limit_usd": "5.00",
        "default_rate_limit": "30/m",
        "default_expiry_days": 30,
    }
    assert stored(team) == {
        "members_can_create_keys": False,
        "default_group": group.pk,
        "default_quota_limit_usd": Decimal("5"),
        "default_rate_limit": "30/m",
        "default_expiry_days": 30,
    }
    event = AuditEvent.objects.get(action="team.updated")
    assert (event.actor, event.team, event.changes) == (
        lead,
        team,
        {
            "members_can_create_keys": [True, False],
            "default_group": [None, "CC Official Channel"],
            "default_quota_limit_usd": ["0", "5"],
            "default_rate_limit": ["", "30/m"],
            "default_expiry_days": [None, 30],
        },
    )


def test_null_clears_a_default(api, team, lead):
    Team.objects.filter(pk=team.pk).update(
        default_quota_limit_usd=Decimal("5"), default_rate_limit="30/m", default_expiry_days=30
    )

    response = api(lead).patch(
        SETTINGS,
        {"default_quota_limit_usd": None, "default_rate_limit": None, "default_expiry_days": None},
        format="json",
    )

    assert response.status_code == 200
    assert response.json() == UNCHANGED
    assert team_rows() == 1


@pytest.mark.parametrize(("who", "status"), [("member", 403), ("outsider", 404), ("nobody", 404)])
def test_only_leads_change_them(api, actors, team, who, status):
    actor = actors.get(who) or UserFactory(username="nobody")

    response = api(actor).patch(SETTINGS, {"members_can_create_keys": False}, format="json")

    assert response.status_code == status
    if status == 403:
        assert response.json() == {"detail": "Only a lead of Acme can change its key settings."}
    assert stored(team)["members_can_create_keys"] is True
    assert team_rows() == 0


def test_another_team_is_not_found_for_reading(api, actors):
    assert api(actors["outsider"]).get(SETTINGS).status_code == 404
    assert api(None).get(SETTINGS).status_code == 401


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("default_quota_limit_usd", "abc", QUOTA_MESSAGE),
        ("default_quota_limit_usd", "1e400", QUOTA_MESSAGE),
        ("default_quota_limit_usd", True, "A valid number is required."),
        ("default_rate_limit", "ten a minute", RATE_LIMIT_MESSAGE),
        ("default_expiry_days", 0, "Ensure this value is greater than or equal to 1."),
        (
            "default_expiry_days",
            MAX_EXPIRY_DAYS + 1,
            f"Ensure this value is less than or equal to {MAX_EXPIRY_DAYS}.",
        ),
        ("default_group", 999_999, 'Invalid pk "999999" - object does not exist.'),
        ("members_can_create_keys", "maybe", "Must be true or false."),
        ("members_can_create_keys", "false", "Must be true or false."),
        ("members_can_create_keys", 0, "Must be true or false."),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(api, team, lead, field, value, message):
    response = api(lead).patch(SETTINGS, {field: value}, format="json")

    assert response.status_code == 400
    assert response.json() == {field: [message]}
    assert stored(team) == {**UNCHANGED, "default_quota_limit_usd": Decimal("0")}
    assert team_rows() == 0


def test_a_group_the_team_may_not_use_is_refused(api, team, lead, group):
    team.allowed_groups.add(group)
    elsewhere = GroupFactory(name="Elsewhere")

    response = api(lead).patch(SETTINGS, {"default_group": elsewhere.pk}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "default_group": ["Group “Elsewhere” is not available to team Acme."]
    }
    assert stored(team)["default_group"] is None
    assert team_rows() == 0

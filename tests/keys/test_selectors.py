"""Tenant isolation: what each actor may see. Whatever is out of scope is absent, not refused."""

import pytest

from keys import selectors, services
from keys.models import ApiKey, KeyEvent, Membership

from ..factories import GroupFactory, MembershipFactory, UserFactory, grant, make_key


@pytest.fixture
def keys(team, other_team, lead, member, outsider, group):
    """Two keys of the member, one of the lead, one in another team."""
    return {
        "member-1": make_key(team=team, owner=member, group=group, name="member-1").key,
        "member-2": make_key(team=team, owner=member, group=group, name="member-2").key,
        "lead": make_key(team=team, owner=lead, group=group, name="lead").key,
        "elsewhere": make_key(team=other_team, owner=outsider, group=group, name="x").key,
    }


@pytest.fixture
def staff(db):
    """Staff who hold every permission of the keys app."""
    return grant(UserFactory(username="staff", is_staff=True), "keys.*")


@pytest.fixture
def bare_staff(db):
    """Staff without any permission: in these selectors, like anyone who is not a member."""
    return UserFactory(username="bare-staff", is_staff=True)


def names(queryset) -> set[str]:
    return {key.name for key in queryset}


@pytest.mark.parametrize(
    ("actor", "visible"),
    [
        ("lead", {"member-1", "member-2", "lead"}),
        ("member", {"member-1", "member-2"}),
        ("outsider", set()),
        ("staff", {"member-1", "member-2", "lead"}),
        ("bare_staff", set()),
        ("stranger", set()),
    ],
)
def test_api_key_list_scope(request, keys, team, actor, visible):
    if actor == "stranger":
        user = UserFactory(username="stranger")
    else:
        user = request.getfixturevalue(actor)
    assert names(selectors.api_key_list(actor=user, team=team)) == visible


def test_a_lead_of_one_team_sees_only_own_keys_in_a_team_where_they_are_a_member(
    keys, team, other_team, outsider
):
    MembershipFactory(team=team, user=outsider)
    own = make_key(team=team, owner=outsider, name="outsider-in-acme").key
    assert list(selectors.api_key_list(actor=outsider, team=team)) == [own]
    assert names(selectors.api_key_list(actor=outsider, team=other_team)) == {"x"}


def test_api_key_get_in_scope(keys, team, lead, member):
    assert (
        selectors.api_key_get(actor=member, team=team, key_id=keys["member-1"].pk)
        == (keys["member-1"])
    )
    assert (
        selectors.api_key_get(actor=lead, team=team, key_id=keys["member-1"].pk)
        == (keys["member-1"])
    )


@pytest.mark.parametrize(
    ("actor", "team_fixture", "key_name"),
    [
        ("outsider", "team", "member-1"),  # another team's key, asked for through that team
        ("member", "team", "lead"),  # a teammate's key
        ("lead", "team", "elsewhere"),  # another team's key, asked for through one's own team
        ("outsider", "other_team", "member-1"),  # the same, the other way round
    ],
)
def test_api_key_get_out_of_scope_raises_and_the_row_still_exists(
    request, keys, actor, team_fixture, key_name
):
    user, team = request.getfixturevalue(actor), request.getfixturevalue(team_fixture)
    target = keys[key_name]
    with pytest.raises(ApiKey.DoesNotExist):
        selectors.api_key_get(actor=user, team=team, key_id=target.pk)
    assert ApiKey.objects.filter(pk=target.pk, digest=target.digest).exists()


def test_api_key_get_unknown_id_raises(keys, team, lead):
    with pytest.raises(ApiKey.DoesNotExist):
        selectors.api_key_get(actor=lead, team=team, key_id=10**9)


def test_team_list(team, other_team, lead, outsider, staff):
    MembershipFactory(team=other_team, user=lead)
    assert set(selectors.team_list(actor=lead)) == {team, other_team}
    assert list(selectors.team_list(actor=outsider)) == [other_team]
    assert set(selectors.team_list(actor=staff)) == {team, other_team}
    bare_staff = UserFactory(username="bare-staff", is_staff=True)
    assert not selectors.team_list(actor=bare_staff).exists()
    may_add_keys = grant(bare_staff, "keys.add_apikey")
    assert not selectors.team_list(actor=may_add_keys).exists()
    assert set(selectors.team_list(actor=may_add_keys, staff_permission="keys.add_apikey")) == {
        team,
        other_team,
    }
    assert not selectors.team_list(actor=UserFactory()).exists()


def test_is_team_lead(team, other_team, lead, member, outsider, staff):
    assert selectors.is_team_lead(actor=lead, team=team)
    assert not selectors.is_team_lead(actor=member, team=team)
    assert not selectors.is_team_lead(actor=outsider, team=team)
    assert selectors.is_team_lead(actor=outsider, team=other_team)
    # Staff act as a lead only for the action whose permission they hold.
    assert not selectors.is_team_lead(actor=staff, team=team)
    assert selectors.is_team_lead(actor=staff, team=team, staff_permission="keys.add_membership")
    assert not selectors.is_team_lead(
        actor=grant(UserFactory(is_staff=True), "keys.view_membership"),
        team=team,
        staff_permission="keys.add_membership",
    )


@pytest.mark.parametrize(
    ("flags", "permissions", "permission", "may"),
    [
        ({"is_staff": True, "is_superuser": True}, [], "keys.delete_apikey", True),
        ({"is_staff": True}, ["keys.change_apikey"], "keys.change_apikey", True),
        # As in the admin, the right to change includes the right to view ...
        ({"is_staff": True}, ["keys.change_apikey"], "keys.view_apikey", True),
        # ... but no other right.
        ({"is_staff": True}, ["keys.change_apikey"], "keys.delete_apikey", False),
        ({"is_staff": True}, ["keys.view_apikey"], "keys.change_apikey", False),
        ({"is_staff": True}, [], "keys.view_apikey", False),
        # The admin lets in neither people who are not staff nor inactive staff.
        ({}, ["keys.view_apikey"], "keys.view_apikey", False),
        ({"is_superuser": True}, [], "keys.view_apikey", False),
        ({"is_staff": True, "is_active": False}, ["keys.view_apikey"], "keys.view_apikey", False),
        ({"is_staff": True, "is_superuser": True}, [], None, False),
    ],
)
def test_staff_may(db, flags, permissions, permission, may):
    user = grant(UserFactory(**flags), *permissions)
    assert selectors.staff_may(actor=user, permission=permission) is may


def test_membership_for(team, other_team, lead, outsider):
    assert selectors.membership_for(actor=lead, team=team).role == Membership.Role.LEAD
    assert selectors.membership_for(actor=outsider, team=team) is None
    assert selectors.membership_for(actor=lead, team=other_team) is None


def test_key_event_list_follows_the_key_scope(keys, team, lead, member, outsider, staff):
    key = keys["member-1"]
    services.api_key_disable(key=key, actor=lead)
    actions = ["disabled", "created"]
    for actor in (member, lead, staff):
        assert [e.action for e in selectors.key_event_list(actor=actor, key=key)] == actions
    assert not selectors.key_event_list(actor=outsider, key=key).exists()
    may_view_keys = grant(UserFactory(is_staff=True), "keys.view_apikey")
    assert not selectors.key_event_list(actor=may_view_keys, key=key).exists()
    assert not selectors.key_event_list(actor=member, key=keys["lead"]).exists()
    assert KeyEvent.objects.filter(key=keys["lead"]).exists()


def test_member_list(team, other_team, lead, member, outsider, staff):
    assert {m.user for m in selectors.member_list(actor=member, team=team)} == {lead, member}
    assert {m.user for m in selectors.member_list(actor=staff, team=team)} == {lead, member}
    assert not selectors.member_list(actor=outsider, team=team).exists()
    may_view_teams = grant(UserFactory(is_staff=True), "keys.view_team")
    assert not selectors.member_list(actor=may_view_teams, team=team).exists()
    assert Membership.objects.filter(team=team).count() == 2


def test_group_list_for_team(team, group):
    budget = GroupFactory(name="Budget")
    GroupFactory(name="Retired", is_active=False)
    assert set(selectors.group_list_for_team(team=team)) == {group, budget}
    services.team_set_allowed_groups(team=team, groups=[budget])
    assert list(selectors.group_list_for_team(team=team)) == [budget]

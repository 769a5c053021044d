"""Tenant isolation: what each actor may see. Whatever is out of scope is absent, not refused."""

import pytest

from keys import selectors, services
from keys.models import ApiKey, AuditEvent, Group, Membership

from ..factories import GroupFactory, MembershipFactory, TeamFactory, UserFactory, grant, make_key


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
    actions = ["key.disabled", "key.created"]
    for actor in (member, lead, staff):
        assert [e.action for e in selectors.key_event_list(actor=actor, key=key)] == actions
    assert not selectors.key_event_list(actor=outsider, key=key).exists()
    may_view_keys = grant(UserFactory(is_staff=True), "keys.view_apikey")
    assert not selectors.key_event_list(actor=may_view_keys, key=key).exists()
    assert not selectors.key_event_list(actor=member, key=keys["lead"]).exists()
    assert AuditEvent.objects.filter(key=keys["lead"]).exists()


def test_member_list(team, other_team, lead, member, outsider, staff):
    assert {m.user for m in selectors.member_list(actor=lead, team=team)} == {lead, member}
    assert not selectors.member_list(actor=member, team=team).exists()
    assert {m.user for m in selectors.member_list(actor=staff, team=team)} == {lead, member}
    assert not selectors.member_list(actor=outsider, team=team).exists()
    may_view_teams = grant(UserFactory(is_staff=True), "keys.view_team")
    assert not selectors.member_list(actor=may_view_teams, team=team).exists()
    assert Membership.objects.filter(team=team).count() == 2


def test_group_list_for_team(team, group):
    budget = GroupFactory(name="Budget")
    GroupFactory(name="Retired", is_active=False)
    assert set(selectors.group_list_for_team(team=team)) == {group, budget}
    services.team_set_allowed_groups(team=team, groups=[budget], actor=None)
    assert list(selectors.group_list_for_team(team=team)) == [budget]


# --- one query across several teams, and filters within the scope -------------------------------


@pytest.fixture
def several_teams(keys, team, other_team, lead, member, outsider, group):
    """`lead` leads Acme and Initech, is a plain member of Globex, and has left Umbrella (their
    key there stays, disabled). Returns the names `lead` may see across every team."""
    MembershipFactory(team=other_team, user=lead)
    make_key(team=other_team, owner=lead, group=group, name="lead-in-globex")
    initech = TeamFactory(name="Initech", slug="initech")
    MembershipFactory(team=initech, user=lead, role=Membership.Role.LEAD)
    make_key(team=initech, owner=UserFactory(username="initech-dev"), group=group, name="peter")
    umbrella = TeamFactory(name="Umbrella", slug="umbrella")
    MembershipFactory(team=umbrella, user=UserFactory(username="umbrella-lead"), role="lead")
    make_key(team=umbrella, owner=lead, group=group, name="left-behind")
    services.membership_remove(membership=lead.memberships.get(team=umbrella), actor=None)
    make_key(team=umbrella, name="umbrella-only")
    return {"member-1", "member-2", "lead", "lead-in-globex", "peter"}


def test_api_key_search_all_teams_is_one_query_for_an_actor_in_several_teams(
    several_teams, lead, django_assert_num_queries
):
    with django_assert_num_queries(1):
        seen = {(key.name, key.team.slug, key.owner.username) for key in _all(lead)}
    assert {name for name, _, _ in seen} == several_teams
    assert ("lead-in-globex", "globex", "lead") in seen
    # Globex's lead's key, Umbrella's keys (the one the lead left behind too): rows that exist
    # but are out of scope.
    assert ApiKey.objects.filter(name__in=["x", "left-behind", "umbrella-only"]).count() == 3


def test_api_key_search_all_teams_is_one_query_for_staff(
    several_teams, staff, django_assert_num_queries
):
    # Django caches the staff member's permissions on the user object, as it does within one
    # request; what is counted is the key list itself.
    staff.get_all_permissions()
    with django_assert_num_queries(1):
        seen = names(_all(staff))
    assert seen == set(ApiKey.objects.values_list("name", flat=True))
    assert len(seen) == 8


def test_api_key_search_all_teams_for_staff_without_the_permission_is_their_membership(
    several_teams, lead
):
    may_view_events = grant(UserFactory(is_staff=True), "keys.view_auditevent")
    assert names(_all(may_view_events)) == set()
    assert names(_all(may_view_events, staff_permission="keys.view_auditevent")) == names(
        ApiKey.objects.all()
    )
    # A lead with staff status but no permission sees what any lead sees.
    assert names(_all(grant(lead, "keys.view_auditevent"))) == several_teams


@pytest.mark.parametrize(
    ("filters", "visible"),
    [
        ({}, {"member-1", "member-2", "lead", "lead-in-globex", "peter"}),
        # Globex holds "x" too, its lead's: a member of Globex sees only their own key there.
        ({"team": "globex"}, {"lead-in-globex"}),
        ({"team": "umbrella"}, set()),  # a team left: its keys stay out of reach
        ({"team": "no-such-team"}, set()),
        ({"owner_username": "member"}, {"member-1", "member-2"}),
        ({"owner_username": "outsider"}, set()),  # owns "x", in a team the lead only joined
        ({"owner_username": "umbrella-lead"}, set()),
        ({"owner_username": "nobody"}, set()),
        ({"status": "disabled"}, {"member-2"}),
        ({"state": "disabled"}, {"member-2"}),
        ({"state": "enabled"}, {"member-1", "lead", "lead-in-globex", "peter"}),
        ({"name_contains": "MEMBER"}, {"member-1", "member-2"}),
        ({"name_contains": "UMBRELLA"}, set()),  # "umbrella-only" is out of reach
        ({"team": "acme", "owner_username": "member", "state": "enabled"}, {"member-1"}),
        # False values are filters left out, as the portal's filter form sends them.
        (
            {"state": "", "group_id": None, "owner_id": None, "name_contains": ""},
            {"member-1", "member-2", "lead", "lead-in-globex", "peter"},
        ),
    ],
)
def test_api_key_search_all_teams_filters_within_the_scope(
    several_teams, keys, lead, filters, visible, django_assert_num_queries
):
    services.api_key_disable(key=keys["member-2"], actor=lead)
    services.api_key_disable(key=keys["elsewhere"], actor=None)
    with django_assert_num_queries(1):
        assert names(_all(lead, filters=filters)) == visible


def test_api_key_search_all_teams_filters_by_ids_and_orders(several_teams, keys, lead, member):
    budget = GroupFactory(name="Budget")
    services.api_key_update(key=keys["member-2"], actor=lead, group=budget)
    services.api_key_update(key=keys["elsewhere"], actor=None, group=budget)
    assert names(_all(lead, filters={"group_id": budget.pk})) == {"member-2"}
    assert names(_all(lead, filters={"owner_id": member.pk})) == {"member-1", "member-2"}
    assert names(_all(member, filters={"owner_id": lead.pk})) == set()
    ordered = [key.name for key in _all(lead, filters={"ordering": "-name"})]
    assert ordered == sorted(several_teams, reverse=True)


def test_api_key_search_refuses_an_unknown_filter(team, lead):
    with pytest.raises(ValueError) as error:
        selectors.api_key_search(actor=lead, team=team, filters={"owner": "x", "q": "y"})
    assert str(error.value) == "Unknown key filters: owner, q."


def test_api_key_search_in_one_team_keeps_to_that_team(several_teams, other_team, lead):
    assert names(selectors.api_key_search(actor=lead, team=other_team)) == {"lead-in-globex"}
    assert (
        names(selectors.api_key_search(actor=lead, team=other_team, filters={"team": "acme"}))
        == set()
    )


def test_api_key_get_across_teams(several_teams, keys, lead, member):
    assert selectors.api_key_get(actor=lead, key_id=keys["member-1"].pk) == keys["member-1"]
    for actor, key in [(lead, keys["elsewhere"]), (member, keys["lead"])]:
        with pytest.raises(ApiKey.DoesNotExist):
            selectors.api_key_get(actor=actor, key_id=key.pk)
        assert ApiKey.objects.filter(pk=key.pk).exists()


def _all(actor, **kwargs):
    return selectors.api_key_search_all_teams(actor=actor, **kwargs)


# --- groups across teams ---------------------------------------------------------------------


@pytest.fixture
def groups(keys, team, other_team, group):
    """Acme may use Budget only, Globex Premium only; Retired is inactive. The keys were
    created in CC Official Channel before."""
    budget, premium = GroupFactory(name="Budget"), GroupFactory(name="Premium")
    retired = GroupFactory(name="Retired", is_active=False)
    services.team_set_allowed_groups(team=team, groups=[budget, retired], actor=None)
    services.team_set_allowed_groups(team=other_team, groups=[premium], actor=None)
    return {"official": group, "budget": budget, "premium": premium, "retired": retired}


def group_names(queryset) -> set[str]:
    return {group.name for group in queryset}


def test_group_list_for_actor_is_one_query_for_an_actor_in_several_teams(
    groups, other_team, member, django_assert_num_queries
):
    with django_assert_num_queries(1):
        assert group_names(selectors.group_list_for_actor(actor=member)) == {"Budget"}
    MembershipFactory(team=other_team, user=member)
    with django_assert_num_queries(1):
        assert group_names(selectors.group_list_for_actor(actor=member)) == {"Budget", "Premium"}
    # A team that allows no group in particular may use every active group.
    MembershipFactory(team=TeamFactory(slug="open"), user=member)
    with django_assert_num_queries(1):
        assert group_names(selectors.group_list_for_actor(actor=member)) == {
            "Budget",
            "Premium",
            "CC Official Channel",
        }


def test_group_list_for_actor_is_one_query_for_staff(groups, django_assert_num_queries):
    staff = grant(UserFactory(is_staff=True), "keys.view_group")
    staff.get_all_permissions()  # cached on the user, as within one request
    with django_assert_num_queries(1):
        assert group_names(selectors.group_list_for_actor(actor=staff)) == {
            "Budget",
            "Premium",
            "CC Official Channel",
            "Retired",
        }


@pytest.mark.parametrize("actor", ["lead", "member", "outsider", "bare_staff", "staff"])
def test_group_list_for_actor_matches_each_teams_available_groups(
    request, groups, other_team, lead, actor
):
    """The one-query rule gives what Team.available_groups gives team by team."""
    MembershipFactory(team=other_team, user=lead)
    MembershipFactory(team=TeamFactory(slug="open"), user=lead)  # allows every active group
    user = request.getfixturevalue(actor)
    expected = {
        group
        for each_team in selectors.team_list(actor=user, staff_permission=None)
        for group in each_team.available_groups()
    }
    if actor == "staff":  # may view groups: every group, inactive ones too
        expected = set(Group.objects.all())
    assert set(selectors.group_list_for_actor(actor=user)) == expected


@pytest.mark.parametrize(
    ("actor", "team_slug", "visible"),
    [
        ("member", "acme", {"Budget"}),
        ("member", "globex", set()),  # not their team, though Premium exists
        ("member", "nowhere", set()),
        ("outsider", "globex", {"Premium"}),
        # Filtering by team follows team_list: staff who may view teams reach every team ...
        ("team_staff", "globex", {"Premium"}),
        # ... staff who may only view groups see every group, but no team beyond their own.
        ("group_staff", "globex", set()),
    ],
)
def test_group_list_for_actor_by_team(
    request, groups, actor, team_slug, visible, django_assert_num_queries
):
    if actor == "team_staff":
        user = grant(UserFactory(is_staff=True), "keys.view_team")
    elif actor == "group_staff":
        user = grant(UserFactory(is_staff=True), "keys.view_group")
    else:
        user = request.getfixturevalue(actor)
    user.get_all_permissions()
    with django_assert_num_queries(1):
        found = group_names(selectors.group_list_for_actor(actor=user, filters={"team": team_slug}))
    assert found == visible
    assert Group.objects.filter(name="Premium").exists()


def test_group_list_for_actor_refuses_an_unknown_filter(member):
    with pytest.raises(ValueError) as error:
        selectors.group_list_for_actor(actor=member, filters={"slug": "acme"})
    assert str(error.value) == "Unknown group filters: slug."


def test_group_list_for_key_filter_adds_the_groups_of_visible_keys_only(
    groups, keys, team, lead, member
):
    # Both keys were created in a group Acme may no longer use.
    assert group_names(selectors.group_list_for_key_filter(actor=member, team=team)) == {
        "Budget",
        "CC Official Channel",
    }
    legacy = GroupFactory(name="Legacy")
    ApiKey.objects.filter(pk=keys["lead"].pk).update(group=legacy)
    assert "Legacy" in group_names(selectors.group_list_for_key_filter(actor=lead, team=team))
    # The lead's key is not the member's to see, nor is its group.
    assert "Legacy" not in group_names(selectors.group_list_for_key_filter(actor=member, team=team))


def test_group_list_for_key(groups, keys, team):
    assert group_names(selectors.group_list_for_key(team=team)) == {"Budget"}
    assert [g.name for g in selectors.group_list_for_key(team=team, key=keys["member-1"])] == [
        "Budget",
        "CC Official Channel",
    ]


# --- teams, teammates, members ---------------------------------------------------------------


def test_team_list_with_role(team, other_team, lead, staff):
    MembershipFactory(team=other_team, user=lead)
    assert [(t.slug, t.role) for t in selectors.team_list_with_role(actor=lead)] == [
        ("acme", "lead"),
        ("globex", "member"),
    ]
    assert [(t.slug, t.role) for t in selectors.team_list_with_role(actor=staff)] == [
        ("acme", None),
        ("globex", None),
    ]


def test_teammate_list(team, other_team, lead, member, outsider, staff, bare_staff):
    stranger = UserFactory(username="stranger")
    assert set(selectors.teammate_list(actor=member)) == {lead, member}
    MembershipFactory(team=other_team, user=member)
    # One row per person, though the member shares two teams with themselves.
    assert sorted(u.username for u in selectors.teammate_list(actor=member)) == [
        "lead",
        "member",
        "outsider",
    ]
    assert stranger in set(selectors.teammate_list(actor=staff))
    assert not selectors.teammate_list(actor=bare_staff).exists()


def test_member_list_with_key_counts_counts_only_the_teams_keys(
    keys, team, other_team, member, lead, outsider
):
    MembershipFactory(team=other_team, user=member)
    make_key(team=other_team, owner=member, name="member-in-globex")
    counts = {
        m.user.username: m.key_count
        for m in selectors.member_list_with_key_counts(actor=lead, team=team)
    }
    assert counts == {"lead": 1, "member": 2}
    assert not selectors.member_list_with_key_counts(actor=outsider, team=team).exists()

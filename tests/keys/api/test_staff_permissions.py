"""Staff reach another team through the API only with the Django permission of the action, as
in the admin; without it they are like any other stranger to the team (and nothing changes).

Every test runs over the same four actors, none a member of Acme: a superuser, staff holding
just the action's permission, staff holding every other permission, and a lead of Globex.
"""

import pytest

from keys.models import ApiKey, Group, Membership

from ...factories import make_key
from .conftest import STAFF_KINDS
from .test_keys import snapshot, url

KEYS = "/api/v1/keys/"
ALLOWED = {"superuser", "staff_with_permission"}


@pytest.fixture
def acme_key(team, member, group):
    return make_key(team=team, owner=member, group=group, name="acme-key").key


@pytest.mark.parametrize("kind", STAFF_KINDS)
def test_list_another_teams_keys(api, actor_of_kind, acme_key, kind):
    client = api(actor_of_kind(kind, "keys.view_apikey"))

    everything = client.get(KEYS)
    acme_only = client.get(KEYS, {"team": "acme"})

    assert everything.status_code == acme_only.status_code == 200
    shown = ["acme-key"] if kind in ALLOWED else []
    assert [key["name"] for key in acme_only.json()["results"]] == shown
    assert ("acme-key" in [key["name"] for key in everything.json()["results"]]) is bool(shown)


@pytest.mark.parametrize("kind", STAFF_KINDS)
@pytest.mark.parametrize(
    ("action", "permission"),
    [("", "keys.view_apikey"), ("events", "keys.view_auditevent")],
)
def test_read_another_teams_key(api, actor_of_kind, acme_key, kind, action, permission):
    response = api(actor_of_kind(kind, permission)).get(url(acme_key, action))

    if kind in ALLOWED:
        assert response.status_code == 200
    else:
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize("kind", STAFF_KINDS)
@pytest.mark.parametrize(
    ("method", "action", "body", "permission", "allowed_status"),
    [
        ("patch", "", {"name": "hijacked", "quota_limit_usd": "0"}, "keys.change_apikey", 200),
        ("post", "rotate", None, "keys.change_apikey", 200),
        ("post", "disable", None, "keys.change_apikey", 200),
        ("delete", "", None, "keys.delete_apikey", 204),
    ],
)
def test_change_another_teams_key(
    api, actor_of_kind, acme_key, kind, method, action, body, permission, allowed_status
):
    before = snapshot(acme_key)
    client = api(actor_of_kind(kind, permission))

    response = getattr(client, method)(url(acme_key, action), body, format="json")

    if kind in ALLOWED:
        assert response.status_code == allowed_status
        if method == "delete":
            assert not ApiKey.objects.filter(pk=acme_key.pk).exists()
        else:
            assert snapshot(acme_key) != before
    else:
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}
        assert snapshot(acme_key) == before


@pytest.mark.parametrize("kind", STAFF_KINDS)
def test_create_a_key_in_another_team(api, actor_of_kind, member, group, kind):
    """For one of its members; the team and the owner read as unknown without the permission."""
    response = api(actor_of_kind(kind, "keys.add_apikey")).post(
        KEYS,
        {"team": "acme", "owner": "member", "name": "planted", "group": group.pk},
        format="json",
    )

    if kind in ALLOWED:
        assert response.status_code == 201
        assert ApiKey.objects.get(name="planted").owner == member
    else:
        assert response.status_code == 400
        assert response.json() == {
            "team": ["Object with slug=acme does not exist."],
            "owner": ["Object with username=member does not exist."],
        }
        assert not ApiKey.objects.filter(name="planted").exists()


@pytest.mark.parametrize("kind", STAFF_KINDS)
def test_create_a_group_for_every_team(api, actor_of_kind, kind):
    """A group with models * and a tiny multiplier: usable by every team without allowed
    groups, so only those the admin lets add groups may create it."""
    response = api(actor_of_kind(kind, "keys.add_group")).post(
        "/api/v1/groups/",
        {"name": "Nearly free", "models": ["*"], "multiplier": "0.0001"},
        format="json",
    )

    if kind in ALLOWED:
        assert response.status_code == 201
        assert Group.objects.get(name="Nearly free").models == ["*"]
    else:
        assert response.status_code == 403
        assert response.json() == {
            "detail": "Creating a group takes the staff permission “Can add group”."
        }
        assert not Group.objects.filter(name="Nearly free").exists()


@pytest.mark.parametrize("kind", STAFF_KINDS)
def test_change_a_group(api, actor_of_kind, group, kind):
    response = api(actor_of_kind(kind, "keys.change_group")).patch(
        f"/api/v1/groups/{group.pk}/", {"models": ["*"]}, format="json"
    )

    group.refresh_from_db()
    if kind in ALLOWED:
        assert response.status_code == 200
        assert group.models == ["*"]
    else:
        assert response.status_code == 403
        assert response.json() == {
            "detail": "Changing a group takes the staff permission “Can change group”."
        }
        assert group.models == ["claude-*"]


@pytest.mark.parametrize("kind", STAFF_KINDS)
@pytest.mark.parametrize(
    ("method", "path", "body", "permission", "allowed_status"),
    [
        ("get", "", None, "keys.view_membership", 200),
        ("patch", "member/", {"role": "lead"}, "keys.change_membership", 200),
        ("delete", "member/", None, "keys.delete_membership", 200),
    ],
)
def test_manage_another_teams_members(
    api, actor_of_kind, team, lead, member, kind, method, path, body, permission, allowed_status
):
    before = list(Membership.objects.filter(team=team).values_list("user__username", "role"))

    response = getattr(api(actor_of_kind(kind, permission)), method)(
        f"/api/v1/teams/acme/members/{path}", body, format="json"
    )

    after = list(Membership.objects.filter(team=team).values_list("user__username", "role"))
    if kind in ALLOWED:
        assert response.status_code == allowed_status
        assert (after == before) is (method == "get")
    else:
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}
        assert after == before


@pytest.mark.parametrize("kind", STAFF_KINDS)
def test_me_and_teams_show_other_teams_only_with_the_permission(
    api, actor_of_kind, team, lead, kind
):
    actor = actor_of_kind(kind, "keys.view_team")
    client = api(actor)

    teams = [row["slug"] for row in client.get("/api/v1/teams/").json()["results"]]
    me = client.get("/api/v1/me/").json()

    assert ("acme" in teams) is (kind in ALLOWED)
    assert [row["slug"] for row in me["teams"]] == teams
    assert me["is_staff"] is (kind != "lead_elsewhere")
    assert client.get("/api/v1/teams/acme/").status_code == (200 if kind in ALLOWED else 404)

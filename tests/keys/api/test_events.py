"""/api/v1/teams/{slug}/events/: the team's audit trail, for its leads and staff who may view
audit events; members are refused (403), anyone else finds nothing (404)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from keys import services
from keys.models import AuditEvent

from ...factories import UserFactory, grant, make_key

EVENTS = "/api/v1/teams/{slug}/events/"
BAD_DATETIME = (
    "Datetime has wrong format. Use one of these formats instead: "
    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)


@pytest.fixture
def trail(team, lead, member, group, other_team, outsider):
    """Three actions in Acme (a key made, disabled, a member added), one in Globex."""
    issued = make_key(team=team, owner=member, group=group)
    services.api_key_disable(key=issued.key, actor=lead)
    newbie = UserFactory(username="newbie")
    services.membership_add(team=team, user=newbie, role="member", actor=lead)
    services.team_set_allowed_groups(team=other_team, groups=[group], actor=outsider)
    return issued.key


def test_a_lead_lists_the_team_s_trail_newest_first(api, lead, team, trail):
    response = api(lead).get(EVENTS.format(slug="acme"))

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [(row["action"], row["actor"], row["subject_label"]) for row in body["results"]] == [
        ("member.added", "lead", "newbie"),
        ("key.disabled", "lead", trail.name),
        ("key.created", "member", trail.name),
    ]
    newest = AuditEvent.objects.filter(team=team).latest("id")
    assert body["results"][0] == {
        "id": newest.pk,
        "action": "member.added",
        "actor": "lead",
        "subject_type": "member",
        "subject_id": UserFactory._meta.model.objects.get(username="newbie").pk,
        "subject_label": "newbie",
        "subject_prefix": "",
        "changes": {"role": [None, "member"]},
        "created_at": body["results"][0]["created_at"],
    }
    assert body["results"][1]["subject_prefix"] == trail.prefix


@pytest.mark.parametrize(("who", "status"), [("member", 403), ("outsider", 404), ("nobody", 404)])
def test_only_leads_see_the_trail(api, actors, trail, who, status):
    actor = actors.get(who) or UserFactory(username="nobody")

    response = api(actor).get(EVENTS.format(slug="acme"))

    assert response.status_code == status
    assert "results" not in response.json()
    # Nothing was hidden by deleting it: the rows are still there.
    assert AuditEvent.objects.filter(team__slug="acme").count() == 3


def test_another_team_s_lead_gets_404_and_its_own_trail_holds_no_row_of_acme(api, outsider, trail):
    assert api(outsider).get(EVENTS.format(slug="acme")).status_code == 404

    own = api(outsider).get(EVENTS.format(slug="globex")).json()["results"]
    assert [(row["action"], row["subject_label"]) for row in own] == [
        ("team.allowed_groups_changed", "Globex")
    ]


def test_an_unknown_team_is_404(api, lead, trail):
    assert api(lead).get(EVENTS.format(slug="nope")).status_code == 404


def test_staff_need_the_permission_to_view_audit_events(api, trail):
    without = grant(UserFactory(username="ops", is_staff=True), "keys.view_apikey")
    with_it = grant(UserFactory(username="auditor", is_staff=True), "keys.view_auditevent")

    assert api(without).get(EVENTS.format(slug="acme")).status_code == 404
    response = api(with_it).get(EVENTS.format(slug="acme"))
    assert response.status_code == 200
    assert response.json()["count"] == 3


def test_filters_by_action_and_time(api, lead, team, trail):
    created = AuditEvent.objects.get(team=team, action="key.created")
    AuditEvent.objects.filter(pk=created.pk).update(created_at=timezone.now() - timedelta(days=3))
    client = api(lead)

    by_action = client.get(EVENTS.format(slug="acme"), {"action": "key.disabled"}).json()
    assert [row["action"] for row in by_action["results"]] == ["key.disabled"]

    since = (timezone.now() - timedelta(days=1)).isoformat()
    recent = client.get(EVENTS.format(slug="acme"), {"since": since}).json()
    assert [row["action"] for row in recent["results"]] == ["member.added", "key.disabled"]

    until = (timezone.now() - timedelta(days=1)).isoformat()
    older = client.get(EVENTS.format(slug="acme"), {"until": until}).json()
    assert [row["action"] for row in older["results"]] == ["key.created"]


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        (
            {"since": "yesterday"},
            {"since": [BAD_DATETIME]},
        ),
        (
            {"until": ""},
            {"until": [BAD_DATETIME]},
        ),
        ({"action": "key.exploded"}, {"action": ['"key.exploded" is not a valid choice.']}),
    ],
)
def test_bad_filters_are_a_400_naming_the_parameter(api, lead, trail, query, errors):
    response = api(lead).get(EVENTS.format(slug="acme"), query)

    assert response.status_code == 400
    assert response.json() == errors


def test_pages_like_every_list(api, lead, team, member, group, trail):
    for _ in range(3):
        make_key(team=team, owner=member, group=group)

    response = api(lead).get(EVENTS.format(slug="acme"), {"page_size": 2, "page": 2})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 6
    assert len(body["results"]) == 2

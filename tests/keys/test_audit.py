"""The one audit trail (keys.models.AuditEvent): the rows each service of keys writes (exactly
one per action, none when refused), the validation functions that write nothing, the scoped
read (team_event_list) and the team page's Activity, and the migration from the two old
tables."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from keys import selectors, services
from keys.models import ApiKey, ApiToken, AuditEvent, Group, Membership, Team
from tests.audit_trail import audit_rows as rows
from tests.migrating import at_migration, migrate

from ..factories import UserFactory, grant, make_key


def test_every_action_names_a_kind_of_subject_first():
    kinds = {action.partition(".")[0] for action in AuditEvent.Action.values}
    assert kinds == set(AuditEvent.SubjectType.values)


def test_each_row_records_its_subject_kind_and_id(issued, lead):
    event = AuditEvent.objects.get(key=issued.key)
    assert (event.subject_type, event.subject_id, event.subject_prefix) == (
        "key",
        issued.key.pk,
        issued.key.prefix,
    )


# --- groups ---------------------------------------------------------------------------------


def test_group_save_writes_one_row_for_a_creation_and_one_for_a_change(lead):
    group = services.group_save(
        group=Group(name="Budget", multiplier=Decimal("0.5"), models=["claude-*"]), actor=lead
    )
    group.multiplier = Decimal("0.50")  # the same value: no row
    services.group_save(group=group, actor=lead)
    group.models = ["claude-*", "gpt-4o"]
    group.is_active = False
    services.group_save(group=group, actor=None)

    assert rows() == [
        (
            "group.created",
            "lead",
            None,
            "Budget",
            {
                "name": [None, "Budget"],
                "description": [None, ""],
                "multiplier": [None, "0.5"],
                "models": [None, ["claude-*"]],
                "is_active": [None, True],
            },
        ),
        (
            "group.updated",
            None,
            None,
            "Budget",
            {"models": [["claude-*"], ["claude-*", "gpt-4o"]], "is_active": [True, False]},
        ),
    ]
    assert AuditEvent.objects.get(action="group.created").subject_id == group.pk


def test_a_refused_group_writes_nothing(lead):
    with pytest.raises(ValidationError):
        services.group_save(group=Group(name="Bad", multiplier=Decimal("-1")), actor=lead)
    assert not Group.objects.exists()
    assert rows() == []


# --- tokens ---------------------------------------------------------------------------------


def test_token_create_and_revoke_write_one_row_each_and_never_the_secret(member, lead):
    issued = services.api_token_create(user=member, name="ci", actor=lead)
    services.api_token_revoke(token=issued.token, actor=member)
    services.api_token_revoke(token=issued.token, actor=member)  # already revoked: no row

    token = ApiToken.objects.get()
    assert rows() == [
        (
            "token.created",
            "lead",
            None,
            "ci",
            {"user": [None, "member"], "name": [None, "ci"]},
        ),
        (
            "token.revoked",
            "member",
            None,
            "ci",
            {"revoked_at": [None, token.revoked_at.isoformat()]},
        ),
    ]
    assert AuditEvent.objects.filter(subject_prefix=token.prefix).count() == 2
    assert issued.plaintext not in str(list(AuditEvent.objects.values()))
    assert token.digest not in str(list(AuditEvent.objects.values()))


def test_a_refused_token_writes_nothing(member):
    with pytest.raises(ValidationError):
        services.api_token_create(user=member, name=" ", actor=member)
    assert not ApiToken.objects.exists()
    assert rows() == []


def test_api_token_validate_answers_like_create_and_writes_nothing(member):
    with pytest.raises(ValidationError) as error:
        services.api_token_validate(user=member, name="x" * 101)
    assert error.value.message_dict == {"name": ["Name can be at most 100 characters."]}
    services.api_token_validate(user=member, name="fine")
    assert not ApiToken.objects.exists()
    assert rows() == []


# --- teams ----------------------------------------------------------------------------------


def test_team_save_writes_created_then_only_real_changes(lead):
    team = services.team_save(team=Team(name="Initech", slug="initech"), actor=lead)
    services.team_save(team=team, actor=lead)  # nothing changed
    team.name = "Initrode"
    services.team_save(team=team, actor=None)

    assert rows() == [
        (
            "team.created",
            "lead",
            "initech",
            "Initech",
            {"name": [None, "Initech"], "slug": [None, "initech"]},
        ),
        ("team.updated", None, "initech", "Initrode", {"name": ["Initech", "Initrode"]}),
    ]


def test_a_refused_team_writes_nothing(team, lead):
    with pytest.raises(ValidationError):
        services.team_save(team=Team(name="Copy", slug=team.slug), actor=lead)
    assert Team.objects.count() == 1
    assert rows() == []


# --- validation functions -------------------------------------------------------------------


def test_api_key_validate_refuses_like_update_and_leaves_the_key_as_it_was(issued, lead):
    key = issued.key
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    events = rows()

    with pytest.raises(ValidationError) as error:
        services.api_key_validate(key=key, name="renamed", rate_limit="0/m")
    assert set(error.value.message_dict) == {"rate_limit"}
    # Neither the row nor the instance took the valid half of the change.
    assert key.name == stored["name"]
    services.api_key_validate(key=key, name="renamed")
    assert key.name == stored["name"]

    assert ApiKey.objects.filter(pk=key.pk).values().get() == stored
    assert rows() == events


def test_api_key_validate_refuses_like_create_and_writes_nothing(team, outsider, group):
    every_setting = {field: "" for field in services.EDITABLE_FIELDS} | {
        "name": "laptop",
        "group": group,
        "status": "enabled",
        "quota_limit_usd": "0",
        "expires_at": None,
    }
    with pytest.raises(ValidationError) as error:
        services.api_key_validate(team=team, owner=outsider, **every_setting)
    assert error.value.message_dict == {"owner": ["outsider is not a member of team Acme."]}
    assert not ApiKey.objects.exists()
    assert rows() == []


def test_membership_changes_validate_follows_the_order_the_admin_applies(team, lead, member):
    lead_row = Membership.objects.get(user=lead)
    member_row = Membership.objects.get(user=member)
    newbie = UserFactory(username="newbie")

    # Handing the lead role over in one batch is fine: the promotion comes first.
    services.membership_changes_validate(
        team=team, role_changes=[(member_row, "lead"), (lead_row, "member")]
    )
    services.membership_changes_validate(team=team, added=[(newbie, "lead")], removed=[lead_row])
    with pytest.raises(ValidationError) as error:
        services.membership_changes_validate(team=team, removed=[lead_row])
    assert error.value.messages == ["Cannot remove the last lead of Acme: add another first."]
    with pytest.raises(ValidationError) as error:
        services.membership_changes_validate(team=team, role_changes=[(lead_row, "member")])
    assert error.value.messages == [
        "Cannot change the role of the last lead of Acme: add another first."
    ]
    with pytest.raises(ValidationError) as error:
        services.membership_changes_validate(team=team, added=[(member, "member")])
    assert error.value.messages == ["member is already a member of Acme."]

    assert set(Membership.objects.filter(team=team).values_list("user__username", "role")) == {
        ("lead", "lead"),
        ("member", "member"),
    }
    assert rows() == []


# --- the team's trail: selector and page ----------------------------------------------------


@pytest.fixture
def trails(team, other_team, lead, member, outsider, group):
    make_key(team=team, owner=member, group=group)
    services.team_set_allowed_groups(team=other_team, groups=[group], actor=outsider)
    services.group_save(group=Group(name="Deployment-wide"), actor=None)


def test_team_event_list_is_the_team_s_rows_for_its_leads_only(
    trails, team, other_team, lead, member, outsider, django_assert_num_queries
):
    with django_assert_num_queries(1):
        events = list(selectors.team_event_list(actor=lead, team=team))
        assert [(event.action, event.actor.username) for event in events] == [
            ("key.created", "member")
        ]
    assert not selectors.team_event_list(actor=member, team=team).exists()
    assert not selectors.team_event_list(actor=outsider, team=team).exists()
    assert [
        event.action for event in selectors.team_event_list(actor=outsider, team=other_team)
    ] == ["team.allowed_groups_changed"]
    staff = grant(UserFactory(is_staff=True), "keys.view_auditevent")
    assert selectors.team_event_list(actor=staff, team=team).count() == 1
    # Rows of no team (groups, tokens, channels) are in no team's trail.
    assert AuditEvent.objects.filter(team__isnull=True, action="group.created").exists()


def test_team_event_list_refuses_an_unknown_filter(team, lead):
    with pytest.raises(ValueError, match=r"^Unknown event filters: actor\.$"):
        selectors.team_event_list(actor=lead, team=team, filters={"actor": "lead"})


def test_the_team_page_shows_the_activity_to_its_lead(client, trails, team, lead):
    client.force_login(lead)

    response = client.get(reverse("keys:team", args=[team.slug]))

    assert response.status_code == 200
    content = response.content.decode()
    assert '<h2 id="activity-heading">Activity</h2>' in content
    assert [event.action for event in response.context["activity"]] == ["key.created"]
    assert "claude-code-main" in content
    # Another team's and deployment-wide rows are not on it. (The group "Deployment-wide" is
    # one of the team's groups, so the key settings' default group offers it above.)
    activity = content[content.index('<h2 id="activity-heading">') :]
    assert "Globex" not in content
    assert "Deployment-wide" not in activity


def test_the_activity_is_paged(client, team, lead):
    for number in range(25):
        services.membership_add(
            team=team, user=UserFactory(username=f"person{number}"), role="member", actor=lead
        )
    client.force_login(lead)
    url = reverse("keys:team", args=[team.slug])

    first = client.get(url)
    second = client.get(url, {"activity_page": 2})

    assert len(first.context["activity"]) == 20
    assert [event.subject_label for event in second.context["activity"]] == [
        f"person{number}" for number in range(4, -1, -1)
    ]
    assert 'href="?activity_page=2#activity-heading"' in first.content.decode()


@pytest.mark.parametrize("who", ["member", "outsider"])
def test_no_one_but_a_lead_reaches_the_activity(client, trails, team, who, member, outsider):
    client.force_login({"member": member, "outsider": outsider}[who])

    response = client.get(reverse("keys:team", args=[team.slug]))

    # A member sees the team's budget and their own cap there (test_team_budget_views.py),
    # never its trail.
    assert response.status_code == (200 if who == "member" else 404)
    assert 'id="activity-heading"' not in response.content.decode()
    assert "activity" not in (response.context or {})
    assert AuditEvent.objects.filter(team=team).count() == 1


# --- the migration from KeyEvent and TeamEvent ----------------------------------------------

BEFORE = ("keys", "0004_invitations")
AFTER = ("keys", "0005_audit_event")


@pytest.fixture
def before_audit_event(transactional_db):
    yield from at_migration(BEFORE)


def test_the_old_trails_become_audit_events_and_back(before_audit_event):
    apps = before_audit_event
    user = apps.get_model("auth", "User").objects.create(username="lead")
    team = apps.get_model("keys", "Team").objects.create(name="Acme", slug="acme")
    group = apps.get_model("keys", "Group").objects.create(name="Default")
    key = apps.get_model("keys", "ApiKey").objects.create(
        team=team, owner=user, group=group, name="laptop", prefix="sk-hc-abcdef", digest="d" * 64
    )
    invitation = apps.get_model("keys", "Invitation").objects.create(
        team=team, email="new@example.com", digest="e" * 64, expires_at="2030-01-01T00:00Z"
    )
    KeyEvent = apps.get_model("keys", "KeyEvent")
    TeamEvent = apps.get_model("keys", "TeamEvent")
    KeyEvent.objects.create(
        key=key,
        team=team,
        key_name="laptop",
        key_prefix="sk-hc-abcdef",
        action="created",
        actor=user,
        changes={"name": [None, "laptop"]},
        created_at="2026-01-01T00:00Z",
    )
    old_team_rows = [
        # (invitation, action, subject, actor, changes, day)
        (invitation, "invited", "new@example.com", user, {"role": [None, "member"]}, 2),
        (None, "role_changed", "lead", None, {"role": ["member", "lead"]}, 3),
        (None, "allowed_groups_changed", "", user, {"allowed_groups": [[], ["Default"]]}, 4),
    ]
    for invitation_row, action, subject, actor, changes, day in old_team_rows:
        TeamEvent.objects.create(
            team=team,
            invitation=invitation_row,
            action=action,
            subject=subject,
            actor=actor,
            changes=changes,
            created_at=f"2026-01-0{day}T00:00Z",
        )

    after = migrate(AFTER)

    migrated = after.get_model("keys", "AuditEvent").objects.order_by("id")
    assert list(
        migrated.values_list(
            "action",
            "actor_id",
            "team_id",
            "subject_type",
            "subject_id",
            "subject_label",
            "subject_prefix",
            "key_id",
            "changes",
        )
    ) == [
        (
            "key.created",
            user.pk,
            team.pk,
            "key",
            key.pk,
            "laptop",
            "sk-hc-abcdef",
            key.pk,
            {"name": [None, "laptop"]},
        ),
        (
            "invitation.created",
            user.pk,
            team.pk,
            "invitation",
            invitation.pk,
            "new@example.com",
            "",
            None,
            {"role": [None, "member"]},
        ),
        (
            "member.role_changed",
            None,
            team.pk,
            "member",
            user.pk,
            "lead",
            "",
            None,
            {"role": ["member", "lead"]},
        ),
        (
            "team.allowed_groups_changed",
            user.pk,
            team.pk,
            "team",
            team.pk,
            "",
            "",
            None,
            {"allowed_groups": [[], ["Default"]]},
        ),
    ]

    back = migrate(BEFORE)

    assert list(
        back.get_model("keys", "KeyEvent").objects.values_list(
            "key_id", "team_id", "key_name", "key_prefix", "action", "actor_id", "changes"
        )
    ) == [
        (key.pk, team.pk, "laptop", "sk-hc-abcdef", "created", user.pk, {"name": [None, "laptop"]})
    ]
    assert list(
        back.get_model("keys", "TeamEvent")
        .objects.order_by("created_at")
        .values_list("team_id", "invitation_id", "action", "subject", "actor_id", "changes")
    ) == [
        (team.pk, invitation.pk, "invited", "new@example.com", user.pk, {"role": [None, "member"]}),
        (team.pk, None, "role_changed", "lead", None, {"role": ["member", "lead"]}),
        (
            team.pk,
            None,
            "allowed_groups_changed",
            "",
            user.pk,
            {"allowed_groups": [[], ["Default"]]},
        ),
    ]

"""The admin's team page sets the team's monthly budget and time zone and, in the members
inline, each member's monthly cap, through the budget services: one audit row per action, the
services' messages on the fields, nothing written when refused, the keys' snapshots dropped."""

from decimal import Decimal

import pytest
from django.core.cache import cache

from core.keyspace import snapshot_cache_key
from keys.models import Membership, Team
from tests.admin_pages import url
from tests.audit_trail import audit_rows

from ..factories import UserFactory, grant, make_key
from .test_admin import membership_row, team_data


def stored(team: Team) -> tuple:
    return Team.objects.filter(pk=team.pk).values_list("monthly_budget_usd", "time_zone").get()


def caps(team: Team) -> dict:
    return dict(
        Membership.objects.filter(team=team).values_list("user__username", "monthly_limit_usd")
    )


def rows(team: Team, **changes) -> list[dict]:
    return [
        membership_row(membership, **changes.get(membership.user.username, {}))
        for membership in Membership.objects.filter(team=team).select_related("user")
    ]


def test_the_change_form_shows_the_budget_time_zone_and_caps(admin_client, team, lead, member):
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=250, time_zone="Asia/Shanghai")
    Membership.objects.filter(user=member).update(monthly_limit_usd=20)
    page = admin_client.get(url("keys_team_change", team.pk)).content.decode()
    assert 'name="monthly_budget_usd" value="250.00"' in page
    assert '<option value="Asia/Shanghai" selected>Asia/Shanghai</option>' in page
    assert 'name="memberships-1-monthly_limit_usd" value="20.00"' in page
    assert "Monthly cap (USD)" in page


def test_staff_set_the_budget_time_zone_and_a_cap_in_one_save(
    admin_client, admin_user, team, lead, member, group, django_capture_on_commit_callbacks
):
    key = make_key(team=team, owner=member, group=group).key
    cache.set(snapshot_cache_key(key.digest), "snapshot")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url("keys_team_change", team.pk),
            team_data(
                team,
                rows(team, member={"monthly_limit_usd": "20"}),
                name="Acme Corp",
                monthly_budget_usd="500",
                time_zone="Asia/Shanghai",
            ),
        )
    assert response.status_code == 302
    assert stored(team) == (Decimal("500"), "Asia/Shanghai")
    assert caps(team) == {"lead": Decimal("0"), "member": Decimal("20")}
    assert audit_rows()[1:] == [
        ("team.updated", "admin", "acme", "Acme Corp", {"name": ["Acme", "Acme Corp"]}),
        (
            "team.budget_updated",
            "admin",
            "acme",
            "Acme Corp",
            {"monthly_budget_usd": ["0", "500"], "time_zone": ["UTC", "Asia/Shanghai"]},
        ),
        ("member.cap_updated", "admin", "acme", "member", {"monthly_limit_usd": ["0", "20"]}),
    ]
    assert cache.get(snapshot_cache_key(key.digest)) is None


def test_an_unchanged_save_writes_no_budget_row(admin_client, team, lead, member):
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=5)
    Membership.objects.filter(user=member).update(monthly_limit_usd=2)
    team.refresh_from_db()
    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(team, rows(team, member={"monthly_limit_usd": "2.00"})),
    )
    assert response.status_code == 302
    assert audit_rows() == []


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"monthly_budget_usd": "12.345"},
            "monthly_budget_usd",
            "Enter a monthly budget in US dollars with at most 2 decimal places (whole cents), "
            "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no budget.",
        ),
        (
            {"time_zone": "Nowhere/City"},
            "time_zone",
            "“Nowhere/City” is not a time zone. Use an IANA name such as Asia/Shanghai or UTC.",
        ),
    ],
)
def test_a_bad_budget_or_zone_is_shown_and_nothing_is_written(
    admin_client, team, lead, member, changes, field, message
):
    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(team, rows(team, member={"monthly_limit_usd": "20"}), name="Renamed", **changes),
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert Team.objects.get(pk=team.pk).name == "Acme"
    assert stored(team) == (Decimal("0"), "UTC")
    assert caps(team) == {"lead": Decimal("0"), "member": Decimal("0")}
    assert audit_rows() == []


def test_a_bad_cap_is_shown_on_its_row_and_nothing_is_written(admin_client, team, lead, member):
    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(
            team,
            rows(team, member={"monthly_limit_usd": "-4"}),
            monthly_budget_usd="100",
        ),
    )
    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert [form.errors for form in formset.forms] == [
        {},
        {"monthly_limit_usd": ["A monthly cap cannot be negative. Use 0 for no cap."]},
    ]
    assert stored(team) == (Decimal("0"), "UTC")
    assert caps(team) == {"lead": Decimal("0"), "member": Decimal("0")}
    assert audit_rows() == []


def test_staff_who_may_add_members_but_not_change_memberships_cannot_set_caps(
    client, team, lead, member
):
    staff = grant(
        UserFactory(username="ops", is_staff=True),
        "keys.change_team",
        "keys.add_membership",
        "keys.view_membership",
    )
    newcomer = UserFactory(username="newcomer")
    client.force_login(staff)
    existing = [{"id": m.pk} for m in Membership.objects.filter(team=team)]
    response = client.post(
        url("keys_team_change", team.pk),
        team_data(
            team,
            [*existing, {"user": newcomer.pk, "role": "member", "monthly_limit_usd": "10"}],
            monthly_budget_usd="50",
        ),
    )
    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.forms[2].errors == {
        "monthly_limit_usd": ["Only a lead of Acme can set its members' monthly caps."]
    }
    assert stored(team) == (Decimal("0"), "UTC")
    assert caps(team) == {"lead": Decimal("0"), "member": Decimal("0")}
    assert audit_rows() == []

    # Without a cap the same staff user adds the member and sets the budget.
    response = client.post(
        url("keys_team_change", team.pk),
        team_data(
            team,
            [*existing, {"user": newcomer.pk, "role": "member"}],
            monthly_budget_usd="50",
        ),
    )
    assert response.status_code == 302
    assert stored(team) == (Decimal("50"), "UTC")
    assert [row[:2] for row in audit_rows()] == [
        ("team.budget_updated", "ops"),
        ("member.added", "ops"),
    ]


def test_a_new_team_gets_its_budget_and_a_members_cap(admin_client, lead):
    response = admin_client.post(
        url("keys_team_add"),
        {
            "name": "New team",
            "slug": "new-team",
            "members_can_create_keys": "on",
            "monthly_budget_usd": "300",
            "time_zone": "Europe/Berlin",
            "memberships-TOTAL_FORMS": 1,
            "memberships-INITIAL_FORMS": 0,
            "memberships-MIN_NUM_FORMS": 0,
            "memberships-MAX_NUM_FORMS": 1000,
            "memberships-0-user": lead.pk,
            "memberships-0-role": "lead",
            "memberships-0-monthly_limit_usd": "40",
        },
    )
    assert response.status_code == 302
    team = Team.objects.get(slug="new-team")
    assert stored(team) == (Decimal("300"), "Europe/Berlin")
    assert caps(team) == {"lead": Decimal("40")}
    assert [row[0] for row in audit_rows(team=team)] == [
        "team.created",
        "team.budget_updated",
        "member.added",
        "member.cap_updated",
    ]

"""Who may do what (keys.policy) in the portal: a lead creates keys for members, a member sees
what a lead set read-only and cannot loosen it, leads set the team's key settings, and an
expired key's edit page says how to bring it back."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from keys import services
from keys.models import ApiKey, AuditEvent, Team
from keys.tasks import expire_keys

from ..factories import GroupFactory, make_key

SET_BY_LEAD = "Set by your team lead. Only a lead can loosen or clear it."


def url(name: str, team, key=None) -> str:
    return reverse(name, args=[team.slug] if key is None else [team.slug, key.pk])


def logged_in(client, user):
    client.force_login(user)
    return client


def key_row(key: ApiKey) -> dict:
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    return {**row, "events": AuditEvent.objects.filter(key_id=key.pk).count()}


def edit_data(key: ApiKey, **overrides) -> dict:
    data = {
        "name": key.name,
        "group": str(key.group_id),
        "status": key.status,
        "allowed_ips": "\n".join(key.allowed_ips),
        "quota_limit_usd": "" if not key.quota_limit_usd else format(key.quota_limit_usd, "f"),
        "rate_limit": key.rate_limit,
        "expires_at": "",
        "daily_limit_usd": "" if not key.daily_limit_usd else format(key.daily_limit_usd, "f"),
        "weekly_limit_usd": "" if not key.weekly_limit_usd else format(key.weekly_limit_usd, "f"),
        "monthly_limit_usd": ""
        if not key.monthly_limit_usd
        else format(key.monthly_limit_usd, "f"),
        "max_concurrency": "" if not key.max_concurrency else str(key.max_concurrency),
    }
    data.update(overrides)
    return data


@pytest.fixture
def limited_key(team, lead, member, group):
    """A member's key with a quota and a rate limit the lead set."""
    return make_key(
        team=team,
        owner=member,
        group=group,
        actor=lead,
        name="limited",
        quota_limit_usd="1",
        rate_limit="10/m",
    ).key


# --- creating keys ---------------------------------------------------------------------------


def test_a_lead_chooses_the_owner_among_the_members(client, team, lead, member, group):
    response = logged_in(client, lead).get(url("keys:create", team))
    html = response.content.decode()

    options = re.findall(r'<option value="(\d+)"( selected)?>(\w+)</option>', html)
    assert [(name, bool(selected)) for _, selected, name in options] == [
        ("lead", True),
        ("member", False),
    ]

    response = client.post(
        url("keys:create", team),
        {"owner": str(member.pk), "name": "for-member", "group": str(group.pk)},
    )

    key = ApiKey.objects.get(name="for-member")
    assert response.status_code == 303
    assert response["Location"].startswith(url("keys:detail", team, key) + "issued/")
    assert (key.owner, key.created_by) == (member, lead)


def test_a_member_creates_keys_only_for_themselves(client, team, lead, member, group):
    response = logged_in(client, member).get(url("keys:create", team))
    assert 'name="owner"' not in response.content.decode()

    client.post(
        url("keys:create", team), {"owner": str(lead.pk), "name": "mine", "group": str(group.pk)}
    )

    assert ApiKey.objects.get(name="mine").owner == member


def test_no_group_is_chosen_for_the_user(client, team, lead, group):
    GroupFactory(name="AAA first by name")

    html = logged_in(client, lead).get(url("keys:create", team)).content.decode()

    select = re.search(r'<select name="group".*?</select>', html, re.S)[0]
    assert '<option value="" selected>Choose a group</option>' in select
    assert " selected>" not in select.replace('<option value="" selected>', "")

    response = client.post(url("keys:create", team), {"name": "nogroup", "group": ""})
    assert response.status_code == 400
    assert "Choose a group." in response.content.decode()
    assert not ApiKey.objects.filter(name="nogroup").exists()


def test_the_teams_default_group_is_chosen_and_fixed_for_members(client, team, lead, member, group):
    services.team_key_settings_update(team=team, actor=lead, default_group=group)

    html = logged_in(client, member).get(url("keys:create", team)).content.decode()

    select = re.search(r'<select name="group".*?</select>', html, re.S)[0]
    assert "disabled" in select
    assert f'<option value="{group.pk}" selected>' in select
    assert "Set by your team lead. Only a lead can change it." in html


def test_the_key_list_offers_create_key_only_to_who_may_create(client, team, lead, member):
    create_link = f'href="{url("keys:create", team)}">Create key</a>'
    assert create_link in logged_in(client, member).get(url("keys:list", team)).content.decode()

    services.team_key_settings_update(team=team, actor=lead, members_can_create_keys=False)

    html = logged_in(client, member).get(url("keys:list", team)).content.decode()
    assert create_link not in html
    assert "The leads of Acme create its keys: ask one to create a key for you." in html
    assert create_link in logged_in(client, lead).get(url("keys:list", team)).content.decode()


def test_a_member_cannot_create_keys_when_the_team_turns_it_off(client, team, lead, member, group):
    services.team_key_settings_update(team=team, actor=lead, members_can_create_keys=False)
    closed = "Only the leads of Acme create keys in this team; ask one to create a key for you."
    assert closed in logged_in(client, member).get(url("keys:create", team)).content.decode()
    assert closed not in logged_in(client, lead).get(url("keys:create", team)).content.decode()

    response = logged_in(client, member).post(
        url("keys:create", team), {"name": "mine", "group": str(group.pk)}
    )

    assert response.status_code == 400
    assert (
        "Only the leads of Acme create keys in this team; ask one to create a key for you."
        in response.content.decode()
    )
    assert not ApiKey.objects.filter(name="mine").exists()


# --- a member's edit page --------------------------------------------------------------------


def test_what_a_lead_set_is_read_only_for_the_member(client, team, member, limited_key):
    html = logged_in(client, member).get(url("keys:edit", team, limited_key)).content.decode()

    quota = re.search(r'<input type="text" name="quota_limit_usd"[^>]*>', html)[0]
    rate = re.search(r'<input type="text" name="rate_limit"[^>]*>', html)[0]
    ips = re.search(r'<textarea name="allowed_ips"[^>]*>', html)[0]
    assert "disabled" in quota and 'value="1.00"' in quota
    assert "disabled" in rate
    # Nothing set: the member may add a restriction, which only tightens the key.
    assert "disabled" not in ips
    assert html.count(SET_BY_LEAD) == 2


def test_a_member_clearing_the_quota_changes_nothing(client, team, member, limited_key):
    before = key_row(limited_key)

    logged_in(client, member).post(
        url("keys:edit", team, limited_key),
        edit_data(limited_key, quota_limit_usd="0", rate_limit=""),
    )

    assert key_row(limited_key) == before


@pytest.fixture
def budgeted_key(team, lead, member, group):
    """A member's key with a daily limit and a concurrency limit the lead set."""
    return make_key(
        team=team,
        owner=member,
        group=group,
        actor=lead,
        name="budgeted",
        daily_limit_usd="10",
        max_concurrency=4,
    ).key


def test_budgets_a_lead_set_are_read_only_for_the_member(client, team, member, budgeted_key):
    html = logged_in(client, member).get(url("keys:edit", team, budgeted_key)).content.decode()

    daily = re.search(r'<input type="text" name="daily_limit_usd"[^>]*>', html)[0]
    concurrency = re.search(r'<input type="text" name="max_concurrency"[^>]*>', html)[0]
    weekly = re.search(r'<input type="text" name="weekly_limit_usd"[^>]*>', html)[0]
    assert "disabled" in daily and 'value="10.00"' in daily
    assert "disabled" in concurrency and 'value="4"' in concurrency
    # Nothing set: the member may set a weekly limit, which only tightens the key.
    assert "disabled" not in weekly
    assert html.count(SET_BY_LEAD) == 2


def test_a_member_raising_or_clearing_a_budget_changes_nothing(client, team, member, budgeted_key):
    before = key_row(budgeted_key)

    logged_in(client, member).post(
        url("keys:edit", team, budgeted_key),
        edit_data(budgeted_key, daily_limit_usd="0", max_concurrency="50"),
    )

    assert key_row(budgeted_key) == before


def test_a_member_sets_a_budget_where_there_was_none(client, team, member, budgeted_key):
    response = logged_in(client, member).post(
        url("keys:edit", team, budgeted_key),
        edit_data(budgeted_key, weekly_limit_usd="30", monthly_limit_usd="90.5"),
    )

    assert response.status_code == 302
    budgeted_key.refresh_from_db()
    assert (budgeted_key.weekly_limit_usd, budgeted_key.monthly_limit_usd) == (
        Decimal("30"),
        Decimal("90.5"),
    )
    event = AuditEvent.objects.get(key=budgeted_key, action="key.updated")
    assert (event.actor, event.changes) == (
        member,
        {"weekly_limit_usd": ["0", "30"], "monthly_limit_usd": ["0", "90.5"]},
    )


def test_the_lead_raises_and_clears_budgets(client, team, lead, budgeted_key):
    html = logged_in(client, lead).get(url("keys:edit", team, budgeted_key)).content.decode()
    assert SET_BY_LEAD not in html

    response = client.post(
        url("keys:edit", team, budgeted_key),
        edit_data(budgeted_key, daily_limit_usd="", max_concurrency="8"),
    )

    assert response.status_code == 302
    budgeted_key.refresh_from_db()
    assert (budgeted_key.daily_limit_usd, budgeted_key.max_concurrency) == (0, 8)


def test_the_lead_sees_every_field_editable(client, team, lead, limited_key):
    html = logged_in(client, lead).get(url("keys:edit", team, limited_key)).content.decode()

    assert SET_BY_LEAD not in html
    quota = re.search(r'<input type="text" name="quota_limit_usd"[^>]*>', html)[0]
    assert "disabled" not in quota


def test_a_key_the_lead_disabled_stays_disabled_for_the_member(
    client, team, lead, member, limited_key
):
    services.api_key_disable(key=limited_key, actor=lead)
    before = key_row(limited_key)

    html = logged_in(client, member).get(url("keys:edit", team, limited_key)).content.decode()
    assert "Disabled by your team lead. Only a lead can enable it." in html
    assert re.search(r'<input type="radio" name="status" value="enabled"[^>]*disabled', html)

    client.post(url("keys:edit", team, limited_key), edit_data(limited_key, status="enabled"))

    assert key_row(limited_key) == before


@pytest.mark.parametrize(
    ("who", "advice"),
    [
        ("lead", "set a new expiration and choose Enabled to use it again."),
        ("member", "ask your team lead to set a new expiration and enable it again."),
    ],
)
def test_an_expired_keys_edit_page_says_how_to_bring_it_back(
    client, team, lead, member, group, who, advice
):
    key = make_key(team=team, owner=member, group=group, actor=lead).key
    expired = timezone.now() - timedelta(hours=1)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=expired)
    expire_keys()

    html = logged_in(client, {"lead": lead, "member": member}[who]).get(url("keys:edit", team, key))
    shown = timezone.localtime(expired)

    assert (
        f"Disabled automatically when it expired on {shown:%Y-%m-%d %H:%M} {shown.tzname()}; "
        f"{advice}" in html.content.decode()
    )


# --- the team's key settings -----------------------------------------------------------------


def test_a_lead_sets_the_teams_key_settings(client, team, lead, group):
    response = logged_in(client, lead).post(
        url("keys:team_key_settings", team),
        {
            "default_group": str(group.pk),
            "default_quota_limit_usd": "5",
            "default_rate_limit": "30 / M",
            "default_expiry_days": "30",
        },
    )

    assert response.status_code == 302
    team = Team.objects.get(pk=team.pk)
    assert (
        team.members_can_create_keys,
        team.default_group,
        team.default_quota_limit_usd,
        team.default_rate_limit,
        team.default_expiry_days,
    ) == (False, group, Decimal("5"), "30/m", 30)
    event = AuditEvent.objects.get(action="team.updated")
    assert (event.actor, event.changes) == (
        lead,
        {
            "members_can_create_keys": [True, False],
            "default_group": [None, "CC Official Channel"],
            "default_quota_limit_usd": ["0", "5"],
            "default_rate_limit": ["", "30/m"],
            "default_expiry_days": [None, 30],
        },
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("default_quota_limit_usd", "-1", "Quota limit cannot be negative. Use 0 for unlimited."),
        ("default_rate_limit", "fast", "Enter a rate limit like 60/m"),
        ("default_expiry_days", "0", "Ensure this value is greater than or equal to 1."),
        ("default_expiry_days", "99999", "Ensure this value is less than or equal to 3650."),
        (
            "default_group",
            "elsewhere",
            "Select a valid choice. That choice is not one of the available choices.",
        ),
    ],
)
def test_bad_team_key_settings_are_refused(client, team, lead, group, field, value, message):
    if value == "elsewhere":
        team.allowed_groups.add(group)
        value = str(GroupFactory(name="Elsewhere").pk)
    before = Team.objects.filter(pk=team.pk).values().get()

    response = logged_in(client, lead).post(
        url("keys:team_key_settings", team), {"members_can_create_keys": "on", field: value}
    )

    assert response.status_code == 400
    assert message in response.content.decode()
    assert Team.objects.filter(pk=team.pk).values().get() == before
    assert not AuditEvent.objects.filter(action="team.updated").exists()


def test_members_cannot_reach_the_key_settings(client, team, member):
    before = Team.objects.filter(pk=team.pk).values().get()

    response = logged_in(client, member).post(
        url("keys:team_key_settings", team), {"default_quota_limit_usd": "0"}
    )

    assert response.status_code == 404
    assert Team.objects.filter(pk=team.pk).values().get() == before


def test_the_service_refuses_a_default_group_the_team_may_not_use(team, lead, group):
    """The admin offers every group; the service holds the rule."""
    team.allowed_groups.add(group)
    elsewhere = GroupFactory(name="Elsewhere")

    with pytest.raises(ValidationError) as refused:
        services.team_key_settings_update(team=team, actor=lead, default_group=elsewhere)

    assert refused.value.message_dict == {
        "default_group": ["Group “Elsewhere” is not available to team Acme."]
    }
    assert Team.objects.get(pk=team.pk).default_group is None
    assert not AuditEvent.objects.filter(action="team.updated").exists()

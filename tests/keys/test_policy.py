"""keys.policy, the pure rule, and where the services record and apply it: what counts as
tightening each setting, who is limited, and who disabled a key."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from keys import policy, services
from keys.models import ApiKey, AuditEvent
from keys.policy import Role
from tests.migrating import at_migration, migrate

from ..factories import UserFactory, grant, make_key


def refused(field: str, current, requested, **kwargs) -> bool:
    return field in policy.refusals(
        role=Role.MEMBER, current={field: current}, requested={field: requested}, **kwargs
    )


@pytest.mark.parametrize(
    ("current", "requested", "loosens"),
    [
        (Decimal(0), Decimal(5), False),  # a quota where there was none
        (Decimal(5), Decimal(5), False),
        (Decimal(5), Decimal("4.99"), False),
        (Decimal(5), Decimal("5.01"), True),
        (Decimal(5), Decimal(0), True),  # 0 is unlimited, the loosest
    ],
)
def test_quota(current, requested, loosens):
    assert refused("quota_limit_usd", current, requested) is loosens


@pytest.mark.parametrize("field", ["daily_limit_usd", "weekly_limit_usd", "monthly_limit_usd"])
@pytest.mark.parametrize(
    ("current", "requested", "loosens"),
    [
        (Decimal(0), Decimal(5), False),  # a limit where there was none
        (Decimal(0), Decimal(0), False),
        (Decimal(5), Decimal(5), False),
        (Decimal(5), Decimal("4.99"), False),
        (Decimal(5), Decimal("5.01"), True),
        (Decimal(5), Decimal(0), True),  # 0 is no limit, the loosest
    ],
)
def test_spend_windows(field, current, requested, loosens):
    assert refused(field, current, requested) is loosens


@pytest.mark.parametrize(
    ("current", "requested", "loosens"),
    [
        (0, 4, False),  # a limit where there was none
        (4, 4, False),
        (4, 1, False),
        (4, 5, True),
        (4, 0, True),  # 0 is unlimited, the loosest
    ],
)
def test_max_concurrency(current, requested, loosens):
    assert refused("max_concurrency", current, requested) is loosens


@pytest.mark.parametrize(
    ("field", "current", "message"),
    [
        (
            "daily_limit_usd",
            Decimal("10"),
            "Daily limit: set by your team lead (10.00 USD). You can lower it, but only your "
            "team lead can raise it or set it to 0 (no daily limit).",
        ),
        (
            "weekly_limit_usd",
            Decimal("50.5"),
            "Weekly limit: set by your team lead (50.50 USD). You can lower it, but only your "
            "team lead can raise it or set it to 0 (no weekly limit).",
        ),
        (
            "monthly_limit_usd",
            Decimal("200"),
            "Monthly limit: set by your team lead (200.00 USD). You can lower it, but only your "
            "team lead can raise it or set it to 0 (no monthly limit).",
        ),
        (
            "max_concurrency",
            4,
            "Max concurrent requests: set by your team lead (4). You can lower it, but only your "
            "team lead can raise it or set it to 0 (unlimited).",
        ),
    ],
)
def test_the_refusal_of_a_loosened_limit_names_it(field, current, message):
    assert policy.refusals(role=Role.MEMBER, current={field: current}, requested={field: 0}) == {
        field: message
    }


@pytest.mark.parametrize(
    ("current", "requested", "loosens"),
    [
        ("", "60/m", False),
        ("60/m", "60/m", False),
        ("60/m", "1/s", False),  # the same average, and no bigger burst
        ("60/m", "59/m", False),
        ("60/m", "61/m", True),
        ("60/m", "2/s", True),
        ("60/m", "3600/h", True),  # the same average, but 3600 at once
        ("60/m", "100/d", True),  # a lower average, but 100 at once
        ("60/m", "", True),
        ("1/s", "86400/d", True),
    ],
)
def test_rate_limit(current, requested, loosens):
    assert refused("rate_limit", current, requested) is loosens


@pytest.mark.parametrize(
    ("current", "requested", "loosens"),
    [
        ([], ["203.0.113.7"], False),  # any list narrows "everyone"
        (["203.0.113.0/24"], ["203.0.113.7"], False),
        (["203.0.113.0/24"], ["203.0.113.128/25"], False),
        (["203.0.113.0/24", "2001:db8::/32"], ["2001:db8::1"], False),
        (["203.0.113.0/24"], ["203.0.113.0/24", "198.51.100.1"], True),
        (["203.0.113.0/24"], ["203.0.112.0/23"], True),
        (["203.0.113.0/24"], ["::ffff:203.0.113.7"], True),  # another family is another list
        (["203.0.113.0/24"], [], True),  # an empty list lets everyone in
    ],
)
def test_ip_restriction(current, requested, loosens):
    assert refused("allowed_ips", current, requested) is loosens


def test_expiration():
    now = timezone.now()
    assert not refused("expires_at", None, now + timedelta(days=1))
    assert not refused("expires_at", now + timedelta(days=2), now + timedelta(days=1))
    assert refused("expires_at", now + timedelta(days=2), now + timedelta(days=3))
    assert refused("expires_at", now + timedelta(days=2), None)


@pytest.mark.parametrize(
    ("disabled_by", "refuses"),
    [("owner", False), ("lead", True), ("staff", True), ("system", True), ("", True)],
)
def test_enabling(disabled_by, refuses):
    refusals = policy.refusals(
        role=Role.MEMBER,
        current={"status": "disabled"},
        requested={"status": "enabled"},
        disabled_by=disabled_by,
    )
    assert ("status" in refusals) is refuses


@pytest.mark.parametrize("role", [Role.LEAD, Role.STAFF, Role.SYSTEM])
def test_only_members_are_limited(role):
    assert (
        policy.refusals(
            role=role,
            current={
                "quota_limit_usd": Decimal(5),
                "daily_limit_usd": Decimal(5),
                "max_concurrency": 2,
                "status": "disabled",
                "group": 1,
            },
            requested={
                "quota_limit_usd": Decimal(0),
                "daily_limit_usd": Decimal(0),
                "max_concurrency": 0,
                "status": "enabled",
                "group": 2,
            },
            disabled_by="system",
        )
        == {}
    )


# --- in the services -------------------------------------------------------------------------


@pytest.fixture
def limited_key(team, lead, member, group):
    return make_key(team=team, owner=member, group=group, actor=lead, quota_limit_usd="1").key


def test_a_refusal_writes_nothing_and_leaves_the_key_as_stored(member, limited_key):
    with pytest.raises(ValidationError) as error:
        services.api_key_update(key=limited_key, actor=member, name="x", quota_limit_usd="0")

    assert error.value.error_dict["quota_limit_usd"][0].code == "permission_denied"
    assert (limited_key.name, limited_key.quota_limit_usd) == ("claude-code-main", Decimal("1"))
    assert ApiKey.objects.get(pk=limited_key.pk).quota_limit_usd == Decimal("1")
    assert list(AuditEvent.objects.filter(key=limited_key).values_list("action", flat=True)) == [
        "key.created"
    ]


@pytest.fixture
def budgeted_key(team, lead, member, group):
    return make_key(
        team=team,
        owner=member,
        group=group,
        actor=lead,
        daily_limit_usd="10",
        weekly_limit_usd="50",
        monthly_limit_usd="150",
        max_concurrency=4,
    ).key


LEAD_SET_LIMITS = {
    "daily_limit_usd": Decimal("10"),
    "weekly_limit_usd": Decimal("50"),
    "monthly_limit_usd": Decimal("150"),
    "max_concurrency": 4,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("daily_limit_usd", "10.01"),
        ("daily_limit_usd", "0"),
        ("daily_limit_usd", ""),
        ("weekly_limit_usd", "51"),
        ("weekly_limit_usd", None),
        ("monthly_limit_usd", "1000"),
        ("monthly_limit_usd", 0),
        ("max_concurrency", 5),
        ("max_concurrency", "0"),
        ("max_concurrency", ""),
    ],
)
def test_a_member_cannot_raise_or_clear_a_limit_their_lead_set(member, budgeted_key, field, value):
    with pytest.raises(ValidationError) as error:
        services.api_key_update(key=budgeted_key, actor=member, **{field: value})

    assert [e.code for e in error.value.error_dict[field]] == ["permission_denied"]
    stored = ApiKey.objects.get(pk=budgeted_key.pk)
    assert {name: getattr(stored, name) for name in LEAD_SET_LIMITS} == LEAD_SET_LIMITS
    assert list(AuditEvent.objects.filter(key=budgeted_key).values_list("action", flat=True)) == [
        "key.created"
    ]


def test_a_member_can_lower_every_limit_their_lead_set(member, budgeted_key):
    services.api_key_update(
        key=budgeted_key,
        actor=member,
        daily_limit_usd="5",
        weekly_limit_usd="49.99",
        monthly_limit_usd="150",
        max_concurrency="1",
    )

    stored = ApiKey.objects.get(pk=budgeted_key.pk)
    assert (
        stored.daily_limit_usd,
        stored.weekly_limit_usd,
        stored.monthly_limit_usd,
        stored.max_concurrency,
    ) == (Decimal("5"), Decimal("49.99"), Decimal("150"), 1)


def test_a_member_can_set_a_limit_where_there_was_none(member, limited_key):
    services.api_key_update(key=limited_key, actor=member, daily_limit_usd="2", max_concurrency=3)

    stored = ApiKey.objects.get(pk=limited_key.pk)
    assert (stored.daily_limit_usd, stored.max_concurrency) == (Decimal("2"), 3)


def test_a_lead_can_raise_and_clear_the_limits(lead, budgeted_key):
    services.api_key_update(
        key=budgeted_key,
        actor=lead,
        daily_limit_usd="20",
        weekly_limit_usd="0",
        monthly_limit_usd="",
        max_concurrency=0,
    )

    stored = ApiKey.objects.get(pk=budgeted_key.pk)
    assert (
        stored.daily_limit_usd,
        stored.weekly_limit_usd,
        stored.monthly_limit_usd,
        stored.max_concurrency,
    ) == (Decimal("20"), 0, 0, 0)


def test_a_member_creating_a_key_sets_any_limits(team, member, group):
    key = services.api_key_create(
        team=team,
        owner=member,
        name="mine",
        group=group,
        actor=member,
        daily_limit_usd="100",
        max_concurrency=10_000,
    ).key

    assert (key.daily_limit_usd, key.max_concurrency) == (Decimal("100"), 10_000)


def test_staff_who_may_change_keys_are_not_limited(limited_key):
    staff = grant(UserFactory(is_staff=True), "keys.change_apikey")

    services.api_key_update(key=limited_key, actor=staff, quota_limit_usd="0")

    assert ApiKey.objects.get(pk=limited_key.pk).quota_limit_usd == 0


@pytest.mark.parametrize(
    ("who", "recorded"), [("member", "owner"), ("lead", "lead"), ("staff", "staff")]
)
def test_who_disabled_a_key_is_recorded_and_cleared_on_enabling(
    lead, member, limited_key, who, recorded
):
    actor = {
        "member": member,
        "lead": lead,
        "staff": grant(UserFactory(is_staff=True), "keys.change_apikey"),
    }[who]

    services.api_key_disable(key=limited_key, actor=actor)
    assert ApiKey.objects.get(pk=limited_key.pk).disabled_by == recorded

    services.api_key_enable(key=limited_key, actor=lead)
    assert ApiKey.objects.get(pk=limited_key.pk).disabled_by == ""


def test_a_key_created_disabled_by_a_member_is_theirs_to_enable(team, member, group):
    key = make_key(team=team, owner=member, group=group, status="disabled").key
    assert key.disabled_by == "owner"

    services.api_key_enable(key=key, actor=member)

    assert ApiKey.objects.get(pk=key.pk).status == "enabled"


def test_removing_a_member_disables_their_keys_as_the_lead(team, lead, member, limited_key):
    services.membership_remove(membership=member.memberships.get(team=team), actor=lead)

    assert ApiKey.objects.get(pk=limited_key.pk).disabled_by == "lead"


# --- the migration that records who disabled the keys already disabled ----------------------


@pytest.fixture
def before_disabled_by(transactional_db):
    yield from at_migration(("keys", "0006_group_verbose_name_key_group"))


def test_keys_already_disabled_get_who_disabled_them_from_their_trail(before_disabled_by):
    apps = before_disabled_by
    User = apps.get_model("auth", "User")
    owner, lead = User.objects.create(username="owner"), User.objects.create(username="lead")
    team = apps.get_model("keys", "Team").objects.create(name="Acme", slug="acme")
    group = apps.get_model("keys", "Group").objects.create(name="Default")
    ApiKeyThen = apps.get_model("keys", "ApiKey")
    AuditEventThen = apps.get_model("keys", "AuditEvent")
    keys = {}
    for index, name in enumerate(["by-owner", "by-lead", "expired", "untraced", "enabled"]):
        keys[name] = ApiKeyThen.objects.create(
            team=team,
            owner=owner,
            group=group,
            name=name,
            prefix=f"sk-hc-{index}",
            digest=str(index) * 64,
            status="enabled" if name == "enabled" else "disabled",
        )
    trail = [
        ("by-owner", "key.disabled", owner),
        ("by-lead", "key.disabled", owner),  # later overridden by the lead's
        ("by-lead", "key.enabled", lead),
        ("by-lead", "key.disabled", lead),
        ("expired", "key.expired", None),
    ]
    for day, (name, action, actor) in enumerate(trail, start=1):
        new = "enabled" if action == "key.enabled" else "disabled"
        old = "disabled" if new == "enabled" else "enabled"
        AuditEventThen.objects.create(
            key=keys[name],
            team=team,
            action=action,
            subject_type="key",
            subject_id=keys[name].pk,
            actor=actor,
            changes={"status": [old, new]},
            created_at=f"2026-01-0{day}T00:00Z",
        )

    after = migrate(("keys", "0007_team_key_policy"))

    recorded = dict(after.get_model("keys", "ApiKey").objects.values_list("name", "disabled_by"))
    assert recorded == {
        "by-owner": "owner",
        "by-lead": "lead",
        "expired": "system",
        "untraced": "",
        "enabled": "",
    }

"""Who may do what to a key (keys.policy), over the API: every setting a lead put on a member's
key, tightened and loosened, by the lead and by the member. A member's loosening is a 403 that
names the field and says the lead can change it, and writes nothing."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from keys import services
from keys.models import ApiKey, AuditEvent
from keys.tasks import expire_keys

from ...factories import GroupFactory, make_key

KEYS = "/api/v1/keys/"
LEAD_SET = "set by your team lead"


def url(key: ApiKey, action: str = "") -> str:
    return f"{KEYS}{key.pk}/{action + '/' if action else ''}"


def row(key: ApiKey) -> dict:
    """The stored key and its audit trail, to prove a refusal wrote nothing."""
    values = ApiKey.objects.filter(pk=key.pk).values().get()
    events = list(AuditEvent.objects.filter(key=key).values_list("pk", flat=True))
    return {"values": values, "events": events}


def local(when) -> str:
    return f"{timezone.localtime(when):%Y-%m-%d %H:%M %Z}"


@pytest.fixture
def expiry():
    return timezone.now() + timedelta(days=10)


@pytest.fixture
def restricted_key(team, lead, member, group, expiry):
    """A member's key on which the lead set every restriction."""
    return make_key(
        team=team,
        owner=member,
        group=group,
        actor=lead,
        name="member-key",
        quota_limit_usd="10",
        rate_limit="10/m",
        allowed_ips=["10.0.0.0/8", "192.0.2.1"],
        expires_at=expiry,
        daily_limit_usd="10",
        weekly_limit_usd="50",
        monthly_limit_usd="100",
        max_concurrency=4,
    ).key


QUOTA_REFUSAL = (
    f"Quota limit: {LEAD_SET} (10.00 USD). You can lower it, but only your team lead can raise "
    "it or set it to 0 (unlimited)."
)
RATE_REFUSAL = (
    f"Rate limit: {LEAD_SET} (10/m). You can lower it, but only your team lead can raise or "
    "clear it."
)
IPS_REFUSAL = (
    f"IP restriction: {LEAD_SET} (10.0.0.0/8, 192.0.2.1). You can remove addresses or narrow "
    "ranges, but only your team lead can add addresses or clear it."
)
DAILY_REFUSAL = (
    f"Daily limit: {LEAD_SET} (10.00 USD). You can lower it, but only your team lead can raise "
    "it or set it to 0 (no daily limit)."
)
WEEKLY_REFUSAL = (
    f"Weekly limit: {LEAD_SET} (50.00 USD). You can lower it, but only your team lead can raise "
    "it or set it to 0 (no weekly limit)."
)
MONTHLY_REFUSAL = (
    f"Monthly limit: {LEAD_SET} (100.00 USD). You can lower it, but only your team lead can "
    "raise it or set it to 0 (no monthly limit)."
)
CONCURRENCY_REFUSAL = (
    f"Max concurrent requests: {LEAD_SET} (4). You can lower it, but only your team lead can "
    "raise it or set it to 0 (unlimited)."
)
GROUP_REFUSAL = f"Group: {LEAD_SET} (“CC Official Channel”). Only your team lead can change it."


def expiry_refusal(expiry) -> str:
    return (
        f"Key expiration: {LEAD_SET} ({local(expiry)}). You can make it earlier, but only your "
        "team lead can extend or clear it."
    )


# (field, value sent, whether it tightens, the member's refusal or None for the expiry's).
# `value` may be a function of the key's expiry.
CASES = [
    ("quota_limit_usd", "5", True, None),
    ("quota_limit_usd", "10", True, None),
    ("quota_limit_usd", "20", False, QUOTA_REFUSAL),
    ("quota_limit_usd", "0", False, QUOTA_REFUSAL),
    ("rate_limit", "5/m", True, None),
    ("rate_limit", "1/s", False, RATE_REFUSAL),
    ("rate_limit", "1/d", True, None),
    ("rate_limit", "20/m", False, RATE_REFUSAL),
    # The same average as 10/m, but a burst of 600 in one minute.
    ("rate_limit", "600/h", False, RATE_REFUSAL),
    ("rate_limit", "", False, RATE_REFUSAL),
    ("allowed_ips", ["192.0.2.1"], True, None),
    ("allowed_ips", ["10.1.0.0/16", "192.0.2.1"], True, None),
    ("allowed_ips", ["10.0.0.0/8", "192.0.2.1", "198.51.100.7"], False, IPS_REFUSAL),
    ("allowed_ips", ["0.0.0.0/0"], False, IPS_REFUSAL),
    ("allowed_ips", [], False, IPS_REFUSAL),
    ("expires_at", lambda expiry: expiry - timedelta(days=5), True, None),
    ("expires_at", lambda expiry: expiry + timedelta(days=5), False, "expiry"),
    ("expires_at", lambda expiry: None, False, "expiry"),
    ("group", "other", False, GROUP_REFUSAL),
    ("daily_limit_usd", "5", True, None),
    ("daily_limit_usd", "10.01", False, DAILY_REFUSAL),
    ("daily_limit_usd", "0", False, DAILY_REFUSAL),
    ("weekly_limit_usd", "49.99", True, None),
    ("weekly_limit_usd", "", False, WEEKLY_REFUSAL),
    ("monthly_limit_usd", 60, True, None),
    ("monthly_limit_usd", 150, False, MONTHLY_REFUSAL),
    ("max_concurrency", 1, True, None),
    ("max_concurrency", 5, False, CONCURRENCY_REFUSAL),
    ("max_concurrency", 0, False, CONCURRENCY_REFUSAL),
]
IDS = [
    f"{field}-{'tighten' if tightens else 'loosen'}-{i}"
    for i, (field, _, tightens, _) in enumerate(CASES)
]


def _value(value, expiry, other_group):
    if callable(value):
        value = value(expiry)
        return None if value is None else value.isoformat()
    if value == "other":
        return other_group.pk
    return value


@pytest.mark.parametrize("role", ["lead", "member"])
@pytest.mark.parametrize(("field", "value", "tightens", "refusal"), CASES, ids=IDS)
def test_a_setting_on_a_members_key(
    api, lead, member, restricted_key, expiry, role, field, value, tightens, refusal
):
    other_group = GroupFactory(name="Other")
    sent = _value(value, expiry, other_group)
    before = row(restricted_key)

    response = api({"lead": lead, "member": member}[role]).patch(
        url(restricted_key), {field: sent}, format="json"
    )

    if role == "lead" or tightens:
        assert response.status_code == 200, response.json()
        restricted_key.refresh_from_db()
        if field != "group":
            assert response.json()[field] == _shown(sent, response.json()[field], field)
        else:
            assert restricted_key.group == other_group
        assert AuditEvent.objects.filter(key=restricted_key).count() == len(before["events"]) + (
            0 if field == "quota_limit_usd" and sent == "10" else 1
        )
    else:
        assert response.status_code == 403
        message = expiry_refusal(expiry) if refusal == "expiry" else refusal
        assert response.json() == {field: [message]}
        assert row(restricted_key) == before


def _shown(sent, shown, field):
    """What the API shows for the value sent (the same value, in the API's spelling)."""
    if field in ("quota_limit_usd", "daily_limit_usd", "weekly_limit_usd", "monthly_limit_usd"):
        return f"{Decimal(sent or 0):.2f}"
    if field == "expires_at" and sent is not None:
        return shown
    return sent


def test_a_member_tightens_an_unrestricted_key_anyway(api, member, team, group):
    key = make_key(team=team, owner=member, group=group).key

    response = api(member).patch(
        url(key),
        {"quota_limit_usd": "3", "rate_limit": "100/h", "allowed_ips": ["203.0.113.7"]},
        format="json",
    )

    assert response.status_code == 200
    key.refresh_from_db()
    assert (key.quota_limit_usd, key.rate_limit, key.allowed_ips) == (
        Decimal("3"),
        "100/h",
        ["203.0.113.7"],
    )


def test_one_refusal_among_several_changes_writes_nothing(api, member, restricted_key):
    before = row(restricted_key)

    response = api(member).patch(
        url(restricted_key),
        {"name": "renamed", "quota_limit_usd": "5", "rate_limit": ""},
        format="json",
    )

    assert response.status_code == 403
    assert response.json() == {"rate_limit": [RATE_REFUSAL]}
    assert row(restricted_key) == before


def test_a_member_renames_rotates_disables_and_deletes_their_key(api, member, restricted_key):
    client = api(member)
    assert client.patch(url(restricted_key), {"name": "renamed"}, format="json").status_code == 200
    assert client.post(url(restricted_key, "rotate")).status_code == 200
    response = client.post(url(restricted_key, "disable"))
    assert response.status_code == 200
    restricted_key.refresh_from_db()
    assert (restricted_key.status, restricted_key.disabled_by) == ("disabled", "owner")
    # Disabled by themselves: they may enable it again.
    assert client.post(url(restricted_key, "enable")).status_code == 200
    restricted_key.refresh_from_db()
    assert (restricted_key.status, restricted_key.disabled_by) == ("enabled", "")
    assert client.delete(url(restricted_key)).status_code == 204
    assert not ApiKey.objects.filter(pk=restricted_key.pk).exists()


@pytest.mark.parametrize("how", ["enable", "patch"])
def test_a_member_cannot_enable_a_key_the_lead_disabled(api, lead, member, restricted_key, how):
    assert api(lead).post(url(restricted_key, "disable")).status_code == 200
    restricted_key.refresh_from_db()
    assert restricted_key.disabled_by == "lead"
    before = row(restricted_key)

    if how == "enable":
        response = api(member).post(url(restricted_key, "enable"))
    else:
        response = api(member).patch(url(restricted_key), {"status": "enabled"}, format="json")

    assert response.status_code == 403
    assert response.json() == {
        "status": ["Status: disabled by your team lead. Only your team lead can enable it."]
    }
    assert row(restricted_key) == before
    # The lead can.
    assert api(lead).post(url(restricted_key, "enable")).status_code == 200
    restricted_key.refresh_from_db()
    assert restricted_key.status == "enabled"


def test_a_key_disabled_before_it_was_recorded_counts_as_the_leads(api, member, restricted_key):
    ApiKey.objects.filter(pk=restricted_key.pk).update(status="disabled", disabled_by="")

    response = api(member).post(url(restricted_key, "enable"))

    assert response.status_code == 403
    assert ApiKey.objects.get(pk=restricted_key.pk).status == "disabled"


def test_an_expired_key_stays_off_for_its_member(api, lead, member, team, group):
    expired = timezone.now() - timedelta(hours=1)
    key = make_key(team=team, owner=member, group=group, actor=lead).key
    ApiKey.objects.filter(pk=key.pk).update(expires_at=expired)
    assert expire_keys() == 1
    key.refresh_from_db()
    assert (key.status, key.disabled_by) == ("disabled", "system")
    assert key.expired_and_disabled

    response = api(member).post(url(key, "enable"))

    assert response.status_code == 403
    assert response.json() == {
        "status": [
            f"Status: disabled automatically when the key expired on {local(expired)}. Only "
            "your team lead can set a new expiration and enable it."
        ]
    }
    # The lead sets a new expiration and enables it in one change.
    later = (timezone.now() + timedelta(days=1)).isoformat()
    response = api(lead).patch(url(key), {"expires_at": later, "status": "enabled"}, format="json")
    assert response.status_code == 200
    assert response.json()["state"] == "enabled"


# --- creating keys ---------------------------------------------------------------------------


def test_a_lead_creates_a_key_for_a_member(api, lead, member, group):
    response = api(lead).post(
        KEYS,
        {"team": "acme", "owner": "member", "name": "for-member", "group": group.pk},
        format="json",
    )

    assert response.status_code == 201
    assert ApiKey.objects.get(name="for-member").owner == member


def test_a_members_new_key_starts_at_the_teams_defaults(api, member, team, group):
    services.team_key_settings_update(
        team=team,
        actor=None,
        default_group=group,
        default_quota_limit_usd="5",
        default_rate_limit="30/m",
        default_expiry_days=7,
    )
    start = timezone.now()

    response = api(member).post(KEYS, {"team": "acme", "name": "mine"}, format="json")

    assert response.status_code == 201, response.json()
    key = ApiKey.objects.get(name="mine")
    assert (key.group, key.quota_limit_usd, key.rate_limit) == (group, Decimal("5"), "30/m")
    assert start + timedelta(days=7) <= key.expires_at <= timezone.now() + timedelta(days=7)


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        (
            {"quota_limit_usd": "6"},
            "quota_limit_usd",
            "Quota limit: your team's default for new keys is 5.00 USD. You can lower it, but "
            "only your team lead can raise it or set it to 0 (unlimited).",
        ),
        (
            {"rate_limit": ""},
            "rate_limit",
            "Rate limit: your team's default for new keys is 30/m. You can lower it, but only "
            "your team lead can raise or clear it.",
        ),
        (
            {"group": "other"},
            "group",
            "Group: your team's default for new keys is “CC Official Channel”. Only your team "
            "lead can change it.",
        ),
    ],
)
def test_a_member_cannot_create_a_key_looser_than_the_defaults(
    api, member, team, group, settings, field, message
):
    services.team_key_settings_update(
        team=team,
        actor=None,
        default_group=group,
        default_quota_limit_usd="5",
        default_rate_limit="30/m",
    )
    if settings.get("group") == "other":
        settings = {"group": GroupFactory(name="Other").pk}

    response = api(member).post(KEYS, {"team": "acme", "name": "mine", **settings}, format="json")

    assert response.status_code == 403
    assert response.json() == {field: [message]}
    assert not ApiKey.objects.filter(name="mine").exists()


def test_a_member_cannot_create_a_key_without_an_expiry_when_the_team_sets_one(
    api, member, team, group
):
    services.team_key_settings_update(team=team, actor=None, default_expiry_days=7)

    response = api(member).post(
        KEYS, {"team": "acme", "name": "mine", "group": group.pk, "expires_at": None}, format="json"
    )

    assert response.status_code == 403
    assert list(response.json()) == ["expires_at"]
    assert response.json()["expires_at"][0].startswith(
        "Key expiration: your team's default for new keys is "
    )
    assert not ApiKey.objects.filter(name="mine").exists()


def test_members_cannot_create_keys_when_the_team_turns_it_off(api, lead, member, team, group):
    services.team_key_settings_update(team=team, actor=lead, members_can_create_keys=False)

    response = api(member).post(
        KEYS, {"team": "acme", "name": "mine", "group": group.pk}, format="json"
    )

    assert response.status_code == 403
    assert response.json() == {
        "non_field_errors": [
            "Only the leads of Acme create keys in this team; ask one to create a key for you."
        ]
    }
    assert not ApiKey.objects.filter(name="mine").exists()
    # A lead still can, for the member too.
    response = api(lead).post(
        KEYS,
        {"team": "acme", "owner": "member", "name": "mine", "group": group.pk},
        format="json",
    )
    assert response.status_code == 201


def test_without_a_default_group_a_key_needs_one(api, member):
    response = api(member).post(KEYS, {"team": "acme", "name": "mine"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"group": ["This field is required."]}

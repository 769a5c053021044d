"""/api/v1/keys/: the same rules as the portal, through the same selectors and services."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from keys import services
from keys.models import ApiKey, AuditEvent, Membership
from keys.validators import (
    DAILY_LIMIT_WORDS,
    MAX_CONCURRENCY_MESSAGE,
    MONTHLY_LIMIT_WORDS,
    QUOTA_MESSAGE,
    RATE_LIMIT_MESSAGE,
    WEEKLY_LIMIT_WORDS,
)

from ...factories import GroupFactory, MembershipFactory, distinct_ips, make_key

KEYS = "/api/v1/keys/"

KEY_FIELDS = {
    "id",
    "team",
    "owner",
    "name",
    "group",
    "group_name",
    "status",
    "state",
    "prefix",
    "allowed_ips",
    "quota_limit_usd",
    "spent_usd",
    "rate_limit",
    "daily_limit_usd",
    "weekly_limit_usd",
    "monthly_limit_usd",
    "max_concurrency",
    "expires_at",
    "last_used_at",
    "created_at",
    "updated_at",
}


def url(key: ApiKey, action: str = "") -> str:
    return f"{KEYS}{key.pk}/{action + '/' if action else ''}"


def snapshot(key: ApiKey) -> dict:
    """Everything about a key that an unauthorised call must leave as it was."""
    key = ApiKey.objects.get(pk=key.pk)
    return {
        "row": {f.attname: getattr(key, f.attname) for f in ApiKey._meta.fields},
        "events": AuditEvent.objects.filter(key=key).count(),
    }


# --- create ---------------------------------------------------------------------------------


def test_create_returns_the_plaintext_once(api, member, group):
    response = api(member).post(
        KEYS,
        {
            "team": "acme",
            "name": "claude-code-main",
            "group": group.pk,
            "allowed_ips": ["203.0.113.7", "2001:db8::/32"],
            "quota_limit_usd": "25.00",
            "rate_limit": "60 / M",
            "expires_at": "2999-01-01T00:00:00Z",
            "daily_limit_usd": "5",
            "weekly_limit_usd": 20.5,
            "max_concurrency": 3,
        },
        format="json",
    )

    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    key = ApiKey.objects.get()
    assert set(body) == KEY_FIELDS | {"key"}
    assert body["key"].startswith("sk-hc-")
    assert body["key"].startswith(body["prefix"])
    assert key.digest not in response.content.decode()
    assert body | {"key": None, "created_at": None, "updated_at": None} == {
        "id": key.pk,
        "team": "acme",
        "owner": "member",
        "name": "claude-code-main",
        "group": group.pk,
        "group_name": "CC Official Channel",
        "status": "enabled",
        "state": "enabled",
        "prefix": key.prefix,
        "allowed_ips": ["203.0.113.7", "2001:db8::/32"],
        "quota_limit_usd": "25.00",
        "spent_usd": "0.00000000",
        "rate_limit": "60/m",
        "daily_limit_usd": "5.00",
        "weekly_limit_usd": "20.50",
        "monthly_limit_usd": "0.00",
        "max_concurrency": 3,
        "expires_at": "2999-01-01T00:00:00Z",
        "last_used_at": None,
        "key": None,
        "created_at": None,
        "updated_at": None,
    }
    event = AuditEvent.objects.filter(subject_type="key").get()
    assert (event.action, event.actor) == ("key.created", member)


def test_create_takes_an_ip_restriction_of_1000_entries(api, member, group):
    ips = distinct_ips(1000)
    response = api(member).post(
        KEYS, {"team": "acme", "name": "k", "group": group.pk, "allowed_ips": ips}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["allowed_ips"] == ips
    assert ApiKey.objects.get().allowed_ips == ips


def test_the_plaintext_never_appears_again(api, member, group):
    client = api(member)
    created = client.post(KEYS, {"team": "acme", "name": "k", "group": group.pk}, format="json")
    plaintext, key_url = created.json()["key"], f"{KEYS}{created.json()['id']}/"

    later = [
        client.get(KEYS),
        client.get(key_url),
        client.patch(key_url, {"name": "renamed"}, format="json"),
        client.post(key_url + "disable/"),
        client.post(key_url + "enable/"),
        client.get(key_url + "events/"),
    ]

    for response in later:
        assert response.status_code == 200
        assert plaintext not in response.content.decode()
        assert "digest" not in response.content.decode()


def test_a_json_number_quota_is_read_as_written(api, member, group):
    response = api(member).post(
        KEYS,
        {"team": "acme", "name": "k", "group": group.pk, "quota_limit_usd": 25.1},
        format="json",
    )

    assert response.status_code == 201
    assert ApiKey.objects.get().quota_limit_usd == Decimal("25.10")


def test_a_lead_creates_a_key_for_a_member(api, lead, member, group):
    response = api(lead).post(
        KEYS,
        {"team": "acme", "name": "for-member", "group": group.pk, "owner": "member"},
        format="json",
    )

    assert response.status_code == 201
    key = ApiKey.objects.get()
    assert (key.owner, key.created_by) == (member, lead)


def test_a_member_cannot_create_a_key_for_someone_else(api, member, teammate, group):
    response = api(member).post(
        KEYS,
        {"team": "acme", "name": "k", "group": group.pk, "owner": "teammate"},
        format="json",
    )

    assert response.status_code == 403
    assert response.json() == {"detail": "Only a lead of Acme can create keys for others."}
    assert not ApiKey.objects.exists()


QUOTA_NUMBER = (
    "Enter the quota limit in US dollars with at most 2 decimal places (whole cents), "
    "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means unlimited."
)
QUOTA_BELOW_A_CENT = (
    "A quota limit below 0.01 US dollars would be stored as 0, which means unlimited. "
    "Enter at least 0.01, or 0 for unlimited."
)


def _invalid_create_cases():
    now = timezone.now()
    yield "name", "", "Name is required."
    yield "name", "   ", "Name is required."
    yield "name", "x" * 101, "Name can be at most 100 characters."
    yield "name", "a\x00b", "Null characters are not allowed."
    yield "name", ["a"], "Not a valid string."
    yield "name", None, "This field may not be null."
    yield "group", None, "This field may not be null."
    yield "group", 999999, 'Invalid pk "999999" - object does not exist.'
    yield "group", 2**70, f'Invalid pk "{2**70}" - object does not exist.'
    yield "group", "abc", "Incorrect type. Expected pk value, received str."
    yield "status", "paused", "Value 'paused' is not a valid choice."
    yield "status", 1, '"1" is not a valid choice.'
    yield "allowed_ips", "203.0.113.7", "IP restriction must be a list of addresses."
    yield (
        "allowed_ips",
        ["203.0.113.300"],
        "“203.0.113.300” is not a valid IPv4 or IPv6 address or CIDR range "
        "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32).",
    )
    yield (
        "allowed_ips",
        ["10.0.0.1/8"],
        "“10.0.0.1/8” is not a valid IPv4 or IPv6 address or CIDR range "
        "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32).",
    )
    yield "allowed_ips", [5], "Each IP restriction entry must be text, not 5."
    yield (
        "allowed_ips",
        distinct_ips(1001),
        "IP restriction can hold at most 1,000 addresses or ranges; this one has 1,001.",
    )
    yield "allowed_ips", ["a\x00"], "Null characters are not allowed."
    yield "quota_limit_usd", "lots", QUOTA_MESSAGE
    yield "quota_limit_usd", "NaN", QUOTA_MESSAGE
    yield "quota_limit_usd", "\u0665", QUOTA_NUMBER  # Arabic-Indic five
    yield "quota_limit_usd", "1_000", QUOTA_NUMBER
    yield "quota_limit_usd", "1e-400", QUOTA_NUMBER
    yield "quota_limit_usd", "1e2", QUOTA_NUMBER
    yield "quota_limit_usd", "0.001", QUOTA_BELOW_A_CENT
    yield "quota_limit_usd", -1, "Quota limit cannot be negative. Use 0 for unlimited."
    yield "quota_limit_usd", True, "A valid number is required."
    yield "quota_limit_usd", {"usd": 1}, "A valid number is required."
    yield "quota_limit_usd", "12345678901", QUOTA_NUMBER
    yield "quota_limit_usd", "1" * 30, QUOTA_NUMBER
    yield "quota_limit_usd", "1e400", QUOTA_NUMBER
    yield "quota_limit_usd", "0.000001", QUOTA_BELOW_A_CENT
    yield "quota_limit_usd", "1.001", QUOTA_NUMBER
    yield "rate_limit", "fast", RATE_LIMIT_MESSAGE
    yield "rate_limit", "0/m", RATE_LIMIT_MESSAGE
    yield "daily_limit_usd", -1, "Daily limit cannot be negative. Use 0 for no daily limit."
    yield "daily_limit_usd", "lots", DAILY_LIMIT_WORDS.message
    yield "daily_limit_usd", "1.001", DAILY_LIMIT_WORDS.message
    yield "daily_limit_usd", True, "A valid number is required."
    yield "weekly_limit_usd", "-0.5", "Weekly limit cannot be negative. Use 0 for no weekly limit."
    yield "weekly_limit_usd", "1e2", WEEKLY_LIMIT_WORDS.message
    yield (
        "monthly_limit_usd",
        "0.001",
        "A monthly limit below 0.01 US dollars would be stored as 0, which means no monthly "
        "limit. Enter at least 0.01, or 0 for no monthly limit.",
    )
    yield "monthly_limit_usd", "12345678901", MONTHLY_LIMIT_WORDS.message
    yield "max_concurrency", -1, "Max concurrent requests cannot be negative. Use 0 for unlimited."
    yield "max_concurrency", 10_001, MAX_CONCURRENCY_MESSAGE
    yield "max_concurrency", 2.5, MAX_CONCURRENCY_MESSAGE
    yield "max_concurrency", "4", "A valid integer is required."
    yield "max_concurrency", True, "A valid integer is required."
    yield "max_concurrency", None, "This field may not be null."
    yield (
        "expires_at",
        (now - timedelta(days=1)).isoformat(),
        "Key expiration must be in the future. Leave it empty for never.",
    )
    yield (
        "expires_at",
        "tomorrow",
        "Datetime has wrong format. Use one of these formats instead: "
        "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].",
    )
    yield "team", "globex", "Object with slug=globex does not exist."
    yield "team", "nope", "Object with slug=nope does not exist."
    yield "team", "a\x00", "Null characters are not allowed."
    yield "team", "", "This field may not be blank."
    yield "owner", "", "This field may not be blank."
    yield "owner", "outsider", "Object with username=outsider does not exist."


@pytest.mark.parametrize(("field", "value", "message"), list(_invalid_create_cases()))
def test_create_reports_a_bad_field_and_writes_nothing(
    api, lead, outsider, group, field, value, message
):
    body = {"team": "acme", "name": "k", "group": group.pk, field: value}

    response = api(lead).post(KEYS, body, format="json")

    assert response.status_code == 400
    assert response.json() == {field: [message]}
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


@pytest.mark.parametrize("field", ["team", "name", "group"])
def test_create_requires_team_name_and_group(api, member, group, field):
    body = {"team": "acme", "name": "k", "group": group.pk}
    del body[field]

    response = api(member).post(KEYS, body, format="json")

    assert response.status_code == 400
    assert response.json() == {field: ["This field is required."]}


def test_create_reports_every_bad_field_at_once(api, member, group):
    response = api(member).post(
        KEYS,
        {
            "team": "acme",
            "name": "",
            "group": group.pk,
            "quota_limit_usd": "-5",
            "rate_limit": "often",
            "allowed_ips": ["nope"],
        },
        format="json",
    )

    assert response.status_code == 400
    assert set(response.json()) == {"name", "quota_limit_usd", "rate_limit", "allowed_ips"}
    assert not ApiKey.objects.exists()


def test_create_refuses_a_group_the_team_may_not_use(api, member, team, group):
    other = GroupFactory(name="Premium")
    team.allowed_groups.set([group])

    response = api(member).post(
        KEYS, {"team": "acme", "name": "k", "group": other.pk}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"group": ["Group “Premium” is not available to team Acme."]}


def test_create_refuses_an_inactive_group(api, member):
    retired = GroupFactory(name="Retired", is_active=False)

    response = api(member).post(
        KEYS, {"team": "acme", "name": "k", "group": retired.pk}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"group": ["Group “Retired” is not active."]}


def test_create_refuses_an_owner_outside_the_team(api, lead, team, other_team, group):
    # A member of another of the lead's teams: visible to the lead, but not in this team.
    elsewhere = MembershipFactory(team=other_team, user__username="elsewhere").user
    MembershipFactory(team=other_team, user=lead)

    response = api(lead).post(
        KEYS, {"team": "acme", "name": "k", "group": group.pk, "owner": "elsewhere"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"owner": [f"{elsewhere} is not a member of team Acme."]}


# --- list -----------------------------------------------------------------------------------


@pytest.fixture
def keys(team, other_team, lead, member, teammate, outsider, group):
    return {
        "lead": make_key(team=team, owner=lead, group=group, name="lead-key").key,
        "member": make_key(team=team, owner=member, group=group, name="member-key").key,
        "teammate": make_key(team=team, owner=teammate, group=group, name="teammate-key").key,
        "outsider": make_key(team=other_team, owner=outsider, group=group, name="outsider-key").key,
    }


@pytest.mark.parametrize(
    ("actor", "visible"),
    [
        ("lead", {"lead-key", "member-key", "teammate-key"}),
        ("member", {"member-key"}),
        ("teammate", {"teammate-key"}),
        ("outsider", {"outsider-key"}),
        ("staff", {"lead-key", "member-key", "teammate-key", "outsider-key"}),
    ],
)
def test_list_shows_what_the_portal_shows(api, actors, keys, actor, visible):
    response = api(actors[actor]).get(KEYS)

    assert response.status_code == 200
    body = response.json()
    assert {key["name"] for key in body["results"]} == visible
    assert body["count"] == len(visible)
    assert all(set(key) == KEY_FIELDS for key in body["results"])


def test_list_without_credentials_is_401(api, keys):
    assert api(None).get(KEYS).status_code == 401


def test_a_lead_in_one_team_and_member_in_another_sees_each_teams_share(
    api, lead, keys, other_team
):
    MembershipFactory(team=other_team, user=lead)
    own_there = make_key(team=other_team, owner=lead, name="lead-in-globex").key

    names = {key["name"] for key in api(lead).get(KEYS).json()["results"]}

    assert names == {"lead-key", "member-key", "teammate-key", own_there.name}


def test_list_filters(api, lead, member, keys, group, team):
    other_group = GroupFactory(name="Other")
    services.api_key_update(key=keys["member"], actor=lead, group=other_group)
    services.api_key_disable(key=keys["teammate"], actor=lead)
    client = api(lead)

    def names(**params) -> set[str]:
        response = client.get(KEYS, params)
        assert response.status_code == 200, response.json()
        return {key["name"] for key in response.json()["results"]}

    assert names(status="disabled") == {"teammate-key"}
    assert names(status="enabled") == {"lead-key", "member-key"}
    assert names(state="disabled") == {"teammate-key"}
    assert names(group=other_group.pk) == {"member-key"}
    assert names(owner="member") == {"member-key"}
    assert names(owner="nobody") == set()
    assert names(owner="outsider") == set()
    assert names(search="MEMBER") == {"member-key"}
    assert names(search="-KEY") == {"lead-key", "member-key", "teammate-key"}
    assert names(team="acme", search="lead") == {"lead-key"}
    assert names(team="globex") == set()
    assert names(team="no-such-team") == set()


def test_list_filters_by_derived_state(api, lead, member, team, group):
    expired = make_key(team=team, owner=member, group=group, name="expired").key
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    used_up = make_key(team=team, owner=member, group=group, name="used-up").key
    ApiKey.objects.filter(pk=used_up.pk).update(
        quota_limit_usd=Decimal("1"), spent_usd=Decimal("1")
    )
    make_key(team=team, owner=member, group=group, name="fine")
    client = api(lead)

    def states(**params) -> dict[str, str]:
        results = client.get(KEYS, params).json()["results"]
        return {key["name"]: key["state"] for key in results}

    assert states(state="expired") == {"expired": "expired"}
    assert states(state="quota_used_up") == {"used-up": "quota_used_up"}
    assert states(state="enabled") == {"fine": "enabled"}


def test_list_orders_and_pages(api, lead, team, group):
    for name in ["b", "c", "a"]:
        make_key(team=team, owner=lead, group=group, name=name)
    client = api(lead)

    by_name = client.get(KEYS, {"ordering": "name"}).json()
    newest_first = client.get(KEYS).json()
    page_two = client.get(KEYS, {"ordering": "-name", "page_size": 2, "page": 2}).json()

    assert [key["name"] for key in by_name["results"]] == ["a", "b", "c"]
    assert [key["name"] for key in newest_first["results"]] == ["a", "c", "b"]
    assert [key["name"] for key in page_two["results"]] == ["a"]
    assert page_two["count"] == 3
    assert page_two["next"] is None
    assert page_two["previous"] is not None


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"status": "paused"}, {"status": ['"paused" is not a valid choice.']}),
        ({"state": "broken"}, {"state": ['"broken" is not a valid choice.']}),
        ({"group": "abc"}, {"group": ["A valid integer is required."]}),
        ({"group": "0"}, {"group": ["Ensure this value is greater than or equal to 1."]}),
        (
            {"group": str(2**64)},
            {"group": [f"Ensure this value is less than or equal to {2**63 - 1}."]},
        ),
        ({"ordering": "digest"}, {"ordering": ['"digest" is not a valid choice.']}),
        ({"search": "a\x00"}, {"search": ["Null characters are not allowed."]}),
        ({"owner": "a\x00"}, {"owner": ["Null characters are not allowed."]}),
        (
            {"team": "not a slug"},
            {
                "team": [
                    'Enter a valid "slug" consisting of letters, numbers, underscores or hyphens.'
                ]
            },
        ),
    ],
)
def test_list_reports_a_bad_filter(api, lead, params, errors):
    response = api(lead).get(KEYS, params)

    assert response.status_code == 400
    assert response.json() == errors


def test_list_beyond_the_last_page_is_404(api, lead, keys):
    response = api(lead).get(KEYS, {"page": 9})

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid page."}


# --- one key: the permission matrix ---------------------------------------------------------

# (method, action, body, status when allowed)
OPERATIONS = [
    ("get", "", None, 200),
    ("patch", "", {"name": "renamed"}, 200),
    ("delete", "", None, 204),
    ("post", "rotate", None, 200),
    ("post", "disable", None, 200),
    ("get", "events", None, 200),
]


@pytest.mark.parametrize(
    ("actor", "allowed"),
    [
        ("member", 200),
        ("lead", 200),
        ("staff", 200),
        ("teammate", 404),
        ("outsider", 404),
        ("anonymous", 401),
    ],
)
@pytest.mark.parametrize(("method", "action", "body", "success"), OPERATIONS)
def test_who_may_do_what_to_a_members_key(
    api, actors, keys, actor, allowed, method, action, body, success
):
    key = keys["member"]
    before = snapshot(key)

    response = getattr(api(actors[actor]), method)(url(key, action), body, format="json")

    if allowed == 200:
        assert response.status_code == success
        return
    assert response.status_code == allowed
    assert (
        response.json()
        == {
            404: {"detail": "Not found."},
            401: {"detail": "Authentication credentials were not provided."},
        }[allowed]
    )
    assert snapshot(key) == before


@pytest.mark.parametrize("key_id", ["999999", str(2**64), "0"])
def test_an_unknown_key_is_404(api, lead, key_id):
    response = api(lead).get(f"{KEYS}{key_id}/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize("path", ["abc/", "-1/", "1.5/", "%00/"])
def test_a_malformed_key_id_is_a_json_404(api, lead, path):
    response = api(lead).get(KEYS + path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


# --- one key: what each operation does -------------------------------------------------------


def test_retrieve(api, member, keys):
    response = api(member).get(url(keys["member"]))

    assert response.status_code == 200
    assert response.json()["name"] == "member-key"
    assert set(response.json()) == KEY_FIELDS


def test_patch_changes_every_setting_and_writes_one_event(api, lead, keys):
    """A lead changes every setting of a member's key (a member may not change the group:
    test_policy.py)."""
    other_group = GroupFactory(name="Other")
    key = keys["member"]

    response = api(lead).patch(
        url(key),
        {
            "name": " renamed ",
            "group": other_group.pk,
            "status": "disabled",
            "allowed_ips": ["10.0.0.0/8"],
            "quota_limit_usd": "10",
            "rate_limit": "5/s",
            "expires_at": "2999-06-01T12:00:00+02:00",
            "daily_limit_usd": "1.5",
            "weekly_limit_usd": 7,
            "monthly_limit_usd": "25.00",
            "max_concurrency": 2,
        },
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["group"], body["status"], body["state"]) == (
        "renamed",
        other_group.pk,
        "disabled",
        "disabled",
    )
    assert (body["allowed_ips"], body["quota_limit_usd"], body["rate_limit"]) == (
        ["10.0.0.0/8"],
        "10.00",
        "5/s",
    )
    assert body["expires_at"] == "2999-06-01T10:00:00Z"
    assert (
        body["daily_limit_usd"],
        body["weekly_limit_usd"],
        body["monthly_limit_usd"],
        body["max_concurrency"],
    ) == ("1.50", "7.00", "25.00", 2)
    event = AuditEvent.objects.filter(key=key).latest("id")
    assert event.action == "key.updated"
    assert set(event.changes) == {
        "name",
        "group",
        "status",
        "allowed_ips",
        "quota_limit_usd",
        "rate_limit",
        "expires_at",
        "daily_limit_usd",
        "weekly_limit_usd",
        "monthly_limit_usd",
        "max_concurrency",
    }
    assert AuditEvent.objects.filter(key=key).count() == 2


def test_patch_clears_the_expiry_and_the_limits(api, lead, member, team, group):
    """By a lead: a member may not loosen them (test_policy.py)."""
    key = make_key(
        team=team,
        owner=member,
        group=group,
        expires_at=timezone.now() + timedelta(days=1),
        rate_limit="1/s",
        allowed_ips=["10.0.0.1"],
    ).key

    response = api(lead).patch(
        url(key), {"expires_at": None, "rate_limit": "", "allowed_ips": []}, format="json"
    )

    assert response.status_code == 200
    key.refresh_from_db()
    assert (key.expires_at, key.rate_limit, key.allowed_ips) == (None, "", [])


def test_patch_clears_the_budgets(api, lead, member, team, group):
    key = make_key(
        team=team,
        owner=member,
        group=group,
        daily_limit_usd="3",
        weekly_limit_usd="9",
        monthly_limit_usd="27",
        max_concurrency=5,
    ).key

    response = api(lead).patch(
        url(key),
        {
            "daily_limit_usd": 0,
            "weekly_limit_usd": "",
            "monthly_limit_usd": "0",
            "max_concurrency": 0,
        },
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert (
        body["daily_limit_usd"],
        body["weekly_limit_usd"],
        body["monthly_limit_usd"],
        body["max_concurrency"],
    ) == ("0.00", "0.00", "0.00", 0)
    key.refresh_from_db()
    assert (
        key.daily_limit_usd,
        key.weekly_limit_usd,
        key.monthly_limit_usd,
        key.max_concurrency,
    ) == (0, 0, 0, 0)
    event = AuditEvent.objects.filter(key=key).latest("id")
    assert event.changes == {
        "daily_limit_usd": ["3", "0"],
        "weekly_limit_usd": ["9", "0"],
        "monthly_limit_usd": ["27", "0"],
        "max_concurrency": [5, 0],
    }


def test_patch_with_nothing_changed_writes_no_event(api, member, keys):
    key = keys["member"]
    before = snapshot(key)

    response = api(member).patch(url(key), {"name": "member-key"}, format="json")

    assert response.status_code == 200
    assert snapshot(key)["events"] == before["events"]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"name": ""}, {"name": ["Name is required."]}),
        ({"group": None}, {"group": ["This field may not be null."]}),
        ({"status": "on"}, {"status": ["Value 'on' is not a valid choice."]}),
        (
            {"allowed_ips": {"ip": "10.0.0.1"}},
            {"allowed_ips": ["IP restriction must be a list of addresses."]},
        ),
        (
            {"quota_limit_usd": "-0.01"},
            {"quota_limit_usd": ["Quota limit cannot be negative. Use 0 for unlimited."]},
        ),
        ({"rate_limit": "60/w"}, {"rate_limit": [RATE_LIMIT_MESSAGE]}),
        (
            {"daily_limit_usd": "-1"},
            {"daily_limit_usd": ["Daily limit cannot be negative. Use 0 for no daily limit."]},
        ),
        ({"weekly_limit_usd": "2.555"}, {"weekly_limit_usd": [WEEKLY_LIMIT_WORDS.message]}),
        ({"monthly_limit_usd": [1]}, {"monthly_limit_usd": ["A valid number is required."]}),
        ({"max_concurrency": 10_001}, {"max_concurrency": [MAX_CONCURRENCY_MESSAGE]}),
        ({"max_concurrency": "two"}, {"max_concurrency": ["A valid integer is required."]}),
        (
            {"daily_limit_usd": "x", "max_concurrency": -2},
            {
                "daily_limit_usd": [DAILY_LIMIT_WORDS.message],
                "max_concurrency": [
                    "Max concurrent requests cannot be negative. Use 0 for unlimited."
                ],
            },
        ),
        (
            {"expires_at": "2000-01-01T00:00:00Z"},
            {"expires_at": ["Key expiration must be in the future. Leave it empty for never."]},
        ),
    ],
)
def test_patch_reports_a_bad_field_and_changes_nothing(api, member, keys, body, errors):
    key = keys["member"]
    before = snapshot(key)

    response = api(member).patch(url(key), body, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert snapshot(key) == before


# JSON numbers as they appear in the body: json.loads would make 1e-400 the float 0.0, a quota
# of 0, which means unlimited, so the API reads the number as written.
@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("1e-400", QUOTA_NUMBER),
        ("1E2", QUOTA_NUMBER),
        ("1.5e1", QUOTA_NUMBER),
        ("1e999", QUOTA_NUMBER),
        ("0.001", QUOTA_BELOW_A_CENT),
        ("0.00000000000000000001", QUOTA_BELOW_A_CENT),
    ],
)
def test_a_quota_sent_as_a_json_number_is_read_as_written(api, member, keys, number, message):
    key = keys["member"]
    services.api_key_update(key=key, actor=member, quota_limit_usd="25")
    before = snapshot(key)

    response = api(member).patch(
        url(key), f'{{"quota_limit_usd": {number}}}', content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json() == {"quota_limit_usd": [message]}
    assert snapshot(key) == before


def test_create_with_the_json_number_1e_minus_400_as_quota_writes_nothing(api, member, group):
    response = api(member).post(
        KEYS,
        f'{{"team": "acme", "name": "k", "group": {group.pk}, "quota_limit_usd": 1e-400}}',
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json() == {"quota_limit_usd": [QUOTA_NUMBER]}
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


@pytest.mark.parametrize(
    ("number", "stored"),
    [("25.5", "25.50"), ("0.1", "0.10"), ("0.01", "0.01"), ("12.500", "12.50"), ("-0.0", "0.00")],
)
def test_a_quota_sent_as_a_json_number_is_stored_exactly(api, member, keys, number, stored):
    key = keys["member"]

    response = api(member).patch(
        url(key), f'{{"quota_limit_usd": {number}}}', content_type="application/json"
    )

    assert response.status_code == 200
    assert response.json()["quota_limit_usd"] == stored
    key.refresh_from_db()
    assert str(key.quota_limit_usd) == stored


def test_patch_ignores_fields_that_cannot_change(api, member, keys, other_team):
    key = keys["member"]
    before = snapshot(key)

    response = api(member).patch(
        url(key),
        {"team": "globex", "owner": "outsider", "spent_usd": "0", "prefix": "sk-hc-x"},
        format="json",
    )

    assert response.status_code == 200
    assert snapshot(key) == before


def test_put_is_not_offered(api, member, keys):
    response = api(member).put(url(keys["member"]), {"name": "x"}, format="json")

    assert response.status_code == 405


def test_delete_keeps_the_audit_trail(api, member, keys):
    key = keys["member"]

    response = api(member).delete(url(key))

    assert response.status_code == 204
    assert not ApiKey.objects.filter(pk=key.pk).exists()
    deleted = AuditEvent.objects.get(action="key.deleted", subject_label="member-key")
    assert deleted.actor == member


def test_rotate_returns_a_new_plaintext_once_and_kills_the_old(api, member, team, group):
    issued = make_key(team=team, owner=member, group=group)

    response = api(member).post(url(issued.key, "rotate"))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert set(body) == KEY_FIELDS | {"key"}
    assert body["key"].startswith("sk-hc-")
    assert body["key"] != issued.plaintext
    key = ApiKey.objects.get()
    assert key.prefix == body["prefix"] == body["key"][: len(key.prefix)]
    assert not ApiKey.objects.filter(digest=issued.key.digest).exists()
    assert AuditEvent.objects.filter(key=key, action="key.rotated").count() == 1


def test_disable_then_enable(api, member, keys):
    key = keys["member"]
    client = api(member)

    disabled = client.post(url(key, "disable"))
    enabled = client.post(url(key, "enable"))

    assert (disabled.status_code, disabled.json()["status"]) == (200, "disabled")
    assert (enabled.status_code, enabled.json()["status"]) == (200, "enabled")
    actions = list(AuditEvent.objects.filter(key=key).values_list("action", flat=True))
    assert actions[:2] == ["key.enabled", "key.disabled"]


def test_enabling_an_expired_key_is_refused_with_the_services_message(api, member, team, group):
    key = make_key(team=team, owner=member, group=group, status=ApiKey.Status.DISABLED).key
    expired_at = timezone.now() - timedelta(days=1)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=expired_at)
    before = snapshot(key)

    response = api(member).post(url(key, "enable"))

    assert response.status_code == 400
    assert response.json() == {
        "expires_at": [
            "This key expired on "
            f"{timezone.localtime(expired_at):%Y-%m-%d %H:%M %Z}. "
            "Clear or extend Key expiration to enable it."
        ]
    }
    assert snapshot(key) == before


def test_events_list_the_audit_trail_newest_first(api, lead, member, keys):
    key = keys["member"]
    services.api_key_update(key=key, actor=lead, rate_limit="10/m")
    services.api_key_expire(key=key)  # not expired: nothing happens

    response = api(member).get(url(key, "events"))

    assert response.status_code == 200
    events = response.json()["results"]
    assert [event["action"] for event in events] == ["updated", "created"]
    assert events[0] | {"id": None, "created_at": None} == {
        "id": None,
        "action": "updated",
        "actor": "lead",
        "key_name": "member-key",
        "key_prefix": key.prefix,
        "changes": {"rate_limit": ["", "10/m"]},
        "created_at": None,
    }


def test_a_system_event_has_no_actor(api, member, team, group):
    key = make_key(team=team, owner=member, group=group).key
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.api_key_expire(key=ApiKey.objects.get(pk=key.pk))

    events = api(member).get(url(key, "events")).json()["results"]

    assert (events[0]["action"], events[0]["actor"]) == ("expired", None)


def test_a_member_removed_from_the_team_loses_access_to_their_keys(api, lead, member, keys):
    client = api(member)
    services.membership_remove(
        membership=Membership.objects.get(user=member, team=keys["member"].team), actor=lead
    )

    assert client.get(url(keys["member"])).status_code == 404
    assert client.get(KEYS).json()["count"] == 0

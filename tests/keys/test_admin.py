"""The staff admin for teams, groups, keys and the audit trail: who may use it, that every
write goes through the services (one audit row, the service's exact messages, nothing written
on failure), and that neither a key's digest nor its plaintext is kept where it should not be.
"""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone

from core.keyspace import snapshot_cache_key
from keys import services
from keys.admin import ApiKeyAdmin, GroupAdminForm
from keys.models import ApiKey, ApiToken, AuditEvent, Group, Membership, Team, digest_key
from keys.validators import QUOTA_MESSAGE, RATE_LIMIT_MESSAGE
from tests.admin_pages import assert_sent_to_login, url
from tests.audit_trail import audit_rows

from ..factories import (
    GroupFactory,
    MembershipFactory,
    TeamFactory,
    UserFactory,
    distinct_ips,
    make_key,
)

ISSUED_KEY = re.compile(r'<code class="issued-key">(sk-hc-[A-Za-z0-9_-]+)</code>')
ISSUED_TOKEN = re.compile(r'<code class="issued-key">(hcat_[A-Za-z0-9_-]+)</code>')
# A row of the one-time page: the key's change link and name, then its new plaintext.
ISSUED_KEY_ROW = re.compile(
    r'<a href="/admin/keys/apikey/(\d+)/change/">([^<]+)</a></td>.*?'
    r'<code class="issued-key">(sk-hc-[A-Za-z0-9_-]+)</code>',
    re.DOTALL,
)
GONE = "<h1>This secret was shown once.</h1>"
GONE_KEY = (
    "<p>If you did not copy it, rotate the key to get a new one. "
    "Nothing was created or changed by opening this page again.</p>"
)
GONE_TOKEN = (
    "<p>If you did not copy it, revoke the token and create a new one. "
    "Nothing was created or changed by opening this page again.</p>"
)


def row(key: ApiKey) -> dict:
    """Every column of the key as stored."""
    return ApiKey.objects.filter(pk=key.pk).values().get()


def actions_of(key: ApiKey) -> list[str]:
    return list(AuditEvent.objects.filter(key=key).order_by("id").values_list("action", flat=True))


def page_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def key_change_data(key: ApiKey, **overrides) -> dict:
    """The change form as the admin renders it for `key`, with `overrides` typed in."""
    expires = timezone.localtime(key.expires_at) if key.expires_at else None
    data = {
        "name": key.name,
        "group": key.group_id,
        "status": key.status,
        "allowed_ips": "\n".join(key.allowed_ips),
        "quota_limit_usd": f"{key.quota_limit_usd:.2f}",
        "rate_limit": key.rate_limit,
        "daily_limit_usd": f"{key.daily_limit_usd:.2f}",
        "weekly_limit_usd": f"{key.weekly_limit_usd:.2f}",
        "monthly_limit_usd": f"{key.monthly_limit_usd:.2f}",
        "max_concurrency": str(key.max_concurrency),
        # The split date/time widget shows seconds, not microseconds.
        "expires_at_0": expires.date().isoformat() if expires else "",
        "expires_at_1": expires.strftime("%H:%M:%S") if expires else "",
    }
    data.update(overrides)
    return data


def show_issued(client, posted, model: str, pattern: re.Pattern) -> tuple:
    """The POST answered 303 to the model's one-time page, and that page's first GET shows
    the new plaintexts, each exactly once. Returns the page and the plaintexts in its order."""
    assert posted.status_code == 303
    assert posted["Location"].startswith(f"/admin/keys/{model}/issued/")
    page = client.get(posted["Location"])
    assert page.status_code == 200
    content = page.content.decode()
    plaintexts = pattern.findall(content)
    assert plaintexts
    for plaintext in plaintexts:
        assert content.count(plaintext) == 1
    return page, plaintexts


def assert_not_kept(client, posted, page, plaintext: str) -> None:
    """The plaintext went out in the one-time page only: not in the POST's answer, no message
    queued (the messages framework keeps them in the session or a cookie), nothing in the
    session, no cacheable page."""
    assert plaintext not in posted.content.decode()
    assert plaintext not in posted["Location"]
    assert list(page.context["messages"]) == []
    for response in (posted, page):
        assert plaintext not in str(response.cookies)
    assert plaintext not in str(dict(client.session.items()))
    assert "no-store" in page["Cache-Control"]


def assert_gone(client, issued_url: str, advice: str, plaintexts: list[str]) -> None:
    """A reload of the one-time page: 410 with the way to a new secret, and no secret."""
    reload = client.get(issued_url)
    assert reload.status_code == 410
    content = reload.content.decode()
    assert GONE in content
    assert advice in content
    assert "issued-key" not in content
    for plaintext in plaintexts:
        assert plaintext not in content
    assert "no-store" in reload["Cache-Control"]


@pytest.fixture
def key(issued) -> ApiKey:
    return issued.key


# --- who may use it -------------------------------------------------------------------------


@pytest.fixture
def token(member) -> ApiToken:
    return services.api_token_create(user=member, name="ci", actor=member).token


@pytest.fixture
def admin_pages(team, group, key, token):
    """Every page of the keys admin a staff user can open."""
    event = AuditEvent.objects.get(key=key)
    return [
        url("keys_apitoken_changelist"),
        url("keys_apitoken_add"),
        url("keys_apitoken_change", token.pk),
        url("keys_team_changelist"),
        url("keys_team_add"),
        url("keys_team_change", team.pk),
        url("keys_group_changelist"),
        url("keys_group_add"),
        url("keys_group_change", group.pk),
        url("keys_apikey_changelist"),
        url("keys_apikey_add"),
        url("keys_apikey_change", key.pk),
        url("keys_apikey_history", key.pk),
        url("keys_apikey_delete", key.pk),
        url("keys_auditevent_changelist"),
        url("keys_auditevent_change", event.pk),
    ]


def test_every_page_renders_for_staff(admin_client, admin_pages):
    for page in admin_pages:
        assert admin_client.get(page).status_code == 200, page


def test_non_staff_member_is_sent_to_login(client, member, admin_pages):
    client.force_login(member)
    assert_sent_to_login(client, admin_pages)


def test_anonymous_is_sent_to_login(client, admin_pages):
    assert_sent_to_login(client, admin_pages)


def test_non_staff_member_cannot_act_on_keys(client, member, key):
    client.force_login(member)
    before = row(key)

    for action in ("disable_keys", "rotate_keys", "delete_selected"):
        response = run_action(client, action, [key], post="yes")
        assert response.status_code == 302
        assert response["Location"].startswith(url("login"))

    assert row(key) == before
    assert actions_of(key) == ["key.created"]


def test_digests_are_never_displayed(admin_client, team, key, token, admin_pages):
    admin_client.post(url("keys_apikey_change", key.pk), key_change_data(key, name="renamed"))
    pages = [*admin_pages, f"{url('keys_apikey_changelist')}?q={key.prefix}"]
    responses = [admin_client.get(page) for page in pages]
    responses += [run_action(admin_client, "rotate_keys", [key])]
    responses += [run_action(admin_client, "delete_selected", [key])]

    for page, response in zip([*pages, "rotate", "delete"], responses, strict=True):
        assert response.status_code == 200, page
        assert key.digest not in response.content.decode(), page
        assert token.digest not in response.content.decode(), page


# --- the site: its names, and money --------------------------------------------------------


def test_the_admin_names_the_product(admin_client):
    page = admin_client.get(url("index")).content.decode()
    assert "<title>Keys, teams, usage and channels | HCAI Keys admin</title>" in page
    assert '<a href="/admin/">HCAI Keys administration</a>' in page
    assert "Django administration" not in page


def test_key_groups_and_auth_groups_have_different_names(admin_client):
    page = admin_client.get(url("index")).content.decode()
    # The key groups, under Keys; django.contrib.auth's groups of staff permissions keep theirs.
    assert '<a href="/admin/keys/group/">Key groups</a>' in page
    assert '<a href="/admin/auth/group/">Groups</a>' in page
    assert page.count(">Groups</a>") == 1


def test_admin_times_name_their_zone(admin_client, key):
    ApiKey.objects.filter(pk=key.pk).update(created_at=datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC))
    page = admin_client.get(url("keys_apikey_change", key.pk)).content.decode()
    assert '<div class="readonly">2031-01-02 03:04 UTC</div>' in page
    with override_settings(TIME_ZONE="Asia/Tokyo"):
        page = admin_client.get(url("keys_apikey_change", key.pk)).content.decode()
    assert '<div class="readonly">2031-01-02 12:04 JST</div>' in page


def test_the_key_page_shows_spend_as_money(admin_client, key):
    ApiKey.objects.filter(pk=key.pk).update(spent_usd=Decimal("1234.5"))
    page = admin_client.get(url("keys_apikey_change", key.pk)).content.decode()
    assert "<label>Spent:</label>" in page
    assert '<div class="readonly">$1,234.50</div>' in page
    assert "Spent usd" not in page
    assert "1234.50000000" not in page


def test_the_key_page_shows_who_disabled_it(admin_client, key):
    run_action(admin_client, "disable_keys", [key])
    page = admin_client.get(url("keys_apikey_change", key.pk)).content.decode()
    assert "<label>Disabled by:</label>" in page
    assert '<div class="readonly">Staff</div>' in page


# --- the key list ---------------------------------------------------------------------------


def test_list_shows_spend_against_limit(admin_client, team, member, group, key):
    limited = make_key(team=team, owner=member, group=group, name="limited", quota_limit_usd="25")
    ApiKey.objects.filter(pk=limited.key.pk).update(spent_usd=Decimal("1.5"))
    limited.key.refresh_from_db()
    key_admin = ApiKeyAdmin(ApiKey, admin_site=None)

    assert key_admin.spent_and_limit(key) == "$0.00 / unlimited"
    assert key_admin.spent_and_limit(limited.key) == "$1.50 / $25.00"
    content = admin_client.get(url("keys_apikey_changelist")).content.decode()
    assert "$0.00 / unlimited" in content
    assert "$1.50 / $25.00" in content
    # Sub-cent spend reads as such, not as "$0.00".
    ApiKey.objects.filter(pk=key.pk).update(spent_usd=Decimal("0.00012"))
    key.refresh_from_db()
    assert key_admin.spent_and_limit(key) == "$0.0001 / unlimited"


def test_list_columns(admin_client, key):
    response = admin_client.get(url("keys_apikey_changelist"))

    headers = [header["text"] for header in response.context["result_headers"]]
    assert headers[1:] == [
        "name",
        "team",
        "owner",
        "group",
        "status",
        "prefix",
        "spent / limit",
        "key expiration",
        "last used at",
    ]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("claude-code", {"claude-code-main"}),
        ("other@example", {"other-key"}),
        ("member", {"claude-code-main"}),
        ("nothing-like-this", set()),
    ],
)
def test_search_by_name_owner_username_and_email(admin_client, team, group, key, query, found):
    other = MembershipFactory(team=team, user__username="other").user
    make_key(team=team, owner=other, group=group, name="other-key")

    response = admin_client.get(url("keys_apikey_changelist"), {"q": query})

    assert {result.name for result in response.context["cl"].result_list} == found


def test_search_by_prefix(admin_client, key):
    response = admin_client.get(url("keys_apikey_changelist"), {"q": key.prefix})

    assert list(response.context["cl"].result_list) == [key]


def test_filters_by_team_group_and_status(admin_client, team, other_team, member, group, key):
    other_group = GroupFactory(name="Other")
    foreign = make_key(team=other_team, group=other_group, name="foreign").key
    ApiKey.objects.filter(pk=foreign.pk).update(status=ApiKey.Status.DISABLED)
    changelist = url("keys_apikey_changelist")

    def names(params):
        response = admin_client.get(changelist, params)
        return {result.name for result in response.context["cl"].result_list}

    assert names({"team__id__exact": team.pk}) == {"claude-code-main"}
    assert names({"group__id__exact": other_group.pk}) == {"foreign"}
    assert names({"status__exact": "disabled"}) == {"foreign"}
    assert names({"status__exact": "enabled"}) == {"claude-code-main"}


# --- enable, disable, rotate ----------------------------------------------------------------


def run_action(client, action: str, keys: list[ApiKey], **extra):
    return client.post(
        url("keys_apikey_changelist"),
        {"action": action, "_selected_action": [key.pk for key in keys], **extra},
    )


def test_disable_action_writes_one_event_with_the_staff_user(admin_client, admin_user, key):
    response = run_action(admin_client, "disable_keys", [key])

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.status == ApiKey.Status.DISABLED
    event = AuditEvent.objects.get(key=key, action="key.disabled")
    assert event.actor == admin_user
    assert event.changes == {"status": ["enabled", "disabled"]}
    assert actions_of(key) == ["key.created", "key.disabled"]
    assert page_messages(admin_client.get(response["Location"])) == ["Disabled 1 key."]


def test_enable_action_writes_one_event_with_the_staff_user(admin_client, admin_user, key):
    ApiKey.objects.filter(pk=key.pk).update(status=ApiKey.Status.DISABLED)

    response = run_action(admin_client, "enable_keys", [key])

    key.refresh_from_db()
    assert key.status == ApiKey.Status.ENABLED
    assert AuditEvent.objects.get(key=key, action="key.enabled").actor == admin_user
    assert actions_of(key) == ["key.created", "key.enabled"]
    assert page_messages(admin_client.get(response["Location"])) == ["Enabled 1 key."]


def test_disable_action_skips_keys_already_disabled(admin_client, key):
    ApiKey.objects.filter(pk=key.pk).update(status=ApiKey.Status.DISABLED)

    response = run_action(admin_client, "disable_keys", [key])

    assert actions_of(key) == ["key.created"]
    assert page_messages(admin_client.get(response["Location"])) == ["Disabled 0 keys."]


def test_enable_action_refuses_an_expired_key_with_the_service_message(admin_client, key):
    expired_at = timezone.now() - timedelta(days=2)
    ApiKey.objects.filter(pk=key.pk).update(status=ApiKey.Status.DISABLED, expires_at=expired_at)
    before = row(key)

    response = run_action(admin_client, "enable_keys", [key])

    assert response.status_code == 302
    assert row(key) == before
    assert actions_of(key) == ["key.created"]
    assert page_messages(admin_client.get(response["Location"])) == [
        f"{key}: This key expired on {timezone.localtime(expired_at):%Y-%m-%d %H:%M %Z}. "
        "Clear or extend Key expiration to enable it.",
        "Enabled 0 keys.",
    ]


def test_rotate_asks_for_confirmation_first(admin_client, key):
    before = row(key)

    response = run_action(admin_client, "rotate_keys", [key])

    assert response.status_code == 200
    assert "Rotate these keys?" in response.content.decode()
    assert key.name in response.content.decode()
    assert row(key) == before
    assert actions_of(key) == ["key.created"]


def test_rotate_shows_the_new_key_once_and_the_old_one_stops_matching(
    admin_client, admin_user, issued, caplog
):
    key = issued.key

    response = run_action(admin_client, "rotate_keys", [key], post="yes")

    page, (plaintext,) = show_issued(admin_client, response, "apikey", ISSUED_KEY)
    assert page.context["title"] == "API keys rotated"
    assert plaintext != issued.plaintext
    key.refresh_from_db()
    assert key.digest == digest_key(plaintext)
    assert not ApiKey.objects.filter(digest=digest_key(issued.plaintext)).exists()
    event = AuditEvent.objects.get(key=key, action="key.rotated")
    assert event.actor == admin_user
    assert actions_of(key) == ["key.created", "key.rotated"]
    assert_not_kept(admin_client, response, page, plaintext)
    assert plaintext not in caplog.text


def test_a_reload_after_rotate_shows_the_key_is_gone_and_rotates_nothing(admin_client, key):
    response = run_action(admin_client, "rotate_keys", [key], post="yes")
    _, plaintexts = show_issued(admin_client, response, "apikey", ISSUED_KEY)
    after_rotate = row(key)

    assert_gone(admin_client, response["Location"], GONE_KEY, plaintexts)

    assert row(key) == after_rotate
    assert actions_of(key) == ["key.created", "key.rotated"]


def test_rotate_several_keys_shows_each_new_key_once_by_name(
    admin_client, team, member, group, key
):
    others = [
        make_key(team=team, owner=member, group=group, name=name).key
        for name in ("second", "third")
    ]
    rotated = [key, *others]

    response = run_action(admin_client, "rotate_keys", rotated, post="yes")

    page, plaintexts = show_issued(admin_client, response, "apikey", ISSUED_KEY)
    assert len(plaintexts) == 3
    rows = ISSUED_KEY_ROW.findall(page.content.decode())
    # Each row names the key whose digest its plaintext matches.
    assert sorted((int(pk), name) for pk, name, _ in rows) == [(k.pk, k.name) for k in rotated]
    for pk, _, plaintext in rows:
        assert ApiKey.objects.get(pk=pk).digest == digest_key(plaintext)
    assert AuditEvent.objects.filter(action="key.rotated").count() == 3
    for plaintext in plaintexts:
        assert_not_kept(admin_client, response, page, plaintext)
    assert_gone(admin_client, response["Location"], GONE_KEY, plaintexts)
    assert AuditEvent.objects.filter(action="key.rotated").count() == 3


def test_another_staff_members_session_cannot_open_the_new_keys(admin_client, key):
    response = run_action(admin_client, "rotate_keys", [key], post="yes")
    colleague = Client()
    colleague.force_login(UserFactory(username="colleague", is_staff=True, is_superuser=True))

    elsewhere = colleague.get(response["Location"])

    assert elsewhere.status_code == 410
    assert GONE in elsewhere.content.decode()
    assert "issued_secrets" not in elsewhere.context
    # The attempt used nothing up: the session that rotated still sees the key once.
    _, (plaintext,) = show_issued(admin_client, response, "apikey", ISSUED_KEY)
    assert ApiKey.objects.get(pk=key.pk).digest == digest_key(plaintext)


def staff_with(*codenames: str):
    user = UserFactory(username="clerk", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.mark.parametrize(
    "codenames",
    [("view_apikey",), ("view_apikey", "delete_apikey")],
    ids=["view-only", "view-and-delete"],
)
def test_staff_without_the_change_permission_cannot_rotate(client, key, codenames):
    client.force_login(staff_with(*codenames))
    before = row(key)

    for data in ({}, {"post": "yes"}):
        response = run_action(client, "rotate_keys", [key], **data)
        assert response.status_code == 403
        assert "issued-key" not in response.content.decode()

    assert row(key) == before
    assert actions_of(key) == ["key.created"]


def test_staff_without_the_change_permission_cannot_enable_or_disable(client, key):
    client.force_login(staff_with("view_apikey"))
    before = row(key)

    for action in ("enable_keys", "disable_keys"):
        assert run_action(client, action, [key]).status_code == 403

    assert row(key) == before
    assert actions_of(key) == ["key.created"]


def test_the_one_time_page_refuses_staff_who_may_not_issue_keys(client, admin_client, key):
    response = run_action(admin_client, "rotate_keys", [key], post="yes")
    client.force_login(staff_with("view_apikey"))

    assert client.get(response["Location"]).status_code == 403
    # The refusal used nothing up.
    show_issued(admin_client, response, "apikey", ISSUED_KEY)


def test_the_one_time_page_is_for_staff_only(client, member, admin_client, key):
    response = run_action(admin_client, "rotate_keys", [key], post="yes")
    issued_url = response["Location"]

    assert_sent_to_login(client, [issued_url])
    client.force_login(member)
    assert_sent_to_login(client, [issued_url])
    show_issued(admin_client, response, "apikey", ISSUED_KEY)


def test_the_one_time_page_answers_get_only(admin_client, key):
    response = run_action(admin_client, "rotate_keys", [key], post="yes")

    assert admin_client.post(response["Location"]).status_code == 405
    assert admin_client.head(response["Location"]).status_code == 405
    show_issued(admin_client, response, "apikey", ISSUED_KEY)


def test_an_unknown_or_expired_one_time_id_is_gone(admin_client, key):
    response = run_action(admin_client, "rotate_keys", [key], post="yes")
    # What the cache does after SHOW_ONCE_SECONDS.
    cache.clear()

    assert_gone(admin_client, response["Location"], GONE_KEY, [])
    assert_gone(admin_client, url("keys_apikey_issued", "not-an-id"), GONE_KEY, [])


def test_a_token_one_time_id_does_not_open_on_the_key_page(admin_client, member):
    response = admin_client.post(url("keys_apitoken_add"), {"user": member.pk, "name": "ci"})
    once = response["Location"].rstrip("/").rsplit("/", 1)[1]

    assert_gone(admin_client, url("keys_apikey_issued", once), GONE_KEY, [])


# --- add a key ------------------------------------------------------------------------------


def add_data(team: Team, owner, group: Group, **overrides) -> dict:
    data = {
        "team": team.pk,
        "owner": owner.pk,
        "name": "laptop",
        "group": group.pk,
        "status": "enabled",
        "allowed_ips": "203.0.113.7\n2001:db8::/32",
        "quota_limit_usd": "25",
        "rate_limit": "60/m",
        "expires_at_0": "",
        "expires_at_1": "",
        "daily_limit_usd": "",
        "weekly_limit_usd": "",
        "monthly_limit_usd": "",
        "max_concurrency": "",
    }
    data.update(overrides)
    return data


def test_add_creates_the_key_through_the_service_and_shows_it_once(
    admin_client, admin_user, team, member, group, caplog
):
    response = admin_client.post(url("keys_apikey_add"), add_data(team, member, group))

    page, (plaintext,) = show_issued(admin_client, response, "apikey", ISSUED_KEY)
    key = ApiKey.objects.get()
    assert key.digest == digest_key(plaintext)
    assert (key.team, key.owner, key.group, key.name) == (team, member, group, "laptop")
    assert key.allowed_ips == ["203.0.113.7", "2001:db8::/32"]
    assert key.quota_limit_usd == Decimal("25")
    assert key.rate_limit == "60/m"
    assert key.created_by == admin_user
    event = AuditEvent.objects.get(key=key)
    assert (event.action, event.actor) == ("key.created", admin_user)
    history = LogEntry.objects.get()
    assert history.object_id == str(key.pk)
    assert plaintext not in f"{history.object_repr} {history.change_message}"
    assert_not_kept(admin_client, response, page, plaintext)
    assert plaintext not in caplog.text


@pytest.mark.parametrize("button", ["_save", "_addanother", "_continue"])
def test_a_reload_after_add_shows_the_key_is_gone_and_creates_nothing(
    admin_client, team, member, group, button
):
    response = admin_client.post(
        url("keys_apikey_add"), {**add_data(team, member, group), button: "Save"}
    )
    _, plaintexts = show_issued(admin_client, response, "apikey", ISSUED_KEY)
    created = list(ApiKey.objects.values_list("pk", "digest"))

    assert_gone(admin_client, response["Location"], GONE_KEY, plaintexts)

    assert list(ApiKey.objects.values_list("pk", "digest")) == created
    assert AuditEvent.objects.filter(action="key.created").count() == 1
    assert LogEntry.objects.count() == 1


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"allowed_ips": "10.0.0.300"},
            "allowed_ips",
            "“10.0.0.300” is not a valid IPv4 or IPv6 address or CIDR range "
            "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32).",
        ),
        (
            {"allowed_ips": "\n".join(distinct_ips(1001))},
            "allowed_ips",
            "IP restriction can hold at most 1,000 addresses or ranges; this one has 1,001.",
        ),
        (
            {"quota_limit_usd": "-1"},
            "quota_limit_usd",
            "Quota limit cannot be negative. Use 0 for unlimited.",
        ),
        ({"rate_limit": "0/m"}, "rate_limit", RATE_LIMIT_MESSAGE),
        ({"name": ""}, "name", "Name is required."),
    ],
)
def test_add_with_bad_input_shows_the_message_and_writes_nothing(
    admin_client, team, member, group, overrides, field, message
):
    response = admin_client.post(url("keys_apikey_add"), add_data(team, member, group, **overrides))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()
    assert not ISSUED_KEY.search(response.content.decode())


def test_add_with_budgets_stores_them(admin_client, team, member, group):
    response = admin_client.post(
        url("keys_apikey_add"),
        add_data(
            team,
            member,
            group,
            daily_limit_usd="5",
            weekly_limit_usd="20.50",
            monthly_limit_usd="60",
            max_concurrency="3",
        ),
    )

    assert response.status_code == 303  # to the page that shows the new key once
    key = ApiKey.objects.get()
    assert (
        key.daily_limit_usd,
        key.weekly_limit_usd,
        key.monthly_limit_usd,
        key.max_concurrency,
    ) == (Decimal("5"), Decimal("20.50"), Decimal("60"), 3)
    event = AuditEvent.objects.get(key=key)
    assert {field: event.changes[field] for field in BUDGET_FIELDS} == {
        "daily_limit_usd": [None, "5"],
        "weekly_limit_usd": [None, "20.5"],
        "monthly_limit_usd": [None, "60"],
        "max_concurrency": [None, 3],
    }


BUDGET_FIELDS = ("daily_limit_usd", "weekly_limit_usd", "monthly_limit_usd", "max_concurrency")
BAD_BUDGETS = [
    (
        {"daily_limit_usd": "-1"},
        "daily_limit_usd",
        "Daily limit cannot be negative. Use 0 for no daily limit.",
    ),
    (
        {"weekly_limit_usd": "1.234"},
        "weekly_limit_usd",
        "Enter the weekly limit in US dollars with at most 2 decimal places (whole cents), "
        "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no weekly limit.",
    ),
    (
        {"monthly_limit_usd": "lots"},
        "monthly_limit_usd",
        "Enter the monthly limit in US dollars with at most 2 decimal places (whole cents), "
        "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no monthly limit.",
    ),
    (
        {"max_concurrency": "10001"},
        "max_concurrency",
        "Enter max concurrent requests as a whole number, e.g. 4, up to 10,000; 0 means unlimited.",
    ),
    (
        {"max_concurrency": "1.5"},
        "max_concurrency",
        "Enter max concurrent requests as a whole number, e.g. 4, up to 10,000; 0 means unlimited.",
    ),
    (
        {"max_concurrency": "-1"},
        "max_concurrency",
        "Max concurrent requests cannot be negative. Use 0 for unlimited.",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "message"), BAD_BUDGETS)
def test_add_with_a_bad_budget_shows_the_message_and_writes_nothing(
    admin_client, team, member, group, overrides, field, message
):
    response = admin_client.post(url("keys_apikey_add"), add_data(team, member, group, **overrides))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


@pytest.mark.parametrize(("overrides", "field", "message"), BAD_BUDGETS)
def test_change_with_a_bad_budget_shows_the_message_and_writes_nothing(
    admin_client, key, overrides, field, message
):
    before = row(key)

    response = admin_client.post(
        url("keys_apikey_change", key.pk), key_change_data(key, **overrides)
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert row(key) == before
    assert actions_of(key) == ["key.created"]


def test_the_budgets_are_a_fieldset_of_their_own(admin_client, key):
    for page in (url("keys_apikey_add"), url("keys_apikey_change", key.pk)):
        response = admin_client.get(page)
        fieldsets = {
            fieldset.name: [line.fields for line in fieldset]
            for fieldset in response.context["adminform"]
        }
        assert fieldsets["Budgets"] == [[field] for field in BUDGET_FIELDS], page


def test_change_sets_and_clears_budgets_with_one_event(
    admin_client, admin_user, team, member, group
):
    key = make_key(team=team, owner=member, group=group, daily_limit_usd="5", max_concurrency=2).key
    key.refresh_from_db()

    response = admin_client.post(
        url("keys_apikey_change", key.pk),
        key_change_data(key, daily_limit_usd="0", monthly_limit_usd="100", max_concurrency="8"),
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.daily_limit_usd, key.monthly_limit_usd, key.max_concurrency) == (
        0,
        Decimal("100"),
        8,
    )
    event = AuditEvent.objects.get(key=key, action="key.updated")
    assert event.actor == admin_user
    assert event.changes == {
        "daily_limit_usd": ["5", "0"],
        "monthly_limit_usd": ["0", "100"],
        "max_concurrency": [2, 8],
    }


def test_add_for_an_owner_outside_the_team_is_refused(admin_client, team, outsider, group):
    response = admin_client.post(url("keys_apikey_add"), add_data(team, outsider, group))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "owner": ["outsider is not a member of team Acme."]
    }
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


# --- change a key ---------------------------------------------------------------------------


def test_change_saves_through_the_service_with_one_event(admin_client, admin_user, key):
    response = admin_client.post(
        url("keys_apikey_change", key.pk),
        key_change_data(key, name="renamed", allowed_ips="10.0.0.1, 2001:db8::/32"),
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.name == "renamed"
    assert key.allowed_ips == ["10.0.0.1", "2001:db8::/32"]
    event = AuditEvent.objects.get(key=key, action="key.updated")
    assert event.actor == admin_user
    assert event.changes == {
        "name": ["claude-code-main", "renamed"],
        "allowed_ips": [[], ["10.0.0.1", "2001:db8::/32"]],
    }


def test_change_form_shows_ips_one_per_line(admin_client, team, member, group):
    key = make_key(team=team, owner=member, group=group, allowed_ips="10.0.0.1,10.0.1.0/24").key

    response = admin_client.get(url("keys_apikey_change", key.pk))

    assert response.context["adminform"].form["allowed_ips"].value() == "10.0.0.1\n10.0.1.0/24"


def test_saving_unchanged_form_writes_nothing(admin_client, team, member, group):
    # An expiry with microseconds, which the form's date widget cannot show back.
    expires = timezone.now() + timedelta(days=30, microseconds=123456)
    key = make_key(
        team=team,
        owner=member,
        group=group,
        expires_at=expires,
        allowed_ips="10.0.0.1 10.0.1.0/24",
        quota_limit_usd="25",
    ).key
    before = row(key)

    response = admin_client.post(
        url("keys_apikey_change", key.pk),
        # As a browser sends the textarea back: with CRLF line breaks.
        key_change_data(key, allowed_ips="10.0.0.1\r\n10.0.1.0/24"),
    )

    assert response.status_code == 302
    assert row(key) == before
    assert actions_of(key) == ["key.created"]
    assert LogEntry.objects.get().get_change_message() == "No fields changed."


def test_renaming_an_expired_key_keeps_its_expiry(admin_client, key):
    expired_at = timezone.now() - timedelta(days=2)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=expired_at, status="disabled")
    key.refresh_from_db()

    response = admin_client.post(
        url("keys_apikey_change", key.pk), key_change_data(key, name="old one")
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.expires_at) == ("old one", expired_at)
    assert AuditEvent.objects.get(key=key, action="key.updated").changes == {
        "name": ["claude-code-main", "old one"]
    }


def future(days: int) -> dict:
    moment = timezone.localtime() + timedelta(days=days)
    return {"expires_at_0": moment.date().isoformat(), "expires_at_1": "12:00:00"}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"allowed_ips": "10.0.0.1\nnot-an-ip"},
            "allowed_ips",
            "“not-an-ip” is not a valid IPv4 or IPv6 address or CIDR range "
            "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32).",
        ),
        (
            {"allowed_ips": "10.0.0.1/8"},
            "allowed_ips",
            "“10.0.0.1/8” is not a valid IPv4 or IPv6 address or CIDR range "
            "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32).",
        ),
        (
            {"quota_limit_usd": "-0.01"},
            "quota_limit_usd",
            "Quota limit cannot be negative. Use 0 for unlimited.",
        ),
        ({"quota_limit_usd": "ten"}, "quota_limit_usd", QUOTA_MESSAGE),
        ({"quota_limit_usd": "1e-400"}, "quota_limit_usd", QUOTA_MESSAGE),
        (
            {"quota_limit_usd": "0.001"},
            "quota_limit_usd",
            "A quota limit below 0.01 US dollars would be stored as 0, which means unlimited. "
            "Enter at least 0.01, or 0 for unlimited.",
        ),
        ({"quota_limit_usd": "1.234"}, "quota_limit_usd", QUOTA_MESSAGE),
        (
            {"quota_limit_usd": "0.000001"},
            "quota_limit_usd",
            "A quota limit below 0.01 US dollars would be stored as 0, which means unlimited. "
            "Enter at least 0.01, or 0 for unlimited.",
        ),
        ({"quota_limit_usd": "1e400"}, "quota_limit_usd", QUOTA_MESSAGE),
        ({"quota_limit_usd": "1" * 30}, "quota_limit_usd", QUOTA_MESSAGE),
        ({"rate_limit": "60/x"}, "rate_limit", RATE_LIMIT_MESSAGE),
        ({"rate_limit": "0/s"}, "rate_limit", RATE_LIMIT_MESSAGE),
        ({"rate_limit": "fast"}, "rate_limit", RATE_LIMIT_MESSAGE),
        ({"name": "   "}, "name", "Name is required."),
        ({"name": "x" * 101}, "name", "Name can be at most 100 characters."),
        (
            future(-1),
            "expires_at",
            "Key expiration must be in the future. Leave it empty for never.",
        ),
    ],
)
def test_change_with_bad_input_shows_the_message_and_writes_nothing(
    admin_client, key, overrides, field, message
):
    before = row(key)

    response = admin_client.post(
        url("keys_apikey_change", key.pk), key_change_data(key, **overrides)
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert message in response.content.decode().replace("&quot;", '"')
    assert row(key) == before
    assert actions_of(key) == ["key.created"]
    assert not LogEntry.objects.exists()


def test_change_reports_every_bad_field_at_once(admin_client, key):
    response = admin_client.post(
        url("keys_apikey_change", key.pk),
        key_change_data(key, allowed_ips="nope", quota_limit_usd="-1", rate_limit="1/y"),
    )

    assert set(response.context["adminform"].form.errors) == {
        "allowed_ips",
        "quota_limit_usd",
        "rate_limit",
    }
    assert actions_of(key) == ["key.created"]


def test_change_to_an_inactive_group_is_refused(admin_client, key):
    inactive = GroupFactory(name="Retired", is_active=False)
    before = row(key)

    response = admin_client.post(
        url("keys_apikey_change", key.pk), key_change_data(key, group=inactive.pk)
    )

    assert response.context["adminform"].form.errors == {
        "group": ["Group “Retired” is not active."]
    }
    assert row(key) == before
    assert actions_of(key) == ["key.created"]


def test_change_to_a_group_the_team_may_not_use_is_refused(admin_client, team, group, key):
    team.allowed_groups.set([group])
    elsewhere = GroupFactory(name="Elsewhere")
    before = row(key)

    response = admin_client.post(
        url("keys_apikey_change", key.pk), key_change_data(key, group=elsewhere.pk)
    )

    assert response.context["adminform"].form.errors == {
        "group": ["Group “Elsewhere” is not available to team Acme."]
    }
    assert row(key) == before


def test_enabling_an_expired_key_in_the_form_is_refused(admin_client, key):
    expired_at = timezone.now() - timedelta(days=2)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=expired_at, status="disabled")
    key.refresh_from_db()
    before = row(key)

    response = admin_client.post(
        url("keys_apikey_change", key.pk), key_change_data(key, status="enabled")
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "expires_at": [
            f"This key expired on {timezone.localtime(expired_at):%Y-%m-%d %H:%M %Z}. "
            "Clear or extend Key expiration to enable it."
        ]
    }
    assert row(key) == before
    assert actions_of(key) == ["key.created"]


def test_changing_only_the_status_records_a_disabled_event(admin_client, admin_user, key):
    response = admin_client.post(
        url("keys_apikey_change", key.pk), key_change_data(key, status="disabled")
    )

    assert response.status_code == 302
    event = AuditEvent.objects.get(key=key, action="key.disabled")
    assert (event.actor, event.changes) == (admin_user, {"status": ["enabled", "disabled"]})
    assert actions_of(key) == ["key.created", "key.disabled"]


def test_team_and_owner_cannot_be_changed(admin_client, key, other_team, outsider):
    admin_client.post(
        url("keys_apikey_change", key.pk),
        key_change_data(key, team=other_team.pk, owner=outsider.pk, name="renamed"),
    )

    key.refresh_from_db()
    assert (key.name, key.team.slug, key.owner.username) == ("renamed", "acme", "member")


# --- delete ---------------------------------------------------------------------------------


def test_delete_writes_a_deleted_event_that_outlives_the_key(admin_client, admin_user, key):
    response = admin_client.post(url("keys_apikey_delete", key.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not ApiKey.objects.filter(pk=key.pk).exists()
    event = AuditEvent.objects.get(action="key.deleted")
    assert (event.key, event.subject_label, event.subject_prefix) == (None, key.name, key.prefix)
    assert event.actor == admin_user
    assert AuditEvent.objects.filter(subject_prefix=key.prefix).count() == 2


def test_bulk_delete_goes_through_the_service_for_each_key(
    admin_client, admin_user, team, member, group, key
):
    second = make_key(team=team, owner=member, group=group, name="second").key

    confirm = run_action(admin_client, "delete_selected", [key, second])
    assert confirm.status_code == 200
    assert ApiKey.objects.count() == 2

    response = run_action(admin_client, "delete_selected", [key, second], post="yes")

    assert response.status_code == 302
    assert not ApiKey.objects.exists()
    deleted = AuditEvent.objects.filter(action="key.deleted")
    assert sorted(deleted.values_list("subject_label", flat=True)) == ["claude-code-main", "second"]
    assert {event.actor for event in deleted} == {admin_user}


def test_delete_drops_the_cached_key_state(admin_client, key, django_capture_on_commit_callbacks):
    cache.set(snapshot_cache_key(key.digest), "cached")

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url("keys_apikey_delete", key.pk), {"post": "yes"})

    assert cache.get(snapshot_cache_key(key.digest)) is None


# --- teams and memberships ------------------------------------------------------------------


def team_data(team: Team, rows: list[dict], **overrides) -> dict:
    """The team change form; `rows` are membership rows: existing ones carry their `id`."""
    existing = [r for r in rows if "id" in r]
    data = {
        "name": team.name,
        "slug": team.slug,
        "allowed_groups": [group.pk for group in team.allowed_groups.all()],
        # A checked box: a browser sends nothing for an unchecked one.
        "members_can_create_keys": "on" if team.members_can_create_keys else "",
        # As the form shows them: an empty budget is none; the zone is chosen from a list.
        "monthly_budget_usd": format(team.monthly_budget_usd, "f")
        if team.monthly_budget_usd
        else "",
        "time_zone": team.time_zone,
        "memberships-TOTAL_FORMS": len(rows),
        "memberships-INITIAL_FORMS": len(existing),
        "memberships-MIN_NUM_FORMS": 0,
        "memberships-MAX_NUM_FORMS": 1000,
    }
    for index, membership_row in enumerate(rows):
        for field, value in membership_row.items():
            data[f"memberships-{index}-{field}"] = value
        data[f"memberships-{index}-team"] = team.pk
    data.update(overrides)
    return data


def membership_row(membership: Membership, **changes) -> dict:
    return {"id": membership.pk, "role": membership.role, **changes}


def test_removing_a_member_disables_their_keys(
    admin_client, admin_user, team, lead, member, group, key
):
    disabled_already = make_key(team=team, owner=member, group=group, name="old").key
    ApiKey.objects.filter(pk=disabled_already.pk).update(status=ApiKey.Status.DISABLED)
    lead_row = Membership.objects.get(user=lead)
    member_row = Membership.objects.get(user=member)

    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(team, [membership_row(lead_row), membership_row(member_row, DELETE="on")]),
    )

    assert response.status_code == 302
    assert list(Membership.objects.filter(team=team).values_list("user__username", flat=True)) == [
        "lead"
    ]
    key.refresh_from_db()
    assert key.status == ApiKey.Status.DISABLED
    event = AuditEvent.objects.get(key=key, action="key.disabled")
    assert event.actor == admin_user
    assert actions_of(disabled_already) == ["key.created"]
    assert page_messages(admin_client.get(response["Location"]))[0] == (
        "Removed member from Acme; disabled 1 key they owned in the team."
    )
    assert "Deleted membership" in LogEntry.objects.get().get_change_message()


def test_removing_the_last_lead_is_refused(admin_client, team, lead, member, key):
    lead_row = Membership.objects.get(user=lead)
    member_row = Membership.objects.get(user=member)

    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(team, [membership_row(lead_row, DELETE="on"), membership_row(member_row)]),
    )

    assert response.status_code == 200
    message = "Cannot remove the last lead of Acme: add another first."
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.non_form_errors() == [message]
    assert message in response.content.decode()
    assert Membership.objects.filter(team=team).count() == 2
    assert actions_of(key) == ["key.created"]
    assert not LogEntry.objects.exists()


def test_demoting_the_last_lead_is_refused(admin_client, team, lead, member):
    lead_row = Membership.objects.get(user=lead)

    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(
            team,
            [
                membership_row(lead_row, role="member"),
                membership_row(Membership.objects.get(user=member)),
            ],
        ),
    )

    assert response.status_code == 200
    assert response.context["inline_admin_formsets"][0].formset.non_form_errors() == [
        "Cannot change the role of the last lead of Acme: add another first."
    ]
    lead_row.refresh_from_db()
    assert lead_row.role == Membership.Role.LEAD


def test_handing_over_the_lead_role_in_one_save(admin_client, team, lead, member):
    lead_row = Membership.objects.get(user=lead)
    member_row = Membership.objects.get(user=member)

    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(
            team,
            [membership_row(lead_row, role="member"), membership_row(member_row, role="lead")],
        ),
    )

    assert response.status_code == 302
    roles = dict(Membership.objects.filter(team=team).values_list("user__username", "role"))
    assert roles == {"lead": "member", "member": "lead"}


def test_adding_a_member_through_the_inline(admin_client, team, lead):
    newcomer = UserFactory(username="newcomer")
    lead_row = Membership.objects.get(user=lead)

    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(team, [membership_row(lead_row), {"user": newcomer.pk, "role": "member"}]),
    )

    assert response.status_code == 302
    assert Membership.objects.get(team=team, user=newcomer).role == Membership.Role.MEMBER
    assert "Added membership" in LogEntry.objects.get().get_change_message()


def test_an_existing_membership_cannot_be_moved_to_another_user(admin_client, team, lead, member):
    stranger = UserFactory(username="stranger")
    lead_row = Membership.objects.get(user=lead)
    member_row = Membership.objects.get(user=member)

    admin_client.post(
        url("keys_team_change", team.pk),
        team_data(team, [membership_row(lead_row), membership_row(member_row, user=stranger.pk)]),
    )

    member_row.refresh_from_db()
    assert member_row.user == member


def test_creating_a_team_with_members(admin_client, lead):
    response = admin_client.post(
        url("keys_team_add"),
        {
            "name": "New team",
            "slug": "new-team",
            "members_can_create_keys": "on",
            "time_zone": "UTC",
            "memberships-TOTAL_FORMS": 1,
            "memberships-INITIAL_FORMS": 0,
            "memberships-MIN_NUM_FORMS": 0,
            "memberships-MAX_NUM_FORMS": 1000,
            "memberships-0-user": lead.pk,
            "memberships-0-role": "lead",
        },
    )

    assert response.status_code == 302
    team = Team.objects.get(slug="new-team")
    assert list(team.memberships.values_list("user__username", "role")) == [("lead", "lead")]


def test_allowed_groups_go_through_the_service(
    admin_client, team, lead, group, key, django_capture_on_commit_callbacks
):
    other = GroupFactory(name="Other")
    cache.set(snapshot_cache_key(key.digest), "cached")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url("keys_team_change", team.pk),
            team_data(
                team,
                [membership_row(Membership.objects.get(user=lead))],
                allowed_groups=[group.pk, other.pk],
            ),
        )

    assert response.status_code == 302
    assert set(team.allowed_groups.all()) == {group, other}
    assert cache.get(snapshot_cache_key(key.digest)) is None


def test_a_team_with_keys_cannot_be_deleted(admin_client, team, key):
    assert admin_client.get(url("keys_team_delete", team.pk)).status_code == 403
    assert admin_client.post(url("keys_team_delete", team.pk), {"post": "yes"}).status_code == 403
    assert Team.objects.filter(pk=team.pk).exists()


def test_a_team_without_keys_can_be_deleted(admin_client):
    empty = TeamFactory(slug="empty")

    response = admin_client.post(url("keys_team_delete", empty.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not Team.objects.filter(pk=empty.pk).exists()


# --- groups ---------------------------------------------------------------------------------


def group_form(**overrides) -> GroupAdminForm:
    data = {
        "name": "Budget",
        "description": "",
        "multiplier": "0.25",
        "models": "",
        "is_active": "on",
    }
    data.update(overrides)
    return GroupAdminForm(data=data)


@pytest.mark.parametrize(
    ("text", "patterns"),
    [
        ("claude-*\ngpt-4o", ["claude-*", "gpt-4o"]),
        ("claude-*, gpt-4o,gpt-4o-mini", ["claude-*", "gpt-4o", "gpt-4o-mini"]),
        ("  claude-*  \r\n\r\n,claude-*\n", ["claude-*"]),
        ("", []),
    ],
)
def test_group_models_are_edited_as_text(db, text, patterns):
    form = group_form(models=text)

    assert form.is_valid(), form.errors
    assert form.cleaned_data["models"] == patterns


def test_group_models_render_one_per_line(group):
    group.models = ["claude-*", "gpt-4o"]

    form = GroupAdminForm(instance=group)

    assert form["models"].value() == "claude-*\ngpt-4o"


@pytest.mark.parametrize("multiplier", ["0", "-1"])
def test_group_multiplier_must_be_positive(db, multiplier):
    form = group_form(multiplier=multiplier)

    assert form.errors == {
        "multiplier": ["The multiplier must be greater than 0 (for example 0.25 or 1.0)."]
    }


# --- the audit trail ------------------------------------------------------------------------


def test_key_events_are_read_only(admin_client, key):
    event = AuditEvent.objects.get(key=key)

    assert admin_client.get(url("keys_auditevent_add")).status_code == 403
    view = admin_client.get(url("keys_auditevent_change", event.pk))
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    assert (
        admin_client.post(
            url("keys_auditevent_change", event.pk), {"action": "deleted"}
        ).status_code
        == 403
    )
    assert (
        admin_client.post(url("keys_auditevent_delete", event.pk), {"post": "yes"}).status_code
        == 403
    )
    changelist = admin_client.get(url("keys_auditevent_changelist"))
    assert "delete_selected" not in changelist.content.decode()
    event.refresh_from_db()
    assert event.action == "key.created"
    assert AuditEvent.objects.filter(subject_type="key").count() == 1


# --- REST API tokens ------------------------------------------------------------------------


def test_api_tokens_cannot_be_changed_or_deleted(admin_client, token):
    before = ApiToken.objects.filter(pk=token.pk).values().get()

    view = admin_client.get(url("keys_apitoken_change", token.pk))
    assert 'name="_save"' not in view.content.decode()
    changed = admin_client.post(url("keys_apitoken_change", token.pk), {"name": "renamed"})
    assert changed.status_code == 403
    deleted = admin_client.post(url("keys_apitoken_delete", token.pk), {"post": "yes"})
    assert deleted.status_code == 403
    assert ApiToken.objects.filter(pk=token.pk).values().get() == before


def test_api_token_list_and_page_show_who_created_each_token_read_only(admin_client, member):
    alice = UserFactory(username="alice", is_staff=True)
    by_staff = services.api_token_create(user=member, name="by-staff", actor=alice).token
    legacy = services.api_token_create(user=member, name="legacy", actor=None).token

    changelist = admin_client.get(url("keys_apitoken_changelist"))

    page = changelist.content.decode()
    assert "Created by</a></div>" in page
    result_rows = {
        token.name: re.search(
            rf"<tr>.*?/keys/apitoken/{token.pk}/change/.*?</tr>", page, flags=re.DOTALL
        ).group()
        for token in (by_staff, legacy)
    }
    assert '<td class="field-created_by_display">alice</td>' in result_rows["by-staff"]
    assert '<td class="field-created_by_display">—</td>' in result_rows["legacy"]

    change = admin_client.get(url("keys_apitoken_change", by_staff.pk))
    form_page = change.content.decode()
    assert "<label>Created by:</label>" in form_page
    assert '<div class="readonly">alice</div>' in form_page
    assert "created_by" not in change.context["adminform"].form.fields
    legacy_page = admin_client.get(url("keys_apitoken_change", legacy.pk)).content.decode()
    assert '<div class="readonly">—</div>' in legacy_page


def test_revoke_action_revokes_through_the_service(admin_client, member, token):
    already = services.api_token_create(user=member, name="old", actor=member).token
    services.api_token_revoke(token=already, actor=None)
    revoked_at = ApiToken.objects.get(pk=already.pk).revoked_at

    response = admin_client.post(
        url("keys_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk, already.pk]},
    )

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert ApiToken.objects.get(pk=already.pk).revoked_at == revoked_at
    assert page_messages(admin_client.get(response["Location"])) == ["Revoked 1 token."]


# --- add an API token -----------------------------------------------------------------------


def test_add_token_form_asks_for_user_and_name_only(admin_client):
    response = admin_client.get(url("keys_apitoken_add"))

    assert response.status_code == 200
    assert list(response.context["adminform"].form.fields) == ["user", "name"]
    page = response.content.decode()
    # The answer to any save is the page with the plaintext, so only the one button is offered.
    assert 'name="_save"' in page
    assert 'name="_addanother"' not in page
    assert 'name="_continue"' not in page


def test_add_token_creates_it_through_the_service_and_shows_it_once(admin_client, member, caplog):
    response = admin_client.post(url("keys_apitoken_add"), {"user": member.pk, "name": " ci "})

    page, (plaintext,) = show_issued(admin_client, response, "apitoken", ISSUED_TOKEN)
    content = page.content.decode()
    assert "Copy this token now." in content
    assert "If it is lost, revoke it and create a new one." in content
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.revoked_at) == (member, "ci", None)
    assert token.created_by.username == "admin"
    assert token.digest == digest_key(plaintext)
    assert plaintext not in {str(value) for value in ApiToken.objects.values().get().values()}
    history = LogEntry.objects.get()
    assert history.object_id == str(token.pk)
    assert plaintext not in f"{history.object_repr} {history.change_message}"
    assert_not_kept(admin_client, response, page, plaintext)
    assert plaintext not in caplog.text
    # The token works for its user, not for the staff member who made it.
    me = admin_client.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}"})
    assert me.status_code == 200
    assert me.json()["username"] == "member"


def test_a_reload_after_adding_a_token_shows_it_is_gone_and_creates_nothing(admin_client, member):
    response = admin_client.post(url("keys_apitoken_add"), {"user": member.pk, "name": "ci"})
    _, plaintexts = show_issued(admin_client, response, "apitoken", ISSUED_TOKEN)

    assert_gone(admin_client, response["Location"], GONE_TOKEN, plaintexts)

    assert ApiToken.objects.count() == 1
    assert LogEntry.objects.count() == 1


def test_staff_who_may_only_view_tokens_cannot_revoke_or_open_new_ones(
    client, admin_client, member, token
):
    response = admin_client.post(url("keys_apitoken_add"), {"user": member.pk, "name": "ci2"})
    client.force_login(staff_with("view_apitoken"))

    revoke = client.post(
        url("keys_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )

    assert revoke.status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None
    assert client.get(response["Location"]).status_code == 403


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"name": ""}, {"name": ["Name is required."]}),
        ({"name": "   "}, {"name": ["Name is required."]}),
        ({"name": "x" * 101}, {"name": ["Name can be at most 100 characters."]}),
        ({"name": "bad\x00name"}, {"name": ["Null characters are not allowed."]}),
        ({"user": ""}, {"user": ["This field is required."]}),
        (
            {"user": "999999"},
            {"user": ["Select a valid choice. That choice is not one of the available choices."]},
        ),
    ],
    ids=["empty", "spaces", "too-long", "null-character", "no-user", "unknown-user"],
)
def test_add_token_with_bad_input_shows_the_message_and_writes_nothing(
    admin_client, member, data, errors
):
    response = admin_client.post(
        url("keys_apitoken_add"), {"user": member.pk, "name": "ci", **data}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == errors
    assert not ApiToken.objects.exists()
    assert not LogEntry.objects.exists()
    assert not ISSUED_TOKEN.search(response.content.decode())


def test_staff_without_the_add_permission_cannot_add_tokens(client, member):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    client.force_login(viewer)

    page = client.get(url("keys_apitoken_add"))
    posted = client.post(url("keys_apitoken_add"), {"user": member.pk, "name": "ci"})

    assert page.status_code == 403
    assert posted.status_code == 403
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize(
    ("page", "title", "changelist", "models"),
    [
        pytest.param("key", "API key created", "keys_apikey_changelist", "API keys", id="add-key"),
        pytest.param(
            "token", "API token created", "keys_apitoken_changelist", "API tokens", id="add-token"
        ),
        pytest.param(
            "rotate", "Rotate API keys", "keys_apikey_changelist", "API keys", id="rotate-confirm"
        ),
        pytest.param(
            "rotated", "API keys rotated", "keys_apikey_changelist", "API keys", id="rotated"
        ),
        pytest.param(
            "gone",
            "This secret was shown once.",
            "keys_apikey_changelist",
            "API keys",
            id="gone",
        ),
    ],
)
def test_the_key_and_token_pages_have_their_title_and_a_way_back(
    admin_client, team, member, group, key, page, title, changelist, models
):
    if page == "key":
        posted = admin_client.post(url("keys_apikey_add"), add_data(team, member, group))
        response = admin_client.get(posted["Location"])
    elif page == "token":
        posted = admin_client.post(url("keys_apitoken_add"), {"user": member.pk, "name": "ci"})
        response = admin_client.get(posted["Location"])
    elif page == "rotated":
        posted = run_action(admin_client, "rotate_keys", [key], post="yes")
        response = admin_client.get(posted["Location"])
    elif page == "gone":
        response = admin_client.get(url("keys_apikey_issued", "not-an-id"))
    else:
        response = run_action(admin_client, "rotate_keys", [key])

    assert response.status_code == (410 if page == "gone" else 200)
    assert response.context["title"] == title
    assert (
        f'&rsaquo; <a href="{url(changelist)}">{models}</a>\n&rsaquo; {title}\n</div>'
        in response.content.decode()
    )


# --- validation writes nothing; each save is one audited action ----------------------------


def test_an_invalid_key_change_runs_no_write_service(admin_client, key, monkeypatch):
    """The admin validates with api_key_validate: the write service is never run to be rolled
    back, so an invalid change calls it zero times and a valid one once."""
    calls = []
    update = services.api_key_update
    monkeypatch.setattr(
        services, "api_key_update", lambda **kwargs: calls.append(kwargs) or update(**kwargs)
    )
    before, rows_before = row(key), audit_rows()

    refused = admin_client.post(
        url("keys_apikey_change", key.pk), key_change_data(key, rate_limit="0/m")
    )

    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors == {"rate_limit": [RATE_LIMIT_MESSAGE]}
    assert calls == []
    assert row(key) == before
    assert audit_rows() == rows_before

    saved = admin_client.post(url("keys_apikey_change", key.pk), key_change_data(key, name="x"))

    assert saved.status_code == 302
    assert len(calls) == 1
    assert audit_rows()[-1] == ("key.updated", "admin", "acme", "x", {"name": [key.name, "x"]})


def test_an_invalid_token_runs_no_write_service(admin_client, member, monkeypatch):
    calls = []
    monkeypatch.setattr(services, "api_token_create", lambda **kwargs: calls.append(kwargs))

    response = admin_client.post(url("keys_apitoken_add"), {"user": member.pk, "name": " "})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"name": ["Name is required."]}
    assert calls == []
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_refused_team_change_writes_no_row_at_all(admin_client, team, lead, member, key):
    """Renaming the team and removing its last lead in one save: the batch is refused before
    anything is written, the rename included."""
    rows_before = audit_rows()

    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(
            team,
            [
                membership_row(Membership.objects.get(user=lead), DELETE="on"),
                membership_row(Membership.objects.get(user=member)),
            ],
            name="Renamed",
        ),
    )

    assert response.status_code == 200
    assert Team.objects.get(pk=team.pk).name == "Acme"
    assert Membership.objects.filter(team=team).count() == 2
    assert audit_rows() == rows_before


def test_a_team_save_writes_one_row_per_action(admin_client, admin_user, team, lead, member):
    newcomer = UserFactory(username="newcomer")
    rows_before = len(audit_rows())

    response = admin_client.post(
        url("keys_team_change", team.pk),
        team_data(
            team,
            [
                membership_row(Membership.objects.get(user=lead), role="member"),
                membership_row(Membership.objects.get(user=member), DELETE="on"),
                {"user": newcomer.pk, "role": "lead"},
            ],
            name="Acme Corp",
        ),
    )

    assert response.status_code == 302
    assert audit_rows()[rows_before:] == [
        ("team.updated", "admin", "acme", "Acme Corp", {"name": ["Acme", "Acme Corp"]}),
        ("member.added", "admin", "acme", "newcomer", {"role": [None, "lead"]}),
        ("member.role_changed", "admin", "acme", "lead", {"role": ["lead", "member"]}),
        ("member.removed", "admin", "acme", "member", {"role": ["member", None]}),
    ]


def test_a_new_team_writes_team_created(admin_client):
    response = admin_client.post(
        url("keys_team_add"),
        {
            "name": "New team",
            "slug": "new-team",
            "members_can_create_keys": "on",
            "time_zone": "UTC",
            "memberships-TOTAL_FORMS": 0,
            "memberships-INITIAL_FORMS": 0,
            "memberships-MIN_NUM_FORMS": 0,
            "memberships-MAX_NUM_FORMS": 1000,
        },
    )

    assert response.status_code == 302
    assert audit_rows() == [
        (
            "team.created",
            "admin",
            "new-team",
            "New team",
            {"name": [None, "New team"], "slug": [None, "new-team"]},
        )
    ]


def test_group_saves_and_token_revocations_are_audited_with_the_staff_user(
    admin_client, member, token
):
    response = admin_client.post(
        url("keys_group_add"),
        {
            "name": "Budget",
            "description": "",
            "multiplier": "0.5",
            "models": "claude-*",
            "is_active": "on",
            "routes-TOTAL_FORMS": 0,
            "routes-INITIAL_FORMS": 0,
            "routes-MIN_NUM_FORMS": 0,
            "routes-MAX_NUM_FORMS": 1000,
        },
    )
    assert response.status_code == 302
    admin_client.post(
        url("keys_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )

    rows = audit_rows()
    # The row's changes are the service's (tests/keys/test_audit.py); here, who and what.
    assert rows[-2][:4] == ("group.created", "admin", None, "Budget")
    assert rows[-2][4]["models"] == [None, ["claude-*"]]
    token.refresh_from_db()
    assert rows[-1] == (
        "token.revoked",
        "admin",
        None,
        token.name,
        {"revoked_at": [None, token.revoked_at.isoformat()]},
    )


def test_the_audit_list_filters_by_action_team_and_actor(
    admin_client, admin_user, team, other_team, lead, outsider, group
):
    services.team_set_allowed_groups(team=team, groups=[group], actor=lead)
    services.team_set_allowed_groups(team=other_team, groups=[group], actor=outsider)
    services.group_save(group=group, actor=None)  # unchanged: no row
    changelist = url("keys_auditevent_changelist")

    def shown(params: dict) -> int:
        response = admin_client.get(changelist, params)
        assert response.status_code == 200
        return response.context["cl"].result_count

    assert shown({}) == 2
    assert shown({"team__id__exact": team.pk}) == 1
    assert shown({"actor__id__exact": outsider.pk}) == 1
    assert shown({"action__exact": "team.allowed_groups_changed"}) == 2
    assert shown({"action__exact": "key.created"}) == 0

"""The portal's pages: who may see and change what, and what each page writes.

Permission cases run for a lead, a member, a member of another team and an anonymous visitor.
Another team's anything is a 404, and the tests prove nothing changed behind it.
"""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from keys import services
from keys.models import ApiKey, AuditEvent, Membership, digest_key
from keys.templatetags.portal import audit_value, field_label, local_time, usd

from ..billing.factories import UsageEventFactory
from ..factories import GroupFactory, MembershipFactory, UserFactory, grant, make_key

PASSWORD = "pw-for-tests-1"


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def lead_key(team, lead, group):
    return make_key(team=team, owner=lead, group=group, name="lead-key").key


@pytest.fixture
def member_key(issued):
    return issued.key


@pytest.fixture
def second_member(team):
    return MembershipFactory(team=team, user__username="second").user


@pytest.fixture
def elsewhere_key(other_team, outsider, group):
    return make_key(team=other_team, owner=outsider, group=group, name="globex-key").key


def url(name: str, team, key=None, **kwargs) -> str:
    args = [team.slug] if key is None else [team.slug, key.pk]
    return reverse(name, args=args, kwargs=kwargs or None)


def logged_in(client, user):
    client.force_login(user)
    return client


def key_state(key: ApiKey) -> dict:
    """Everything about a key a write could change, read fresh from the database."""
    row = ApiKey.objects.filter(pk=key.pk).values().first()
    return {**row, "events": AuditEvent.objects.filter(key_id=key.pk).count()}


def form_data(key: ApiKey | None = None, **overrides) -> dict:
    """What the edit page's form posts for `key` untouched, with `overrides`."""
    data = {
        "name": "",
        "group": "",
        "status": "enabled",
        "allowed_ips": "",
        "quota_limit_usd": "",
        "rate_limit": "",
        "expires_at": "",
        "daily_limit_usd": "",
        "weekly_limit_usd": "",
        "monthly_limit_usd": "",
        "max_concurrency": "",
    }
    if key is not None:
        data.update(
            name=key.name,
            group=str(key.group_id),
            status=key.status,
            allowed_ips="\n".join(key.allowed_ips),
            quota_limit_usd="" if not key.quota_limit_usd else str(key.quota_limit_usd),
            rate_limit=key.rate_limit,
            expires_at=(
                timezone.localtime(key.expires_at).strftime("%Y-%m-%dT%H:%M")
                if key.expires_at
                else ""
            ),
            daily_limit_usd="" if not key.daily_limit_usd else str(key.daily_limit_usd),
            weekly_limit_usd="" if not key.weekly_limit_usd else str(key.weekly_limit_usd),
            monthly_limit_usd="" if not key.monthly_limit_usd else str(key.monthly_limit_usd),
            max_concurrency="" if not key.max_concurrency else str(key.max_concurrency),
        )
    data.update(overrides)
    return data


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- anonymous visitors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "with_key"),
    [
        ("keys:list", False),
        ("keys:create", False),
        ("keys:detail", True),
        ("keys:edit", True),
        ("keys:rotate", True),
        ("keys:delete", True),
        ("keys:team", False),
        ("keys:invitation_create", False),
        ("billing:team_usage", False),
        ("billing:key_usage", True),
    ],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_visitors_are_sent_to_sign_in_and_nothing_changes(
    client, team, member_key, name, with_key, method
):
    before = key_state(member_key)
    target = url(name, team, member_key if with_key else None)
    if method == "get":
        response = client.get(target)
    else:
        response = client.post(target, form_data(member_key, status="disabled"))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('keys:login')}?next={target}"
    assert key_state(member_key) == before


def test_home_sends_anonymous_visitors_to_sign_in(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


# --- signing in and out ---------------------------------------------------------------------


def sign_in(client, username, password=PASSWORD, ip="198.51.100.7"):
    return client.post(
        reverse("keys:login"), {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def signed_in_user_id(client):
    return client.session.get("_auth_user_id")


def test_login_page_renders(client, db):
    response = client.get(reverse("keys:login"))
    assert response.status_code == 200
    assert b'<label class="field__label" for="id_username">Username</label>' in response.content


def test_sign_in_lands_on_the_key_list_of_the_first_team(client, member):
    response = sign_in(client, "member")
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert signed_in_user_id(client) == str(member.pk)
    assert client.get("/")["Location"] == "/t/acme/keys/"


def test_wrong_password_is_refused_with_django_message(client, member):
    response = sign_in(client, "member", "wrong")
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "Please enter a correct username and password. Note that both fields may be case-sensitive."
    ]
    assert signed_in_user_id(client) is None


@override_settings(LOGIN_FAILURES_PER_USERNAME="3/15m", LOGIN_FAILURES_PER_IP="100/15m")
def test_failed_sign_ins_are_limited_per_username_even_from_other_ips(client, member):
    for attempt in range(3):
        assert sign_in(client, "member", "wrong", ip=f"198.51.100.{attempt}").status_code == 200
    # The right password, from a fresh IP, with the username in another case: still refused.
    response = sign_in(client, "Member", PASSWORD, ip="203.0.113.50")
    assert response.status_code == 429
    # The wait is what is left of the 15-minute window, so at most 15 minutes.
    assert re.fullmatch(
        r"Too many failed sign-in attempts\. Please wait ([1-9]|1[0-5]) minutes? and try again\.",
        response.context["refusal"],
    )
    assert b"Too many failed sign-in attempts." in response.content
    assert signed_in_user_id(client) is None
    # Another person on the same IP is not affected.
    assert sign_in(client, "lead-2", "wrong", ip="203.0.113.50").status_code == 200


# Spellings Django's sign-in takes for the account "brute1": NFKC turns fullwidth letters and
# digits into ASCII ones, and the form strips surrounding spaces (the ideographic one too).
BRUTE1_LOOK_ALIKES = [
    "\uff42rute1",  # fullwidth b
    "\uff42\uff52\uff55\uff54\uff45\uff11",  # every character fullwidth
    " brute1 ",
    "\u3000brute1",  # ideographic space
]
LOCKED_OUT = (
    r"Too many failed sign-in attempts\. Please wait ([1-9]|1[0-5]) minutes? and try again\."
)


@pytest.mark.parametrize("look_alike", BRUTE1_LOOK_ALIKES)
@override_settings(LOGIN_FAILURES_PER_USERNAME="5/15m", LOGIN_FAILURES_PER_IP="100/15m")
def test_a_locked_username_stays_locked_under_any_spelling_django_accepts(client, db, look_alike):
    UserFactory(username="brute1")
    # The look-alike with the right password does sign in while nothing is locked.
    assert sign_in(client, look_alike, ip="203.0.113.60").status_code == 302
    client.logout()
    for attempt in range(5):
        assert sign_in(client, "brute1", "wrong", ip=f"198.51.100.{attempt}").status_code == 200
    response = sign_in(client, look_alike, ip="203.0.113.61")
    assert response.status_code == 429
    assert re.fullmatch(LOCKED_OUT, response.context["refusal"])
    assert signed_in_user_id(client) is None


@override_settings(LOGIN_FAILURES_PER_USERNAME="5/15m", LOGIN_FAILURES_PER_IP="100/15m")
def test_look_alikes_and_other_cases_share_one_failure_counter(client, db):
    UserFactory(username="brute1")
    # Five failures, each under another spelling; "BRUTE1" is another (absent) account to
    # Django, but the counter ignores case so a guesser cannot multiply their tries with it.
    for attempt, spelling in enumerate([*BRUTE1_LOOK_ALIKES, "BRUTE1"]):
        response = sign_in(client, spelling, "wrong", ip=f"198.51.100.{attempt}")
        assert response.status_code == 200
    for spelling in ("brute1", "BRUTE1", "\uff22RUTE1"):
        response = sign_in(client, spelling, ip="203.0.113.61")
        assert response.status_code == 429
        assert re.fullmatch(LOCKED_OUT, response.context["refusal"])
    assert signed_in_user_id(client) is None


@override_settings(LOGIN_FAILURES_PER_USERNAME="100/15m", LOGIN_FAILURES_PER_IP="3/15m")
def test_failed_sign_ins_are_limited_per_ip_across_usernames(client, member):
    for username in ("alice", "bob", "carol"):
        assert sign_in(client, username, "wrong").status_code == 200
    response = sign_in(client, "member", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed sign-in attempts." in response.content
    assert signed_in_user_id(client) is None
    # The same person from another address gets in.
    assert sign_in(client, "member", PASSWORD, ip="203.0.113.9").status_code == 302
    assert signed_in_user_id(client) == str(member.pk)


@override_settings(
    LOGIN_FAILURES_PER_USERNAME="100/15m",
    LOGIN_FAILURES_PER_IP="2/15m",
    TRUSTED_PROXIES=["10.0.0.0/8"],
)
def test_behind_a_trusted_proxy_each_visitor_has_their_own_ip_limit(client, member):
    def via_proxy(username, password, visitor):
        return client.post(
            reverse("keys:login"),
            {"username": username, "password": password},
            REMOTE_ADDR="10.0.0.2",
            HTTP_X_FORWARDED_FOR=f"{visitor}, 10.0.0.3",
        )

    for username in ("alice", "bob"):
        assert via_proxy(username, "wrong", "203.0.113.1").status_code == 200
    assert via_proxy("member", PASSWORD, "203.0.113.1").status_code == 429
    # Another visitor behind the same load balancer is not locked out.
    assert via_proxy("member", PASSWORD, "203.0.113.2").status_code == 302


@override_settings(LOGIN_FAILURES_PER_USERNAME="100/15m", LOGIN_FAILURES_PER_IP="2/15m")
def test_a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_reset_the_limit(client, member):
    for attempt in range(2):
        response = client.post(
            reverse("keys:login"),
            {"username": f"guess{attempt}", "password": "wrong"},
            REMOTE_ADDR="198.51.100.7",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{attempt}",
        )
        assert response.status_code == 200
    assert sign_in(client, "member", PASSWORD).status_code == 429


@override_settings(LOGIN_FAILURES_PER_USERNAME="2/15m", LOGIN_FAILURES_PER_IP="2/15m")
def test_successful_sign_ins_do_not_count_towards_the_limit(client, member):
    for _ in range(4):
        assert sign_in(client, "member").status_code == 302
        client.logout()
    assert sign_in(client, "member").status_code == 302


def test_sign_out_needs_post_and_returns_to_sign_in(client, member):
    logged_in(client, member)
    assert client.get(reverse("keys:logout")).status_code == 405
    response = client.post(reverse("keys:logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("keys:login")
    assert signed_in_user_id(client) is None


# --- home and team switcher -----------------------------------------------------------------


def test_someone_without_a_team_is_told_so(client, db):
    logged_in(client, UserFactory(username="loner"))
    response = client.get("/")
    assert response.status_code == 200
    assert b"You are not in a team yet" in response.content


def test_someone_in_several_teams_can_switch(client, member, other_team):
    MembershipFactory(team=other_team, user=member)
    response = logged_in(client, member).get(url("keys:list", other_team))
    assert response.status_code == 200
    switcher = response.content.decode()
    assert '<a href="/t/acme/keys/">Acme</a>' in switcher
    assert '<a href="/t/globex/keys/" aria-current="true">Globex</a>' in switcher


def test_a_single_team_shows_no_switcher_menu(client, member):
    response = logged_in(client, member).get(url("keys:list", member.memberships.get().team))
    assert b"teamswitch__menu" not in response.content
    assert b'<span class="teamswitch teamswitch--single">Acme</span>' in response.content


# --- key list -------------------------------------------------------------------------------


def listed(response) -> list[str]:
    return [key.name for key in response.context["page"].object_list]


def test_lead_sees_every_key_of_the_team(client, team, lead, lead_key, member_key, elsewhere_key):
    response = logged_in(client, lead).get(url("keys:list", team))
    assert response.status_code == 200
    assert sorted(listed(response)) == ["claude-code-main", "lead-key"]
    assert b"Every key of Acme." in response.content


def test_member_sees_only_their_own_keys(client, team, member, lead_key, member_key):
    response = logged_in(client, member).get(url("keys:list", team))
    assert response.status_code == 200
    assert listed(response) == ["claude-code-main"]
    assert "owner" not in response.context["filters"].fields


def test_another_teams_key_list_is_404(client, team, outsider, member_key):
    assert logged_in(client, outsider).get(url("keys:list", team)).status_code == 404


def test_unknown_team_is_404(client, member):
    assert logged_in(client, member).get("/t/nope/keys/").status_code == 404


def test_list_shows_badges_spend_and_restrictions(client, team, lead, member, group):
    now = timezone.now()
    enabled = make_key(team=team, owner=member, group=group, name="ok", rate_limit="60/m").key
    disabled = make_key(team=team, owner=member, group=group, name="off", status="disabled").key
    expired = make_key(team=team, owner=member, group=group, name="old").key
    used_up = make_key(team=team, owner=member, group=group, name="full", quota_limit_usd=10).key
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=now - timedelta(hours=1))
    ApiKey.objects.filter(pk=used_up.pk).update(spent_usd=Decimal("10"))
    ApiKey.objects.filter(pk=enabled.pk).update(spent_usd=Decimal("1.5"))

    page = logged_in(client, lead).get(url("keys:list", team)).content.decode()

    assert '<span class="badge badge--enabled">Enabled</span>' in page
    assert '<span class="badge badge--disabled">Disabled</span>' in page
    assert '<span class="badge badge--expired">Expired</span>' in page
    assert '<span class="badge badge--quota_used_up">Quota used up</span>' in page
    assert "$1.50 · unlimited" in page
    assert "$10.00 of $10.00" in page
    assert 'aria-valuenow="100"' in page
    assert "<code>60/m</code>" in page
    assert f"<code>{disabled.prefix}…</code>" in page


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("enabled", ["ok"]),
        ("disabled", ["off"]),
        ("expired", ["old"]),
        ("quota_used_up", ["full"]),
        ("", ["full", "off", "ok", "old"]),
        ("bogus", ["full", "off", "ok", "old"]),
    ],
)
def test_list_filters_by_status(client, team, lead, group, status, expected):
    make_key(team=team, owner=lead, group=group, name="ok")
    make_key(team=team, owner=lead, group=group, name="off", status="disabled")
    old = make_key(team=team, owner=lead, group=group, name="old").key
    full = make_key(team=team, owner=lead, group=group, name="full", quota_limit_usd=5).key
    ApiKey.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    ApiKey.objects.filter(pk=full.pk).update(spent_usd=Decimal("5.01"))
    response = logged_in(client, lead).get(url("keys:list", team), {"status": status})
    assert response.status_code == 200
    assert sorted(listed(response)) == expected


def test_list_filters_by_group_owner_and_name(client, team, lead, member, group):
    other_group = GroupFactory(name="gpt 0.25", models=["gpt-*"])
    make_key(team=team, owner=lead, group=group, name="lead-claude")
    make_key(team=team, owner=member, group=group, name="member-claude")
    make_key(team=team, owner=member, group=other_group, name="member-gpt")
    logged_in(client, lead)
    list_url = url("keys:list", team)
    assert listed(client.get(list_url, {"group": other_group.pk})) == ["member-gpt"]
    assert sorted(listed(client.get(list_url, {"owner": member.pk}))) == [
        "member-claude",
        "member-gpt",
    ]
    assert sorted(listed(client.get(list_url, {"q": "CLAUDE"}))) == [
        "lead-claude",
        "member-claude",
    ]
    assert listed(client.get(list_url, {"q": "claude", "owner": member.pk})) == ["member-claude"]
    # An owner who is not in the team is an invalid filter value, dropped rather than obeyed.
    stranger = UserFactory(username="stranger")
    assert len(listed(client.get(list_url, {"owner": stranger.pk}))) == 3


def test_member_cannot_widen_the_list_with_an_owner_filter(client, team, member, lead_key):
    response = logged_in(client, member).get(url("keys:list", team), {"owner": lead_key.owner_id})
    assert listed(response) == []


def test_list_is_paginated_keeping_the_filters(client, team, lead, group):
    for number in range(27):
        make_key(team=team, owner=lead, group=group, name=f"key-{number:02d}")
    logged_in(client, lead)
    first = client.get(url("keys:list", team), {"q": "key"})
    assert len(listed(first)) == 25
    assert b'href="?q=key&amp;page=2" rel="next"' in first.content
    second = client.get(url("keys:list", team), {"q": "key", "page": 2})
    assert listed(second) == ["key-01", "key-00"]
    assert b"Page 2 of 2 \xc2\xb7 27 keys" in second.content


def test_empty_list_offers_to_create_a_key(client, team, member):
    response = logged_in(client, member).get(url("keys:list", team))
    assert b"No keys yet" in response.content


# --- create ---------------------------------------------------------------------------------


def test_create_page_shows_the_sections_and_guidance(client, team, member, group):
    response = logged_in(client, member).get(url("keys:create", team))
    assert response.status_code == 200
    page = response.content.decode()
    assert '<h2 id="basic-heading">Basic Information</h2>' in page
    assert '<h2 id="restrictions-heading">Restrictions</h2>' in page
    assert "Leave IP restrictions, quota limits, rate limits, and key expiration empty." in page
    assert '<h2 id="budgets-heading">Budgets</h2>' in page
    assert "Spend allowed per calendar day in your team&#x27;s time zone (UTC)" in page
    assert "CC Official Channel · ×1 · claude-*" in page
    assert 'name="status"' not in page


@override_settings(PUBLIC_BASE_URL="https://keys.example.com")
def test_create_shows_the_key_once_with_setup_lines_and_no_store(client, team, member, group):
    response = logged_in(client, member).post(
        url("keys:create", team), form_data(name="HC Personal", group=str(group.pk)), follow=True
    )
    assert response.status_code == 200
    key = ApiKey.objects.get()
    [(issued_url, status)] = response.redirect_chain
    assert status == 303
    assert issued_url.startswith(f"/t/{team.slug}/keys/{key.pk}/issued/")
    plaintext = response.context["plaintext"]
    assert digest_key(plaintext) == key.digest
    assert (key.name, key.owner, key.team, key.status) == ("HC Personal", member, team, "enabled")
    page = response.content.decode()
    assert f'data-testid="new-key">{plaintext}</code>' in page
    assert "It will not be shown again." in page
    assert f'$env:ANTHROPIC_AUTH_TOKEN="{plaintext}"' in page
    assert '$env:ANTHROPIC_BASE_URL="https://keys.example.com"' in page
    assert f'export ANTHROPIC_AUTH_TOKEN="{plaintext}"' in page
    assert 'export ANTHROPIC_BASE_URL="https://keys.example.com"' in page
    assert "no-store" in response["Cache-Control"]
    assert plaintext not in str(dict(client.session))
    assert plaintext not in issued_url
    assert AuditEvent.objects.filter(key=key, action="key.created", actor=member).count() == 1
    # The key list afterwards does not show it again.
    assert plaintext not in client.get(url("keys:list", team)).content.decode()


def test_create_with_restrictions(client, team, member, group):
    response = logged_in(client, member).post(
        url("keys:create", team),
        form_data(
            name="team-test",
            group=str(group.pk),
            allowed_ips="203.0.113.7\r\n2001:db8::/32",
            quota_limit_usd="25.50",
            rate_limit="60/M",
            expires_at="2031-03-01T12:30",
        ),
    )
    assert response.status_code == 303
    key = ApiKey.objects.get()
    assert key.allowed_ips == ["203.0.113.7", "2001:db8::/32"]
    assert key.quota_limit_usd == Decimal("25.50")
    assert key.rate_limit == "60/m"
    assert key.expires_at == datetime(2031, 3, 1, 12, 30, tzinfo=UTC)


@override_settings(TIME_ZONE="Asia/Tokyo")
def test_expiry_is_read_in_the_configured_time_zone(client, team, member, group):
    logged_in(client, member).post(
        url("keys:create", team),
        form_data(name="tokyo", group=str(group.pk), expires_at="2031-01-01T09:00"),
    )
    assert ApiKey.objects.get().expires_at == datetime(2031, 1, 1, 0, 0, tzinfo=UTC)


def test_create_errors_are_shown_inline_with_input_kept_and_nothing_written(
    client, team, member, group
):
    response = logged_in(client, member).post(
        url("keys:create", team),
        form_data(
            name="bad-one",
            group=str(group.pk),
            allowed_ips="10.0.0.1\nnot-an-ip",
            quota_limit_usd="-5",
            rate_limit="sixty",
        ),
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors["allowed_ips"] == [
        "“not-an-ip” is not a valid IPv4 or IPv6 address or CIDR range "
        "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32)."
    ]
    assert errors["quota_limit_usd"] == ["Quota limit cannot be negative. Use 0 for unlimited."]
    assert set(errors) == {"allowed_ips", "quota_limit_usd", "rate_limit"}
    page = response.content.decode()
    assert 'value="bad-one"' in page
    assert "10.0.0.1\nnot-an-ip</textarea>" in page
    assert 'value="-5"' in page
    assert 'value="sixty"' in page
    assert 'aria-invalid="true"' in page
    assert "Nothing was saved." in page
    assert "no-store" not in response.get("Cache-Control", "")
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


def test_create_with_a_group_not_allowed_for_the_team_is_refused(client, team, member, group):
    team.allowed_groups.add(group)
    private = GroupFactory(name="Globex only")
    response = logged_in(client, member).post(
        url("keys:create", team), form_data(name="x", group=str(private.pk))
    )
    assert response.status_code == 400
    assert response.context["form"].errors["group"] == [
        "Group “Globex only” is not available to team Acme."
    ]
    assert not ApiKey.objects.exists()


def test_create_in_another_team_is_404_and_creates_nothing(client, team, outsider, group):
    response = logged_in(client, outsider).post(
        url("keys:create", team), form_data(name="sneaky", group=str(group.pk))
    )
    assert response.status_code == 404
    assert not ApiKey.objects.exists()


# --- edit -----------------------------------------------------------------------------------


def test_edit_page_mirrors_the_console(client, team, member, member_key):
    response = logged_in(client, member).get(url("keys:edit", team, member_key))
    assert response.status_code == 200
    page = response.content.decode()
    for text in (
        "Basic Information",
        "Restrictions",
        '<label class="field__label" for="id_name">Name</label>',
        '<label class="field__label" for="id_group">Group</label>',
        '<legend class="field__label">Status</legend>',
        '<label class="field__label" for="id_allowed_ips">IP restriction</label>',
        '<label class="field__label" for="id_quota_limit_usd">Quota limit (USD)</label>',
        '<label class="field__label" for="id_rate_limit">Rate limit</label>',
        '<label class="field__label" for="id_expires_at">Key expiration</label>',
        '<h2 id="budgets-heading">Budgets</h2>',
        '<label class="field__label" for="id_daily_limit_usd">Daily limit (USD)</label>',
        '<label class="field__label" for="id_weekly_limit_usd">Weekly limit (USD)</label>',
        '<label class="field__label" for="id_monthly_limit_usd">Monthly limit (USD)</label>',
        '<label class="field__label" for="id_max_concurrency">Max concurrent requests</label>',
        "Spend allowed per calendar day in your team&#x27;s time zone (UTC); resets at "
        "midnight. Empty or 0: no daily limit.",
        "Spend allowed per calendar week in your team&#x27;s time zone (UTC); resets at "
        "midnight on Monday. Empty or 0: no weekly limit.",
        "Spend allowed per calendar month in your team&#x27;s time zone (UTC); resets at "
        "midnight on the 1st. Empty or 0: no monthly limit.",
        "How many requests of this key may run at the same time; one more is refused until "
        "one finishes, which stops a runaway agent. Empty or 0: unlimited.",
        "such as HC Personal, claude-code-main, or team-test",
        "The group determines which models the key can use",
        "The key can make requests normally.",
        "The key stops working, useful for temporary suspension, risk checks",
        "Enable it only when you use a fixed server or clearly know the outbound IP address.",
        "0 means unlimited.",
        "60 per minute = 60/m",
        "For long-term personal use, you can leave it empty.",
        "Time zone: UTC.",
        "You do not need to configure them unless you clearly understand what they do.",
        '<button type="submit" class="btn btn--primary">Update</button>',
        'value="claude-code-main"',
    ):
        assert text in page, text


def test_update_saves_and_says_so(client, team, member, member_key):
    logged_in(client, member)
    response = client.post(
        url("keys:edit", team, member_key), form_data(member_key, status="disabled")
    )
    assert response.status_code == 302
    assert response["Location"] == url("keys:edit", team, member_key)
    member_key.refresh_from_db()
    assert member_key.status == "disabled"
    event = AuditEvent.objects.get(key=member_key, action="key.disabled")
    assert (event.actor, event.changes) == (member, {"status": ["enabled", "disabled"]})
    followed = client.get(response["Location"])
    assert messages_of(followed) == [
        "Saved. Changes take effect immediately.",
        "If your tool caches its configuration, restart the tool.",
    ]


def test_group_change_adds_the_group_note(client, team, lead, member_key):
    """A lead changes the group of a member's key (a member may not: test_policy_views.py)."""
    new_group = GroupFactory(name="CC Kiro Channel", multiplier=Decimal("0.5"))
    logged_in(client, lead)
    response = client.post(
        url("keys:edit", team, member_key),
        form_data(member_key, group=str(new_group.pk)),
        follow=True,
    )
    member_key.refresh_from_db()
    assert member_key.group == new_group
    assert messages_of(response)[-1] == (
        "You changed the group. If the new group leads to unexpected behavior, create a new "
        "key and update your tool configuration."
    )


def test_update_of_every_restriction(client, team, member, member_key):
    logged_in(client, member).post(
        url("keys:edit", team, member_key),
        form_data(
            member_key,
            name="renamed",
            allowed_ips="198.51.100.0/24",
            quota_limit_usd="12",
            rate_limit="10/s",
            expires_at="2032-06-30T23:59",
            daily_limit_usd="2.50",
            weekly_limit_usd="10",
            monthly_limit_usd="30",
            max_concurrency="3",
        ),
    )
    member_key.refresh_from_db()
    assert member_key.name == "renamed"
    assert (
        member_key.daily_limit_usd,
        member_key.weekly_limit_usd,
        member_key.monthly_limit_usd,
        member_key.max_concurrency,
    ) == (Decimal("2.50"), Decimal("10"), Decimal("30"), 3)
    assert member_key.allowed_ips == ["198.51.100.0/24"]
    assert member_key.quota_limit_usd == Decimal("12")
    assert member_key.rate_limit == "10/s"
    assert member_key.expires_at == datetime(2032, 6, 30, 23, 59, tzinfo=UTC)
    assert AuditEvent.objects.filter(key=member_key, action="key.updated").count() == 1


def test_update_without_changes_writes_nothing(client, team, member, member_key):
    before = key_state(member_key)
    response = logged_in(client, member).post(
        url("keys:edit", team, member_key), form_data(member_key), follow=True
    )
    assert messages_of(response) == ["Nothing to update: no setting was changed."]
    assert key_state(member_key) == before


def test_renaming_an_expired_key_leaves_its_expiry_alone(client, team, member, member_key):
    past = timezone.now().replace(microsecond=0) - timedelta(days=1, seconds=17)
    ApiKey.objects.filter(pk=member_key.pk).update(expires_at=past)
    member_key.refresh_from_db()
    response = logged_in(client, member).post(
        url("keys:edit", team, member_key), form_data(member_key, name="still-expired")
    )
    assert response.status_code == 302
    member_key.refresh_from_db()
    assert (member_key.name, member_key.expires_at) == ("still-expired", past)


def test_a_group_the_team_no_longer_allows_stays_on_its_key(client, team, member, member_key):
    team.allowed_groups.add(GroupFactory(name="Only this one now"))
    logged_in(client, member)
    page = client.get(url("keys:edit", team, member_key)).content.decode()
    assert f'<option value="{member_key.group_id}" selected>' in page
    response = client.post(url("keys:edit", team, member_key), form_data(member_key, name="n"))
    assert response.status_code == 302
    member_key.refresh_from_db()
    assert member_key.name == "n"


def test_update_errors_are_inline_with_input_kept_and_nothing_written(
    client, team, member, member_key
):
    before = key_state(member_key)
    response = logged_in(client, member).post(
        url("keys:edit", team, member_key),
        form_data(member_key, name="", rate_limit="60 per minute", expires_at="2001-01-01T00:00"),
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors["name"] == ["Name is required."]
    assert errors["rate_limit"] == [
        "Enter a rate limit like 60/m: a whole number of at least 1, then /s, /m, /h or /d "
        "(per second, minute, hour or day)."
    ]
    assert errors["expires_at"] == [
        "Key expiration must be in the future. Leave it empty for never."
    ]
    page = response.content.decode()
    assert 'value="60 per minute"' in page
    assert 'value="2001-01-01T00:00"' in page
    assert '<ul class="errorlist" id="id_rate_limit_error">' in page
    assert key_state(member_key) == before


def test_budget_errors_are_inline_with_input_kept_and_nothing_written(
    client, team, member, member_key
):
    before = key_state(member_key)
    response = logged_in(client, member).post(
        url("keys:edit", team, member_key),
        form_data(
            member_key,
            name="renamed",
            daily_limit_usd="-3",
            weekly_limit_usd="1.234",
            monthly_limit_usd="lots",
            max_concurrency="2.5",
            rate_limit="30/m",
        ),
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors == {
        "daily_limit_usd": ["Daily limit cannot be negative. Use 0 for no daily limit."],
        "weekly_limit_usd": [
            "Enter the weekly limit in US dollars with at most 2 decimal places (whole cents), "
            "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no weekly limit."
        ],
        "monthly_limit_usd": [
            "Enter the monthly limit in US dollars with at most 2 decimal places (whole "
            "cents), e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no monthly limit."
        ],
        "max_concurrency": [
            "Enter max concurrent requests as a whole number, e.g. 4, up to 10,000; "
            "0 means unlimited."
        ],
    }
    page = response.content.decode()
    for kept in ('value="renamed"', 'value="-3"', 'value="1.234"', 'value="lots"'):
        assert kept in page, kept
    assert 'value="2.5"' in page
    assert 'value="30/m"' in page
    assert '<ul class="errorlist" id="id_max_concurrency_error">' in page
    assert "Nothing was saved." in page
    assert key_state(member_key) == before


def test_a_concurrency_above_the_maximum_is_refused(client, team, member, member_key):
    before = key_state(member_key)
    response = logged_in(client, member).post(
        url("keys:edit", team, member_key), form_data(member_key, max_concurrency="10001")
    )
    assert response.status_code == 400
    assert response.context["form"].errors == {
        "max_concurrency": [
            "Enter max concurrent requests as a whole number, e.g. 4, up to 10,000; "
            "0 means unlimited."
        ]
    }
    assert key_state(member_key) == before


def test_create_with_budgets(client, team, member, group):
    response = logged_in(client, member).post(
        url("keys:create", team),
        form_data(
            name="budgeted",
            group=str(group.pk),
            daily_limit_usd="5",
            monthly_limit_usd="100",
            max_concurrency="2",
        ),
    )
    assert response.status_code == 303
    key = ApiKey.objects.get()
    assert (
        key.daily_limit_usd,
        key.weekly_limit_usd,
        key.monthly_limit_usd,
        key.max_concurrency,
    ) == (Decimal("5"), 0, Decimal("100"), 2)


def test_create_with_a_bad_budget_keeps_the_input_and_writes_nothing(client, team, member, group):
    response = logged_in(client, member).post(
        url("keys:create", team),
        form_data(name="budgeted", group=str(group.pk), daily_limit_usd="5", max_concurrency="-1"),
    )
    assert response.status_code == 400
    assert response.context["form"].errors == {
        "max_concurrency": ["Max concurrent requests cannot be negative. Use 0 for unlimited."]
    }
    page = response.content.decode()
    assert 'value="budgeted"' in page
    assert 'value="5"' in page
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


def test_lead_edits_a_members_key(client, team, lead, member_key):
    response = logged_in(client, lead).post(
        url("keys:edit", team, member_key), form_data(member_key, quota_limit_usd="3")
    )
    assert response.status_code == 302
    member_key.refresh_from_db()
    assert member_key.quota_limit_usd == Decimal("3")
    assert AuditEvent.objects.get(key=member_key, action="key.updated").actor == lead


# --- the permission matrix for one key -------------------------------------------------------


KEY_PAGES = ["keys:detail", "keys:edit", "keys:rotate", "keys:delete", "billing:key_usage"]


@pytest.mark.parametrize("name", KEY_PAGES)
def test_owner_and_lead_open_every_page_of_a_key(client, team, lead, member, member_key, name):
    for user in (member, lead):
        assert logged_in(client, user).get(url(name, team, member_key)).status_code == 200


@pytest.mark.parametrize("name", ["keys:edit", "keys:rotate", "keys:delete"])
@pytest.mark.parametrize("who", ["second_member", "outsider"])
def test_other_peoples_keys_are_404_and_unchanged(client, request, team, member_key, name, who):
    """Another member of the team, and a lead of another team (URL and id guessing)."""
    user = request.getfixturevalue(who)
    before = key_state(member_key)
    logged_in(client, user)
    assert client.get(url(name, team, member_key)).status_code == 404
    response = client.post(url(name, team, member_key), form_data(member_key, status="disabled"))
    assert response.status_code == 404
    assert key_state(member_key) == before


@pytest.mark.parametrize("name", ["keys:detail", "billing:key_usage"])
@pytest.mark.parametrize("who", ["second_member", "outsider"])
def test_other_peoples_key_pages_are_404(client, request, team, member_key, name, who):
    logged_in(client, request.getfixturevalue(who))
    assert client.get(url(name, team, member_key)).status_code == 404


@pytest.mark.parametrize("name", ["keys:detail", "keys:edit", "keys:rotate", "keys:delete"])
def test_a_key_reached_through_the_wrong_team_is_404(
    client, team, other_team, member, member_key, name
):
    """A member of both teams still cannot reach a key through the other team's URL."""
    MembershipFactory(team=other_team, user=member, role=Membership.Role.LEAD)
    before = key_state(member_key)
    logged_in(client, member)
    assert client.get(url(name, other_team, member_key)).status_code == 404
    assert client.post(url(name, other_team, member_key), form_data(member_key)).status_code == 404
    assert key_state(member_key) == before


def test_unknown_key_id_is_404(client, team, member):
    assert logged_in(client, member).get(f"/t/{team.slug}/keys/999999/edit/").status_code == 404


# --- rotate and delete ----------------------------------------------------------------------


def test_rotate_asks_first_then_shows_the_new_key_once(client, team, member, issued):
    key = issued.key
    logged_in(client, member)
    confirm = client.get(url("keys:rotate", team, key))
    assert b"The old key stops working immediately" in confirm.content
    assert ApiKey.objects.get(pk=key.pk).digest == key.digest

    response = client.post(url("keys:rotate", team, key), follow=True)
    assert response.status_code == 200
    [(issued_url, status)] = response.redirect_chain
    assert status == 303
    assert issued_url.startswith(f"/t/{team.slug}/keys/{key.pk}/issued/")
    plaintext = response.context["plaintext"]
    assert plaintext != issued.plaintext
    assert ApiKey.objects.get(pk=key.pk).digest == digest_key(plaintext)
    assert not ApiKey.objects.filter(digest=digest_key(issued.plaintext)).exists()
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    assert f'export ANTHROPIC_AUTH_TOKEN="{plaintext}"' in page
    assert "The previous key has stopped working." in page
    assert AuditEvent.objects.get(key=key, action="key.rotated").actor == member


def test_delete_asks_first_then_deletes_with_an_audit_row(client, team, lead, member_key):
    logged_in(client, lead)
    confirm = client.get(url("keys:delete", team, member_key))
    assert b"This cannot be undone." in confirm.content
    assert ApiKey.objects.filter(pk=member_key.pk).exists()

    response = client.post(url("keys:delete", team, member_key), follow=True)
    assert response.redirect_chain == [(url("keys:list", team), 302)]
    assert messages_of(response) == ["Key “claude-code-main” deleted. Its audit trail is kept."]
    assert not ApiKey.objects.filter(pk=member_key.pk).exists()
    event = AuditEvent.objects.get(action="key.deleted")
    assert (event.actor, event.subject_label, event.team) == (lead, "claude-code-main", team)


# --- detail ---------------------------------------------------------------------------------


def test_detail_shows_settings_chart_requests_and_audit_trail(client, team, member, member_key):
    logged_in(client, member).post(
        url("keys:edit", team, member_key), form_data(member_key, status="disabled")
    )
    UsageEventFactory(
        key=member_key,
        input_tokens=1200,
        output_tokens=340,
        charged_usd=Decimal("0.0087"),
        session_id="session-abc",
    )
    response = client.get(url("keys:detail", team, member_key))
    assert response.status_code == 200
    page = response.content.decode()
    assert "CC Official Channel" in page
    assert '<figure class="chart">' in page
    assert "<code>claude-sonnet-4-5</code>" in page
    assert "1,200 / 340" in page
    assert "$0.0087" in page
    assert "session-abc" in page
    assert 'Status</span> Enabled <span aria-label="changed to">→</span> Disabled' in page
    assert "<td>member</td>" in page


def test_audit_trail_lists_only_this_keys_events(client, team, lead, member_key, lead_key):
    logged_in(client, lead).post(
        url("keys:edit", team, lead_key), form_data(lead_key, name="lead-renamed")
    )
    response = client.get(url("keys:detail", team, member_key))
    assert [event.key_id for event in response.context["events"]] == [member_key.pk]


# --- team page ------------------------------------------------------------------------------


TEAM_PAGES = ["keys:team", "billing:team_usage"]


@pytest.mark.parametrize("name", TEAM_PAGES)
def test_team_pages_are_for_leads(client, team, lead, member, outsider, name):
    assert logged_in(client, lead).get(url(name, team)).status_code == 200
    # A member reads the team page's budget and their own cap (test_team_budget_views.py):
    # none of what the leads manage there.
    member_page = logged_in(client, member).get(url(name, team))
    if name == "keys:team":
        assert member_page.status_code == 200
        assert "members" not in member_page.context
        assert "lead@example.com" not in member_page.content.decode()
    else:
        # The usage explorer shows a member their own keys' usage (tests/billing/test_explorer).
        assert member_page.status_code == 200
        assert member_page.context["sees_all"] is False
    assert logged_in(client, outsider).get(url(name, team)).status_code == 404


def test_team_page_lists_members_with_roles_and_key_counts(
    client, team, lead, member, member_key, lead_key, elsewhere_key, group
):
    make_key(team=team, owner=member, group=group, name="second")
    response = logged_in(client, lead).get(url("keys:team", team))
    counts = {m.user.username: (m.role, m.key_count) for m in response.context["members"]}
    assert counts == {"lead": ("lead", 1), "member": ("member", 2)}
    assert b'<figure class="chart">' in response.content
    assert b"Per key" in response.content
    assert b"Per model" in response.content


@pytest.mark.parametrize(
    ("whose", "role", "messages", "role_after"),
    [
        pytest.param("member", "lead", ["member is now lead."], "lead", id="promoted"),
        pytest.param(
            "lead",
            "member",
            ["Cannot change the role of the last lead of Acme: add another first."],
            "lead",
            id="last-lead-stays",
        ),
        pytest.param("member", "god", ["Choose Lead or Member."], "member", id="bad-value"),
    ],
)
def test_a_lead_changes_a_role_unless_it_is_refused(
    client, request, team, lead, member, whose, role, messages, role_after
):
    membership = Membership.objects.get(team=team, user=request.getfixturevalue(whose))
    response = logged_in(client, lead).post(
        reverse("keys:member_role", args=[team.slug, membership.pk]), {"role": role}, follow=True
    )
    assert messages_of(response) == messages
    membership.refresh_from_db()
    assert membership.role == role_after


def test_a_lead_who_steps_down_lands_on_their_keys(client, team, lead, second_member):
    Membership.objects.filter(user=second_member).update(role="lead")
    membership = Membership.objects.get(team=team, user=lead)
    response = logged_in(client, lead).post(
        reverse("keys:member_role", args=[team.slug, membership.pk]), {"role": "member"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    membership.refresh_from_db()
    assert membership.role == "member"
    # As a member now: the read-only team page, without the members.
    assert "members" not in client.get(url("keys:team", team)).context


def test_removing_a_member_disables_their_keys(client, team, lead, member, member_key, group):
    disabled_already = make_key(team=team, owner=member, group=group, status="disabled").key
    membership = Membership.objects.get(team=team, user=member)
    logged_in(client, lead)
    confirm = client.get(reverse("keys:member_remove", args=[team.slug, membership.pk]))
    assert b"Their 1 enabled key in Acme will be disabled (not deleted)" in confirm.content

    response = client.post(
        reverse("keys:member_remove", args=[team.slug, membership.pk]), follow=True
    )
    assert messages_of(response) == ["member removed from Acme; 1 key disabled."]
    assert not Membership.objects.filter(pk=membership.pk).exists()
    member_key.refresh_from_db()
    assert member_key.status == "disabled"
    assert AuditEvent.objects.get(key=member_key, action="key.disabled").actor == lead
    assert ApiKey.objects.filter(pk=disabled_already.pk).exists()


@pytest.mark.parametrize("name", ["keys:member_role", "keys:member_remove"])
def test_another_teams_membership_is_404_and_unchanged(client, team, other_team, lead, name):
    """A lead guessing the id of a membership in a team they do not lead."""
    victim = MembershipFactory(team=other_team, user__username="victim")
    logged_in(client, lead)
    # Through their own team's URL ...
    response = client.post(reverse(name, args=[team.slug, victim.pk]), {"role": "lead"})
    assert response.status_code == 404
    # ... and through the other team's.
    response = client.post(reverse(name, args=[other_team.slug, victim.pk]), {"role": "lead"})
    assert response.status_code == 404
    victim.refresh_from_db()
    assert victim.role == "member"


def test_a_member_cannot_remove_anyone(client, team, member, second_member):
    membership = Membership.objects.get(team=team, user=second_member)
    logged_in(client, member)
    url_ = reverse("keys:member_remove", args=[team.slug, membership.pk])
    assert client.get(url_).status_code == 404
    assert client.post(url_).status_code == 404
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_staff_who_may_view_teams_and_keys_see_every_team(client, team, member_key):
    staff = grant(
        UserFactory(username="staff", is_staff=True), "keys.view_team", "keys.view_apikey"
    )
    response = logged_in(client, staff).get(url("keys:list", team))
    assert listed(response) == ["claude-code-main"]


def test_staff_without_permissions_are_strangers_to_other_teams(client, team, member_key):
    staff = UserFactory(username="staff", is_staff=True)
    assert logged_in(client, staff).get(url("keys:list", team)).status_code == 404


@pytest.mark.parametrize(
    ("name", "permission"),
    [
        ("keys:edit", "keys.change_apikey"),
        ("keys:rotate", "keys.change_apikey"),
        ("keys:delete", "keys.delete_apikey"),
    ],
)
def test_staff_change_other_teams_keys_only_with_the_permission(
    client, team, member_key, name, permission
):
    """Staff who may view keys (the admin's test) still get 404 for a write they may not do,
    and the key is unchanged; with the permission the write goes through."""
    staff = grant(
        UserFactory(username="staff", is_staff=True), "keys.view_team", "keys.view_apikey"
    )
    before = key_state(member_key)
    logged_in(client, staff)
    assert client.get(url(name, team, member_key)).status_code == 404
    response = client.post(url(name, team, member_key), form_data(member_key, status="disabled"))
    assert response.status_code == 404
    assert key_state(member_key) == before

    logged_in(client, grant(staff, permission))
    response = client.post(url(name, team, member_key), form_data(member_key, status="disabled"))
    assert response.status_code == (303 if name == "keys:rotate" else 302)
    if name == "keys:delete":
        assert not ApiKey.objects.filter(pk=member_key.pk).exists()
    else:
        assert key_state(member_key) != before


# --- times say their zone -------------------------------------------------------------------

# A time with or without seconds, not followed by a zone's name (nor by more digits of itself).
SHOWN_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?(?![:\d]| [A-Z]{3}\b)")


@pytest.mark.parametrize(("zone", "name"), [("UTC", "UTC"), ("Asia/Tokyo", "JST")])
def test_every_time_the_portal_shows_says_its_zone(client, team, lead, member_key, zone, name):
    moment = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    ApiKey.objects.filter(pk=member_key.pk).update(
        expires_at=moment, last_used_at=moment, created_at=moment
    )
    UsageEventFactory(key=member_key, created_at=moment)
    services.api_token_create(user=lead, name="ci", actor=lead)
    services.invitation_create(team=team, email="new@example.com", role="member", actor=lead)
    logged_in(client, lead)
    pages = [
        url("keys:list", team),
        url("keys:detail", team, member_key),
        url("keys:team", team),
        url("billing:key_usage", team, member_key),
        reverse("keys:tokens"),
    ]
    with override_settings(TIME_ZONE=zone):
        shown = {page: client.get(page).content.decode() for page in pages}
    local = "2031-01-02 03:04" if zone == "UTC" else "2031-01-02 12:04"
    for page, html in shown.items():
        assert SHOWN_TIME.findall(html) == [], page
    assert f"created {local} {name}" in shown[url("keys:detail", team, member_key)]
    assert f">{local}:05 {name}</time>" in shown[url("keys:detail", team, member_key)]
    assert f">{local} {name}</time>" in shown[url("keys:list", team)]


def test_local_time_names_the_zone():
    moment = datetime(2026, 12, 7, 10, 42, 5, tzinfo=UTC)
    assert local_time(moment) == "2026-12-07 10:42 UTC"
    assert local_time(moment, "seconds") == "2026-12-07 10:42:05 UTC"
    assert local_time(None) == ""
    with override_settings(TIME_ZONE="Europe/Berlin"):
        assert local_time(moment) == "2026-12-07 11:42 CET"


# --- template helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("0"), "$0.00"),
        (None, "$0.00"),
        (Decimal("0.00441"), "$0.0044"),
        (Decimal("0.005"), "$0.0050"),
        (Decimal("0.01"), "$0.01"),
        (Decimal("1234.565"), "$1,234.57"),
    ],
)
def test_usd(amount, shown):
    assert usd(amount) == shown


@pytest.mark.parametrize(
    ("value", "field", "shown"),
    [
        ("0", "quota_limit_usd", "0 (unlimited)"),
        ("25.5", "quota_limit_usd", "$25.5"),
        ("0", "daily_limit_usd", "0 (no daily limit)"),
        ("7.5", "daily_limit_usd", "$7.5"),
        ("0", "weekly_limit_usd", "0 (no weekly limit)"),
        ("0", "monthly_limit_usd", "0 (no monthly limit)"),
        ("200", "monthly_limit_usd", "$200"),
        (0, "max_concurrency", "0 (unlimited)"),
        (None, "max_concurrency", "0 (unlimited)"),
        (4, "max_concurrency", "4"),
        ([], "allowed_ips", "—"),
        (["203.0.113.7", "2001:db8::/32"], "allowed_ips", "203.0.113.7, 2001:db8::/32"),
        (None, "expires_at", "never"),
        ("2031-01-02T03:04:00+00:00", "expires_at", "2031-01-02 03:04 UTC"),
        ("", "rate_limit", "—"),
        ("disabled", "status", "Disabled"),
        ("CC Kiro Channel", "group", "CC Kiro Channel"),
        ("0", "monthly_budget_usd", "0 (no budget)"),
        ("500", "monthly_budget_usd", "$500"),
        ("Asia/Shanghai", "time_zone", "Asia/Shanghai"),
    ],
)
def test_audit_values_read_like_the_form(value, field, shown):
    assert audit_value(value, field) == shown


@pytest.mark.parametrize(
    ("field", "label"),
    [
        ("allowed_ips", "IP restriction"),
        ("quota_limit_usd", "Quota limit (USD)"),
        ("expires_at", "Key expiration"),
        ("rate_limit", "Rate limit"),
        ("daily_limit_usd", "Daily limit (USD)"),
        ("weekly_limit_usd", "Weekly limit (USD)"),
        ("monthly_limit_usd", "Monthly limit (USD)"),
        ("max_concurrency", "Max concurrent requests"),
        ("prefix", "Key prefix"),
        ("monthly_budget_usd", "Monthly budget (USD)"),
        ("time_zone", "Time zone"),
        ("role", "role"),
    ],
)
def test_audit_field_labels_are_the_forms(field, label):
    assert field_label(field) == label


def test_last_used_reads_just_now_then_minutes_ago(client, lead, issued):
    client.force_login(lead)
    ApiKey.objects.filter(pk=issued.key.pk).update(last_used_at=timezone.now())
    assert ">just now</time>" in client.get("/t/acme/keys/").content.decode()
    ApiKey.objects.filter(pk=issued.key.pk).update(
        last_used_at=timezone.now() - timedelta(minutes=5)
    )
    assert ">5\xa0minutes ago</time>" in client.get("/t/acme/keys/").content.decode()

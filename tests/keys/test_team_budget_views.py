"""The team page's spend controls: the team's monthly budget bar (spent this month in the
team's time zone, remaining, when it resets), each member's monthly cap and spend, a lead
setting a cap (a refused one shown on its row as typed, nothing written), and a member's
read-only view of the budget and their own cap."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.templatetags import billing_budgets
from keys.models import AuditEvent, Membership, Team

from ..billing.factories import UsageEventFactory
from ..factories import MembershipFactory, UserFactory, grant, make_key

# Mid-January in Shanghai (UTC+8): the month began 2026-12-31 16:00 UTC.
NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)


def team_url(team: Team) -> str:
    return reverse("keys:team", args=[team.slug])


def cap_url(team: Team, user) -> str:
    membership = Membership.objects.get(team=team, user=user)
    return reverse("keys:member_cap", args=[team.slug, membership.pk])


def logged_in(client, user):
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def cap_of(team: Team, user) -> Decimal:
    return Membership.objects.get(team=team, user=user).monthly_limit_usd


@pytest.fixture
def shanghai(team, lead, member, group, monkeypatch):
    """Acme keeps Shanghai's clock with a $100 budget; the member has a $10 cap. The member
    spent $7.50 at 01:00 on 1 January local time (17:00 UTC the day before) and $3 at 23:00 on
    31 December local (last month: it must not count); the lead spent $1 in January."""
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=100, time_zone="Asia/Shanghai")
    Membership.objects.filter(team=team, user=member).update(monthly_limit_usd=10)
    team.refresh_from_db()
    member_key = make_key(team=team, owner=member, group=group).key
    lead_key = make_key(team=team, owner=lead, group=group).key
    UsageEventFactory(
        key=member_key,
        charged_usd=Decimal("7.50"),
        created_at=datetime(2026, 12, 31, 17, 0, tzinfo=UTC),
    )
    UsageEventFactory(
        key=member_key,
        charged_usd=Decimal("3.00"),
        created_at=datetime(2026, 12, 31, 15, 0, tzinfo=UTC),
    )
    UsageEventFactory(
        key=lead_key, charged_usd=Decimal("1.00"), created_at=datetime(2027, 1, 10, tzinfo=UTC)
    )
    monkeypatch.setattr(billing_budgets, "_now", lambda: NOW)
    return team


BUDGET_LINE = (
    "$8.50 of $100.00 spent this month · $91.50 remaining · resets 2027-02-01 00:00 CST "
    "(Asia/Shanghai)"
)


def test_the_lead_sees_the_budget_bar_and_each_members_cap_and_spend(client, shanghai, lead):
    html = logged_in(client, lead).get(team_url(shanghai)).content.decode()
    assert BUDGET_LINE in html
    assert 'aria-label="Team budget used: 8%"' in html
    assert "Time zone: Asia/Shanghai." in html
    assert "$7.50 of $10.00 this month" in html
    assert 'aria-label="Monthly cap used: 75%"' in html
    assert "$1.00 this month · no cap" in html
    assert 'name="monthly_limit_usd" id="cap-' in html
    assert 'value="10"' in html


def test_no_budget_says_so(client, team, lead):
    html = logged_in(client, lead).get(team_url(team)).content.decode()
    assert "No monthly budget · $0.00 spent this month" in html
    assert "Team budget used" not in html
    assert "Time zone: UTC." in html


def test_a_utc_team_names_its_zone_once(client, team, lead, monkeypatch):
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=40)
    monkeypatch.setattr(billing_budgets, "_now", lambda: NOW)
    html = logged_in(client, lead).get(team_url(team)).content.decode()
    assert (
        "$0.00 of $40.00 spent this month · $40.00 remaining · resets 2027-02-01 00:00 UTC</p>"
    ) in html


def test_a_month_ago_and_a_month_on_count_their_own_months(client, shanghai, lead, monkeypatch):
    # On 31 December, Shanghai time, only the $3 of that evening counts.
    monkeypatch.setattr(billing_budgets, "_now", lambda: datetime(2026, 12, 31, 15, 30, tzinfo=UTC))
    html = logged_in(client, lead).get(team_url(shanghai)).content.decode()
    assert (
        "$3.00 of $100.00 spent this month · $97.00 remaining · resets 2027-01-01 00:00 CST "
        "(Asia/Shanghai)"
    ) in html
    assert "$3.00 of $10.00 this month" in html


def test_a_member_sees_the_budget_and_their_own_cap_only(client, shanghai, member, lead):
    response = logged_in(client, member).get(team_url(shanghai))
    assert response.status_code == 200
    html = response.content.decode()
    assert BUDGET_LINE in html
    assert "Your monthly cap" in html
    assert "$7.50 of $10.00 this month" in html
    assert "$2.50 remaining · resets 2027-02-01 00:00 CST (Asia/Shanghai)" in html
    # Nothing of the other members, and nothing to change.
    assert "lead@example.com" not in html
    assert "$1.00 this month" not in html
    assert 'name="monthly_limit_usd"' not in html
    assert "/team/members/" not in html
    assert "Set cap" not in html
    # Nor the leads' cards: invitations, key settings, activity, the team's usage.
    assert "Invite by email" not in html
    assert "Key settings" not in html
    assert 'id="activity-heading"' not in html


def test_a_member_without_a_cap_reads_no_cap(client, team, member):
    html = logged_in(client, member).get(team_url(team)).content.decode()
    assert "$0.00 this month · no cap" in html
    assert "No monthly budget · $0.00 spent this month" in html


@pytest.mark.parametrize("who", ["outsider", "staff"])
def test_strangers_and_staff_who_are_not_members_get_404(client, team, outsider, who):
    user = outsider if who == "outsider" else grant(UserFactory(is_staff=True), "keys.*")
    assert logged_in(client, user).get(team_url(team)).status_code == 404


def test_a_lead_sets_a_members_cap(client, team, lead, member):
    response = logged_in(client, lead).post(
        cap_url(team, member), {"monthly_limit_usd": " 25.5 "}, follow=True
    )
    assert response.redirect_chain == [(team_url(team), 302)]
    assert messages_of(response) == ["member's monthly cap is now $25.50."]
    assert cap_of(team, member) == Decimal("25.50")
    assert "$0.00 of $25.50 this month" in response.content.decode()
    event = AuditEvent.objects.get(action="member.cap_updated")
    assert (event.actor, event.subject_label, event.changes) == (
        lead,
        "member",
        {"monthly_limit_usd": ["0", "25.5"]},
    )

    response = logged_in(client, lead).post(
        cap_url(team, member), {"monthly_limit_usd": ""}, follow=True
    )
    assert messages_of(response) == ["member has no monthly cap now."]
    assert cap_of(team, member) == Decimal("0")


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (
            "ten dollars",
            "Enter a monthly cap in US dollars with at most 2 decimal places (whole cents), e.g. "
            "25 or 25.50, up to 9,999,999,999.99; 0 means no cap.",
        ),
        ("-3", "A monthly cap cannot be negative. Use 0 for no cap."),
    ],
)
def test_a_bad_cap_is_shown_on_its_row_as_typed_and_nothing_is_written(
    client, team, lead, member, typed, message
):
    Membership.objects.filter(team=team, user=member).update(monthly_limit_usd=10)
    response = logged_in(client, lead).post(cap_url(team, member), {"monthly_limit_usd": typed})
    assert response.status_code == 400
    html = response.content.decode()
    membership = Membership.objects.get(team=team, user=member)
    assert f'id="cap-{membership.pk}" size="8" placeholder="0 = no cap" value="{typed}"' in html
    assert (
        f'<ul class="errorlist" id="cap-error-{membership.pk}" role="alert"><li>{message}</li></ul>'
        in html.replace("&#x27;", "'")
    )
    assert cap_of(team, member) == Decimal("10")
    assert not AuditEvent.objects.filter(action="member.cap_updated").exists()


def test_a_member_cannot_set_any_cap(client, team, lead, member):
    Membership.objects.filter(team=team).update(monthly_limit_usd=5)
    for target in (member, lead):
        response = logged_in(client, member).post(
            cap_url(team, target), {"monthly_limit_usd": "500"}
        )
        assert response.status_code == 404
    assert (cap_of(team, member), cap_of(team, lead)) == (Decimal("5"), Decimal("5"))
    assert not AuditEvent.objects.filter(action="member.cap_updated").exists()


def test_another_teams_lead_cannot_set_a_cap(client, team, member, outsider):
    response = logged_in(client, outsider).post(cap_url(team, member), {"monthly_limit_usd": "1"})
    assert response.status_code == 404
    assert cap_of(team, member) == Decimal("0")
    assert Membership.objects.filter(team=team, user=member).exists()


def test_the_cap_form_is_post_only(client, team, lead, member):
    assert logged_in(client, lead).get(cap_url(team, member)).status_code == 405


def test_the_team_page_reads_one_total_per_member_and_no_more_queries_per_member(
    client, team, lead, group
):
    """Each member's spend is one cache read once built; the queries do not grow with the
    number of members (a 50-member team pays for 50 reads of the cache, not of the table)."""

    def queries_with(members: int) -> int:
        for _ in range(members - Membership.objects.filter(team=team).count()):
            MembershipFactory(team=team)
        logged_in(client, lead).get(team_url(team))  # builds the totals
        with CaptureQueriesContext(connection) as queries:
            assert client.get(team_url(team)).status_code == 200
        return len(queries)

    assert queries_with(5) == queries_with(20)

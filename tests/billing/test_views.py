"""Billing's usage pages and the charts key and team pages embed."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageDaily
from billing.selectors import DaySpend
from billing.templatetags.billing_usage import chart_geometry, nice_ceiling

from ..factories import MembershipFactory, make_key
from .factories import RefusalCountFactory, UsageEventFactory


@pytest.fixture
def key(team, member, group):
    return make_key(team=team, owner=member, group=group, name="claude-code-main").key


@pytest.fixture
def lead_key(team, lead, group):
    return make_key(team=team, owner=lead, group=group, name="lead-key").key


def rollup(key, *, days_ago=0, model="claude-sonnet-4-5", requests=10, charged="1.25"):
    return UsageDaily.objects.create(
        team=key.team,
        key=key,
        model=model,
        day=timezone.localdate() - timedelta(days=days_ago),
        requests=requests,
        input_tokens=requests * 1000,
        output_tokens=requests * 100,
        cost_usd=Decimal(charged),
        charged_usd=Decimal(charged),
    )


def team_usage_url(team):
    return reverse("billing:team_usage", args=[team.slug])


def key_usage_url(key):
    return reverse("billing:key_usage", args=[key.team.slug, key.pk])


# --- who sees what --------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_sign_in(client, team, key):
    for url in (team_usage_url(team), key_usage_url(key)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next={url}"


def test_lead_sees_the_teams_usage_per_member(client, team, lead, key, lead_key):
    rollup(key, requests=10, charged="1.25")
    rollup(key, days_ago=3, model="claude-opus-4-1", requests=2, charged="4.00")
    rollup(lead_key, requests=1, charged="0.004")
    client.force_login(lead)
    response = client.get(team_usage_url(team))
    assert response.status_code == 200
    assert [
        (row.label, row.requests, row.charged_usd) for row in response.context["report"].rows
    ] == [
        ("member", 12, Decimal("5.25")),
        ("lead", 1, Decimal("0.004")),
    ]


def test_team_usage_is_404_for_other_teams(client, team, key, outsider):
    client.force_login(outsider)
    assert client.get(team_usage_url(team)).status_code == 404


def test_key_usage_for_its_owner_and_the_lead(client, lead, member, key):
    UsageEventFactory(key=key, model="claude-haiku-4-5", status_code=529, session_id="s-1")
    for user in (member, lead):
        client.force_login(user)
        response = client.get(key_usage_url(key))
        assert response.status_code == 200
        page = response.content.decode()
        assert "<code>claude-haiku-4-5</code>" in page
        assert '<span class="status status--error">529</span>' in page


@pytest.mark.parametrize("who", ["second", "outsider"])
def test_key_usage_is_404_for_anyone_else(client, team, key, outsider, who):
    user = (
        outsider
        if who == "outsider"
        else MembershipFactory(team=team, user__username="second").user
    )
    client.force_login(user)
    assert client.get(key_usage_url(key)).status_code == 404


def test_key_usage_through_another_teams_url_is_404(client, other_team, member, key):
    MembershipFactory(team=other_team, user=member)
    client.force_login(member)
    response = client.get(reverse("billing:key_usage", args=[other_team.slug, key.pk]))
    assert response.status_code == 404


# --- what the embedded parts show ------------------------------------------------------------


def render(source: str, **context) -> str:
    return Template("{% load billing_usage %}" + source).render(Context(context))


def test_spend_chart_counts_only_its_key_and_the_last_30_days(key, lead_key):
    rollup(key, requests=3, charged="0.30")
    rollup(key, days_ago=29, requests=2, charged="0.20")
    rollup(key, days_ago=30, requests=100, charged="99")
    rollup(lead_key, requests=7, charged="7")
    page = render("{% spend_chart key.team key=key %}", key=key)
    assert "$0.50 · 5 requests in 30 days" in page
    assert page.count("<rect ") == 30
    assert "for key claude-code-main, last 30 days: $0.50 in 5 requests." in page


def test_spend_chart_of_a_quiet_team_is_flat(team):
    page = render("{% spend_chart team %}", team=team)
    assert "$0.00 · 0 requests in 30 days" in page
    # No axis running 0 / 0 / 1 over nothing.
    assert "No usage in the last 30 days." in page
    assert "<svg" not in page


def test_recent_requests_are_the_keys_own_newest_first(key, lead_key):
    now = timezone.now()
    UsageEventFactory(key=key, model="older", created_at=now - timedelta(minutes=5))
    UsageEventFactory(key=key, model="newer", created_at=now)
    UsageEventFactory(key=lead_key, model="someone-elses")
    page = render("{% recent_requests key %}", key=key)
    assert page.index("<code>newer</code>") < page.index("<code>older</code>")
    assert "someone-elses" not in page


def test_recent_requests_respects_the_limit(key):
    for number in range(4):
        UsageEventFactory(key=key, model=f"model-{number}")
    page = render("{% recent_requests key limit=2 %}", key=key)
    assert page.count("<code>model-") == 2


def test_recent_requests_when_there_are_none(key):
    assert "No requests yet." in render("{% recent_requests key %}", key=key)


def test_usage_breakdown_sums_keys_beyond_the_first_ten(team, member, group):
    for number in range(12):
        rollup(
            make_key(team=team, owner=member, group=group, name=f"k{number:02d}").key,
            charged=str(number + 1),
        )
    page = render("{% usage_breakdown team %}", team=team)
    assert "2 more" in page
    # The two cheapest keys, $1 and $2, are summed in the last row.
    assert "<td>$3.00</td>" in page


# --- chart geometry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1.0), (0.003, 0.005), (0.8, 1.0), (1, 1), (1.2, 2), (2.2, 5), (3, 5), (7, 10), (42, 50)],
)
def test_nice_ceiling(value, ceiling):
    assert nice_ceiling(value) == pytest.approx(ceiling)


def test_bars_are_scaled_to_the_highest_day():
    today = timezone.localdate()
    days = [
        DaySpend(today - timedelta(days=1), 4, Decimal("1"), Decimal("1")),
        DaySpend(today, 8, Decimal("2"), Decimal("2")),
    ]
    chart = chart_geometry(days)
    low, high = chart["bars"]
    assert high.height == pytest.approx(2 * low.height)
    assert high.y + high.height == chart["baseline"]
    assert [tick.label for tick in chart["money_ticks"]] == ["$0.00", "$1.00", "$2.00"]
    assert [tick.label for tick in chart["request_ticks"]] == ["0", "5", "10"]


# --- refused requests among the requests ------------------------------------------------------


def test_recent_requests_show_refusals_among_successes_newest_first(key, lead_key):
    now = timezone.now().replace(second=30, microsecond=0)
    UsageEventFactory(key=key, model="newest", endpoint="chat_completions", created_at=now)
    RefusalCountFactory(key=key, minute=now - timedelta(minutes=1, seconds=30), count=3)
    RefusalCountFactory(
        key=key,
        minute=now - timedelta(minutes=2, seconds=30),
        status_code=402,
        code="insufficient_quota",
        endpoint="count_tokens",
    )
    UsageEventFactory(key=key, model="oldest", created_at=now - timedelta(minutes=5))
    RefusalCountFactory(key=lead_key, code="ip_not_allowed")

    page = render("{% recent_requests key %}", key=key)

    order = [
        page.index("<code>newest</code>"),
        page.index("Refused: Key disabled ×3"),
        page.index("Refused: Quota used up</td>"),
        page.index("<code>oldest</code>"),
    ]
    assert order == sorted(order)
    assert "<td>Chat Completions</td>" in page
    assert "<td>count_tokens</td>" in page
    assert '<span class="status status--error">402</span>' in page
    assert "IP not allowed" not in page  # Another key's.
    # An event recorded before endpoints were has none to show.
    assert page.count("<td>—</td>") == 1


def test_recent_requests_limit_counts_refusal_rows_too(key):
    for number in range(3):
        UsageEventFactory(key=key, model=f"model-{number}")
        RefusalCountFactory(key=key, code=f"code_{number}", count=number + 2)
    page = render("{% recent_requests key limit=4 %}", key=key)
    assert page.count("<code>model-") + page.count("Refused: ") == 4


def test_team_usage_lists_the_teams_requests_filtered_by_status(client, team, lead, key, lead_key):
    UsageEventFactory(key=key, model="ok-model", status_code=200)
    UsageEventFactory(key=lead_key, model="failed-upstream", status_code=529)
    RefusalCountFactory(key=key, status_code=402, code="insufficient_quota", count=12)
    RefusalCountFactory(key=lead_key, status_code=429, code="rate_limit_exceeded")
    client.force_login(lead)

    def listed(query: str) -> set[str]:
        page = client.get(team_usage_url(team) + query).content.decode()
        names = ["ok-model", "failed-upstream", "Quota used up ×12", "Rate limited"]
        return {name for name in names if name in page}

    assert listed("") == {"ok-model", "failed-upstream", "Quota used up ×12", "Rate limited"}
    assert listed("?status=200") == {"ok-model"}
    assert listed("?status=4xx") == {"Quota used up ×12", "Rate limited"}
    assert listed("?status=5xx") == {"failed-upstream"}
    assert listed("?status=402") == {"Quota used up ×12"}
    assert listed("?status=refused") == {"Quota used up ×12", "Rate limited"}
    assert listed("?status=%20REFUSED%20") == {"Quota used up ×12", "Rate limited"}
    page = client.get(team_usage_url(team)).content.decode()
    assert "claude-code-main" in page and "lead-key" in page  # Each row names its key.


@pytest.mark.parametrize("bad", ["abc", "600", "4x", "40", "xx", "ok"])
def test_team_usage_with_a_status_it_cannot_read(client, team, lead, key, bad):
    UsageEventFactory(key=key, model="ok-model", status_code=200)
    RefusalCountFactory(key=key)
    client.force_login(lead)

    response = client.get(team_usage_url(team), {"status": bad})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Enter success, error, a class such as 4xx, a code such as 529, or refused." in page
    # Shown unfiltered.
    assert "<code>ok-model</code>" in page
    assert "Refused: Key disabled" in page

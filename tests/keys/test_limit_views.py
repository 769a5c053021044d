"""The key pages' spend bars (billing.limits through billing's template tags): one per limit on
the key's page with its reset time in the team's time zone, the tightest on the key list."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import limits as limits_module
from billing.windows import Period, window
from keys.models import ApiKey, Membership
from keys.templatetags.portal import zone_time
from tests.billing.factories import UsageEventFactory
from tests.factories import make_key

from .test_views import logged_in, url

CHICAGO = "America/Chicago"


@pytest.fixture
def chicago(team):
    team.time_zone = CHICAGO
    team.save(update_fields=["time_zone"])
    return team


def spend(key: ApiKey, amount: str) -> None:
    UsageEventFactory(key=key, charged_usd=Decimal(amount), created_at=timezone.now())


def spy_on_counter_reads(monkeypatch) -> list[str]:
    """The names of the running totals billing.limits reads, as it reads them."""
    read = []
    counter_spend = limits_module.counter_spend
    monkeypatch.setattr(
        limits_module,
        "counter_spend",
        lambda counter: read.append(counter.name) or counter_spend(counter),
    )
    return read


def resets(period: Period) -> str:
    return "resets " + zone_time(window(period, CHICAGO, timezone.now())[1], CHICAGO)


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (datetime(2026, 12, 8, 6, 0, tzinfo=UTC), "Tue 8 Dec 00:00 CST"),
        (datetime(2026, 7, 1, 5, 0, tzinfo=UTC), "Wed 1 Jul 00:00 CDT"),
        (None, ""),
    ],
)
def test_zone_time_shows_a_moment_in_the_teams_zone(moment, shown):
    assert zone_time(moment, CHICAGO) == shown


def test_key_page_shows_a_bar_per_limit_with_its_reset_and_the_concurrency(
    client, chicago, member, lead, group
):
    key = make_key(team=chicago, owner=member, group=group, actor=member).key
    ApiKey.objects.filter(pk=key.pk).update(
        quota_limit_usd=Decimal("100"),
        daily_limit_usd=Decimal("5"),
        weekly_limit_usd=Decimal("20"),
        monthly_limit_usd=Decimal("50"),
        max_concurrency=4,
    )
    Membership.objects.filter(team=chicago, user=member).update(monthly_limit_usd=Decimal("30"))
    chicago.monthly_budget_usd = Decimal("1000")
    chicago.save(update_fields=["monthly_budget_usd"])
    spend(key, "4.5")

    own = logged_in(client, member).get(url("keys:detail", chicago, key)).content.decode()
    leads = logged_in(client, lead).get(url("keys:detail", chicago, key)).content.decode()

    assert "<dt>Max concurrent requests</dt><dd>4</dd>" in own
    assert "<dt>Quota limit</dt><dd>$100.00</dd>" in own
    bars = [
        ("quota", "Quota", "$4.50 of $100.00", 4, "$95.50 left · never resets"),
        ("daily", "Daily limit", "$4.50 of $5.00", 90, f"$0.50 left · {resets(Period.DAY)}"),
        ("weekly", "Weekly limit", "$4.50 of $20.00", 22, f"$15.50 left · {resets(Period.WEEK)}"),
        (
            "monthly",
            "Monthly limit",
            "$4.50 of $50.00",
            9,
            f"$45.50 left · {resets(Period.MONTH)}",
        ),
        (
            "member_monthly",
            "Your monthly cap in team Acme",
            "$4.50 of $30.00",
            15,
            f"$25.50 left · {resets(Period.MONTH)}",
        ),
        (
            "team_monthly",
            "Team Acme's monthly budget",
            "$4.50 of $1,000.00",
            0,
            f"$995.50 left · {resets(Period.MONTH)}",
        ),
    ]
    for kind, label, spent, percent, left in bars:
        assert (
            f'<li class="limit" data-limit="{kind}">\n'
            f'      <div class="limit__head"><span class="limit__label">{label}</span> '
            f'<span class="spend__text">{spent}</span></div>\n'
            f'      <div class="meter{" meter--high" if percent >= 80 else ""}" role="meter" '
            f'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{percent}" '
            f'aria-label="{label} used: {percent}%"><span style="width: {percent}%"></span></div>\n'
            f'      <p class="limit__reset muted">{left}</p>'
        ) in own.replace("&#x27;", "'"), label
    assert "Your monthly cap in team Acme" not in leads
    assert '<span class="limit__label">member&#x27;s monthly cap</span>' in leads


def test_key_page_without_limits_says_so(client, team, member, group):
    key = make_key(team=team, owner=member, group=group, actor=member).key
    ApiKey.objects.filter(pk=key.pk).update(spent_usd=Decimal("1.5"))

    page = logged_in(client, member).get(url("keys:detail", team, key)).content.decode()

    assert '<p class="spend__text">No limit · $1.50 spent</p>' in page
    assert "Max concurrent requests" not in page
    assert '<dt>Quota limit</dt><dd><span class="muted">unlimited</span></dd>' in page


def test_key_list_shows_the_tightest_limits_bar(client, chicago, lead, member, group, monkeypatch):
    daily = make_key(team=chicago, owner=member, group=group, name="daily").key
    quota = make_key(team=chicago, owner=member, group=group, name="quota").key
    free = make_key(team=chicago, owner=member, group=group, name="free").key
    ApiKey.objects.filter(pk=daily.pk).update(
        quota_limit_usd=Decimal("100"), daily_limit_usd=Decimal("5")
    )
    ApiKey.objects.filter(pk=quota.pk).update(quota_limit_usd=Decimal("10"))
    ApiKey.objects.filter(pk=free.pk).update(spent_usd=Decimal("1.5"))
    spend(daily, "2")
    spend(quota, "9.5")
    read = spy_on_counter_reads(monkeypatch)

    page = logged_in(client, lead).get(url("keys:list", chicago)).content.decode()

    row = page[page.index(f'data-key-id="{daily.pk}"') :]
    row = row[: row.index("</tr>")]
    assert '<span class="spend__text">$2.00 of $5.00</span>' in row
    assert f'<span class="spend__limit">Daily limit · {resets(Period.DAY)}</span>' in row
    assert 'aria-valuenow="40" aria-label="Daily limit used: 40%"' in row
    row = page[page.index(f'data-key-id="{quota.pk}"') :]
    row = row[: row.index("</tr>")]
    assert '<span class="spend__text">$9.50 of $10.00</span>' in row
    assert '<span class="spend__limit">Quota</span>' in row
    assert '<div class="meter meter--high"' in row
    row = page[page.index(f'data-key-id="{free.pk}"') :]
    assert '<span class="spend__text">$1.50 · unlimited</span>' in row[: row.index("</tr>")]
    # The daily key's lifetime and day, the quota key's lifetime: one read each.
    assert len(read) == 3


def test_key_list_with_a_team_budget_reads_it_once(
    client, chicago, lead, member, group, monkeypatch
):
    keys = [make_key(team=chicago, owner=member, group=group, name=f"k{n}").key for n in range(3)]
    chicago.monthly_budget_usd = Decimal("50")
    chicago.save(update_fields=["monthly_budget_usd"])
    spend(keys[0], "10")
    read = spy_on_counter_reads(monkeypatch)

    page = logged_in(client, lead).get(url("keys:list", chicago)).content.decode()

    assert page.count('<span class="spend__text">$10.00 of $50.00</span>') == 3
    assert (
        page.count(
            f'<span class="spend__limit">Team Acme&#x27;s monthly budget · {resets(Period.MONTH)}'
        )
        == 3
    )
    assert len(read) == 1

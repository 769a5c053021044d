"""A team's monthly budget and its members' monthly caps as spend bars, for the team page, so
`keys` never imports `billing`.

The amounts spent are the running totals the relay admits against (billing.ledger
counter_spend): what the gate sees, including charges not yet written to the database. Each
total is one cache read (rebuilt from the database only when it is missing), so a team page
reads one for the team and one per member shown.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django import template
from django.utils import timezone

from billing.ledger import counter_spend, units_to_usd
from billing.windows import Account, zone
from keys.models import Membership, Team

register = template.Library()


@dataclass(frozen=True)
class MonthSpend:
    """What was spent in the current calendar month (of the team's time zone) against a
    limit (0: none), and when the month ends."""

    spent: Decimal
    limit: Decimal
    resets_at: datetime
    time_zone: str

    @property
    def remaining(self) -> Decimal:
        return max(Decimal(0), self.limit - self.spent)

    @property
    def percent(self) -> int:
        """0-100, for the bar."""
        if not self.limit:
            return 0
        return min(100, int(self.spent * 100 / self.limit))

    @property
    def resets(self) -> str:
        """The month's end as the team's clock shows it: "2027-02-01 00:00 CST (Asia/Shanghai)",
        or "2027-02-01 00:00 UTC" where the zone's name says it all."""
        local = self.resets_at.astimezone(zone(self.time_zone))
        shown = f"{local:%Y-%m-%d %H:%M} {local.tzname()}"
        return shown if local.tzname() == self.time_zone else f"{shown} ({self.time_zone})"


def _now() -> datetime:
    """The page's clock (tests set it to cross a month's edge)."""
    return timezone.now()


def _account(team: Team, user_id: int = 0) -> Account:
    return Account(key_id=0, team_id=team.pk, user_id=user_id, time_zone=team.time_zone)


def team_month_spend(team: Team, at: datetime | None = None) -> MonthSpend:
    counter = _account(team).team_month(at or _now())
    return MonthSpend(
        spent=units_to_usd(counter_spend(counter)),
        limit=team.monthly_budget_usd,
        resets_at=counter.end,
        time_zone=team.time_zone,
    )


def member_month_spend(
    team: Team, membership: Membership, at: datetime | None = None
) -> MonthSpend:
    counter = _account(team, membership.user_id).member_month(at or _now())
    return MonthSpend(
        spent=units_to_usd(counter_spend(counter)),
        limit=membership.monthly_limit_usd,
        resets_at=counter.end,
        time_zone=team.time_zone,
    )


@register.inclusion_tag("billing/_team_budget.html")
def team_budget(team: Team) -> dict:
    """The team's budget card: spent this month of the budget, remaining, when it resets."""
    return {"team": team, "month": team_month_spend(team)}


@register.simple_tag
def member_spend(team: Team, membership: Membership) -> MonthSpend:
    """{% member_spend team membership as spend %}: the member's spend this month in `team`
    (passed in, so a members table reads no team per row) and their cap."""
    return member_month_spend(team, membership)

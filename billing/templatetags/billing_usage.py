"""Usage charts and tables that key and team pages embed, so `keys` never imports `billing`.

The charts are drawn on the server as SVG: no JavaScript, no charting library to serve, and
they print. Callers pass a team or key the page has already resolved through keys.selectors.
"""

import math
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django import template
from django.utils import timezone
from django.utils.translation import gettext

from billing import selectors
from billing.charts import bucket_label
from billing.refusals import ENDPOINT_LABELS, reason_label
from billing.selectors import DaySpend, daily_spend, spend_by_key, spend_by_model
from billing.status_filter import StatusFilter
from keys.models import ApiKey, Team

register = template.Library()

# The SVG's own coordinate system; CSS scales it to the page's width.
CHART_WIDTH = 720
CHART_HEIGHT = 220
MARGIN_LEFT = 64
MARGIN_RIGHT = 48
MARGIN_TOP = 16
MARGIN_BOTTOM = 28
BAR_SHARE = 0.7
# A date under every fifth bar is as many as fit without overlapping at phone width.
DATE_LABEL_EVERY = 5
BREAKDOWN_ROWS = 10


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: DaySpend


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value`: the axis's top,
    whose half (the middle tick) is then as round ($2.50 of $5, never $1.25 of $2.50)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _money_tick(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def chart_geometry(days: list[DaySpend]) -> dict:
    plot_width = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    baseline = MARGIN_TOP + plot_height
    money_max = nice_ceiling(float(max((day.charged_usd for day in days), default=0)))
    requests_max = nice_ceiling(max((day.requests for day in days), default=0))
    slot = plot_width / max(len(days), 1)
    bars, points, labels = [], [], []
    for index, day in enumerate(days):
        height = plot_height * float(day.charged_usd) / money_max
        x = MARGIN_LEFT + index * slot
        bars.append(
            Bar(
                x=round(x + slot * (1 - BAR_SHARE) / 2, 2),
                y=round(baseline - height, 2),
                width=round(slot * BAR_SHARE, 2),
                height=round(height, 2),
                day=day,
            )
        )
        centre = round(x + slot / 2, 2)
        points.append((centre, round(baseline - plot_height * day.requests / requests_max, 2)))
        if index % DATE_LABEL_EVERY == 0 or index == len(days) - 1:
            labels.append((centre, bucket_label(day.day, short=True)))
    money_ticks = [
        Tick(y=round(baseline - plot_height * share, 2), label=_money_tick(money_max * share))
        for share in (0, 0.5, 1)
    ]
    request_ticks = [
        Tick(y=round(baseline - plot_height * share, 2), label=f"{requests_max * share:,.0f}")
        for share in (0, 0.5, 1)
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "plot_left": MARGIN_LEFT,
        "plot_right": CHART_WIDTH - MARGIN_RIGHT,
        "baseline": baseline,
        "label_y": baseline + 18,
        "bars": bars,
        "line": " ".join(f"{x},{y}" for x, y in points),
        "points": points,
        "date_labels": labels,
        "money_ticks": money_ticks,
        "request_ticks": request_ticks,
    }


@register.inclusion_tag("billing/_spend_chart.html")
def spend_chart(team: Team, key: ApiKey | None = None, days: int = 30) -> dict:
    """Charge and requests per day over the last `days` days, for a team or one of its keys."""
    spend = daily_spend(team=team, key=key, days=days)
    return {
        "days": spend,
        "period": days,
        "total_charged": sum((day.charged_usd for day in spend), Decimal(0)),
        "total_requests": sum(day.requests for day in spend),
        "chart": chart_geometry(spend),
        "subject": f"key {key.name}" if key else f"team {team.name}",
    }


def _share_rows(rows: list, label) -> list[dict]:
    """The top rows with their share of the largest charge (bar length), the rest summed."""
    top, rest = rows[:BREAKDOWN_ROWS], rows[BREAKDOWN_ROWS:]
    largest = max((row.charged_usd for row in top), default=Decimal(0))
    shown = [
        {
            "label": label(row),
            "requests": row.requests,
            "tokens": row.input_tokens + row.output_tokens,
            "charged_usd": row.charged_usd,
            "percent": int(row.charged_usd * 100 / largest) if largest else 0,
        }
        for row in top
    ]
    if rest:
        shown.append(
            {
                "label": f"{len(rest)} more",
                "requests": sum(row.requests for row in rest),
                "tokens": sum(row.input_tokens + row.output_tokens for row in rest),
                "charged_usd": sum((row.charged_usd for row in rest), Decimal(0)),
                "percent": 0,
            }
        )
    return shown


@register.inclusion_tag("billing/_usage_breakdown.html")
def usage_breakdown(team: Team, days: int = 30) -> dict:
    """The team's spend over the last `days` days, per key and per model."""
    since = timezone.localdate() - timedelta(days=days - 1)
    return {
        "period": days,
        "by_key": _share_rows(
            spend_by_key(team=team, since=since),
            lambda row: (
                f"{row.key_name} ({row.key_prefix}…)" if row.key_id else gettext("Deleted keys")
            ),
        ),
        "by_model": _share_rows(spend_by_model(team=team, since=since), lambda row: row.model),
    }


@register.inclusion_tag("billing/_recent_requests.html")
def recent_requests(key: ApiKey, limit: int = 10) -> dict:
    """The key's latest requests, its refused ones counted per minute among them."""
    return {"rows": selectors.recent_requests(team=key.team, key=key, limit=limit), "limit": limit}


@register.inclusion_tag("billing/_recent_requests.html")
def team_requests(team: Team, status: StatusFilter | None = None, limit: int = 50) -> dict:
    """The team's latest requests, each with its key, narrowed by `status` if given."""
    rows = selectors.recent_requests(team=team, status=status, limit=limit)
    return {"rows": rows, "limit": limit, "show_key": True}


@register.filter
def endpoint_label(name: str) -> str:
    """A relay endpoint's name as the portal shows it (empty: recorded before endpoints were)."""
    return ENDPOINT_LABELS.get(name, name) or "—"


@register.filter
def refusal_reason(code: str) -> str:
    return reason_label(code)


@register.filter
def percent(ratio: Decimal | None) -> str:
    """A ratio as a percentage to one place ("42.5%"); "—" when there is none."""
    if ratio is None:
        return "—"
    return f"{ratio * 100:.1f}%"


@register.filter
def cache_5m(event) -> int:
    """A usage event's cache writes kept for five minutes (the total less the 1-hour part)."""
    return event.cache_creation_tokens - event.cache_creation_1h_tokens

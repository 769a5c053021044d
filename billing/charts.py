"""The usage explorer's chart, drawn on the server as SVG: no JavaScript, no library to serve,
and it prints. Axes step by 1, 2 or 5 times a power of ten, so money reads $0, $0.50, $1.00
rather than $0.63 or $1.25, and an empty range draws no axis at all."""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.utils import dateformat
from django.utils.html import format_html_join
from django.utils.translation import gettext

from core.money import usd

from .selectors import CHART_SERIES, UsageReport

WIDTH = 720
HEIGHT = 240
MARGIN_LEFT = 64
MARGIN_RIGHT = 12
MARGIN_TOP = 12
MARGIN_BOTTOM = 28
BAR_SHARE = 0.75
# Date labels under the bars, at most: as many as fit without overlapping at phone width.
MAX_X_LABELS = 8
_STEPS = (1, 2, 5, 10)
_RECT = '<rect class="chart__s{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>'


def nice_ticks(high: Decimal | int | float, *, count: int = 5, whole: bool = False) -> list:
    """0 and equal steps of 1, 2 or 5 times a power of ten up to the first tick at or above
    `high`, about `count` steps in all (whole numbers only if `whole`); none when `high` is 0
    or less: nothing to draw an axis for."""
    high = Decimal(str(high))
    if high <= 0:
        return []
    raw = high / count
    exponent = raw.adjusted()
    power = Decimal(10) ** exponent  # 100, not 1E+2: ticks print as they read.
    step = next(multiple * power for multiple in _STEPS if raw <= multiple * power).normalize()
    if step.as_tuple().exponent > 0:
        step = step.quantize(Decimal(1))
    if whole and step < 1:
        step = Decimal(1)
    ticks = [Decimal(0)]
    while ticks[-1] < high:
        ticks.append(ticks[-1] + step)
    return ticks


def tick_label(value: Decimal, *, metric: str, step: Decimal) -> str:
    """A tick as the axis prints it: money to the cents the step needs (all ticks alike),
    counts with thousands separators or k / M."""
    if metric in ("cost", "charge"):
        places = 0 if step >= 1 else max(2, -step.normalize().as_tuple().exponent)
        return f"${value:,.{places}f}"
    if value >= 1_000_000:
        return f"{(value / 1_000_000).normalize():f}M"
    if value >= 10_000:
        return f"{(value / 1_000).normalize():f}k"
    return f"{value:,.0f}"


@dataclass(frozen=True)
class Segment:
    """One series' part of one bar. Coordinates are text ready for the SVG: a template printing
    thousands of floats spends most of a page's time localising them."""

    x: str
    y: str
    width: str
    height: str
    series: int
    title: str


@dataclass(frozen=True)
class Series:
    index: int
    label: str
    total: Decimal | int


@dataclass(frozen=True)
class AxisTick:
    y: str
    label: str


def stacked_chart(report: UsageReport, *, metric: str, group_by: str) -> dict:
    """The report's chosen metric per bucket, stacked by the top rows (and "Other"), with the
    table the "Show as table" alternative shows. Empty data: `ticks` is empty."""
    if group_by == "day":
        series = [Series(0, gettext("All usage"), report.total.metric(metric))]
        values_of = {0: None}
    else:
        ranked = sorted(report.rows, key=lambda row: -row.metric(metric))
        top = [row for row in ranked[:CHART_SERIES] if row.metric(metric)]
        series = [Series(n, row.label, row.metric(metric)) for n, row in enumerate(top)]
        values_of = {n: row.value for n, row in enumerate(top)}
        top_total = sum((row.metric(metric) for row in top), 0)
        other = report.total.metric(metric) - top_total
        if other:
            series.append(Series(len(series), gettext("Other"), other))
    other_index = len(values_of) if len(series) > len(values_of) else None

    bucket_totals = {
        bucket: totals.metric(metric) for bucket, totals in report.bucket_totals.items()
    }
    columns = []
    for bucket in report.buckets:
        stack = []
        for n in values_of:
            if group_by == "day":
                stack.append(bucket_totals.get(bucket, 0))
                continue
            cell = report.cells.get((bucket, values_of[n]))
            stack.append(cell.metric(metric) if cell else 0)
        if other_index is not None:
            stack.append(bucket_totals.get(bucket, 0) - sum(stack, 0))
        columns.append((bucket, stack))

    highest = max((sum(stack, 0) for _, stack in columns), default=0)
    ticks = nice_ticks(highest, whole=metric in ("requests", "tokens"))
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    baseline = MARGIN_TOP + plot_height
    top_value = ticks[-1] if ticks else Decimal(1)
    slot = plot_width / max(len(columns), 1)
    step = ticks[1] if len(ticks) > 1 else Decimal(1)
    axis = [
        AxisTick(
            y=_coordinate(baseline - plot_height * float(tick / top_value)),
            label=tick_label(tick, metric=metric, step=step),
        )
        for tick in ticks
    ]
    segments, x_labels = [], []
    label_every = max(1, -(-len(columns) // MAX_X_LABELS))
    for index, (bucket, stack) in enumerate(columns):
        x = MARGIN_LEFT + index * slot
        floor = float(baseline)
        for n, value in enumerate(stack):
            if not value:
                continue
            height = plot_height * float(Decimal(str(value)) / top_value)
            floor -= height
            segments.append(
                Segment(
                    x=_coordinate(x + slot * (1 - BAR_SHARE) / 2),
                    y=_coordinate(floor),
                    width=_coordinate(slot * BAR_SHARE),
                    height=_coordinate(height),
                    series=n,
                    title=f"{bucket_label(bucket)}: {series[n].label}, "
                    f"{value_label(value, metric)}",
                )
            )
        if index % label_every == 0:
            x_labels.append((_coordinate(x + slot / 2), bucket_label(bucket, short=True)))
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "plot_left": MARGIN_LEFT,
        "plot_right": WIDTH - MARGIN_RIGHT,
        "tick_x": MARGIN_LEFT - 8,
        "label_y": baseline + 18,
        "ticks": axis,
        # Hundreds of bars and table cells, written here in one pass each: the template
        # language would look up each of their attributes one by one.
        "segments_svg": format_html_join(
            "",
            _RECT,
            ((bar.series, bar.x, bar.y, bar.width, bar.height, bar.title) for bar in segments),
        ),
        "x_labels": x_labels,
        "series": series,
        "table": [
            (bucket_label(bucket), [value_label(value, metric) for value in stack])
            for bucket, stack in columns
        ],
        "table_html": format_html_join(
            "",
            '<tr><th scope="row">{}</th>{}</tr>',
            (
                (
                    bucket_label(bucket),
                    format_html_join(
                        "", "<td>{}</td>", ((value_label(value, metric),) for value in stack)
                    ),
                )
                for bucket, stack in columns
            ),
        ),
    }


def _coordinate(value: float) -> str:
    return f"{value:.2f}"


def bucket_label(bucket: date | datetime, *, short: bool = False) -> str:
    if isinstance(bucket, datetime):
        return f"{bucket:%H:%M}" if short else f"{bucket:%Y-%m-%d %H:%M}"
    # Django's date format, its words in the active language ("Nov 8", "11月8日").
    # Translators: a day under a chart's bar (Django date format; "n月j日" in Chinese).
    short_format = gettext("M j")
    # Translators: a day in a chart's tooltip and table (Django date format).
    long_format = gettext("D Y-m-d")
    return dateformat.format(bucket, short_format if short else long_format)


def value_label(value: Decimal | int, metric: str) -> str:
    return usd(value) if metric in ("cost", "charge") else f"{value:,}"

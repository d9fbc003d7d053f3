"""Chart geometry for the dashboard: stacked bars and lines, laid out in SVG user units.

The template turns these shapes into inline SVG; nothing is drawn in the browser,
so the page needs no script and no network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs

__all__ = [
    "HALF_WIDTH",
    "HEIGHT",
    "WIDTH",
    "BarChart",
    "Line",
    "LineChart",
    "Segment",
    "Series",
    "Tick",
    "bar_chart",
    "line_chart",
    "nice_ticks",
]

WIDTH = 1120
"""A full-width chart's width in SVG units: about its size on screen, so its text is too."""
HALF_WIDTH = 540
"""The width of a chart that shares its row with another."""
HEIGHT = 260
"""The charts' height in SVG units."""
_LEFT, _RIGHT, _TOP, _BOTTOM = 64.0, 12.0, 12.0, 28.0
_MAX_X_LABELS = 14
"""Most x axis labels on a full-width chart; fewer on a narrower one."""
_BAR_FILL = 0.72
"""Share of its slot a bar covers; the rest is the gap between bars."""


@attrs.frozen
class Series:
    """One stacked or drawn quantity: its name in the legend and its colour's CSS class."""

    name: str
    css_class: str


@attrs.frozen
class Tick:
    """An axis label at `position` (SVG units along its axis)."""

    position: float
    label: str


@attrs.frozen
class Segment:
    """One rectangle of a stacked bar, with the tooltip text it shows on hover."""

    x: float
    y: float
    width: float
    height: float
    css_class: str
    title: str


@attrs.frozen(kw_only=True)
class _Plot:
    """What every chart has: its axes' ticks and the box it is drawn in."""

    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: float = WIDTH
    height: float = HEIGHT
    left: float = _LEFT
    top: float = _TOP

    @property
    def right(self) -> float:
        """Where the plot ends on the x axis."""
        return self.width - _RIGHT

    @property
    def bottom(self) -> float:
        """Where the plot ends on the y axis (its zero line)."""
        return self.height - _BOTTOM


@attrs.frozen(kw_only=True)
class BarChart(_Plot):
    """Stacked bars over time, with their axes."""

    segments: list[Segment]
    series: list[Series]


@attrs.frozen
class Line:
    """One polyline and its points, drawn in its series' colour."""

    series: Series
    points: list[tuple[float, float, str]]
    """(x, y, tooltip) of each point that has a value."""

    @property
    def path(self) -> str:
        """The points as an SVG `points` attribute."""
        return " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in self.points)


@attrs.frozen(kw_only=True)
class LineChart(_Plot):
    """Lines over time, with their axes."""

    lines: list[Line]


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round axis values from 0 to at least `top`: steps of 1, 2, 2.5 or 5 times a power of ten.

    >>> nice_ticks(7.3)
    [0.0, 2.0, 4.0, 6.0, 8.0]
    >>> nice_ticks(0)
    [0.0, 1.0]
    """
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    steps = math.ceil(top / step - 1e-9)
    return [float(round(i * step, 12)) for i in range(steps + 1)]


def _x_ticks(labels: Sequence[str], slot: float, width: float) -> list[Tick]:
    most = max(2, round(_MAX_X_LABELS * width / WIDTH))
    every = max(1, math.ceil(len(labels) / most))
    return [
        Tick(_LEFT + slot * (i + 0.5), label) for i, label in enumerate(labels) if i % every == 0
    ]


def _y_scale(
    values: list[float], fmt: Callable[[list[float]], list[str]], height: float
) -> tuple[Callable[[float], float], list[Tick]]:
    ticks = nice_ticks(max(values, default=0.0))
    plot = height - _BOTTOM - _TOP

    def y(value: float) -> float:
        return height - _BOTTOM - plot * value / ticks[-1]

    return y, [Tick(y(t), label) for t, label in zip(ticks, fmt(ticks), strict=True)]


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    values: Sequence[Sequence[float]],
    fmt: Callable[[float], str],
    axis: Callable[[list[float]], list[str]],
    *,
    ticks: Sequence[str],
    width: float = WIDTH,
) -> BarChart:
    """Stack `values[s][i]` of each series `s` in the bar of time bucket `i`.

    Args:
        labels: One label per bucket, for the tooltips.
        ticks: One short label per bucket, for the x axis.
        series: Bottom to top.
        values: One row per series, one value per bucket; zeros draw nothing.
        fmt: Formats a value for the tooltips.
        axis: Formats the y axis' values, all at once so they can share their precision.
        width: In SVG units.
    """
    slot = (width - _LEFT - _RIGHT) / max(len(labels), 1)
    totals = [sum(row[i] for row in values) for i in range(len(labels))]
    y, y_ticks = _y_scale(totals, axis, HEIGHT)
    bar_width = max(slot * _BAR_FILL, 1.0)
    segments = []
    for i, label in enumerate(labels):
        base = 0.0
        for one, row in zip(series, values, strict=True):
            if row[i] <= 0:
                continue
            top, bottom = y(base + row[i]), y(base)
            segments.append(
                Segment(
                    x=_LEFT + slot * i + (slot - bar_width) / 2,
                    y=top,
                    width=bar_width,
                    # At least a hairline, so a small value stays visible.
                    height=max(bottom - top, 0.5),
                    css_class=one.css_class,
                    title=f"{label} · {one.name}: {fmt(row[i])}",
                )
            )
            base += row[i]
    x_ticks = _x_ticks(ticks, slot, width)
    return BarChart(
        segments=segments, y_ticks=y_ticks, x_ticks=x_ticks, series=list(series), width=width
    )


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    values: Sequence[Sequence[float | None]],
    fmt: Callable[[float], str],
    axis: Callable[[list[float]], list[str]],
    *,
    ticks: Sequence[str],
    width: float = WIDTH,
) -> LineChart:
    """Draw one line per series through its values; `None` (no data) leaves a point out.

    The arguments are those of `bar_chart`.
    """
    slot = (width - _LEFT - _RIGHT) / max(len(labels), 1)
    present = [v for row in values for v in row if v is not None]
    y, y_ticks = _y_scale(present, axis, HEIGHT)
    lines = [
        Line(
            one,
            [
                (_LEFT + slot * (i + 0.5), y(v), f"{labels[i]} · {one.name}: {fmt(v)}")
                for i, v in enumerate(row)
                if v is not None
            ],
        )
        for one, row in zip(series, values, strict=True)
    ]
    return LineChart(
        lines=lines, y_ticks=y_ticks, x_ticks=_x_ticks(ticks, slot, width), width=width
    )

"""The weekly report's charts, drawn by matplotlib (issue 17): labelled axes with dates and
units a person reads off the chart, on a phone as well as a desktop.

matplotlib's object API with the Agg canvas (a ``Figure`` of its own per chart, never
pyplot's global state): no display, safe in the daemon's threads. A chart is drawn at
twice the size it is shown (``SCALE``): sharp on a phone's dense screen, and the HTML
scales it down to the width it has. Imported only when a report is rendered: matplotlib
costs about half a second to import.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from backupd.config.units import human_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WIDTH, HEIGHT = 480, 200  # CSS pixels, as the report shows them
SCALE = 2  # drawn at twice that
BLUE = "#2563eb"
BLUE_FILL = "#bfd4fa"
GRID = "#e4e7eb"
INK = "#374151"
# One colour per series, distinguishable and named in the chart's legend and the caption.
PALETTE: tuple[str, ...] = (
    "#2563eb",
    "#d97706",
    "#059669",
    "#be185d",
    "#7c3aed",
    "#0891b2",
    "#65a30d",
    "#57534e",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Series = Sequence[tuple[float, float]]  # (Unix seconds, value)


def area_chart(values: Sequence[float], end: datetime) -> bytes:
    """Bytes stored at the end of each of the days up to ``end`` (one value a day, the
    last at ``end``) as a filled area: dates along x, bytes up y (from 0, so growth is
    not exaggerated), the last value written at its point."""
    fig, ax = _figure()
    last = _days(end.timestamp())
    days = [last - (len(values) - 1 - n) for n in range(len(values))]
    unit, name = _byte_unit(max(values, default=0))
    scaled = [v / unit for v in values]
    if values:
        ax.fill_between(days, scaled, color=BLUE_FILL, linewidth=0)
        ax.plot(days, scaled, color=BLUE, linewidth=2)
        ax.annotate(
            human_bytes(values[-1]),
            (days[-1], scaled[-1]),
            textcoords="offset points",
            xytext=(-4, 6),
            ha="right",
            fontsize=12,
            color=INK,
        )
    ax.yaxis.set_major_formatter(lambda value, _pos: f"{value:g} {name}")
    _date_axis(ax, days[0] if len(days) > 1 else last - 1, last)
    ax.set_ylim(bottom=0, top=max(scaled, default=0) * 1.15 or 1)
    return _png(fig)


def line_chart(
    series: Sequence[tuple[str, Series]], x_range: tuple[float, float] | None = None
) -> bytes:
    """Named series of (Unix seconds, seconds) as lines with a dot per point, each in its
    PALETTE colour: dates along x, seconds up y from 0. The report's caption is the
    legend (each name in its colour, with its last and largest value): a legend inside
    the picture took a third of it on a phone."""
    fig, ax = _figure()
    for n, (name, points) in enumerate(series):
        ordered = sorted(points)
        ax.plot(
            [_days(x) for x, _ in ordered],
            [y for _, y in ordered],
            color=PALETTE[n % len(PALETTE)],
            linewidth=2,
            marker="o",
            markersize=4,
            label=name,
        )
    xs = [x for _, points in series for x, _ in points]
    low, high = x_range or (min(xs, default=0.0), max(xs, default=1.0))
    _date_axis(ax, _days(low), _days(high))
    ys = [y for _, points in series for _, y in points]
    ax.set_ylim(bottom=0, top=max(ys, default=0) * 1.15 or 1)
    ax.yaxis.set_major_formatter(lambda value, _pos: f"{value:g} s")
    return _png(fig)


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100 * SCALE, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(axis="y", color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=12, colors=INK)  # still legible scaled to a phone's width
    return fig, ax


def _date_axis(ax: Axes, start: float, end: float) -> None:
    from matplotlib.dates import AutoDateLocator, DateFormatter

    locator = AutoDateLocator(minticks=3, maxticks=7, tz=UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(DateFormatter("%d %b", tz=UTC))  # type: ignore[no-untyped-call]
    ax.set_xlim(start, end)


def _byte_unit(largest: float) -> tuple[int, str]:
    """The binary unit the axis counts in, so its ticks are round numbers of it."""
    unit, name = 1, "B"
    for next_name in ("KiB", "MiB", "GiB", "TiB"):
        if largest < unit * 1024:
            break
        unit, name = unit * 1024, next_name
    return unit, name


def _days(seconds: float) -> float:
    """matplotlib's dates: days since its epoch (1970-01-01 UTC)."""
    return seconds / 86400


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", facecolor="white")
    return out.getvalue()

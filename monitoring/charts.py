"""Charts drawn on the server as SVG (no script, no CDN, no build step): the console embeds them.

`stacked_hours`: per hour, one bar stacked network / gateway queue / app / database time (each
component's median) with the hour's total p95 as a line above (one `<path>` per component, a
sub-path `M x y h w v h h -w z` per hour, bottom to top in that order); `stacked_hours_of`: the same
from storage.chart_bars rows, memoized on the rows; `usage_lines`: usage series in percent (host
CPU, memory, a VM's CPU) over time. Pure: rows in, markup out (every text escaped).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from monitoring.rollups import HOUR_S
from monitoring.timings import Component

STACK: tuple[tuple[Component, str, str], ...] = (
    (Component.NETWORK, "#4e79a7", "network 網路"),
    (Component.QUEUE, "#f28e2b", "gateway queue 閘道排隊"),
    (Component.APP, "#59a14f", "app 應用程式"),
    (Component.DB, "#b07aa1", "database 資料庫"),
)
P95_COLOUR = "#d62728"
WIDTH, HEIGHT = 960, 240
TOOLTIP_BARS = 7 * 24
CACHED_CHARTS = 32  # drawn charts kept (~90 KB each for 30 days)

# storage.chart_bars' row: hour, count, p50 of network, queue, app, db, the total's p95 (ms)
BarRow = tuple[int, int, float | None, float | None, float | None, float | None, float | None]
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 34


@dataclass(frozen=True)
class Bar:
    hour: int
    parts: tuple[float, ...]  # ms, in STACK's order
    p95_ms: float | None
    count: int


def bars(rows: Sequence[Mapping[str, Any]]) -> list[Bar]:
    """Storage summary rows of one transaction -> one bar per hour (oldest first)."""
    result = []
    for row in rows:
        ms = row["ms"]
        parts = tuple(float(ms[c.value]["p50"] or 0.0) for c, _, _ in STACK)
        result.append(Bar(int(row["hour"]), parts, ms[Component.TOTAL.value]["p95"], int(row["count"])))
    return result


def bars_from_columns(rows: Sequence[BarRow]) -> list[Bar]:
    """storage.chart_bars rows -> bars."""
    return [Bar(hour, (net or 0.0, queue or 0.0, app or 0.0, db or 0.0), p95, count)
            for hour, count, net, queue, app, db, p95 in rows]


def _nice(top: float) -> float:
    """A round axis maximum at or above `top`."""
    if top <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(top))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= top:
            return float(step * magnitude)
    return float(10 * magnitude)


def _label(hour: int, span_s: float) -> str:
    fmt = "%m-%d" if span_s > 2 * 24 * HOUR_S else "%H:00"
    return time.strftime(fmt, time.gmtime(hour))


def stacked_hours(data: Sequence[Bar], since: int, until: int, title: str) -> str:
    """The stacked chart over [since, until) (hour starts, UTC); an hour without answers is a gap."""
    hours = max((until - since) // HOUR_S, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / hours
    top = _nice(max([sum(b.parts) for b in data] + [b.p95_ms or 0.0 for b in data] + [0.0]))
    scale = plot_h / top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" '
           f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - value * scale
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e8ee"/>'
                   f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{value:g}</text>')
    out.append(f'<text x="4" y="{TOP + 8}" font-size="11">ms</text>')
    width = max(slot * 0.8, 0.6)
    line: list[str] = []
    # The page's hot loop (720 bars for 30 days): one path per component (a sub-path per hour, in
    # the bars' order, bottom to top as STACK), one decimal, the four components unrolled and the
    # parts of a sub-path that do not change built once; per-hour tooltips only for a week or less.
    paths: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])
    network, queue, app, db = paths
    tips: list[str] = []
    with_tips = len(data) <= TOOLTIP_BARS
    bottom = TOP + plot_h
    w = f"{width:.1f}"
    across, close = f"h{w}v", f"h-{w}z"
    floor = float(bottom)
    half = width / 2
    for bar in data:
        x = LEFT + (bar.hour - since) / HOUR_S * slot
        at = f"M{x:.1f} "
        n, q, a, d = bar.parts
        h = n * scale
        base = floor - h
        network.append(f"{at}{base:.1f}{across}{h:.1f}{close}")
        h = q * scale
        base -= h
        queue.append(f"{at}{base:.1f}{across}{h:.1f}{close}")
        h = a * scale
        base -= h
        app.append(f"{at}{base:.1f}{across}{h:.1f}{close}")
        h = d * scale
        base -= h
        db.append(f"{at}{base:.1f}{across}{h:.1f}{close}")
        p95 = bar.p95_ms
        if p95 is not None:
            line.append(f"{x + half:.1f},{bottom - p95 * scale:.1f}")
        if with_tips:
            parts = ", ".join(f"{name} {v:.1f}" for (_, _, name), v in zip(STACK, bar.parts, strict=True))
            tips.append(f'<rect class="hour" data-hour="{bar.hour}" x="{x:.1f}" y="{TOP}" width="{w}" '
                        f'height="{plot_h}" fill="transparent"><title>'
                        + time.strftime("%Y-%m-%d %H:00 UTC", time.gmtime(bar.hour))
                        + f", {bar.count} answers, ms: {parts}"
                        + (f"; total p95 {p95:.1f}" if p95 is not None else "") + "</title></rect>")
    for (component, colour, _), segments in zip(STACK, paths, strict=True):
        out.append(f'<path class="{component.value}" fill="{colour}" d="{"".join(segments)}"/>')
    out.extend(tips)
    if line:
        out.append(f'<polyline class="p95" points="{" ".join(line)}" fill="none" stroke="{P95_COLOUR}" '
                   'stroke-width="1.2"/>')
    ticks = min(hours, 8)
    for i in range(ticks + 1):
        hour = since + int(hours * i / ticks) * HOUR_S
        x = LEFT + (hour - since) / HOUR_S * slot
        out.append(f'<text x="{x:.1f}" y="{HEIGHT - 18}" font-size="11" text-anchor="middle">'
                   f"{_label(hour, until - since)}</text>")
    x = LEFT
    for _, colour, name in (*STACK, (Component.TOTAL, P95_COLOUR, "total p95")):
        out.append(f'<rect x="{x}" y="{HEIGHT - 11}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 13}" y="{HEIGHT - 2}" font-size="11">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


@functools.lru_cache(maxsize=CACHED_CHARTS)
def stacked_hours_of(rows: tuple[BarRow, ...], since: int, until: int, title: str) -> str:
    """`stacked_hours` of storage.chart_bars rows, memoized on the rows themselves (the key is every
    figure drawn, not a time or a version): the same rows always draw the same chart, so a page
    viewed again before its data changed is not drawn again, and a row that changed (a flush merges
    new answers into the current hour every probe interval) is a new key, drawn afresh."""
    return stacked_hours(bars_from_columns(rows), since, until, title)


def usage_lines(series: Mapping[str, Sequence[tuple[float, float]]], since: float, until: float,
                title: str, height: int = 160) -> str:
    """Lines of percent values (0-100) over [since, until), one per named series."""
    colours = ("#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#76b7b2", "#b07aa1")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, height - TOP - BOTTOM
    span = max(until - since, 1.0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" class="chart" '
           f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for value in (0, 50, 100):
        y = TOP + plot_h - value / 100 * plot_h
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e8ee"/>'
                   f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{value} %</text>')
    x_legend = LEFT
    for i, (name, points) in enumerate(sorted(series.items())):
        colour = colours[i % len(colours)]
        coords = [f"{LEFT + (at - since) / span * plot_w:.1f},"
                  f"{TOP + plot_h - min(max(v, 0), 100) / 100 * plot_h:.1f}"
                  for at, v in points if since <= at < until]
        if coords:
            out.append(f'<polyline class="usage" points="{" ".join(coords)}" fill="none" stroke="{colour}" '
                       'stroke-width="1.4"/>')
        out.append(f'<rect x="{x_legend}" y="{height - 11}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x_legend + 13}" y="{height - 2}" font-size="11">{escape(name)}</text>')
        x_legend += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)

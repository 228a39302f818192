"""The dashboard's charts, drawn on the server as inline SVG from a rollup series (no script, no
library): jobs finished per minute by outcome (stacked bars), the waits' p50 and p95 (lines) and the
queue depth (an area). Colours are the stylesheet's variables (app.css .chart), so the charts follow
the light and dark themes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from skiplock.queue.stats import StatsPoint, StatsSeries

WIDTH = 600
HEIGHT = 170
TOP = 10  # room above the tallest value
BOTTOM = 24  # the time axis's labels
LEFT = 58  # the value axis's labels


@dataclass(frozen=True, slots=True)
class Chart:
    """One drawn chart: its title, its legend (css class, label) and the SVG."""

    title: str
    legend: tuple[tuple[str, str], ...]
    svg: Markup


def duration(seconds: float) -> str:
    """A wait, shortly: "4 ms", "1.2 s", "3 min", "2 h"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def count(value: float) -> str:
    """A count or rate, shortly: "7", "2.5", "12k", "1.2M"."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _nice(top: float) -> float:
    """The value axis's top: ``top`` rounded up to 1, 2 or 5 times a power of ten."""
    if top <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 <= top:
        scale *= 10
    while scale > top:
        scale /= 10
    return next(m * scale for m in (1, 2, 5, 10) if m * scale >= top)


class _Frame:
    """A chart's plot area: steps along x, values from 0 to ``top`` along y."""

    def __init__(self, steps: int, top: float) -> None:
        self.steps = steps
        self.top = _nice(top)
        self.width = WIDTH - LEFT
        self.height = HEIGHT - TOP - BOTTOM

    def x(self, step: float) -> float:
        return LEFT + step * self.width / self.steps

    def y(self, value: float) -> float:
        return TOP + self.height * (1 - min(value, self.top) / self.top)

    def axes(self, series: StatsSeries, label: Callable[[float], str]) -> list[str]:
        base = self.y(0)
        middle = f"{(TOP + base) / 2:.1f}"
        top = escape(label(self.top))
        parts = [
            f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH}" y2="{TOP}"/>',
            f'<line class="grid" x1="{LEFT}" y1="{middle}" x2="{WIDTH}" y2="{middle}"/>',
            f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH}" y2="{base}"/>',
            f'<text class="tick" x="{LEFT - 4}" y="{TOP + 5}" text-anchor="end">{top}</text>',
            f'<text class="tick" x="{LEFT - 4}" y="{base}" text-anchor="end">0</text>',
        ]
        hours = series.window == "1d"
        for fraction in (0, 0.25, 0.5, 0.75):
            ago = (1 - fraction) * (24 if hours else 60)
            text = f"{ago:.0f} h ago" if hours else f"{ago:.0f} min ago"
            anchor = "start" if fraction == 0 else "middle"
            parts.append(
                f'<text class="tick" x="{self.x(fraction * self.steps):.1f}" y="{HEIGHT - 5}"'
                f' text-anchor="{anchor}">{text}</text>'
            )
        parts.append(f'<text class="tick" x="{WIDTH}" y="{HEIGHT - 5}" text-anchor="end">now</text>')
        return parts


def _svg(label: str, parts: Sequence[str]) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}"'
        f">{body}</svg>"
    )


def _at(point: StatsPoint) -> str:
    return point.at.strftime("%H:%M UTC")


def finished_chart(series: StatsSeries) -> Chart:
    """Jobs finished per minute, stacked by outcome."""
    per_minute = series.step_s / 60
    rows = [
        (p, p.succeeded / per_minute, p.failed / per_minute, p.cancelled / per_minute) for p in series.points
    ]
    frame = _Frame(len(rows), max((s + f + c for _, s, f, c in rows), default=0))
    parts = frame.axes(series, count)
    bar = frame.width / max(len(rows), 1)
    for n, (point, *values) in enumerate(rows):
        if not any(values):
            continue
        bottom = frame.y(0)
        tip = f"{_at(point)}: {point.succeeded} succeeded, {point.failed} failed, {point.cancelled} cancelled"
        parts.append(f"<g><title>{escape(tip)}</title>")
        total = 0.0
        for css, value in zip(("ok", "bad", "off"), values, strict=True):
            if value:
                top = frame.y(total + value)
                parts.append(
                    f'<rect class="{css}" x="{frame.x(n) + bar * 0.1:.1f}" y="{top:.1f}"'
                    f' width="{bar * 0.8:.1f}" height="{max(bottom - top, 0.5):.1f}"/>'
                )
                total += value
                bottom = top
        parts.append("</g>")
    return Chart(
        "Jobs finished per minute",
        (("ok", "succeeded"), ("bad", "failed"), ("off", "cancelled")),
        _svg("Jobs finished per minute by outcome", parts),
    )


def _line(frame: _Frame, values: Sequence[float | None], css: str) -> list[str]:
    """A polyline per run of steps with a value (a step without one breaks it); a lone value a dot."""
    parts, run = [], []
    for n, value in [*enumerate(values), (len(values), None)]:
        if value is not None:
            run.append((frame.x(n + 0.5), frame.y(value)))
            continue
        if len(run) == 1:
            parts.append(f'<circle class="{css}" cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="2"/>')
        elif run:
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            parts.append(f'<polyline class="{css}" points="{points}"/>')
        run = []
    return parts


def wait_chart(series: StatsSeries) -> Chart:
    """The waits' p50 and p95 (due → started) of the jobs finished in each step."""
    p50 = [p.wait_p50_s for p in series.points]
    p95 = [p.wait_p95_s for p in series.points]
    frame = _Frame(len(p50), max((v for v in p95 if v is not None), default=0))
    parts = frame.axes(series, duration)
    parts += _line(frame, p95, "p95")
    parts += _line(frame, p50, "p50")
    return Chart(
        "Wait (due → started)", (("p50", "p50"), ("p95", "p95")), _svg("Wait time p50 and p95", parts)
    )


def depth_chart(series: StatsSeries) -> Chart:
    """Queued jobs, as sampled each minute (the step's largest sample)."""
    values = [None if p.queued is None else float(p.queued) for p in series.points]
    frame = _Frame(len(values), max((v for v in values if v is not None), default=0))
    parts = frame.axes(series, count)
    parts += _line(frame, values, "depth")
    return Chart("Queue depth", (("depth", "queued"),), _svg("Queue depth", parts))


def charts(series: StatsSeries) -> list[Chart]:
    """The three charts of a series."""
    return [finished_chart(series), wait_chart(series), depth_chart(series)]

"""The Gantt chart of a batch as inline SVG: one row per task (in the order they first started),
one bar per attempt on a shared time axis, so retries and reruns show as several bars in a row.
Every value from the database is escaped by ``Markup.format``; colours come from the page's CSS
classes. (The task graph is drawn in the browser: see ``graph`` and ``static/dashboard.js``.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from markupsafe import Markup

from dagrelay.states import TaskStatus

LABEL_W = 220
PLOT_W = 900
ROW_H = 24
BAR_H = 14
AXIS_H = 28
TICKS = 6


def _n(value: float) -> str:
    """Coordinates without float noise: 40.0 -> '40', 12.25 -> '12.2'."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _span(attempts: Sequence[Mapping[str, Any]], now: datetime) -> tuple[datetime, float]:
    start = min(a["started_at"] for a in attempts)
    end = max(a["finished_at"] or now for a in attempts)
    return start, max((end - start).total_seconds(), 0.001)


def _rows(attempts: Sequence[Mapping[str, Any]]) -> list[str]:
    first: dict[str, datetime] = {}
    for a in attempts:
        first[a["task"]] = min(first.get(a["task"], a["started_at"]), a["started_at"])
    return sorted(first, key=lambda t: (first[t], t))


def _tick_label(seconds: float, total: float) -> str:
    if total < 10:
        return f"+{seconds:.2f} s"
    if total < 600:
        return f"+{seconds:.0f} s"
    return f"+{seconds / 60:.1f} min"


def _axis(total: float, height: float) -> Markup:
    ticks = []
    for i in range(TICKS + 1):
        x = LABEL_W + PLOT_W * i / TICKS
        ticks.append(
            Markup(
                '<line class="tick" x1="{x}" y1="{top}" x2="{x}" y2="{bottom}"/>'
                '<text class="tick" x="{x}" y="{ty}">{label}</text>'
            ).format(
                x=_n(x),
                top=AXIS_H - 6,
                bottom=_n(height),
                ty=AXIS_H - 10,
                label=_tick_label(total * i / TICKS, total),
            )
        )
    return Markup("").join(ticks)


def _bar(a: Mapping[str, Any], y: float, start: datetime, total: float, now: datetime) -> Markup:
    began = (a["started_at"] - start).total_seconds()
    ended = ((a["finished_at"] or now) - start).total_seconds()
    x = LABEL_W + PLOT_W * began / total
    width = max(PLOT_W * (ended - began) / total, 2.0)
    outcome = a["outcome"] or TaskStatus.PROCESSING
    label = f"run {a['run']} · attempt {a['attempt']}"
    return Markup(
        '<g class="attempt outcome-{outcome}" data-task="{task}" data-run="{run}" '
        'data-attempt="{attempt}"><title>{task} · {label} · {outcome} · {took}</title>'
        '<rect class="bar status-{outcome}" x="{x}" y="{y}" width="{w}" height="{h}" rx="3"/>'
        "{caption}</g>"
    ).format(
        outcome=outcome,
        task=a["task"],
        run=a["run"],
        attempt=a["attempt"],
        label=label,
        took=f"{ended - began:.2f} s" if a["finished_at"] else "running",
        x=_n(x),
        y=_n(y),
        w=_n(width),
        h=BAR_H,
        caption=Markup('<text class="bar-label" x="{}" y="{}">r{}·a{}</text>').format(
            _n(x + 4), _n(y + BAR_H - 3), a["run"], a["attempt"]
        )
        if width > 44
        else Markup(""),
    )


def gantt(attempts: Sequence[Mapping[str, Any]], now: datetime) -> Markup:
    """The chart of ``attempts`` (task, run, attempt, outcome, started_at, finished_at);
    an attempt still running ends at ``now``."""
    if not attempts:
        return Markup('<p class="muted">No attempt has started yet.</p>')
    start, total = _span(attempts, now)
    rows = _rows(attempts)
    row_of = {task: i for i, task in enumerate(rows)}
    height = AXIS_H + len(rows) * ROW_H + 8
    labels = Markup("").join(
        Markup('<text class="row-label" x="8" y="{}">{}</text>').format(
            _n(AXIS_H + i * ROW_H + ROW_H / 2 + 4), task if len(task) <= 30 else task[:29] + "…"
        )
        for i, task in enumerate(rows)
    )
    stripes = Markup("").join(
        Markup('<rect class="stripe" x="0" y="{}" width="{}" height="{}"/>').format(
            _n(AXIS_H + i * ROW_H), LABEL_W + PLOT_W, ROW_H
        )
        for i in range(0, len(rows), 2)
    )
    bars = Markup("").join(
        _bar(a, AXIS_H + row_of[a["task"]] * ROW_H + (ROW_H - BAR_H) / 2, start, total, now)
        for a in attempts
    )
    return Markup(
        '<svg class="gantt" xmlns="http://www.w3.org/2000/svg" role="img" '
        'aria-label="attempts on a time axis" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
        "{stripes}{axis}{labels}{bars}</svg>"
    ).format(
        w=LABEL_W + PLOT_W + 16,
        h=_n(height),
        stripes=stripes,
        axis=_axis(total, height),
        labels=labels,
        bars=bars,
    )

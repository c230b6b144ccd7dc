"""The audit report as one self-contained HTML page: a timeline of lifetimes, counts, anomalies.

People would rather look than read when they ask "what happened to my tasks today": a bar
per incarnation, coloured by how it ended, shows at a glance which ones failed, which were
killed and which are still running. The page has no scripts and fetches nothing (its
Content-Security-Policy forbids it), so it can be mailed, archived or opened offline.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import TYPE_CHECKING

from cli.render.palette import ENDING, ENDINGS
from cli.render.words import duration, elapsed, ending_of, outcome, signal_suffix

if TYPE_CHECKING:
    from collections.abc import Callable

    from projections.audit import AuditReport, Lifetime


# Timeline geometry, in CSS pixels.
WIDTH = 1040
LABEL_WIDTH = 200
RIGHT_MARGIN = 170  # room for the outcome text after the longest bar
ROW_HEIGHT = 22
BAR_HEIGHT = 14
AXIS_HEIGHT = 26
MIN_BAR = 3  # a 20 ms task on an hour-long axis must still be visible
MAX_TICKS = 8
_STEPS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
)  # fmt: skip


CLOCK_NOTE = "recorded times go backwards here: a clock was stepped back"


def task_key(life: Lifetime) -> str:
    """What the page calls an incarnation (and its bar's data-task): ``ns/id#incarnation``."""
    return f"{life.namespace}/{life.id}#{life.incarnation}"


def _tooltip(life: Lifetime, until: datetime) -> str:
    lines = [f"{task_key(life)}: {outcome(life)}", f"created {life.created.isoformat()}"]
    if life.node:
        lines.insert(1, f"node {life.node}")
    for name in ("started", "exited", "deleted"):
        when = getattr(life, name)
        if when is not None:
            lines.append(f"{name} {when.isoformat()}")
    end = life.deleted or until
    lines.append(f"lifetime {elapsed((end - life.created).total_seconds())}")
    if life.clock_went_back:
        lines.append(CLOCK_NOTE)
    for kill in life.killed_by:
        who = kill.get("command") or kill.get("detail") or kill.get("kind", "")
        lines.append(f"killed with signal {kill.get('signal')} by {who}")
    return "\n".join(lines)


def _step(span: float) -> float:
    for step in _STEPS:
        if span / step <= MAX_TICKS:
            return step
    return span / MAX_TICKS


def timeline(report: AuditReport) -> str:
    """The SVG timeline: one bar per incarnation, oldest on top, on a shared time axis."""
    lives = sorted(report.lifetimes, key=lambda x: (x.created, x.namespace, x.id, x.incarnation))
    if not lives:
        return '<p class="empty">No task incarnations in this period.</p>'
    start = min(life.created for life in lives)
    end = max(life.deleted or report.until for life in lives)
    span = max((end - start).total_seconds(), 0.001)
    plot = WIDTH - LABEL_WIDTH - RIGHT_MARGIN
    height = AXIS_HEIGHT + ROW_HEIGHT * len(lives) + 4

    def x(when: datetime) -> float:
        return LABEL_WIDTH + (when - start).total_seconds() / span * plot

    parts = [f'<svg class="timeline" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="task lifetimes">']  # fmt: skip
    step = _step(span)
    ticks = int(span / step) + 1
    for n in range(ticks):
        tx = x(start + timedelta(seconds=n * step))
        parts.append(f'<line class="grid" x1="{tx:.1f}" y1="{AXIS_HEIGHT - 6}" x2="{tx:.1f}" '
                     f'y2="{height}"/><text class="tick" x="{tx:.1f}" y="{AXIS_HEIGHT - 10}">'
                     f"{escape(f'+{duration(n * step)}' if n else '')}</text>")  # fmt: skip
    parts.append(f'<text class="origin" x="{LABEL_WIDTH + 6}" y="{AXIS_HEIGHT - 10}">'
                 f"{escape(start.isoformat(sep=' ', timespec='seconds'))}</text>")  # fmt: skip
    if any(life.deleted is None for life in lives):
        ux = x(report.until)
        parts.append(f'<line class="until" x1="{ux:.1f}" y1="{AXIS_HEIGHT - 6}" x2="{ux:.1f}" '
                     f'y2="{height}"><title>until {escape(report.until.isoformat())}</title>'
                     "</line>")  # fmt: skip
    for row, life in enumerate(lives):
        parts.append(_bar(life, row, x, report.until))
    parts.append("</svg>")
    return "\n".join(parts)


def _bar(life: Lifetime, row: int, x: Callable[[datetime], float], until: datetime) -> str:
    """One incarnation: its whole life faded, its running part solid, its outcome beside it."""
    key = ending_of(life)
    colour = ENDING[key].colour
    top = AXIS_HEIGHT + row * ROW_HEIGHT
    y = top + (ROW_HEIGHT - BAR_HEIGHT) / 2
    x0, x1 = x(life.created), max(x(life.deleted or until), x(life.created) + MIN_BAR)
    # The solid part is when the process ran (or, if it never started, its whole life).
    r0 = x(life.started) if life.started else x0
    r1 = x(life.exited) if life.exited else x(life.deleted or until)
    r1 = max(r1, r0 + MIN_BAR)
    label = task_key(life)
    shown = label if len(label) <= 30 else label[:29] + "\u2026"
    text_x = min(x1 + 5, WIDTH - RIGHT_MARGIN + 5)
    tip = escape(_tooltip(life, until))
    said = outcome(life) + (" \u00b7 clock went back" if life.clock_went_back else "")
    stepped = " clock-went-back" if life.clock_went_back else ""
    return (
        f'<g class="bar ended-{key}{stepped}" data-task="{escape(label)}" data-ended="{key}">'
        f"<title>{tip}</title>"
        f'<text class="label" x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT - 3:.1f}">'
        f"{escape(shown)}</text>"
        f'<rect class="life" x="{x0:.1f}" y="{y:.1f}" width="{x1 - x0:.1f}" '
        f'height="{BAR_HEIGHT}" fill="{colour}"/>'
        f'<rect class="run" x="{r0:.1f}" y="{y:.1f}" width="{r1 - r0:.1f}" '
        f'height="{BAR_HEIGHT}" fill="{colour}"/>'
        f'<text class="outcome" x="{text_x:.1f}" y="{y + BAR_HEIGHT - 3:.1f}">'
        f"{escape(said)}</text></g>"
    )


def clock_note(report: AuditReport) -> str:
    """Say so where recorded times go backwards: those bars and durations are not to trust."""
    stepped = [task_key(life) for life in report.lifetimes if life.clock_went_back]
    if not stepped:
        return ""
    return (f'<p class="clock-went-back">Recorded times go backwards for {len(stepped)} '
            f"incarnation{'s' if len(stepped) != 1 else ''} ({escape(', '.join(stepped))}): "
            "a clock was stepped back; their bars are drawn at the times as recorded, and "
            "see the anomalies below.</p>")  # fmt: skip


def legend(report: AuditReport) -> str:
    """Every ending's colour, with how many bars have it."""
    counts = {e.key: 0 for e in ENDINGS}
    for life in report.lifetimes:
        counts[ending_of(life)] += 1
    items = [
        f'<li class="ended-{e.key}"><span class="swatch" style="background:{e.colour}"></span>'
        f"{escape(e.label)} <b>{counts[e.key]}</b></li>"
        for e in ENDINGS
    ]
    return f'<ul class="legend">{"".join(items)}</ul>'


def _status_meaning(status: int) -> str:
    if status == 0:
        return "success"
    if 128 < status <= 128 + 64:
        number = status - 128
        return f"signal {number}{signal_suffix(number)}"
    if status == 255:
        return "shim lost (or the process exited 255)"
    return "failure"


def _numerically(item: tuple[str, int]) -> tuple[int, str]:
    status = item[0]
    return (int(status) if status.lstrip("-").isdigit() else 0, status)


def exit_statuses(report: AuditReport) -> str:
    """Exit status counts as a table with a bar each."""
    if not report.exit_statuses:
        return '<p class="empty">No exits recorded.</p>'
    most = max(report.exit_statuses.values())
    rows = []
    for status, count in sorted(report.exit_statuses.items(), key=_numerically):
        meaning = _status_meaning(int(status)) if status.lstrip("-").isdigit() else ""
        width = 200 * count / most
        rows.append(f"<tr><td class=num>{escape(status)}</td><td>{escape(meaning)}</td>"
                    f"<td class=num>{count}</td><td><span class=count-bar "
                    f'style="width:{width:.0f}px"></span></td></tr>')  # fmt: skip
    head = "<tr><th>status</th><th>meaning</th><th>count</th><th></th></tr>"
    return f'<table class="statuses">{head}{"".join(rows)}</table>'


def anomalies(report: AuditReport) -> str:
    """The anomaly list, oldest first, as the audit found it."""
    if not report.anomalies:
        return '<p class="empty">No anomalies.</p>'
    rows = "".join(
        f'<tr class="anomaly kind-{escape(a.kind)}"><td>{escape(a.at.isoformat())}</td>'
        f"<td>{escape(a.kind)}</td><td>{escape(f'{a.namespace}/{a.id}#{a.incarnation}')}</td>"
        f"<td>{escape(a.detail)}</td><td>{escape(a.node)}</td></tr>"
        for a in report.anomalies
    )
    head = "<tr><th>at</th><th>kind</th><th>task</th><th>detail</th><th>node</th></tr>"
    return f'<table class="anomalies">{head}{rows}</table>'


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #222; background: #fff; margin: 16px 24px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 20px 0 6px; }
.period { color: #555; margin: 0 0 10px; }
.summary span { display: inline-block; margin: 0 14px 4px 0; } .summary b { font-size: 16px; }
.legend { list-style: none; padding: 0; margin: 6px 0; }
.legend li { display: inline-block; margin: 0 14px 4px 0; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 5px;
  vertical-align: -1px; }
svg.timeline { display: block; }
svg.timeline text { font: 11px system-ui, sans-serif; fill: #333; }
svg.timeline .label, svg.timeline .origin { text-anchor: end; }
svg.timeline .tick { text-anchor: middle; fill: #777; }
svg.timeline .grid { stroke: #e6e6e6; stroke-width: 1; }
svg.timeline .until { stroke: #999; stroke-dasharray: 4 3; }
svg.timeline rect { shape-rendering: crispEdges; }
svg.timeline .life { fill-opacity: 0.3; }
table { border-collapse: collapse; } th { text-align: left; color: #555; font-weight: 600; }
td, th { padding: 2px 12px 2px 0; vertical-align: top; } td.num { text-align: right; }
.count-bar { display: inline-block; height: 10px; background: #4a5568; }
.anomalies td:nth-child(4) { white-space: pre-wrap; } .empty { color: #777; }
.clock-went-back { color: #9a3412; }
"""


def audit_page(report: AuditReport, *, title: str = "shimledger audit") -> str:
    """The whole page: summary, legend, timeline, exit statuses, anomalies."""
    since = report.since.isoformat() if report.since else "the beginning"
    summary = "".join(
        f"<span>{escape(name)} <b>{count}</b></span>" for name, count in report.summary.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="period">from {escape(since)} until {escape(report.until.isoformat())}</p>
<div class="summary">{summary}</div>
<h2>Task lifetimes</h2>
{clock_note(report)}
{legend(report)}
{timeline(report)}
<h2>Exit statuses</h2>
{exit_statuses(report)}
<h2>Anomalies</h2>
{anomalies(report)}
</body></html>
"""

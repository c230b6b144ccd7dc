"""The audit report as one self-contained HTML page: an overview, a timeline, counts, anomalies.

People would rather look than read when they ask "what happened to my tasks today": a bar
per incarnation, coloured by how it ended and marked where it was killed, paused, exec'd
into, OOM-killed or lost its shim, shows at a glance which ones failed and why. At ten
thousand incarnations one bar a line is a page nobody reads, so the page carries the report
as data and its own script (cli/render/page_script.py) draws one row per ID (restarts side
by side), grouped by namespace, 100 IDs at a time, on a time axis that zooms, under an
overview of every matching incarnation; filters by namespace, ID, ending and exit status
narrow all of it. It fetches nothing and runs no other script (its Content-Security-Policy
allows only that script's hash), so it can be mailed, archived or opened offline.
"""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from cli.render.page_script import SCRIPT, SCRIPT_HASH
from cli.render.palette import ENDINGS
from cli.render.words import elapsed, ending_of, outcome, signal_suffix
from projections.audit import MARK_KINDS

if TYPE_CHECKING:
    from projections.audit import AuditReport, Lifetime


CLOCK_NOTE = "recorded times go backwards here: a clock was stepped back"
NAMED = 20  # incarnations a note names before it says "and N more"
# How each mark is drawn (page CSS below) and said in the legend, in MARK_KINDS' order.
MARK_LABELS = {
    "kill": "kill sent (a signal, by whom)", "pause": "paused (for how long)",
    "exec": "exec started", "oom": "OOM killer acted", "lost": "shim lost",
}  # fmt: skip


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


def _ms(when: datetime | None, origin: datetime) -> int | None:
    return None if when is None else round((when - origin).total_seconds() * 1000)


def _first_created(lives: list[Lifetime]) -> dict[tuple[str, str], datetime]:
    first: dict[tuple[str, str], datetime] = {}
    for life in lives:
        key = (life.namespace, life.id)
        first[key] = min(first.get(key, life.created), life.created)
    return first


def page_data(report: AuditReport) -> dict[str, Any]:
    """The report as the page's script reads it: compact rows, times in ms from the origin.

    Lives come sorted as the timeline shows them: by namespace, then by when each ID was
    first created (oldest on top), then incarnation, so that one ID's incarnations are
    adjacent and the script groups them into one row without sorting 10,000 of them.
    Words (outcomes, tooltips) are made here, by cli/render/words.py, so the page says what
    the terminal says. A life is ``[namespace index, id, incarnation, created, started,
    exited, deleted, ending, outcome index, exit status, tooltip, clock went back, marks]``;
    a mark ``[kind index, at, until, detail]``; an anomaly ``[at, kind, namespace, id,
    incarnation, detail, node, life index or -1]``.
    """
    first = _first_created(report.lifetimes)
    lives = sorted(report.lifetimes, key=lambda x: (
        x.namespace, first[(x.namespace, x.id)], x.id, x.created, x.incarnation))  # fmt: skip
    origin = min((life.created for life in lives), default=report.until)
    namespaces = sorted({life.namespace for life in lives})
    ns_index = {name: n for n, name in enumerate(namespaces)}
    outcomes: dict[str, int] = {}
    index = {(x.namespace, x.id, x.incarnation): n for n, x in enumerate(lives)}
    rows = [
        [ns_index[x.namespace], x.id, x.incarnation, _ms(x.created, origin),
         _ms(x.started, origin), _ms(x.exited, origin), _ms(x.deleted, origin), ending_of(x),
         outcomes.setdefault(outcome(x), len(outcomes)), x.exit_status,
         _tooltip(x, report.until), int(x.clock_went_back),
         [[MARK_KINDS.index(m.kind), _ms(m.at, origin), _ms(m.until, origin), m.detail]
          for m in x.marks]]
        for x in lives
    ]  # fmt: skip
    anomalies = [
        [_ms(a.at, origin), a.kind, a.namespace, a.id, a.incarnation, a.detail, a.node,
         index.get((a.namespace, a.id, a.incarnation), -1)]
        for a in report.anomalies
    ]  # fmt: skip
    return {
        "t0": round(origin.timestamp() * 1000), "until": _ms(report.until, origin),
        "endings": [[e.key, e.colour, e.label] for e in ENDINGS], "marks": list(MARK_KINDS),
        "namespaces": namespaces, "outcomes": list(outcomes), "lives": rows,
        "anomalies": anomalies,
    }  # fmt: skip


def data_block(report: AuditReport) -> str:
    """The data as a script element the browser never runs (type application/json).

    ``<``, ``>`` and ``&`` are written as JSON escapes, so no text of the history (an ID
    such as ``</script><script>...``) can close the element or open another."""
    text = json.dumps(page_data(report), ensure_ascii=False, separators=(",", ":"))
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, code)
    return f'<script type="application/json" id="audit-data">{text}</script>'


def clock_note(report: AuditReport) -> str:
    """Say so where recorded times go backwards: those bars and durations are not to trust."""
    stepped = [task_key(life) for life in report.lifetimes if life.clock_went_back]
    if not stepped:
        return ""
    named = ", ".join(stepped[:NAMED]) + (f" and {len(stepped) - NAMED} more"
                                          if len(stepped) > NAMED else "")  # fmt: skip
    return (f'<p class="clock-went-back">Recorded times go backwards for {len(stepped)} '
            f"incarnation{'s' if len(stepped) != 1 else ''} ({escape(named)}): "
            "a clock was stepped back; their bars are drawn at the times as recorded, and "
            "see the anomalies below.</p>")  # fmt: skip


def legend(report: AuditReport) -> str:
    """Every ending's colour, with how many bars have it; each one a box of the ending filter."""
    counts = {e.key: 0 for e in ENDINGS}
    for life in report.lifetimes:
        counts[ending_of(life)] += 1
    items = [
        f'<li class="ended-{e.key}"><label><input type="checkbox" name="ending" '
        f'value="{e.key}"><span class="swatch" style="background:{e.colour}"></span>'
        f"{escape(e.label)} <b>{counts[e.key]}</b></label></li>"
        for e in ENDINGS
    ]
    return f'<ul class="legend">{"".join(items)}</ul>'


def mark_legend(report: AuditReport) -> str:
    """What each mark on a bar means, with how many there are."""
    counts = {kind: 0 for kind in MARK_KINDS}
    for life in report.lifetimes:
        for mark in life.marks:
            counts[mark.kind] += 1
    items = "".join(
        f'<span class="mark-key mark-{kind}"><svg width="14" height="16" aria-hidden="true">'
        f"{_MARK_SAMPLE[kind]}</svg>{escape(MARK_LABELS[kind])} <b>{counts[kind]}</b></span>"
        for kind in MARK_KINDS
    )
    return f'<p class="marks">Marks: {items}</p>'


_MARK_SAMPLE = {
    "kill": '<polygon class="kill" points="3,3 11,3 7,10"/>',
    "pause": '<rect class="life-sample" x="0" y="2" width="14" height="12"/>'
             '<rect class="pause" x="3" y="5" width="8" height="6"/>',
    "exec": '<polygon class="exec" points="7,5 10,8 7,11 4,8"/>',
    "oom": '<circle class="oom" cx="7" cy="8" r="4"/>',
    "lost": '<path class="lost" d="M3 4l8 8m0 -8l-8 8"/>',
}  # fmt: skip


def controls(report: AuditReport) -> str:
    """The filters (namespace, ID, ending, exit status), the zoom and the pager.

    Hidden until the script runs: without it they could do nothing."""
    by_ns: dict[str, int] = {}
    for life in report.lifetimes:
        by_ns[life.namespace] = by_ns.get(life.namespace, 0) + 1
    options = "".join(f'<option value="{escape(ns)}">{escape(ns)} ({n})</option>'
                      for ns, n in sorted(by_ns.items()))  # fmt: skip
    return f"""<form id="filters" autocomplete="off">
<div id="controls" hidden>
<label>namespace <select name="ns"><option value="">every namespace
({len(report.lifetimes)})</option>{options}</select></label>
<label>ID contains <input name="id" type="search" size="16"></label>
<label>exit status <input name="status" size="4" inputmode="numeric"></label>
<button type="button" id="clear">clear filters</button>
<span class="zoom">time axis: <button type="button" id="zoom-in">zoom in</button>
<button type="button" id="zoom-out">zoom out</button>
<button type="button" id="whole">whole period</button> (or click the overview)</span>
</div>
{legend(report)}
</form>"""


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
    """Anomaly counts by kind here; the list itself, narrowed by the filters, by the script."""
    if not report.anomalies:
        return '<p class="empty">No anomalies.</p>'
    kinds: dict[str, int] = {}
    for a in report.anomalies:
        kinds[a.kind] = kinds.get(a.kind, 0) + 1
    counts = "".join(f"<tr><td>{escape(kind)}</td><td class=num>{n}</td></tr>"
                     for kind, n in sorted(kinds.items()))  # fmt: skip
    head = "<tr><th>at</th><th>kind</th><th>task</th><th>detail</th><th>node</th></tr>"
    return (
        f'<table class="anomaly-kinds"><tr><th>kind</th><th>count</th></tr>{counts}'
        f'</table><p id="anomaly-status"></p><table class="anomalies"><thead>{head}'
        '</thead><tbody id="anomaly-rows"></tbody></table>'
    )


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #222; background: #fff; margin: 16px 24px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 20px 0 6px; }
.period { color: #555; margin: 0 0 10px; }
.summary span { display: inline-block; margin: 0 14px 4px 0; } .summary b { font-size: 16px; }
#controls label, #controls .zoom { margin-right: 12px; } #controls { margin: 4px 0; }
.legend { list-style: none; padding: 0; margin: 6px 0; }
.legend li { display: inline-block; margin: 0 12px 4px 0; }
.legend input { margin: 0 4px 0 0; vertical-align: -1px; }
#controls[hidden] ~ .legend input { display: none; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 5px;
  vertical-align: -1px; }
.marks .mark-key { margin-right: 14px; } .marks svg { vertical-align: -3px; margin-right: 3px; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg.timeline { display: block; }
svg .label, svg .origin { text-anchor: end; } svg .namespace { font-weight: 600; fill: #111; }
svg .tick { text-anchor: middle; fill: #777; }
svg .grid { stroke: #e6e6e6; stroke-width: 1; }
svg .until { stroke: #999; stroke-dasharray: 4 3; }
svg rect { shape-rendering: crispEdges; }
svg .life { fill-opacity: 0.3; } svg .hist { fill-opacity: 0.7; }
svg .bucket .hit { fill: transparent; cursor: zoom-in; }
svg .bucket:hover .hit { fill: #0001; }
svg .kill { fill: #111; stroke: #fff; stroke-width: 1; }
svg .mark-pause rect, svg .pause { fill: #fff; fill-opacity: 0.75; stroke: #333; }
svg .exec { fill: #222; stroke: #fff; } svg .mark-exec polygon { fill: #222; stroke: #fff; }
svg .mark-kill polygon { fill: #111; stroke: #fff; stroke-width: 1; }
svg .oom, svg .mark-oom circle { fill: #ffd400; stroke: #111; }
svg .lost, svg .mark-lost path { stroke: #111; stroke-width: 2.5; fill: none; }
svg .life-sample { fill: #1f77b4; fill-opacity: 0.5; }
table { border-collapse: collapse; } th { text-align: left; color: #555; font-weight: 600; }
td, th { padding: 2px 12px 2px 0; vertical-align: top; } td.num { text-align: right; }
.count-bar { display: inline-block; height: 10px; background: #4a5568; }
.anomalies td:nth-child(4) { white-space: pre-wrap; } .empty { color: #777; }
.clock-went-back { color: #9a3412; } .anomaly-kinds { margin-bottom: 6px; }
""" + "".join(
    f"svg .ended-{e.key} .life, svg .ended-{e.key} .run, svg .hist.ended-{e.key} "
    f"{{ fill: {e.colour}; }}\n"
    for e in ENDINGS
)


def audit_page(report: AuditReport, *, title: str = "shimledger audit") -> str:
    """The whole page: summary, filters and legend, overview, timeline, statuses, anomalies."""
    since = report.since.isoformat() if report.since else "the beginning"
    summary = "".join(
        f"<span>{escape(name)} <b>{count}</b></span>" for name, count in report.summary.items()
    )
    policy = f"default-src 'none'; style-src 'unsafe-inline'; script-src '{SCRIPT_HASH}'"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="period">from {escape(since)} until {escape(report.until.isoformat())}</p>
<div class="summary">{summary}</div>
<h2>Task lifetimes</h2>
{clock_note(report)}
{controls(report)}
{mark_legend(report)}
<noscript><p class="empty">The overview, the timeline and the anomaly list are drawn by
this page's own script (inline, allowed by its Content-Security-Policy); with scripts off,
only the counts are shown.</p></noscript>
<svg id="overview" class="overview" width="1040" height="66" role="img"
 aria-label="incarnations created over time, by how they ended"></svg>
<p id="status"></p>
<p id="pager"><button type="button" id="prev" disabled>previous 100 IDs</button>
<button type="button" id="next" disabled>next 100 IDs</button></p>
<p class="empty" id="empty" hidden>No task incarnations in this period.</p>
<svg id="timeline" class="timeline" width="1040" height="30" role="img"
 aria-label="task lifetimes"></svg>
<h2>Exit statuses</h2>
{exit_statuses(report)}
<h2>Anomalies</h2>
{anomalies(report)}
{data_block(report)}
<script>{SCRIPT}</script>
</body></html>
"""

"""Tables for people: aligned, with colour, only when stdout is a terminal.

Piped, the same rows come out tab-separated with no escape codes, so `cut -f` and
`awk -F'\\t'` read them even when a cell is empty or holds spaces.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cli.render.palette import BOLD, STATUS_COLOURS, event_colour, exit_colour

if TYPE_CHECKING:
    from cli.output import StateOutput, TaskOutput
    from projections.records import EventRecord

_RESET = "\x1b[0m"


def on_terminal() -> bool:
    """Whether a person is reading stdout (tables and colour) or a program is (plain text)."""
    return sys.stdout.isatty()


def colour_enabled() -> bool:
    """Colour on a terminal, unless NO_COLOR (no-color.org) or TERM=dumb says otherwise."""
    return on_terminal() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def paint(text: str, code: str | None) -> str:
    """``text`` in the SGR ``code`` (codes joined with ';' combine); unchanged for None."""
    return f"\x1b[{code}m{text}{_RESET}" if code and text else text


Styler = Callable[[int, int, str], str | None]  # (row, column, cell) -> SGR code or None


def table(rows: list[list[str]], style: Styler | None = None) -> str:
    """Aligned columns on a terminal (header bold, cells styled); tab-separated when piped."""
    if not rows:
        return ""
    if not on_terminal():
        return "\n".join("\t".join(_plain(cell) for cell in row) for row in rows)
    colour = colour_enabled()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for r, row in enumerate(rows):
        cells = []
        for c, (cell, width) in enumerate(zip(row, widths, strict=True)):
            padded = cell.ljust(width)
            if colour:
                code = BOLD if r == 0 else style(r, c, cell) if style else None
                padded = paint(cell, code) + " " * (width - len(cell))
            cells.append(padded)
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def _plain(cell: str) -> str:
    """A cell fit for a tab-separated line: no tabs or newlines inside it."""
    return cell.replace("\t", " ").replace("\n", " ")


# --- the tables ----------------------------------------------------------------------------


def describe(record: EventRecord) -> str:
    """The event's own fields, as key=value."""
    shown = []
    for key, value in record.fields().items():
        if value is None or value is False:
            continue
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        shown.append(f"{key}={text}")
    return " ".join(shown)


def who(cause: dict[str, Any]) -> str:
    """Who or what caused an event, in one phrase: 'root pid 7: shimledger run x'."""
    if cause.get("kind") == "cli":
        user = cause.get("user", cause.get("uid"))
        return f"{user} pid {cause.get('pid')}: {cause.get('command')}"
    return f"{cause.get('kind')}: {cause.get('detail', '')}".rstrip(": ")


def event_rows(records: list[EventRecord], *, with_task: bool, with_position: bool = False) -> str:
    """Events as a table: time, (task,) incarnation, type, own fields, cause, the task's node
    (and `events`' position, which --after takes).

    NODE and POSITION come last, so that the columns before them stay where scripts found
    them before histories had nodes; NODE is empty for a task recorded before then.
    """
    head = ["TIME", *(["NAMESPACE", "ID"] if with_task else []), "INC", "EVENT", "DETAILS", "BY",
            "NODE", *(["POSITION"] if with_position else [])]  # fmt: skip
    rows = [head]
    for r in records:
        task = [r.namespace, r.id] if with_task else []
        at = [str(r.position or "")] if with_position else []
        rows.append([r.timestamp.isoformat(), *task, str(r.incarnation), r.type, describe(r),
                     who(r.cause), r.node, *at])  # fmt: skip
    event_column = head.index("EVENT")

    def style(row: int, column: int, cell: str) -> str | None:
        return event_colour(records[row - 1]) if column == event_column else None

    return table(rows, style)


def state_rows(
    states: list[TaskOutput], *, with_namespace: bool = False, with_node: bool = False
) -> str:
    """Task states as a table: `replay`; NODE first when asked for other nodes'
    (without it, the columns stay those scripts have always read)."""
    head = [*(["NODE"] if with_node else []), *(["NAMESPACE"] if with_namespace else []),
            "ID", "PID", "STATUS", "EXIT", "BUNDLE", "CREATED"]  # fmt: skip
    rows = [head]
    for o in states:
        exit_status = "" if o.exit_status is None else str(o.exit_status)
        rows.append([*([o.node] if with_node else []), *([o.namespace] if with_namespace else []),
                     o.id, str(o.pid), o.status, exit_status, o.bundle,
                     o.created.isoformat()])  # fmt: skip
    return table(rows, _status_styler(head))


def listing_rows(
    states: list[StateOutput], *, with_namespace: bool = False, with_node: bool = False
) -> str:
    """`list`: runc's columns first (``ID PID STATUS BUNDLE CREATED OWNER``), then ours."""
    head = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER", "EXIT"]
    head += [*(["NAMESPACE"] if with_namespace else []), *(["NODE"] if with_node else [])]
    rows = [head]
    for o in states:
        exit_status = "" if o.exit_status is None else str(o.exit_status)
        rows.append([o.id, str(o.pid), o.status, o.bundle, o.created.isoformat(), o.owner,
                     exit_status, *([o.namespace] if with_namespace else []),
                     *([o.node] if with_node else [])])  # fmt: skip
    return table(rows, _status_styler(head))


def _status_styler(head: list[str]) -> Styler:
    """Colour for a table's STATUS and EXIT columns."""
    status_column, exit_column = head.index("STATUS"), head.index("EXIT")

    def style(row: int, column: int, cell: str) -> str | None:
        if column == status_column:
            return STATUS_COLOURS.get(cell)
        if column == exit_column and cell:
            return exit_colour(cell)
        return None

    return style

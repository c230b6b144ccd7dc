"""What the CLI prints: one pydantic model per JSON shape, and tables.

Tables are for people: aligned, with colour, only when stdout is a terminal. Piped, the
same rows come out tab-separated with no escape codes, so `cut -f` and `awk -F'\\t'` read
them even when a cell is empty or holds spaces.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from domain.values import Exit, State
    from projections.records import EventRecord


class TaskOutput(BaseModel):
    """`state`, each `list` and `replay` entry."""

    id: str
    namespace: str
    incarnation: int
    pid: int
    status: str
    bundle: str
    created: datetime
    started: datetime | None = None
    exit_status: int | None = None
    exited_at: datetime | None = None

    @classmethod
    def of(cls, state: State) -> TaskOutput:
        return cls(**state.model_dump())


class ProcessOutput(BaseModel):
    """Each `ps` entry: a process of the task, the exec it belongs to, its command line."""

    pid: int
    exec_id: str
    command: str


class WaitOutput(BaseModel):
    """`wait --json`: how the task's init process ended."""

    id: str
    namespace: str
    exit_status: int
    exited_at: datetime

    @classmethod
    def of(cls, task_id: str, namespace: str, exit_: Exit) -> WaitOutput:
        return cls(id=task_id, namespace=namespace, exit_status=exit_.status,
                   exited_at=exit_.exited_at)  # fmt: skip


class DeleteOutput(BaseModel):
    """Each `delete --json` entry: one per ID asked for, in order, deleted or not."""

    id: str
    namespace: str
    deleted: bool
    incarnation: int | None = None
    exit_status: int | None = None
    exited_at: datetime | None = None
    error: str | None = None


class StatsOutput(BaseModel):
    """`stats --json`: a running task's cgroup counters (times in ns, sizes in bytes).

    A limit of 0 (pids) or a huge number (memory) means no limit is set.
    """

    id: str
    cgroup_version: int
    pids_current: int
    pids_limit: int
    cpu_usage_ns: int
    cpu_user_ns: int
    cpu_kernel_ns: int
    memory_usage_bytes: int
    memory_max_usage_bytes: int
    memory_limit_bytes: int
    oom_kills: int

    @classmethod
    def from_stats(cls, task_id: str, stats: Any) -> StatsOutput:
        return cls(id=task_id, **dataclasses.asdict(stats))


class ReconcileOutput(BaseModel):
    """Each `reconcile --json` entry: a task (or a bundle no record knew) and what was done."""

    namespace: str
    id: str
    incarnation: int | None
    action: str
    recorded: list[str]
    detail: str


class ViewStatusOutput(BaseModel):
    """Each `projections status --json` entry: how far a view has caught up."""

    name: str
    position: int
    head: int
    lag: int


class VerifyOutput(BaseModel):
    """Each `projections verify --json` entry: a view and how it differs from a replay."""

    name: str
    differences: list[str]


def dump_list(items: Sequence[BaseModel]) -> str:
    """A JSON array of models, on one line."""
    return "[" + ",".join(item.model_dump_json() for item in items) + "]"


# --- terminals ---------------------------------------------------------------------------

_RESET = "\x1b[0m"
BOLD = "1"
RED = "31"
GREEN = "32"
YELLOW = "33"
BLUE = "34"
DIM = "2"

STATUS_COLOURS = {"running": GREEN, "created": YELLOW, "paused": BLUE, "pausing": BLUE,
                  "stopped": DIM, "deleted": DIM}  # fmt: skip


def on_terminal() -> bool:
    """Whether a person is reading stdout (tables and colour) or a program is (plain text)."""
    return sys.stdout.isatty()


def colour_enabled() -> bool:
    """Colour on a terminal, unless NO_COLOR (no-color.org) or TERM=dumb says otherwise."""
    return on_terminal() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def paint(text: str, code: str | None) -> str:
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


def _event_colour(record: EventRecord) -> str | None:
    if record.type == "Exited" or record.type == "ExecExited":
        return GREEN if record.fields().get("exit_status") == 0 else RED
    if record.type in ("OOM", "ShimLost", "Killed"):
        return RED
    return {"Created": YELLOW, "Started": GREEN, "Deleted": DIM}.get(record.type)


def event_rows(records: list[EventRecord], *, with_task: bool) -> str:
    """Events as a table: time, (task,) incarnation, type, own fields, cause."""
    head = ["TIME", *(["NAMESPACE", "ID"] if with_task else []), "INC", "EVENT", "DETAILS", "BY"]
    rows = [head]
    for r in records:
        task = [r.namespace, r.id] if with_task else []
        rows.append([r.timestamp.isoformat(), *task, str(r.incarnation), r.type, describe(r),
                     who(r.cause)])  # fmt: skip
    event_column = head.index("EVENT")

    def style(row: int, column: int, cell: str) -> str | None:
        return _event_colour(records[row - 1]) if column == event_column else None

    return table(rows, style)


def state_rows(states: list[TaskOutput], *, with_namespace: bool = False) -> str:
    head = [*(["NAMESPACE"] if with_namespace else []),
            "ID", "PID", "STATUS", "EXIT", "BUNDLE", "CREATED"]  # fmt: skip
    rows = [head]
    for o in states:
        exit_status = "" if o.exit_status is None else str(o.exit_status)
        rows.append([*([o.namespace] if with_namespace else []), o.id, str(o.pid), o.status,
                     exit_status, o.bundle, o.created.isoformat()])  # fmt: skip
    status_column, exit_column = head.index("STATUS"), head.index("EXIT")

    def style(row: int, column: int, cell: str) -> str | None:
        if column == status_column:
            return STATUS_COLOURS.get(cell)
        if column == exit_column and cell:
            return GREEN if cell == "0" else RED
        return None

    return table(rows, style)


def process_rows(processes: list[ProcessOutput]) -> str:
    rows = [["PID", "EXEC", "COMMAND"]]
    rows += [[str(p.pid), p.exec_id, p.command] for p in processes]
    return table(rows)


def who(cause: dict[str, Any]) -> str:
    if cause.get("kind") == "cli":
        user = cause.get("user", cause.get("uid"))
        return f"{user} pid {cause.get('pid')}: {cause.get('command')}"
    return f"{cause.get('kind')}: {cause.get('detail', '')}".rstrip(": ")

"""What the CLI prints: one pydantic model per JSON shape, and plain tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from domain.values import State
from projections.records import EventRecord


class TaskOutput(BaseModel):
    """`state` and each `list` entry."""

    id: str
    namespace: str
    pid: int
    status: str
    bundle: str
    created: datetime
    incarnation: int
    exit_status: int | None = None
    exited_at: datetime | None = None

    @classmethod
    def of(cls, state: State) -> TaskOutput:
        return cls(**state.model_dump(exclude={"started"}))


def table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, like runc list's tabwriter."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def describe(record: EventRecord) -> str:
    """The event's own fields, as key=value."""
    shown = []
    for key, value in record.fields().items():
        if value is None or value is False:
            continue
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        shown.append(f"{key}={text}")
    return " ".join(shown)


def event_rows(records: list[EventRecord], *, with_task: bool) -> str:
    """Events as a table: time, (task,) incarnation, type, own fields, cause."""
    head = ["TIME", *(["NAMESPACE", "ID"] if with_task else []), "INC", "EVENT", "DETAILS", "BY"]
    rows = [head]
    for r in records:
        task = [r.namespace, r.id] if with_task else []
        rows.append([r.timestamp.isoformat(), *task, str(r.incarnation), r.type, describe(r),
                     who(r.cause)])  # fmt: skip
    return table(rows)


def state_rows(states: list[TaskOutput], *, with_namespace: bool = False) -> str:
    rows = [[*(["NAMESPACE"] if with_namespace else []),
             "ID", "PID", "STATUS", "EXIT", "BUNDLE", "CREATED"]]  # fmt: skip
    for o in states:
        exit_status = "" if o.exit_status is None else str(o.exit_status)
        rows.append([*([o.namespace] if with_namespace else []), o.id, str(o.pid), o.status,
                     exit_status, o.bundle, o.created.isoformat()])  # fmt: skip
    return table(rows)


def who(cause: dict[str, Any]) -> str:
    if cause.get("kind") == "cli":
        user = cause.get("user", cause.get("uid"))
        return f"{user} pid {cause.get('pid')}: {cause.get('command')}"
    return f"{cause.get('kind')}: {cause.get('detail', '')}".rstrip(": ")

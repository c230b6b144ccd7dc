"""What the CLI prints: one pydantic model per JSON shape, and plain tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from domain.values import State

_EVENT_FIELDS = ("pid", "exit_status", "exited_at", "bundle", "runtime", "incarnation")


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


class HistoryEntry(BaseModel):
    """One event of `history --json`."""

    type: str
    timestamp: datetime
    id: str
    namespace: str
    incarnation: int
    version: int
    pid: int | None = None
    exit_status: int | None = None
    exited_at: datetime | None = None
    bundle: str | None = None
    runtime: str | None = None
    cause: dict[str, Any]


def history_entries(events: list[Any]) -> list[HistoryEntry]:
    """Domain events of one ID (all incarnations) as output records."""
    entries: list[HistoryEntry] = []
    created: dict[Any, Any] = {}
    for event in events:
        if type(event).__name__ == "Created":
            created[event.originator_id] = event
        origin = created[event.originator_id]
        fields = {k: getattr(event, k) for k in _EVENT_FIELDS if hasattr(event, k)}
        fields.setdefault("incarnation", origin.incarnation)
        entries.append(
            HistoryEntry(
                type=type(event).__name__,
                timestamp=event.timestamp,
                id=origin.task_id,
                namespace=origin.namespace,
                version=event.originator_version,
                cause=event.cause.as_dict(),
                **fields,
            )
        )
    return entries


def table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, like runc list's tabwriter."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def describe(entry: HistoryEntry) -> str:
    """The event-specific part of a history line."""
    if entry.type == "Created":
        return f"pid={entry.pid} bundle={entry.bundle}"
    if entry.type == "Started":
        return f"pid={entry.pid}"
    if entry.type == "Exited":
        at = entry.exited_at.isoformat() if entry.exited_at else "?"
        return f"exit_status={entry.exit_status} exited_at={at}"
    return ""


def who(cause: dict[str, Any]) -> str:
    if cause.get("kind") == "cli":
        user = cause.get("user", cause.get("uid"))
        return f"{user} pid {cause.get('pid')}: {cause.get('command')}"
    return f"{cause.get('kind')}: {cause.get('detail', '')}".rstrip(": ")

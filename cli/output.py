"""What the CLI prints: one pydantic model per JSON shape, and plain tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from domain.values import State

_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic", "cause",
             "task_id", "namespace"}


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
    """One event of `history --json`: the envelope, then the event's own fields."""

    model_config = ConfigDict(extra="allow")

    type: str
    timestamp: datetime
    id: str
    namespace: str
    incarnation: int
    version: int
    cause: dict[str, Any]


def history_entries(events: list[Any]) -> list[HistoryEntry]:
    """Domain events of one ID (all incarnations) as output records."""
    entries: list[HistoryEntry] = []
    created: dict[Any, Any] = {}
    for event in events:
        if type(event).__name__ == "Created":
            created[event.originator_id] = event
        origin = created[event.originator_id]
        fields = {k: v for k, v in vars(event).items() if k not in _ENVELOPE}
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
    """The event's own fields, as key=value."""
    extra = entry.model_extra or {}
    shown = []
    for key, value in extra.items():
        if key == "incarnation" or value is None or value is False:
            continue
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        shown.append(f"{key}={text}")
    return " ".join(shown)


def who(cause: dict[str, Any]) -> str:
    if cause.get("kind") == "cli":
        user = cause.get("user", cause.get("uid"))
        return f"{user} pid {cause.get('pid')}: {cause.get('command')}"
    return f"{cause.get('kind')}: {cause.get('detail', '')}".rstrip(": ")

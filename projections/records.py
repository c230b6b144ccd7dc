"""Events as flat records: what `history --json` and `events --json` print, one shape for both."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from domain.events import Created, TaskEvent

# Attributes every event has, or that name the task; the rest are the event's own fields.
_ENVELOPE = {
    "originator_id", "originator_version", "timestamp", "originator_topic", "cause",
    "task_id", "namespace", "node",
}  # fmt: skip


class EventRecord(BaseModel):
    """One event: the envelope, then the event's own fields (pid, exit_status, signal, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str
    timestamp: datetime
    id: str
    namespace: str
    node: str = ""  # the task's node (its Created's); "" for one recorded before nodes existed
    incarnation: int
    version: int
    cause: dict[str, Any]
    position: int | None = None

    def fields(self) -> dict[str, Any]:
        """The event's own fields."""
        return dict(self.model_extra or {})


class TaskKey(BaseModel):
    """Which task incarnation an aggregate is: what its Created event says."""

    namespace: str
    id: str
    incarnation: int
    node: str = ""
    state_dir: str = ""


def key_of(created: Created) -> TaskKey:
    return TaskKey(namespace=created.namespace, id=created.task_id, incarnation=created.incarnation,
                   node=created.node, state_dir=created.state_dir)  # fmt: skip


@functools.singledispatch
def opened_key(event: TaskEvent) -> TaskKey | None:
    """The incarnation an aggregate's first event (Created) names; None for any other event.

    Only Created says which task an aggregate is, so every fold that names tasks learns
    the key here and looks it up by originator for the events after it.
    """
    return None


@opened_key.register
def _(event: Created) -> TaskKey | None:
    return key_of(event)


def event_record(event: TaskEvent, key: TaskKey, position: int | None = None) -> EventRecord:
    own = {k: v for k, v in vars(event).items() if k not in _ENVELOPE and k != "incarnation"}
    return EventRecord(
        type=type(event).__name__,
        timestamp=event.timestamp,
        id=key.id,
        namespace=key.namespace,
        node=key.node,
        incarnation=key.incarnation,
        version=event.originator_version,
        cause=event.cause.as_dict(),
        position=position,
        **own,
    )


def history_records(events: Iterable[Any]) -> list[EventRecord]:
    """One ID's events, every incarnation, in order (each aggregate starts with Created).

    ``events`` come as the store gives them (typed there as eventsourcing's protocol);
    each is one of domain.events' classes.
    """
    keys: dict[Any, TaskKey] = {}
    records = []
    for event in events:
        if (key := opened_key(event)) is not None:
            keys[event.originator_id] = key
        records.append(event_record(event, keys[event.originator_id]))
    return records

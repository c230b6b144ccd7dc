"""The topics Task's events were stored under before the stable ``shimledger.task:`` ones.

eventsourcing's default topic is ``module:qualname``, so everything written before the
stable topics names ``domain.task:Task.<Name>``. The names are spelt out here, not derived
from the classes, so that renaming a class cannot change them (registering a missing one
fails). Registered, they resolve to today's classes and old histories load; nothing writes
them any more.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import register_topic

_LEGACY_NAMES = (
    "Created", "Started", "Exited", "Deleted", "Killed", "Paused", "Resumed", "OOM", "ExecAdded",
    "ExecStarted", "ExecExited", "Updated", "Checkpointed", "ShimLost", "Adopted",
)  # fmt: skip


def register_legacy_topics(task: type[Any]) -> dict[str, type[Any]]:
    """Register every old topic for ``task`` (the Task aggregate) and its event classes."""
    topics: dict[str, type[Any]] = {"domain.task:Task": task} | {
        f"domain.task:Task.{name}": getattr(task, name) for name in _LEGACY_NAMES
    }
    for topic, cls in topics.items():
        register_topic(topic, cls)
    return topics

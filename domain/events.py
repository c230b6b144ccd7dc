"""The event catalogue: every fact a task's history can hold, declared, typed and versioned.

Each class is what the store keeps, so three things about it are a promise to every
history already written:

- its fields (declared in the order the aggregate's mutator takes them, so the stored JSON
  and `history --json` keep their key order), with ``cause`` last;
- its ``class_version``: a change of fields bumps it and adds an ``upcast_vN_vN+1``
  static method that turns a stored vN state into vN+1 (see Exited);
- its ``TOPIC``, the name the store writes instead of the class's module path, so that
  moving or renaming the class never orphans a stored event.

Task (domain/task.py) names each class in its body and decorates a mutator with it:
eventsourcing then defines ``Task.Started`` and so on as subclasses of these, inheriting
the TOPIC; those subclasses are the classes the store sees. ``isinstance`` and
``functools.singledispatch`` work with either; ``eventsourcing.utils.get_topic`` only with
Task's (a topic belongs to one class, and the subclass holds it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

from eventsourcing.domain import Aggregate

from domain.values import Cause

TOPIC_PREFIX = "shimledger.task:"
"""Stable topics are ``shimledger.task:<Name>``; the aggregate's is ``shimledger.task:Task``."""

MAX_SIGNAL = 64


def signal_of(exit_status: int) -> int | None:
    """The signal behind an exit status, by the shell's 128+N convention the shim uses."""
    if 128 < exit_status <= 128 + MAX_SIGNAL:
        return exit_status - 128
    return None


# The lifecycle (design.md's table) -------------------------------------------------------


class Created(Aggregate.Created):
    """The shim created the task (Create RPC replied): incarnation N of an ID begins.

    v2 added the task's owner: ``node`` (the host, or what ``--node`` names) and
    ``state_dir`` (where its shim, bundle and sockets live on that node). Only that node's
    commands, with that state dir, touch the task. A v1 event (written before nodes
    existed) upcasts to "" for both: unowned, so it is taken for the reader's own.
    """

    TOPIC = TOPIC_PREFIX + "Created"
    class_version = 2

    namespace: str
    task_id: str
    incarnation: int
    bundle: str
    pid: int
    runtime: str
    node: str
    state_dir: str
    cause: Cause

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        cause = state.pop("cause")  # keep ``cause`` last, as the declaration orders it
        state["node"] = ""
        state["state_dir"] = ""
        state["cause"] = cause


class Started(Aggregate.Event):
    """The task's init process runs, as ``pid``."""

    TOPIC = TOPIC_PREFIX + "Started"
    class_version = 1

    pid: int
    cause: Cause


class Exited(Aggregate.Event):
    """The task's init process ended. v2 added ``signal`` (None if it was not signalled)."""

    TOPIC = TOPIC_PREFIX + "Exited"
    class_version = 2

    exit_status: int
    exited_at: datetime
    signal: int | None
    cause: Cause

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["signal"] = signal_of(int(state["exit_status"]))


class Deleted(Aggregate.Event):
    """The shim and the working bundle are gone: the ID may be created again."""

    TOPIC = TOPIC_PREFIX + "Deleted"
    class_version = 1

    cause: Cause


# Audit events: what happened to a live task without (or on top of) changing its status ---


class Killed(Aggregate.Event):
    """A signal was sent (to the init, or with ``all`` to every process); Exited tells the end."""

    TOPIC = TOPIC_PREFIX + "Killed"
    class_version = 1

    signal: int
    all: bool
    cause: Cause


class Paused(Aggregate.Event):
    """The task's processes were frozen (cgroup freezer)."""

    TOPIC = TOPIC_PREFIX + "Paused"
    class_version = 1

    cause: Cause


class Resumed(Aggregate.Event):
    """The task's processes were thawed."""

    TOPIC = TOPIC_PREFIX + "Resumed"
    class_version = 1

    cause: Cause


class OOM(Aggregate.Event):
    """The kernel's OOM killer acted in the task's cgroup; each one is its own fact."""

    TOPIC = TOPIC_PREFIX + "OOM"
    class_version = 1

    cause: Cause


class ExecAdded(Aggregate.Event):
    """An extra process was set up inside the running task, not yet started."""

    TOPIC = TOPIC_PREFIX + "ExecAdded"
    class_version = 1

    exec_id: str
    cause: Cause


class ExecStarted(Aggregate.Event):
    """An exec's process runs, as ``pid``."""

    TOPIC = TOPIC_PREFIX + "ExecStarted"
    class_version = 1

    exec_id: str
    pid: int
    cause: Cause


class ExecExited(Aggregate.Event):
    """An exec's process ended (possibly just after its task's init did)."""

    TOPIC = TOPIC_PREFIX + "ExecExited"
    class_version = 1

    exec_id: str
    exit_status: int
    exited_at: datetime
    cause: Cause


class Updated(Aggregate.Event):
    """New cgroup limits (OCI LinuxResources) were applied to the task's processes."""

    TOPIC = TOPIC_PREFIX + "Updated"
    class_version = 1

    resources: dict[str, Any]
    cause: Cause


class Checkpointed(Aggregate.Event):
    """CRIU wrote the task's image to ``image_path``; with ``exit`` the task then stops."""

    TOPIC = TOPIC_PREFIX + "Checkpointed"
    class_version = 1

    image_path: str
    exit: bool
    cause: Cause


class ShimLost(Aggregate.Event):
    """The task's shim vanished: nobody can tell its exit status any more."""

    TOPIC = TOPIC_PREFIX + "ShimLost"
    class_version = 1

    cause: Cause


class Adopted(Aggregate.Event):
    """Reconciliation took in a task that no history knew (its shim was found alive)."""

    TOPIC = TOPIC_PREFIX + "Adopted"
    class_version = 1

    cause: Cause


class ExitRetracted(Aggregate.Event):
    """An Exited that the task's own shim contradicts: its State reports the init still
    ``status`` ("running" or "paused") as ``pid``. The task is live again and its exit
    unknown; the Exited stays in history (it was believed), and this says it was wrong."""

    TOPIC = TOPIC_PREFIX + "ExitRetracted"
    class_version = 1

    status: str
    pid: int
    cause: Cause


TaskEvent: TypeAlias = (
    Created | Started | Exited | Deleted | Killed | Paused | Resumed | OOM | ExecAdded
    | ExecStarted | ExecExited | Updated | Checkpointed | ShimLost | Adopted | ExitRetracted
)  # fmt: skip
"""Any event of a task's history: what projections take."""


# The catalogue in the order people read a life: the lifecycle (design.md's table), then
# the audit events. cli/ builds its labels and colours from these classes; ``event_type``
# finds one by the name a record stores as its ``type``. An event of Task's (Task.Started)
# is an instance of its class here, so isinstance and singledispatch take either.
LIFECYCLE_EVENTS: tuple[type[TaskEvent], ...] = (Created, Started, Exited, Deleted)
AUDIT_EVENTS: tuple[type[TaskEvent], ...] = (
    Killed, Paused, Resumed, OOM, ExecAdded, ExecStarted, ExecExited, Updated, Checkpointed,
    ShimLost, Adopted, ExitRetracted,
)  # fmt: skip
EVENT_TYPES = LIFECYCLE_EVENTS + AUDIT_EVENTS
_BY_NAME = {cls.__name__: cls for cls in EVENT_TYPES}


def event_type(name: str) -> type[TaskEvent] | None:
    """The event class a record's ``type`` names (its class name); None if none does."""
    return _BY_NAME.get(name)

"""Value objects of the task lifecycle: immutable, comparable by value, free of I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


class Status(enum.StrEnum):
    """A task's status, named as containerd's runtime.Status names it."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"
    PAUSED = "paused"
    PAUSING = "pausing"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Bundle:
    """The shim's working bundle: a directory under the state dir named after the task."""

    id: str
    namespace: str
    path: str


@dataclass(frozen=True)
class Exit:
    """How and when a process ended, as the shim reported it."""

    status: int
    exited_at: datetime


@dataclass
class ExecProcess:
    """An extra process run inside the task (``exec``), as far as history knows it."""

    exec_id: str
    pid: int | None = None
    exit: Exit | None = None


CauseKind = Literal["cli", "shim-event", "shim", "reconciliation"]
"""Where a fact came from; see Cause."""


@dataclass(frozen=True)
class Owner:
    """Where a task lives: its node and, on that node, the state dir holding its shim.

    Reconciliation, adoption and every lifecycle command act only on tasks their own
    Owner owns, so many nodes (or many state dirs of one host) can share one history
    without any of them taking another's task for a lost one. An empty field is
    "unknown" (a task recorded before nodes existed) and matches anything.
    """

    node: str
    state_dir: str

    def owns(self, node: str, state_dir: str) -> bool:
        """True for a task recorded by this owner, or by one too old to say."""
        return node in ("", self.node) and state_dir in ("", self.state_dir)


@dataclass(frozen=True)
class Whose:
    """Which owners' tasks a read shows: one owner's, one node's, or (all None) every node's.

    A task recorded before nodes existed (node and state dir "") counts as its reader's
    own: ``unknown`` says whether such a task is shown, true for this owner or this node.
    """

    node: str | None = None
    state_dir: str | None = None
    unknown: bool = True

    @classmethod
    def owner(cls, owner: Owner) -> Whose:
        """The tasks ``owner`` acts on (Owner.owns): what a node's own reads show."""
        return cls(owner.node, owner.state_dir)

    @classmethod
    def node_of(cls, node: str, here: Owner) -> Whose:
        """Every task of ``node``, in any state dir; unknown ones only if it is ``here``'s."""
        return cls(node, None, unknown=node == here.node)

    def matches(self, node: str, state_dir: str) -> bool:
        return self._field(self.node, node) and self._field(self.state_dir, state_dir)

    def _field(self, wanted: str | None, value: str) -> bool:
        return wanted is None or value == wanted or (self.unknown and value == "")


EVERY_NODE = Whose()


@dataclass(frozen=True)
class Cause:
    """Who or what caused an event, so that history answers "who did this" as well as "what".

    ``kind`` is one of:

    - ``"cli"``: a user's command (``user``, ``uid``, ``pid``, ``command``, ``host`` say
      whose); the fact is our own RPC's reply.
    - ``"shim-event"``: an event the task's shim published to the event sink (``detail``
      is its topic, e.g. ``/tasks/exit``), heard whether or not a command was waiting.
    - ``"shim"``: the shim's reply to a Wait RPC (``detail`` is ``Wait``): the exit a
      foreground command waited for, which the event may or may not also report.
    - ``"reconciliation"``: what reconciliation found asking the shims (State) or, with a
      shim gone, its ``delete`` command; ``detail`` says what it found.

    ``node`` names the node whose process recorded the fact (None in facts recorded
    before nodes existed).
    """

    kind: CauseKind
    user: str | None = None
    uid: int | None = None
    pid: int | None = None
    command: str | None = None
    host: str | None = None
    detail: str | None = None
    node: str | None = None

    def as_dict(self) -> dict[str, str | int]:
        """The non-empty fields, for storage and JSON output."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, str | int]) -> Cause:
        return cls(**data)  # type: ignore[arg-type]


class State(BaseModel):
    """The current state of one task incarnation, as projections derive it from history."""

    model_config = ConfigDict(frozen=True)

    id: str
    namespace: str
    incarnation: int
    pid: int
    status: Status
    bundle: str
    created: datetime
    started: datetime | None = None
    exit_status: int | None = None
    exited_at: datetime | None = None
    node: str = ""  # the owner (Created's); "" for a task recorded before nodes existed
    state_dir: str = ""

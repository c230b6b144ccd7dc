"""What the CLI prints for programs: one pydantic model per JSON shape.

The same data for people (tables, the timeline, the audit page) is drawn by ``cli.render``;
these models are the stable shape scripts parse, so they change only on purpose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from domain.values import Exit, State


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
    node: str = ""  # the node whose task it is; "" if recorded before nodes existed

    @classmethod
    def of(cls, state: State) -> TaskOutput:
        return cls(**state.model_dump(exclude={"state_dir"}))


class StateOutput(BaseModel):
    """`state` and each `list --format json` entry: runc's keys, in runc's order, then ours.

    As runc's, ``pid`` is 0 once the task has stopped (its history keeps the pid).
    """

    ociVersion: str
    id: str
    pid: int
    status: str
    bundle: str
    rootfs: str
    created: datetime
    owner: str
    annotations: dict[str, str]
    namespace: str
    incarnation: int
    started: datetime | None = None
    exit_status: int | None = None
    exited_at: datetime | None = None
    node: str = ""

    @classmethod
    def of(cls, state: State, here: str) -> StateOutput:
        """``here``: this node's name; the bundle of another node's task is not read."""
        from cli.runc_fields import runc_fields

        ours = state.node in ("", here)
        fields = runc_fields(state.state_dir if ours else "", state.namespace, state.id)
        taken = state.model_dump(exclude={"state_dir"})
        if state.status == "stopped":
            taken["pid"] = 0
        return cls(**taken, **fields)


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

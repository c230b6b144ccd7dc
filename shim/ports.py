"""Ports: what the shim services need from the outside world, declared by their consumer.

Adapters implement these structurally (typing.Protocol); tests implement them with fakes.
Protobuf never crosses a port: only domain values and the small records below.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from domain.task import Task
from domain.values import EVERY_NODE, Bundle, Exit, Owner, State, Status, Whose


@dataclass(frozen=True)
class Stdio:
    """Paths the shim connects the task's stdio to; all empty means /dev/null.

    ``terminal``: the process gets a pty of the shim's; the shim copies ``stdin`` into it
    and its output, stdout and stderr alike, out to ``stdout`` (a FIFO: the shim's console
    copy takes no ``file://`` path). ``stderr`` stays empty then.
    """

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass(frozen=True)
class RuncOptions:
    """What the runc shim needs to keep runc's state apart from a real containerd's."""

    root: str
    binary_name: str = ""


@dataclass(frozen=True)
class ProcessState:
    """A process as the shim sees it right now (the State RPC)."""

    pid: int
    status: Status
    exit_status: int
    exited_at: datetime | None


@dataclass(frozen=True)
class HeardEvent:
    """What every decoded shim event carries besides its payload: who sent it.

    ``sender`` is the pid of the process on the other end of the sink's connection
    (SO_PEERCRED); None when nobody can say (an event made in-process). Any process of
    our user can connect to the sink, so an event is believed only from the shim that
    serves its task (shim.recording.shim_events).
    """

    sender: int | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class TaskExitEvent(HeardEvent):
    """A shim's /tasks/exit event, decoded; ``exec_id`` is empty for the task's init."""

    namespace: str
    container_id: str
    exec_id: str
    pid: int
    exit_status: int
    exited_at: datetime


@dataclass(frozen=True)
class TaskStartEvent(HeardEvent):
    """A shim's /tasks/start event, decoded (for the init process: execs have their own)."""

    namespace: str
    container_id: str
    pid: int


@dataclass(frozen=True)
class TaskOOMEvent(HeardEvent):
    """A shim's /tasks/oom event: the task's cgroup hit its memory limit."""

    namespace: str
    container_id: str


@dataclass(frozen=True)
class TaskCreateEvent(HeardEvent):
    """/tasks/create: the shim made the task (recorded from the Create reply already)."""

    namespace: str
    container_id: str
    pid: int


@dataclass(frozen=True)
class TaskDeleteEvent(HeardEvent):
    """/tasks/delete: the shim removed a process (``exec_id`` empty for the init)."""

    namespace: str
    container_id: str
    exec_id: str
    pid: int
    exit_status: int
    exited_at: datetime | None


@dataclass(frozen=True)
class TaskExecAddedEvent(HeardEvent):
    namespace: str
    container_id: str
    exec_id: str


@dataclass(frozen=True)
class TaskExecStartedEvent(HeardEvent):
    namespace: str
    container_id: str
    exec_id: str
    pid: int


@dataclass(frozen=True)
class TaskPausedEvent(HeardEvent):
    namespace: str
    container_id: str


@dataclass(frozen=True)
class TaskResumedEvent(HeardEvent):
    namespace: str
    container_id: str


@dataclass(frozen=True)
class TaskCheckpointedEvent(HeardEvent):
    namespace: str
    container_id: str
    image_path: str


ShimEvent = (
    TaskExitEvent
    | TaskStartEvent
    | TaskOOMEvent
    | TaskCreateEvent
    | TaskDeleteEvent
    | TaskExecAddedEvent
    | TaskExecStartedEvent
    | TaskPausedEvent
    | TaskResumedEvent
    | TaskCheckpointedEvent
)


@dataclass(frozen=True)
class TaskStats:
    """A task's cgroup counters (the Stats RPC), whichever cgroup version the host runs."""

    pids_current: int
    pids_limit: int
    cpu_usage_ns: int
    cpu_user_ns: int
    cpu_kernel_ns: int
    memory_usage_bytes: int
    memory_limit_bytes: int
    memory_max_usage_bytes: int
    oom_kills: int
    cgroup_version: int


class ShimClient(Protocol):
    """The containerd.task.v2.Task service of one shim."""

    @property
    def closed(self) -> bool: ...

    async def connect(self, task_id: str) -> int: ...
    async def create(
        self, task_id: str, bundle: str, stdio: Stdio, options: RuncOptions
    ) -> int: ...
    async def exec(self, task_id: str, exec_id: str, process_json: bytes, stdio: Stdio) -> None: ...
    async def start(self, task_id: str, exec_id: str = "") -> int: ...
    async def state(self, task_id: str, exec_id: str = "") -> ProcessState: ...
    async def wait(self, task_id: str, exec_id: str = "") -> Exit: ...
    async def kill(
        self, task_id: str, signal: int, all: bool = False, exec_id: str = ""
    ) -> None: ...
    async def delete(self, task_id: str, exec_id: str = "") -> Exit: ...
    async def pids(self, task_id: str) -> list[tuple[int, str]]: ...
    async def pause(self, task_id: str) -> None: ...
    async def resume(self, task_id: str) -> None: ...
    async def close_io(self, task_id: str, exec_id: str = "") -> None: ...
    async def resize_pty(
        self, task_id: str, width: int, height: int, exec_id: str = ""
    ) -> None: ...
    async def update(self, task_id: str, resources: dict[str, Any]) -> None: ...
    async def stats(self, task_id: str) -> TaskStats: ...
    async def checkpoint(
        self, task_id: str, image_path: str, *, exit: bool, work_path: str = ""
    ) -> None: ...
    async def shutdown(self, task_id: str) -> None: ...
    async def aclose(self) -> None: ...


class ShimBinary(Protocol):
    """A shim executable: its ``start`` and ``delete`` actions, and reconnecting to it."""

    async def start(self, bundle: Bundle, runtime: str, ttrpc_address: str) -> str: ...
    async def delete(self, bundle: Bundle, runtime: str) -> Exit | None: ...
    async def connect(
        self, bundle: Bundle, address: str, on_close: Callable[[], None] | None = None
    ) -> ShimClient: ...


class TaskStore(Protocol):
    """Task histories (the event store).

    Incarnation numbers are fleet-wide per (namespace, ID); each incarnation belongs to
    the owner its Created names (domain.values.Owner). ``latest_owned`` and
    ``live_elsewhere`` read only the first (and last) event of other owners'
    incarnations, so a node never loads what it may not act on.
    """

    async def current(self, namespace: str, task_id: str) -> Task | None: ...
    async def incarnation(self, namespace: str, task_id: str, incarnation: int) -> Task | None: ...
    async def save(self, task: Task) -> None: ...
    async def history(self, namespace: str, task_id: str) -> list[Any]: ...
    async def latest_owned(
        self, namespace: str, task_id: str, owner: Owner
    ) -> tuple[int, Task | None]:
        """The ID's latest incarnation number (0: none) and ``owner``'s latest incarnation."""
        ...

    async def live_elsewhere(self, namespace: str, task_id: str, owner: Owner) -> Owner | None:
        """The owner of the newest live incarnation that ``owner`` does not own (None: none)."""
        ...


class TaskView(Protocol):
    """The task-states read model: each owner's live task of an ID (``whose`` narrows)."""

    async def catch_up(self) -> int: ...
    async def get(
        self, namespace: str, task_id: str, whose: Whose = EVERY_NODE
    ) -> State | None: ...
    async def tasks(
        self, namespace: str | None = None, whose: Whose = EVERY_NODE
    ) -> list[State]: ...


class TaskLocks(Protocol):
    """Mutual exclusion per task, across every process that shares the state dir."""

    def hold(self, namespace: str, task_id: str) -> AbstractAsyncContextManager[None]: ...

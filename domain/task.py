"""The Task aggregate: one incarnation of a task ID, from Created to Deleted.

Public methods are guards: they check the state machine (design.md) and raise
InvalidTransitionError for an illegal step; the private ``@event`` methods only mutate
state, and are what eventsourcing replays when a task is loaded.

Besides the four lifecycle events, audit events record what happened to a live task
without (or on top of) changing its status: Killed, Paused/Resumed, OOM, the execs'
Added/Started/Exited, ShimLost when its shim vanished, Adopted when reconciliation took
in a task no history knew.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidTransitionError
from domain.values import Cause, Exit, Status

LIVE = (Status.CREATED, Status.RUNNING, Status.PAUSED, Status.STOPPED)
HAS_PROCESS = (Status.CREATED, Status.RUNNING, Status.PAUSED)
MAX_SIGNAL = 64


def signal_of(exit_status: int) -> int | None:
    """The signal behind an exit status, by the shell's 128+N convention the shim uses."""
    if 128 < exit_status <= 128 + MAX_SIGNAL:
        return exit_status - 128
    return None


@dataclass
class ExecProcess:
    """An extra process run inside the task (``exec``), as far as history knows it."""

    exec_id: str
    pid: int | None = None
    exit: Exit | None = None


class Task(Aggregate):
    """A task's lifecycle; each incarnation of an ID is its own aggregate (and history)."""

    class Exited(Aggregate.Event):
        """The task's init process ended. v2 added ``signal`` (None if it was not signalled)."""

        class_version = 2

        exit_status: int
        exited_at: datetime
        signal: int | None
        cause: Cause

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["signal"] = signal_of(int(state["exit_status"]))

    @staticmethod
    def create_id(namespace: str, task_id: str, incarnation: int, **_: object) -> UUID:
        """Deterministic, so that incarnation N of an ID can be found without an index."""
        return uuid5(NAMESPACE_URL, f"shimledger:/tasks/{namespace}/{task_id}/{incarnation}")

    @event("Created")
    def __init__(
        self,
        namespace: str,
        task_id: str,
        incarnation: int,
        bundle: str,
        pid: int,
        runtime: str,
        cause: Cause,
    ) -> None:
        self.namespace = namespace
        self.task_id = task_id
        self.incarnation = incarnation
        self.bundle = bundle
        self.pid = pid
        self.runtime = runtime
        self.status = Status.CREATED
        self.exit: Exit | None = None
        self.execs: dict[str, ExecProcess] = {}
        self.checkpoints: list[str] = []

    # guards ------------------------------------------------------------------

    def _require(self, allowed: tuple[Status, ...], action: str) -> None:
        if self.status not in allowed:
            names = " or ".join(s.value for s in allowed)
            raise InvalidTransitionError(
                f"task {self.task_id} is {self.status.value}: only a {names} task can {action}"
            )

    def start(self, pid: int, cause: Cause) -> None:
        if self.status is not Status.CREATED:
            raise InvalidTransitionError(
                f"task {self.task_id} is {self.status.value}: only a created task can be started"
            )
        self._started(pid=pid, cause=cause)

    def record_exit(self, exit_status: int, exited_at: datetime, cause: Cause) -> None:
        self._require(HAS_PROCESS, "exit")
        self._exited(
            exit_status=exit_status, exited_at=exited_at, signal=signal_of(exit_status),
            cause=cause,
        )  # fmt: skip

    def delete(self, cause: Cause) -> None:
        if self.status in (Status.RUNNING, Status.PAUSED):
            raise InvalidTransitionError(
                f"task {self.task_id} is {self.status.value}: kill it first, or use delete --force"
            )
        self._require((Status.CREATED, Status.STOPPED), "be deleted")
        self._deleted(cause=cause)

    def record_kill(self, signal: int, all: bool, cause: Cause) -> None:
        self._require(HAS_PROCESS, "be killed")
        self._killed(signal=signal, all=all, cause=cause)

    def pause(self, cause: Cause) -> None:
        self._require((Status.RUNNING,), "be paused")
        self._paused(cause=cause)

    def resume(self, cause: Cause) -> None:
        self._require((Status.PAUSED,), "be resumed")
        self._resumed(cause=cause)

    def record_oom(self, cause: Cause) -> None:
        self._require(LIVE, "run out of memory")
        self._oom(cause=cause)

    def add_exec(self, exec_id: str, cause: Cause) -> None:
        self._require((Status.RUNNING,), "run an exec")
        if exec_id in self.execs:
            raise InvalidTransitionError(f"task {self.task_id} has an exec {exec_id} already")
        self._exec_added(exec_id=exec_id, cause=cause)

    def start_exec(self, exec_id: str, pid: int, cause: Cause) -> None:
        self._require((Status.RUNNING,), "start an exec")
        process = self.execs.get(exec_id)
        if process is None or process.pid is not None:
            raise InvalidTransitionError(
                f"exec {exec_id} of task {self.task_id} is not waiting to start"
            )
        self._exec_started(exec_id=exec_id, pid=pid, cause=cause)

    def record_exec_exit(
        self, exec_id: str, exit_status: int, exited_at: datetime, cause: Cause
    ) -> None:
        # An exec's exit may be reported just after its task's init exited; not after Deleted.
        self._require((Status.RUNNING, Status.PAUSED, Status.STOPPED), "have an exec exit")
        process = self.execs.get(exec_id)
        if process is None or process.pid is None or process.exit is not None:
            raise InvalidTransitionError(
                f"exec {exec_id} of task {self.task_id} is not running: it cannot exit"
            )
        self._exec_exited(
            exec_id=exec_id, exit_status=exit_status, exited_at=exited_at, cause=cause
        )

    def record_update(self, resources: dict[str, Any], cause: Cause) -> None:
        """New cgroup limits (OCI LinuxResources) applied to a task's processes."""
        self._require(HAS_PROCESS, "be updated")
        self._updated(resources=resources, cause=cause)

    def record_checkpoint(self, image_path: str, exit: bool, cause: Cause) -> None:
        """CRIU wrote the task's image to ``image_path``; with ``exit`` the task then stops."""
        self._require((Status.RUNNING, Status.PAUSED), "be checkpointed")
        self._checkpointed(image_path=image_path, exit=exit, cause=cause)

    def record_shim_lost(self, cause: Cause) -> None:
        self._require(LIVE, "lose its shim")
        self._shim_lost(cause=cause)

    def adopt(self, cause: Cause) -> None:
        self._require(LIVE, "be adopted")
        self._adopted(cause=cause)

    # TEMPORARY (replaced by the events branch): guards and observations ----------------

    def check_start(self) -> None:
        if self.status is not Status.CREATED:
            raise InvalidTransitionError(
                f"task {self.task_id} is {self.status.value}: only a created task can be started"
            )

    def check_kill(self) -> None:
        self._require(HAS_PROCESS, "be killed")

    def check_pause(self) -> None:
        self._require((Status.RUNNING,), "be paused")

    def check_resume(self) -> None:
        self._require((Status.PAUSED,), "be resumed")

    def check_add_exec(self, exec_id: str) -> None:
        self._require((Status.RUNNING,), "run an exec")
        if exec_id in self.execs:
            raise InvalidTransitionError(f"task {self.task_id} has an exec {exec_id} already")

    def check_update(self) -> None:
        self._require(HAS_PROCESS, "be updated")

    def check_checkpoint(self) -> None:
        self._require((Status.RUNNING, Status.PAUSED), "be checkpointed")

    def check_delete(self) -> None:
        if self.status in (Status.RUNNING, Status.PAUSED):
            raise InvalidTransitionError(
                f"task {self.task_id} is {self.status.value}: kill it first, or use delete --force"
            )
        self._require((Status.CREATED, Status.STOPPED), "be deleted")

    def require_process(self, missing: str) -> None:
        from domain.errors import FailedPreconditionError

        if self.status not in HAS_PROCESS:
            raise FailedPreconditionError(f"task {self.task_id} is {self.status.value}: {missing}")

    def observe_start(self, pid: int, cause: Cause) -> bool:
        if self.status is not Status.CREATED:
            return False
        self.start(pid, cause)
        return True

    def observe_exit(self, exit_status: int, exited_at: datetime, cause: Cause) -> bool:
        if self.status not in HAS_PROCESS:
            return False
        self.record_exit(exit_status, exited_at, cause)
        return True

    def observe_paused(self, cause: Cause) -> bool:
        if self.status is not Status.RUNNING:
            return False
        self.pause(cause)
        return True

    def observe_resumed(self, cause: Cause) -> bool:
        if self.status is not Status.PAUSED:
            return False
        self.resume(cause)
        return True

    def observe_kill(self, signal: int, all: bool, cause: Cause) -> bool:
        if self.status not in HAS_PROCESS:
            return False
        self.record_kill(signal, all, cause)
        return True

    def observe_oom(self, cause: Cause) -> bool:
        if not self.is_live:
            return False
        self.record_oom(cause)
        return True

    def observe_exec_added(self, exec_id: str, cause: Cause) -> bool:
        if self.status is not Status.RUNNING or exec_id in self.execs:
            return False
        self.add_exec(exec_id, cause)
        return True

    def observe_exec_started(self, exec_id: str, pid: int, cause: Cause) -> bool:
        if self.status is not Status.RUNNING:
            return False
        added = self.observe_exec_added(exec_id, cause)
        if self.execs[exec_id].pid is not None:
            return added
        self.start_exec(exec_id, pid, cause)
        return True

    def observe_exec_exit(
        self, exec_id: str, exit_status: int, exited_at: datetime, cause: Cause
    ) -> bool:
        process = self.execs.get(exec_id)
        if (self.status is Status.DELETED or process is None or process.pid is None
                or process.exit is not None):
            return False
        self.record_exec_exit(exec_id, exit_status, exited_at, cause)
        return True

    def observe_update(self, resources: dict[str, Any], cause: Cause) -> bool:
        if self.status not in HAS_PROCESS:
            return False
        self.record_update(resources, cause)
        return True

    def observe_checkpoint(self, image_path: str, exit: bool, cause: Cause) -> bool:
        if self.status not in (Status.RUNNING, Status.PAUSED) or image_path in self.checkpoints:
            return False
        self.record_checkpoint(image_path, exit, cause)
        return True

    def observe_shim_lost(self, cause: Cause) -> bool:
        if self.status not in HAS_PROCESS:
            return False
        self.record_shim_lost(cause)
        return True

    def observe_deleted(self, cause: Cause) -> bool:
        if self.status is Status.DELETED:
            return False
        self.delete(cause)
        return True

    @property
    def is_live(self) -> bool:
        """True until Deleted: the ID is taken while the incarnation is live."""
        return self.status is not Status.DELETED

    # mutators (replayed on load) -----------------------------------------------

    @event("Started")
    def _started(self, pid: int, cause: Cause) -> None:
        self.pid = pid
        self.status = Status.RUNNING

    @event(Exited)
    def _exited(
        self, exit_status: int, exited_at: datetime, signal: int | None, cause: Cause
    ) -> None:
        self.exit = Exit(status=exit_status, exited_at=exited_at)
        self.status = Status.STOPPED

    @event("Deleted")
    def _deleted(self, cause: Cause) -> None:
        self.status = Status.DELETED

    @event("Killed")
    def _killed(self, signal: int, all: bool, cause: Cause) -> None:
        pass  # an audit fact: whether it ended the task, the Exited event tells

    @event("Paused")
    def _paused(self, cause: Cause) -> None:
        self.status = Status.PAUSED

    @event("Resumed")
    def _resumed(self, cause: Cause) -> None:
        self.status = Status.RUNNING

    @event("OOM")
    def _oom(self, cause: Cause) -> None:
        pass

    @event("ExecAdded")
    def _exec_added(self, exec_id: str, cause: Cause) -> None:
        self.execs[exec_id] = ExecProcess(exec_id=exec_id)

    @event("ExecStarted")
    def _exec_started(self, exec_id: str, pid: int, cause: Cause) -> None:
        self.execs[exec_id].pid = pid

    @event("ExecExited")
    def _exec_exited(
        self, exec_id: str, exit_status: int, exited_at: datetime, cause: Cause
    ) -> None:
        self.execs[exec_id].exit = Exit(status=exit_status, exited_at=exited_at)

    @event("Updated")
    def _updated(self, resources: dict[str, Any], cause: Cause) -> None:
        pass  # an audit fact: the limits live in the cgroup, not in the task's state

    @event("Checkpointed")
    def _checkpointed(self, image_path: str, exit: bool, cause: Cause) -> None:
        self.checkpoints.append(image_path)

    @event("ShimLost")
    def _shim_lost(self, cause: Cause) -> None:
        pass

    @event("Adopted")
    def _adopted(self, cause: Cause) -> None:
        pass

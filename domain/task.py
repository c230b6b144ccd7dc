"""The Task aggregate: one incarnation of a task ID, from Created to Deleted.

Three kinds of public method, one rule each (the state machine of design.md):

- ``check_*`` guards raise InvalidTransitionError for an illegal step and change nothing;
  each message is written once, in its guard.
- strict commands (``start``, ``delete``, ``record_kill``, ...) call their guard, then
  append the event: what our own command does, where an illegal step is the user's error.
- ``observe_*`` record a fact a shim reported (an RPC reply, an event, reconciliation's
  State): the same fact is often heard twice, in either order, or after it stopped
  applying, so each appends its event only when it is new and says whether it did,
  and never raises for a fact already known. What leaves the status unchanged (a kill,
  an update, an OOM, a lost shim) cannot be told from a repeat, and is appended each
  time while it applies.

The private ``@event`` methods only mutate state, and are what eventsourcing replays when
a task is loaded. The events themselves (fields, versions, stable topics) are declared in
domain/events.py; besides the four lifecycle events, audit events record what happened to
a live task without (or on top of) changing its status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain import events
from domain.errors import FailedPreconditionError, InvalidTransitionError
from domain.events import MAX_SIGNAL as MAX_SIGNAL
from domain.events import TOPIC_PREFIX
from domain.events import signal_of as signal_of
from domain.legacy_topics import register_legacy_topics
from domain.values import Cause, Exit, Owner, Status
from domain.values import ExecProcess as ExecProcess  # what task.execs holds

LIVE = (Status.CREATED, Status.RUNNING, Status.PAUSED, Status.STOPPED)
HAS_PROCESS = (Status.CREATED, Status.RUNNING, Status.PAUSED)
RUNS_EXECS = (Status.CREATED, Status.RUNNING)  # a paused task's freezer holds any new one


class Task(Aggregate):
    """A task's lifecycle; each incarnation of an ID is its own aggregate (and history)."""

    TOPIC = TOPIC_PREFIX + "Task"  # what each Created event stores as its originator_topic

    # The catalogue, named here so that eventsourcing makes each one Task's own event
    # class (Task.Started, ...): a subclass of the declared one, with its topic.
    Created = events.Created
    Started = events.Started
    Exited = events.Exited
    Deleted = events.Deleted
    Killed = events.Killed
    Paused = events.Paused
    Resumed = events.Resumed
    OOM = events.OOM
    ExecAdded = events.ExecAdded
    ExecStarted = events.ExecStarted
    ExecExited = events.ExecExited
    Updated = events.Updated
    Checkpointed = events.Checkpointed
    ShimLost = events.ShimLost
    Adopted = events.Adopted
    ExitRetracted = events.ExitRetracted

    @staticmethod
    def create_id(namespace: str, task_id: str, incarnation: int, **_: object) -> UUID:
        """Deterministic, so that incarnation N of an ID can be found without an index."""
        return uuid5(NAMESPACE_URL, f"shimledger:/tasks/{namespace}/{task_id}/{incarnation}")

    @event(Created)
    def __init__(
        self,
        namespace: str,
        task_id: str,
        incarnation: int,
        bundle: str,
        pid: int,
        runtime: str,
        node: str,
        state_dir: str,
        cause: Cause,
    ) -> None:
        self.namespace = namespace
        self.task_id = task_id
        self.incarnation = incarnation
        self.bundle = bundle
        self.pid = pid
        self.runtime = runtime
        self.node = node
        self.state_dir = state_dir
        self.status = Status.CREATED
        self.exit: Exit | None = None
        self.execs: dict[str, ExecProcess] = {}
        self.checkpoints: list[str] = []

    def owned_by(self, owner: Owner) -> bool:
        """True if ``owner``'s commands may act on this task (see Owner)."""
        return owner.owns(self.node, self.state_dir)

    @property
    def is_live(self) -> bool:
        """True until Deleted: the ID is taken while the incarnation is live."""
        return self.status is not Status.DELETED

    # guards: raise, never mutate -----------------------------------------------------

    def _require(self, allowed: tuple[Status, ...], action: str) -> None:
        if self.status not in allowed:
            names = " or ".join(s.value for s in allowed)
            raise InvalidTransitionError(
                f"task {self.task_id} is {self.status.value}: only a {names} task can {action}"
            )

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
        # A created task's namespaces exist already: runc (and the shim) exec into it.
        self._require(RUNS_EXECS, "run an exec")
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
        """Refuse an operation on the task's processes when it has none (any more, or yet).

        ``missing`` says what the caller then cannot have: "nothing to kill", "no stats".
        """
        if self.status not in HAS_PROCESS:
            raise FailedPreconditionError(f"task {self.task_id} is {self.status.value}: {missing}")

    # strict commands: our own steps, refused when illegal ----------------------------

    def start(self, pid: int, cause: Cause) -> None:
        self.check_start()
        self._started(pid=pid, cause=cause)

    def record_exit(self, exit_status: int, exited_at: datetime, cause: Cause) -> None:
        self._require(HAS_PROCESS, "exit")
        self._exited(
            exit_status=exit_status, exited_at=exited_at, signal=signal_of(exit_status),
            cause=cause,
        )  # fmt: skip

    def delete(self, cause: Cause) -> None:
        self.check_delete()
        self._deleted(cause=cause)

    def record_kill(self, signal: int, all: bool, cause: Cause) -> None:
        self.check_kill()
        self._killed(signal=signal, all=all, cause=cause)

    def pause(self, cause: Cause) -> None:
        self.check_pause()
        self._paused(cause=cause)

    def resume(self, cause: Cause) -> None:
        self.check_resume()
        self._resumed(cause=cause)

    def record_oom(self, cause: Cause) -> None:
        self._require(LIVE, "run out of memory")
        self._oom(cause=cause)

    def add_exec(self, exec_id: str, cause: Cause) -> None:
        self.check_add_exec(exec_id)
        self._exec_added(exec_id=exec_id, cause=cause)

    def start_exec(self, exec_id: str, pid: int, cause: Cause) -> None:
        self._require(RUNS_EXECS, "start an exec")
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
        self._require(LIVE, "have an exec exit")
        if not self._exec_running(exec_id):
            raise InvalidTransitionError(
                f"exec {exec_id} of task {self.task_id} is not running: it cannot exit"
            )
        self._exec_exited(
            exec_id=exec_id, exit_status=exit_status, exited_at=exited_at, cause=cause
        )

    def record_update(self, resources: dict[str, Any], cause: Cause) -> None:
        """New cgroup limits (OCI LinuxResources) applied to a task's processes."""
        self.check_update()
        self._updated(resources=resources, cause=cause)

    def record_checkpoint(self, image_path: str, exit: bool, cause: Cause) -> None:
        """CRIU wrote the task's image to ``image_path``; with ``exit`` the task then stops."""
        self.check_checkpoint()
        self._checkpointed(image_path=image_path, exit=exit, cause=cause)

    def record_shim_lost(self, cause: Cause) -> None:
        self._require(LIVE, "lose its shim")
        self._shim_lost(cause=cause)

    def adopt(self, cause: Cause) -> None:
        self._require(LIVE, "be adopted")
        self._adopted(cause=cause)

    # observations: facts a shim reported, each appended once -------------------------

    def observe_start(self, pid: int, cause: Cause) -> bool:
        if self.status is not Status.CREATED:
            return False
        self._started(pid=pid, cause=cause)
        return True

    def observe_exit(self, exit_status: int, exited_at: datetime, cause: Cause) -> bool:
        if self.status not in HAS_PROCESS:
            return False
        self._exited(
            exit_status=exit_status, exited_at=exited_at, signal=signal_of(exit_status),
            cause=cause,
        )  # fmt: skip
        return True

    def observe_paused(self, cause: Cause) -> bool:
        if self.status is not Status.RUNNING:
            return False
        self._paused(cause=cause)
        return True

    def observe_resumed(self, cause: Cause) -> bool:
        if self.status is not Status.PAUSED:
            return False
        self._resumed(cause=cause)
        return True

    def observe_kill(self, signal: int, all: bool, cause: Cause) -> bool:
        if self.status not in HAS_PROCESS:
            return False
        self._killed(signal=signal, all=all, cause=cause)
        return True

    def observe_oom(self, cause: Cause) -> bool:
        """Every OOM is its own fact (the killer may strike again): never deduplicated."""
        if not self.is_live:
            return False
        self._oom(cause=cause)
        return True

    def observe_exec_added(self, exec_id: str, cause: Cause) -> bool:
        if self.status not in RUNS_EXECS or exec_id in self.execs:
            return False
        self._exec_added(exec_id=exec_id, cause=cause)
        return True

    def observe_exec_started(self, exec_id: str, pid: int, cause: Cause) -> bool:
        """A started exec implies it was added: a missed /tasks/exec-added is filled in."""
        if self.status not in RUNS_EXECS:
            return False
        added = self.observe_exec_added(exec_id, cause)
        if self.execs[exec_id].pid is not None or self.execs[exec_id].exit is not None:
            return added  # started already, or ended without starting: not news
        self._exec_started(exec_id=exec_id, pid=pid, cause=cause)
        return True

    def observe_exec_exit(
        self, exec_id: str, exit_status: int, exited_at: datetime, cause: Cause
    ) -> bool:
        if self.status is Status.DELETED or not self._exec_running(exec_id):
            return False
        self._exec_exited(
            exec_id=exec_id, exit_status=exit_status, exited_at=exited_at, cause=cause
        )
        return True

    def observe_exec_not_started(self, exec_id: str, exited_at: datetime, cause: Cause) -> bool:
        """An exec the shim added but could not start (its binary missing, say) ends there,
        with runc's 255 for "cannot exec": every ExecAdded in history has an end."""
        process = self.execs.get(exec_id)
        unknown_or_started = process is None or process.pid is not None or process.exit is not None
        if self.status is Status.DELETED or unknown_or_started:
            return False
        self._exec_exited(exec_id=exec_id, exit_status=255, exited_at=exited_at, cause=cause)
        return True

    def observe_update(self, resources: dict[str, Any], cause: Cause) -> bool:
        if self.status not in HAS_PROCESS:
            return False
        self._updated(resources=resources, cause=cause)
        return True

    def observe_checkpoint(self, image_path: str, exit: bool, cause: Cause) -> bool:
        if self.status not in (Status.RUNNING, Status.PAUSED) or image_path in self.checkpoints:
            return False
        self._checkpointed(image_path=image_path, exit=exit, cause=cause)
        return True

    def observe_still_running(self, status: Status, pid: int, cause: Cause) -> bool:
        """The shim reports the init running (or paused) though history says it exited:
        the Exited was false, and the record follows the shim back (ExitRetracted)."""
        if self.status is not Status.STOPPED or status not in (Status.RUNNING, Status.PAUSED):
            return False
        self._exit_retracted(status=status.value, pid=pid, cause=cause)
        return True

    def observe_shim_lost(self, cause: Cause) -> bool:
        if self.status not in HAS_PROCESS:
            return False
        self._shim_lost(cause=cause)
        return True

    def observe_deleted(self, cause: Cause) -> bool:
        """Deleted once; a running or paused task cannot have been deleted (that raises)."""
        if self.status is Status.DELETED:
            return False
        self.delete(cause)
        return True

    def _exec_running(self, exec_id: str) -> bool:
        process = self.execs.get(exec_id)
        return process is not None and process.pid is not None and process.exit is None

    # mutators (replayed on load) -----------------------------------------------

    @event(Started)
    def _started(self, pid: int, cause: Cause) -> None:
        self.pid = pid
        self.status = Status.RUNNING

    @event(Exited)
    def _exited(
        self, exit_status: int, exited_at: datetime, signal: int | None, cause: Cause
    ) -> None:
        self.exit = Exit(status=exit_status, exited_at=exited_at)
        self.status = Status.STOPPED

    @event(Deleted)
    def _deleted(self, cause: Cause) -> None:
        self.status = Status.DELETED

    @event(Killed)
    def _killed(self, signal: int, all: bool, cause: Cause) -> None:
        pass  # an audit fact: whether it ended the task, the Exited event tells

    @event(Paused)
    def _paused(self, cause: Cause) -> None:
        self.status = Status.PAUSED

    @event(Resumed)
    def _resumed(self, cause: Cause) -> None:
        self.status = Status.RUNNING

    @event(OOM)
    def _oom(self, cause: Cause) -> None:
        pass

    @event(ExecAdded)
    def _exec_added(self, exec_id: str, cause: Cause) -> None:
        self.execs[exec_id] = ExecProcess(exec_id=exec_id)

    @event(ExecStarted)
    def _exec_started(self, exec_id: str, pid: int, cause: Cause) -> None:
        self.execs[exec_id].pid = pid

    @event(ExecExited)
    def _exec_exited(
        self, exec_id: str, exit_status: int, exited_at: datetime, cause: Cause
    ) -> None:
        self.execs[exec_id].exit = Exit(status=exit_status, exited_at=exited_at)

    @event(Updated)
    def _updated(self, resources: dict[str, Any], cause: Cause) -> None:
        pass  # an audit fact: the limits live in the cgroup, not in the task's state

    @event(Checkpointed)
    def _checkpointed(self, image_path: str, exit: bool, cause: Cause) -> None:
        self.checkpoints.append(image_path)

    @event(ShimLost)
    def _shim_lost(self, cause: Cause) -> None:
        pass

    @event(Adopted)
    def _adopted(self, cause: Cause) -> None:
        pass

    @event(ExitRetracted)
    def _exit_retracted(self, status: str, pid: int, cause: Cause) -> None:
        self.status, self.pid, self.exit = Status(status), pid, None


LEGACY_TOPICS = register_legacy_topics(Task)  # old histories load (domain/legacy_topics.py)

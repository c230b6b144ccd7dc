"""The Task aggregate: one incarnation of a task ID, from Created to Deleted.

Public methods are guards: they check the state machine (design.md) and raise
InvalidTransitionError for an illegal step; the private ``@event`` methods only mutate
state, and are what eventsourcing replays when a task is loaded.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidTransitionError
from domain.values import Cause, Exit, Status


class Task(Aggregate):
    """A task's lifecycle; each incarnation of an ID is its own aggregate (and history)."""

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

    # guards ------------------------------------------------------------------

    def start(self, pid: int, cause: Cause) -> None:
        if self.status is not Status.CREATED:
            raise InvalidTransitionError(
                f"task {self.task_id} is {self.status.value}: only a created task can be started"
            )
        self._started(pid=pid, cause=cause)

    def record_exit(self, exit_status: int, exited_at: datetime, cause: Cause) -> None:
        if self.status not in (Status.CREATED, Status.RUNNING):
            raise InvalidTransitionError(
                f"task {self.task_id} is {self.status.value}: only a created or running "
                "task can exit"
            )
        self._exited(exit_status=exit_status, exited_at=exited_at, cause=cause)

    def delete(self, cause: Cause) -> None:
        if self.status is Status.RUNNING:
            raise InvalidTransitionError(
                f"task {self.task_id} is running: kill it first, or use delete --force"
            )
        if self.status not in (Status.CREATED, Status.STOPPED):
            raise InvalidTransitionError(
                f"task {self.task_id} is {self.status.value}: it cannot be deleted"
            )
        self._deleted(cause=cause)

    @property
    def is_live(self) -> bool:
        """True until Deleted: the ID is taken while the incarnation is live."""
        return self.status is not Status.DELETED

    # mutators (replayed on load) -----------------------------------------------

    @event("Started")
    def _started(self, pid: int, cause: Cause) -> None:
        self.pid = pid
        self.status = Status.RUNNING

    @event("Exited")
    def _exited(self, exit_status: int, exited_at: datetime, cause: Cause) -> None:
        self.exit = Exit(status=exit_status, exited_at=exited_at)
        self.status = Status.STOPPED

    @event("Deleted")
    def _deleted(self, cause: Cause) -> None:
        self.status = Status.DELETED

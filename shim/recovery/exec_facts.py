"""The exits of a task's execs, when no command was there to record them.

An exec's exit is recorded by the command that waits for it, or by the shim's /tasks/exit
reaching a sink. A command SIGKILLed while its exec runs, or a task deleted while an exec
of it is ending, leaves neither: these ask the task's shim instead (its State for each
exec that history has started and not ended, or its Wait while the task is being ended),
and record an exit nobody can tell any more as 255, as for a task.
"""

from __future__ import annotations

import logging

from domain.errors import NotFoundError, UnavailableError
from domain.task import ExecProcess, Task
from domain.values import Cause, Exit, Status
from shim.clock import now
from shim.ports import ShimClient
from shim.recording.causes import Causes

logger = logging.getLogger(__name__)

UNKNOWN_EXIT_STATUS = 255  # containerd's status for an exit nobody saw


def running_execs(task: Task) -> list[ExecProcess]:
    """The execs history says were started and have not exited."""
    return [p for p in task.execs.values() if p.pid is not None and p.exit is None]


async def record_exec_drift(task: Task, client: ShimClient, causes: Causes) -> list[str]:
    """Observe on ``task`` (being edited) every exec exit its shim knows and history does
    not; the ids of those recorded. An exec the shim no longer has ended unseen: 255."""
    recorded = []
    for process in running_execs(task):
        try:
            state = await client.state(task.task_id, process.exec_id)
        except NotFoundError:
            cause = causes.reconciliation("the shim no longer has the exec; exit status unknown")
            task.observe_exec_exit(process.exec_id, UNKNOWN_EXIT_STATUS, now(), cause)
        else:
            if state.status is not Status.STOPPED:
                continue
            cause = causes.reconciliation("shim reports the exec stopped")
            exited_at = state.exited_at or now()
            task.observe_exec_exit(process.exec_id, state.exit_status, exited_at, cause)
        recorded.append(process.exec_id)
    return recorded


def exec_exits_unknown(task: Task, cause: Cause) -> list[str]:
    """Every exec still running in history ended with the task, status unknown (255)."""
    ended = running_execs(task)
    for process in ended:
        task.observe_exec_exit(process.exec_id, UNKNOWN_EXIT_STATUS, now(), cause)
    return [p.exec_id for p in ended]


async def wait_for_execs(task: Task, client: ShimClient) -> list[tuple[str, Exit]]:
    """Wait (the shim's Wait) for every exec of ``task`` that history has running; their
    ids and exits. An exec the shim no longer has was removed by its own
    command, which recorded its exit first; it is skipped."""
    exits: list[tuple[str, Exit]] = []
    for process in running_execs(task):
        try:
            exit_ = await client.wait(task.task_id, process.exec_id)
        except (NotFoundError, UnavailableError) as exc:
            logger.debug("exec %s of %s: %s", process.exec_id, task.task_id, exc)
            continue
        exits.append((process.exec_id, exit_))
    return exits

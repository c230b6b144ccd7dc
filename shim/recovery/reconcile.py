"""Reconciliation: compare a task's record with its shim, and record what really happened.

A process that exited while no command listened is recorded with the shim's own status
and time; a shim that is gone is cleaned up with its ``delete`` action and recorded as
ShimLost and Exited(255), as containerd does. A scan (``Reconciler.scan``, the
``reconcile`` command) also visits what no record knows: a working bundle whose shim
still holds a task is adopted (a new incarnation: Created, Adopted, and what the shim
says happened since); any other such bundle (a create killed half-way) is removed.

Only this owner's tasks (the recorder's Owner: this node, this state dir) are reconciled.
Another node's task has no working bundle here, which would read as a lost shim: its
record is never touched. A working bundle here is ours, whoever else recorded the ID.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Awaitable, Iterable
from pathlib import Path

from domain.errors import (
    NotFoundError,
    ShimledgerError,
    UnavailableError,
)
from domain.state_dir import StateDir
from domain.task import HAS_PROCESS, Task
from domain.values import Bundle, Status
from shim.clock import now
from shim.crash_points import crash_point
from shim.lifecycle.bundle import Bundles, is_identifier, remove_bundle
from shim.lifecycle.connections import ShimConnections
from shim.lifecycle.shim_manager import ShimManager
from shim.ports import ProcessState
from shim.recording.causes import Causes
from shim.recording.recorder import TaskRecorder
from shim.recovery.adoption import BundleAdopter
from shim.recovery.exec_facts import (
    UNKNOWN_EXIT_STATUS,
    exec_exits_unknown,
    record_exec_drift,
    running_execs,
    wait_for_execs,
)
from shim.recovery.report import Action, Reconciliation

logger = logging.getLogger(__name__)

DELETING = ".deleting."  # remove_bundle renames a bundle to .<id>.deleting.<pid> first


class Reconciler:
    """Brings task histories in line with the shims (and their absence)."""

    def __init__(
        self,
        *,
        shims: ShimManager,
        connections: ShimConnections,
        recorder: TaskRecorder,
        bundles: Bundles,
        adopter: BundleAdopter,
    ) -> None:
        self._shims = shims
        self._connections = connections
        self._recorder = recorder
        self._bundles = bundles
        self._adopter = adopter

    @property
    def _state(self) -> StateDir:
        return self._bundles.state

    @property
    def _causes(self) -> Causes:
        return self._recorder.causes

    # --- one recorded task ---------------------------------------------------------------

    async def reconcile(self, task: Task, *, stopped: bool = False) -> bool:
        """Bring a task with a process in line with its shim; True if anything was recorded.

        With ``stopped``, a stopped record is asked about too (one more RPC): its shim may
        report the init still running, when the recorded exit was wrong.
        """
        if task.status not in HAS_PROCESS and not (stopped and task.status is Status.STOPPED):
            return False
        if not task.owned_by(self._recorder.owner):
            return False  # another node's (or state dir's): its shim is not ours to ask
        async with self._recorder.editing_incarnation(task) as fresh:
            if fresh.status is not Status.STOPPED:
                await self._with_process(fresh)
            elif (bundle := self._bundles.load(fresh.namespace, fresh.task_id)) is not None:
                await self._recheck_stopped(fresh, bundle)
            changed = bool(fresh.pending_events)
        return changed

    async def _with_process(self, task: Task) -> tuple[Action, str]:
        """A created, running or paused record against its shim's State (inside an edit)."""
        if task.status not in HAS_PROCESS:
            return Action.UNCHANGED, task.status.value
        bundle = self._bundles.working(task.namespace, task.task_id)
        try:
            shim = await self._connections.connect(task)
        except (UnavailableError, NotFoundError) as exc:
            logger.info("shim of task %s is gone (%s): cleaning up", task.task_id, exc)
            self._connections.forget(task)
            await self.cleanup_dead(task, bundle)
            return Action.SHIM_LOST, "shim gone: its delete action ran; exit status unknown"
        try:
            process = await shim.client.state(task.task_id)
        except (UnavailableError, NotFoundError) as exc:
            # Unavailable: the shim died under us. NotFound: it is up but holds no task
            # (someone removed the runc container); it has nothing left to serve.
            logger.info("shim of task %s has no task (%s): cleaning up", task.task_id, exc)
            self._connections.forget(task)
            await self._shims.delete(shim)
            await self.cleanup_dead(task, bundle)
            return Action.SHIM_LOST, "the shim no longer had the task; exit status unknown"
        # before the init's exit, if any
        execs = await record_exec_drift(task, shim.client, self._causes)
        action, detail = _record_drift(task, process, self._causes)
        if execs and action is Action.UNCHANGED:
            return Action.EXEC_EXIT_RECORDED, f"exec {', '.join(execs)} exited unheard"
        return action, detail

    async def remove_task(self, task: Task) -> None:
        """The shim's Delete, its shutdown, the cgroups and the bundle's removal, for a
        delete (inside its edit); a shim that is gone already is reconciled as lost."""
        bundle = self._bundles.working(task.namespace, task.task_id)
        try:
            shim = await self._connections.connect(task)
        except UnavailableError:
            await self.cleanup_dead(task, bundle)
        else:
            self._connections.forget(task)
            try:
                await shim.client.delete(task.task_id)
            except (UnavailableError, NotFoundError) as exc:
                logger.info("Delete of %s: %s", task.task_id, exc)
                await self._shims.delete(shim)
                if isinstance(exc, UnavailableError):  # NotFound: deleted already (a retry)
                    await self.cleanup_dead(task, bundle)
            else:
                crash_point("delete.rpc-done")
                await self._shims.delete(shim)
        crash_point("delete.shim-gone")
        # The cgroups before the bundle: while the bundle is there, a retry (or reconcile)
        # finishes the job, and removing the bundle is the last thing it does.
        self._bundles.cgroups.release(task.namespace, task.task_id)
        remove_bundle(bundle)
        crash_point("delete.bundle-removed")

    async def cleanup_dead(self, task: Task, bundle: Bundle) -> None:
        """The shim is gone: its own cleanup, then ShimLost and Exited(255) on ``task``,
        which the caller is editing."""
        await self._shims.cleanup_after_dead_shim(bundle, task.runtime)
        task.observe_shim_lost(self._causes.reconciliation("shim lost"))
        unknown = self._causes.reconciliation("shim lost; exit status unknown")
        exec_exits_unknown(task, unknown)
        task.observe_exit(UNKNOWN_EXIT_STATUS, now(), unknown)

    async def end_execs(self, task: Task) -> None:
        """``delete --force`` after its kill: wait (the shim's Wait) for each exec history
        has running, and record its exit before the task's own Exited and Deleted.

        Not under the lock while waiting: the exec's own command may record it first.
        """
        async with self._recorder.editing_incarnation(task) as fresh:
            running = bool(running_execs(fresh))
        if not running:
            return
        exits = await wait_for_execs(fresh, (await self._connections.connect(fresh)).client)
        async with self._recorder.editing_incarnation(task) as fresh:
            for exec_id, exit_ in exits:
                fresh.observe_exec_exit(
                    exec_id, exit_.status, exit_.exited_at, self._causes.waited()
                )

    async def record_exec_exits(self, task: Task) -> None:
        """Inside an edit: each exec exit the task's shim knows and history does not (before
        the init's own exit is recorded, so that history tells them in that order)."""
        if running_execs(task):
            with contextlib.suppress(UnavailableError):
                await record_exec_drift(
                    task, (await self._connections.connect(task)).client, self._causes
                )

    async def settle_execs(self, task: Task) -> None:
        """Before its Deleted (inside the edit): each exec still running in history gets
        its exit from the shim if it can tell, else 255; a deleted task runs nothing."""
        await self.record_exec_exits(task)
        exec_exits_unknown(task, self._causes.reconciliation("ended with its task; status unknown"))

    # --- the whole state dir -------------------------------------------------------------

    async def scan(
        self, known: Iterable[tuple[str, str]], namespace: str | None = None
    ) -> list[Reconciliation]:
        """Reconcile every live record in ``known`` and every working bundle of the
        namespace (None: every namespace) that no live record knows: the ``reconcile``
        command, and what a manager loading existing shims would run first.

        ``known`` comes from a read model, which may lag: each key is re-read from the
        store under its lock, so a stale entry is skipped and a bundle whose record the
        view has not caught up with is reconciled, not adopted.
        """
        report: list[Reconciliation] = []
        keys = set(known)
        inspected: set[tuple[str, str]] = set()  # live records of this owner, reconciled
        for ns, task_id in sorted(keys):
            if namespace is None or ns == namespace:
                entries = await self._guarded(ns, task_id, self.inspect(ns, task_id))
                inspected |= {(ns, task_id)} if entries else set()
                report += entries
        namespaces = [namespace] if namespace else self._namespaces({ns for ns, _ in keys})
        for ns in namespaces:
            for path in _candidates(self._state.namespace_dir(ns)):
                if path.name.startswith("."):
                    report += _listed(_remove_half_deleted(ns, path))
                elif (ns, path.name) not in inspected:
                    # No live record of ours (another node's may exist): adopt or clean.
                    report += await self._guarded(ns, path.name, self._unknown(ns, path.name))
        io = self._state.io
        for ns_dir in sorted(io.iterdir()) if io.is_dir() else []:
            if namespace is None or ns_dir.name == namespace:
                report += _remove_dead_commands_fifos(ns_dir.name, ns_dir)
        return report

    async def _unknown(self, namespace: str, task_id: str) -> Reconciliation | None:
        entry = await self._adopter.adopt_or_clean(namespace, task_id)
        return entry if entry is not None else await self.inspect(namespace, task_id)

    async def _guarded(
        self, namespace: str, task_id: str, step: Awaitable[Reconciliation | None]
    ) -> list[Reconciliation]:
        """One task's failure (a hung shim, a refusing runc) is reported; the scan goes on."""
        try:
            return _listed(await step)
        except (ShimledgerError, OSError) as exc:
            logger.warning("reconciling task %s failed: %s", task_id, exc)
            return [Reconciliation(namespace, task_id, None, Action.FAILED, str(exc))]

    def _namespaces(self, recorded: set[str]) -> list[str]:
        return sorted(recorded | set(self._bundles.namespaces()))

    async def inspect(self, namespace: str, task_id: str) -> Reconciliation | None:
        """Reconcile one live record, whatever its status; None if it is not live."""
        async with self._recorder.editing(namespace, task_id) as task:
            if task is None or not task.is_live:
                return None
            action, detail = await self._with_process(task)
            if task.status is Status.STOPPED:
                action, detail = await self._stopped(task, action, detail)
            recorded = tuple(type(e).__name__ for e in task.pending_events)
        return Reconciliation(namespace, task_id, task.incarnation, action, detail, recorded)

    async def _stopped(self, task: Task, action: Action, detail: str) -> tuple[Action, str]:
        """A stopped record: finish a delete that removed the bundle, or clear a dead shim's
        leftovers (its runc container, its mounts) so that only the record remains."""
        bundle = self._bundles.load(task.namespace, task.task_id)
        if bundle is None:
            task.observe_deleted(
                self._causes.reconciliation("working bundle gone: the task no longer exists")
            )
            if action is Action.UNCHANGED:
                return Action.DELETE_RECORDED, "its working bundle is gone (a delete cut short)"
            return action, f"{detail}; its working bundle is gone: Deleted recorded"
        if action is not Action.UNCHANGED:
            return action, detail
        return await self._recheck_stopped(task, bundle)

    async def _recheck_stopped(self, task: Task, bundle: Bundle) -> tuple[Action, str]:
        """A stopped record with its bundle, against its shim (inside an edit): a dead
        shim's leftovers cleared, execs' exits recorded, and an exit the shim contradicts
        (the init still runs) retracted."""
        unknown = self._causes.reconciliation("the task's processes are gone; exit status unknown")
        try:
            shim = await self._connections.connect(task)
            process = await shim.client.state(task.task_id)
        except UnavailableError:
            self._connections.forget(task)
            await self._shims.cleanup_after_dead_shim(bundle, task.runtime)
            exec_exits_unknown(task, unknown)
            return Action.LEFTOVERS_REMOVED, "stopped; its shim is gone: its delete action ran"
        except NotFoundError:
            exec_exits_unknown(task, unknown)
            return Action.UNCHANGED, "stopped; the shim holds no container (delete finishes it)"
        execs = await record_exec_drift(task, shim.client, self._causes)
        status = process.status.value
        cause = self._causes.reconciliation(f"shim reports {status}: the recorded exit was wrong")
        if task.observe_still_running(process.status, process.pid, cause):
            return Action.EXIT_RETRACTED, f"the shim reports it {status}, pid {process.pid}"
        if execs:
            return Action.EXEC_EXIT_RECORDED, f"stopped; exec {', '.join(execs)} exited unheard"
        return Action.UNCHANGED, "stopped"


def _record_drift(task: Task, process: ProcessState, causes: Causes) -> tuple[Action, str]:
    """Observe on ``task`` what its shim reports and history does not know yet."""
    if process.status is Status.STOPPED:
        exited_at = process.exited_at or now()
        cause = causes.reconciliation("shim reports stopped")
        if task.observe_exit(process.exit_status, exited_at, cause):
            return Action.EXIT_RECORDED, f"exited with {process.exit_status} while nobody listened"
        return Action.UNCHANGED, "stopped"
    cause = causes.reconciliation(f"shim reports {process.status.value}")
    if task.status is Status.CREATED and process.status in (Status.RUNNING, Status.PAUSED):
        task.observe_start(process.pid, cause)
        if process.status is Status.PAUSED:
            task.observe_paused(cause)
        return Action.START_RECORDED, f"{process.status.value}, pid {process.pid}"
    if process.status is Status.PAUSED and task.observe_paused(cause):
        return Action.PAUSE_RECORDED, "paused"
    if process.status is Status.RUNNING and task.observe_resumed(cause):
        return Action.RESUME_RECORDED, "running"
    return Action.UNCHANGED, task.status.value


def _listed(entry: Reconciliation | None) -> list[Reconciliation]:
    return [] if entry is None else [entry]


def _candidates(directory: Path) -> list[Path]:
    """What may be a working bundle, or one half-removed: directories named as a task
    ID holding a config.json (or nothing: a create killed right after its mkdir), and
    ``.<id>.deleting.<pid>``. Anything else is not ours to touch."""
    found = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if not path.is_dir() or path.is_symlink():
            continue
        if path.name.startswith("."):
            if DELETING in path.name:
                found.append(path)
        elif is_identifier(path.name) and (
            (path / "config.json").is_file() or not any(path.iterdir())
        ):
            found.append(path)
    return found


def _remove_dead_commands_fifos(namespace: str, directory: Path) -> list[Reconciliation]:
    """Foreground FIFO dirs (``<id>-<pid>``) of commands that died without cleaning up."""
    report = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        owner = StateDir.io_dir_owner(path.name)
        if owner is None or Path(f"/proc/{owner[1]}").exists():
            continue  # not ours, or its command still runs
        task_id, pid = owner
        shutil.rmtree(path, ignore_errors=True)
        report.append(Reconciliation(
            namespace, task_id, None, Action.CLEANED,
            f"stdio FIFOs of a foreground command that died (pid {pid}): removed",
        ))  # fmt: skip
    return report


def _remove_half_deleted(namespace: str, path: Path) -> Reconciliation | None:
    """A bundle renamed for removal by a process that died before it finished."""
    task_id, _, pid = path.name[1:].rpartition(DELETING)
    if pid.isdigit() and Path(f"/proc/{pid}").exists():
        return None  # its remover is still at work
    shutil.rmtree(path, ignore_errors=True)
    return Reconciliation(
        namespace, task_id, None, Action.CLEANED, f"half-removed bundle {path.name}: removed"
    )

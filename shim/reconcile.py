"""Reconciliation: compare a task's record with its shim, and record what really happened.

A process that exited while no command listened is recorded with the shim's own status
and time; a shim that is gone is cleaned up with its ``delete`` action and recorded as
ShimLost and Exited(255), as containerd does. A scan (``Reconciler.scan``, the
``reconcile`` command) also visits what no record knows: a working bundle whose shim
still holds a task is adopted (a new incarnation: Created, Adopted, and what the shim
says happened since); any other such bundle (a create killed half-way) is removed.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from domain.errors import (
    InvalidTransitionError,
    NotFoundError,
    ShimledgerError,
    UnavailableError,
)
from domain.task import HAS_PROCESS, Task
from domain.values import Bundle, Cause, Exit, Status
from shim import DEFAULT_RUNTIME
from shim.bundle import (
    NOT_NAMESPACES,
    bundle_runtime,
    is_identifier,
    load_bundle,
    remove_bundle,
    working_bundle,
)
from shim.ports import ProcessState, TaskLocks, TaskStore
from shim.recorder import TaskRecorder
from shim.shim_manager import ShimManager, ShimProcess, bounded_cleanup

logger = logging.getLogger(__name__)

UNKNOWN_EXIT_STATUS = 255  # containerd's status for an exit nobody saw (cleanupAfterDeadShim)
DELETING = ".deleting."  # remove_bundle renames a bundle to .<id>.deleting.<pid> first


class Action(enum.StrEnum):
    """What reconciling one task (or one bundle no record knows) did."""

    UNCHANGED = "unchanged"
    EXIT_RECORDED = "exit-recorded"
    START_RECORDED = "start-recorded"
    PAUSE_RECORDED = "pause-recorded"
    RESUME_RECORDED = "resume-recorded"
    SHIM_LOST = "shim-lost"
    LEFTOVERS_REMOVED = "leftovers-removed"
    DELETE_RECORDED = "delete-recorded"
    ADOPTED = "adopted"
    CLEANED = "cleaned"
    FAILED = "failed"


@dataclass(frozen=True)
class Reconciliation:
    """One line of a scan's report: which task, what was done, which events it appended."""

    namespace: str
    task_id: str
    incarnation: int | None  # None: a bundle no history knows, cleaned
    action: Action
    detail: str
    recorded: tuple[str, ...] = ()


def _cause(detail: str) -> Cause:
    return Cause(kind="reconciliation", detail=detail)


class Reconciler:
    """Brings task histories in line with the shims (and their absence)."""

    def __init__(
        self,
        shims: ShimManager,
        recorder: TaskRecorder,
        locks: TaskLocks,
        store: TaskStore,
        *,
        connect: Callable[[Task], Awaitable[ShimProcess]],
        forget: Callable[[Task], None],
    ) -> None:
        self._shims = shims
        self._recorder = recorder
        self._locks = locks
        self._store = store
        self._connect = connect
        self._forget = forget

    @property
    def _state(self) -> Path:
        return self._shims.config.state

    # --- one recorded task ---------------------------------------------------------------

    async def reconcile(self, task: Task) -> bool:
        """Bring a task with a process in line with its shim; True if anything was recorded."""
        if task.status not in HAS_PROCESS:
            return False
        async with self._locks.hold(task.namespace, task.task_id):
            fresh = await self._store.current(task.namespace, task.task_id)
            if fresh is None or fresh.incarnation != task.incarnation:
                return False
            action, _ = await self._with_process(fresh)
            return action is not Action.UNCHANGED

    async def _with_process(self, task: Task) -> tuple[Action, str]:
        """A created, running or paused record against its shim's State; the lock is held."""
        if task.status not in HAS_PROCESS:
            return Action.UNCHANGED, task.status.value
        bundle = working_bundle(self._state, task.namespace, task.task_id)
        try:
            shim = await self._connect(task)
        except (UnavailableError, NotFoundError) as exc:
            logger.info("shim of task %s is gone (%s): cleaning up", task.task_id, exc)
            self._forget(task)
            await self.cleanup_dead(task, bundle)
            return Action.SHIM_LOST, "shim gone: its delete action ran; exit status unknown"
        try:
            process = await shim.client.state(task.task_id)
        except (UnavailableError, NotFoundError) as exc:
            # Unavailable: the shim died under us. NotFound: it is up but holds no task
            # (someone removed the runc container); it has nothing left to serve.
            logger.info("shim of task %s has no task (%s): cleaning up", task.task_id, exc)
            self._forget(task)
            await self._shims.delete(shim)
            await self.cleanup_dead(task, bundle)
            return Action.SHIM_LOST, "the shim no longer had the task; exit status unknown"
        return await self._record_drift(task, process)

    async def _record_drift(self, task: Task, process: ProcessState) -> tuple[Action, str]:
        """Record what the shim reports and history does not know yet."""
        key = (task.namespace, task.task_id)
        if process.status is Status.STOPPED:
            exit_ = Exit(status=process.exit_status, exited_at=process.exited_at or _now())
            cause = _cause("shim reports stopped")
            if await self._recorder.record_exit(task, exit_, cause):
                return Action.EXIT_RECORDED, f"exited with {exit_.status} while nobody listened"
            return Action.UNCHANGED, "stopped"
        cause = _cause(f"shim reports {process.status.value}")
        if task.status is Status.CREATED and process.status in (Status.RUNNING, Status.PAUSED):
            paused = process.status is Status.PAUSED

            def started(t: Task) -> None:
                if t.incarnation == task.incarnation and t.status is Status.CREATED:
                    t.start(process.pid, cause)
                    if paused:
                        t.pause(cause)

            await self._recorder.record(key, started)
            return Action.START_RECORDED, f"{process.status.value}, pid {process.pid}"
        if task.status is Status.RUNNING and process.status is Status.PAUSED:
            await self._recorder.record(key, lambda t: t.pause(cause) if _same(t, task) else None)
            return Action.PAUSE_RECORDED, "paused"
        if task.status is Status.PAUSED and process.status is Status.RUNNING:
            await self._recorder.record(key, lambda t: t.resume(cause) if _same(t, task) else None)
            return Action.RESUME_RECORDED, "running"
        return Action.UNCHANGED, task.status.value

    async def cleanup_dead(self, task: Task, bundle: Bundle) -> None:
        """The shim is gone: its own cleanup, then ShimLost and Exited(255) in history."""
        await self._shims.cleanup_after_dead_shim(bundle, task.runtime)
        lost = _cause("shim lost")
        await self._recorder.record(
            (task.namespace, task.task_id),
            lambda t: (
                t.record_shim_lost(lost)
                if t.incarnation == task.incarnation and t.status in HAS_PROCESS
                else None
            ),
        )
        await self._recorder.record_exit(
            task,
            Exit(status=UNKNOWN_EXIT_STATUS, exited_at=_now()),
            _cause("shim lost; exit status unknown"),
        )

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
        for ns, task_id in sorted(keys):
            if namespace is None or ns == namespace:
                report += await self._guarded(ns, task_id, self.inspect(ns, task_id))
        namespaces = [namespace] if namespace else self._namespaces({ns for ns, _ in keys})
        for ns in namespaces:
            for path in _candidates(self._state / ns):
                if path.name.startswith("."):
                    report += _listed(_remove_half_deleted(ns, path))
                elif (ns, path.name) not in keys:
                    report += await self._guarded(ns, path.name, self._unknown(ns, path.name))
        return report

    async def _unknown(self, namespace: str, task_id: str) -> Reconciliation | None:
        entry = await self.adopt_or_clean(namespace, task_id)
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
        found = set(recorded)
        if self._state.is_dir():
            for path in self._state.iterdir():
                if path.is_dir() and path.name not in NOT_NAMESPACES and is_identifier(path.name):
                    found.add(path.name)
        return sorted(found)

    async def inspect(self, namespace: str, task_id: str) -> Reconciliation | None:
        """Reconcile one live record, whatever its status; None if it is not live."""
        async with self._locks.hold(namespace, task_id):
            task = await self._store.current(namespace, task_id)
            if task is None or not task.is_live:
                return None
            before = task.version
            action, detail = await self._with_process(task)
            task = await self._store.current(namespace, task_id)
            assert task is not None
            if task.status is Status.STOPPED:
                action, detail = await self._stopped(task, action, detail)
            return Reconciliation(
                namespace, task_id, task.incarnation, action, detail,
                await self._recorded(task, before),
            )  # fmt: skip

    async def _stopped(self, task: Task, action: Action, detail: str) -> tuple[Action, str]:
        """A stopped record: finish a delete that removed the bundle, or clear a dead shim's
        leftovers (its runc container, its mounts) so that only the record remains."""
        bundle = load_bundle(self._state, task.namespace, task.task_id)
        if bundle is None:
            cause = _cause("working bundle gone: the task no longer exists")
            await self._recorder.record(
                (task.namespace, task.task_id),
                lambda t: t.delete(cause) if _same(t, task) and t.is_live else None,
            )
            if action is Action.UNCHANGED:
                return Action.DELETE_RECORDED, "its working bundle is gone (a delete cut short)"
            return action, f"{detail}; its working bundle is gone: Deleted recorded"
        if action is not Action.UNCHANGED:
            return action, detail
        try:
            shim = await self._connect(task)
            await shim.client.state(task.task_id)
        except UnavailableError:
            self._forget(task)
            await self._shims.cleanup_after_dead_shim(bundle, task.runtime)
            return Action.LEFTOVERS_REMOVED, "stopped; its shim is gone: its delete action ran"
        except NotFoundError:
            return Action.UNCHANGED, "stopped; the shim holds no container (delete finishes it)"
        return Action.UNCHANGED, "stopped"

    async def _recorded(self, task: Task, after_version: int) -> tuple[str, ...]:
        """The types of the events this incarnation got after ``after_version``."""
        events = await self._store.history(task.namespace, task.task_id)
        return tuple(
            type(e).__name__
            for e in events
            if e.originator_id == task.id and e.originator_version > after_version
        )

    # --- bundles no record knows ---------------------------------------------------------

    async def adopt_or_clean(self, namespace: str, task_id: str) -> Reconciliation | None:
        """A working bundle with no live record: adopt the task its shim holds, or remove
        the bundle and whatever a dead or empty shim left. None if a live record knows it."""
        async with self._locks.hold(namespace, task_id):
            previous = await self._store.current(namespace, task_id)
            bundle = load_bundle(self._state, namespace, task_id)
            if bundle is None or (previous is not None and previous.is_live):
                return None
            shim, process = await self._probe(bundle)
            if shim is None or process is None:
                await self._clean(bundle, shim)
                why = "no shim" if shim is None else "its shim held no task"
                return Reconciliation(
                    namespace, task_id, None, Action.CLEANED,
                    f"working bundle with no record and {why}: removed",
                )  # fmt: skip
            try:
                task = self._adopted(bundle, shim, process, previous)
                await self._store.save(task)
            finally:
                await shim.client.aclose()
            return Reconciliation(
                namespace, task_id, task.incarnation, Action.ADOPTED,
                f"its shim (pid {shim.shim_pid}) holds a {process.status.value} task, "
                f"pid {process.pid}",
                await self._recorded(task, 0),
            )  # fmt: skip

    async def _probe(self, bundle: Bundle) -> tuple[ShimProcess | None, ProcessState | None]:
        """The bundle's shim, if it answers, and the task it holds, if any."""
        try:
            shim = await self._shims.get(bundle, bundle_runtime(bundle, DEFAULT_RUNTIME))
        except (UnavailableError, NotFoundError, OSError) as exc:
            logger.info("bundle %s has no live shim: %s", bundle.path, exc)
            return None, None
        try:
            return shim, await shim.client.state(bundle.id)
        except (UnavailableError, NotFoundError) as exc:
            logger.info("the shim in %s holds no task: %s", bundle.path, exc)
            return shim, None

    async def _clean(self, bundle: Bundle, shim: ShimProcess | None) -> None:
        if shim is None:
            await self._shims.cleanup_after_dead_shim(
                bundle, bundle_runtime(bundle, DEFAULT_RUNTIME)
            )
        else:
            await self.discard_shim(shim)
        remove_bundle(bundle)

    def _adopted(
        self, bundle: Bundle, shim: ShimProcess, process: ProcessState, previous: Task | None
    ) -> Task:
        """A new incarnation for the task a shim holds: Created, Adopted, then its state."""
        cause = _cause("adopted: a live shim held a task no record knew")
        task = Task(
            namespace=bundle.namespace,
            task_id=bundle.id,
            incarnation=previous.incarnation + 1 if previous else 1,
            bundle=_user_bundle(bundle),
            pid=process.pid,
            runtime=bundle_runtime(bundle, _runtime_of(shim.shim_pid)),
            cause=cause,
        )
        task.adopt(cause)
        if process.status in (Status.RUNNING, Status.PAUSED):
            task.start(process.pid, cause)
        if process.status is Status.PAUSED:
            task.pause(cause)
        if process.status is Status.STOPPED:
            exited_at = process.exited_at or _now()
            task.record_exit(process.exit_status, exited_at, cause)
        return task

    async def remove_leftovers(self, namespace: str, task_id: str, *, force: bool) -> bool:
        """Clean a working bundle that no history knows; True if there was one.

        A process still running in it is only killed with ``force``, as `delete` asks of
        a recorded task: it may be a create whose record was lost, which `reconcile` adopts.
        """
        async with self._locks.hold(namespace, task_id):
            bundle = load_bundle(self._state, namespace, task_id)
            task = await self._store.current(namespace, task_id)
            if bundle is None or (task is not None and task.is_live):
                return False
            shim, process = await self._probe(bundle)
            if not force and process is not None and process.status in (
                Status.RUNNING, Status.PAUSED,
            ):  # fmt: skip
                if shim is not None:
                    await shim.client.aclose()
                raise InvalidTransitionError(
                    f"task {task_id} has no history but runs in {bundle.path}: adopt it "
                    "with `shimledger reconcile`, or remove it with delete --force"
                )
            logger.warning("task %s has no history: removing what a failed create left", task_id)
            await self._clean(bundle, shim)
            return True

    async def discard_shim(self, shim: ShimProcess) -> None:
        """Undo a half-made task: remove what runc made, then stop the shim."""
        await bounded_cleanup(shim.client.delete(shim.id))
        await self._shims.delete(shim)
        await self._shims.cleanup_after_dead_shim(shim.bundle, shim.runtime)


def _same(current: Task, task: Task) -> bool:
    return current.incarnation == task.incarnation


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


def _remove_half_deleted(namespace: str, path: Path) -> Reconciliation | None:
    """A bundle renamed for removal by a process that died before it finished."""
    task_id, _, pid = path.name[1:].rpartition(DELETING)
    if pid.isdigit() and Path(f"/proc/{pid}").exists():
        return None  # its remover is still at work
    shutil.rmtree(path, ignore_errors=True)
    return Reconciliation(
        namespace, task_id, None, Action.CLEANED, f"half-removed bundle {path.name}: removed"
    )


def _user_bundle(bundle: Bundle) -> str:
    """The bundle to record for an adopted task: the user's, if its config.json says where.

    The working bundle's root.path is the user's rootfs made absolute; a config.json next
    to it marks the user's bundle. Otherwise the working bundle is all there is to name.
    """
    try:
        spec = json.loads((Path(bundle.path) / "config.json").read_text())
        parent = Path(spec["root"]["path"]).parent
    except (OSError, ValueError, KeyError, TypeError):
        return bundle.path
    return str(parent) if (parent / "config.json").is_file() else bundle.path


def _runtime_of(shim_pid: int) -> str:
    """The runtime to record for an adopted task: the default shim's name, or the path of
    the executable that serves it (what ``create --runtime /abs/path`` records)."""
    try:
        executable = os.readlink(f"/proc/{shim_pid}/exe")
    except OSError:
        return DEFAULT_RUNTIME
    if os.path.basename(executable) == "containerd-shim-runc-v2":
        return DEFAULT_RUNTIME
    return executable


def _now() -> datetime:
    return datetime.now().astimezone()

"""Working bundles no record knows: adopt the task their shim still holds, or clean them.

A create killed between its Create RPC and its Created (or a store restored from an
older backup) leaves a working bundle whose shim may hold a live task. Reconciliation
adopts it as a new incarnation (Created, Adopted, and what the shim says happened since);
a bundle whose shim is dead or empty is removed with whatever it left. `delete` without
--force refuses to kill such a task: it may be exactly the one the user wants back.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from domain.errors import InvalidTransitionError, NotFoundError, UnavailableError
from domain.task import Task
from domain.values import Bundle, Status
from shim import DEFAULT_RUNTIME
from shim.clock import now
from shim.lifecycle.bundle import Bundles, bundle_runtime, remove_bundle
from shim.lifecycle.shim_manager import ShimManager, ShimProcess, bounded_cleanup
from shim.ports import ProcessState
from shim.recording.recorder import TaskRecorder
from shim.recovery.report import Action, Reconciliation

logger = logging.getLogger(__name__)


class BundleAdopter:
    """Adopts or cleans the working bundles of the state dir that no live record knows."""

    def __init__(self, shims: ShimManager, recorder: TaskRecorder, bundles: Bundles) -> None:
        self._shims = shims
        self._recorder = recorder
        self._bundles = bundles

    async def adopt_or_clean(self, namespace: str, task_id: str) -> Reconciliation | None:
        """A working bundle with no live record: adopt the task its shim holds, or remove
        the bundle and whatever a dead or empty shim left. None if a live record knows it."""
        async with self._recorder.creating(namespace, task_id) as new:
            previous = new.previous
            bundle = self._bundles.load(namespace, task_id)
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
            await shim.client.aclose()
            runtime = bundle_runtime(bundle, _runtime_of(shim.shim_pid))
            new.begin(lambda number: self._adopted(bundle, runtime, process, number))
            task = await new.commit()
            recorded = new.recorded
        return Reconciliation(
            namespace, task_id, task.incarnation, Action.ADOPTED,
            f"its shim (pid {shim.shim_pid}) holds a {process.status.value} task, "
            f"pid {process.pid}",
            recorded,
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
        self._bundles.cgroups.release(bundle.namespace, bundle.id)  # before: see TaskManager
        remove_bundle(bundle)

    def _adopted(
        self, bundle: Bundle, runtime: str, process: ProcessState, incarnation: int
    ) -> Task:
        """A new incarnation for the task a shim holds: Created, Adopted, then its state.

        This owner's: the bundle is in this owner's state dir, whoever else records the ID.
        """
        cause = self._recorder.causes.reconciliation(
            "adopted: a live shim held a task no record knew"
        )
        owner = self._recorder.owner
        task = Task(
            namespace=bundle.namespace,
            task_id=bundle.id,
            incarnation=incarnation,
            bundle=_user_bundle(bundle),
            pid=process.pid,
            runtime=runtime,
            node=owner.node,
            state_dir=owner.state_dir,
            cause=cause,
        )
        task.adopt(cause)
        if process.status in (Status.RUNNING, Status.PAUSED):
            task.start(process.pid, cause)
        if process.status is Status.PAUSED:
            task.pause(cause)
        if process.status is Status.STOPPED:
            exited_at = process.exited_at or now()
            task.record_exit(process.exit_status, exited_at, cause)
        return task

    async def remove_leftovers(self, namespace: str, task_id: str, *, force: bool) -> bool:
        """Clean a working bundle that no history knows; True if there was one.

        A process still running in it is only killed with ``force``, as `delete` asks of
        a recorded task: it may be a create whose record was lost, which `reconcile` adopts.
        """
        async with self._recorder.editing(namespace, task_id) as task:
            bundle = self._bundles.load(namespace, task_id)
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

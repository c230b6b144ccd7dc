"""Fakes of the shim ports, for unit tests of TaskManager's own logic (one layer only).

They follow containerd-shim-runc-v2 (1.6) as tests/contract/test_shim_client_contract.py
pins it down against the real shim: the same process states, the same error classes (the
ones adapters/ttrpc/errors.py maps the shim's gRPC codes to) and the same messages.

What a fake cannot know by itself, a test tells it:

- a process runs until it is signalled or ``FakeShim.exit`` ends it, unless the shim was
  given a ``program`` that says how a command line ends (``shell_exit`` knows ``true``,
  ``false`` and ``sh -c 'exit N'``), as a real process would end by itself;
- like PID 1 of a container, the init dies only of SIGKILL (it installs no handlers), and
  frozen (paused) processes die only once thawed;
- the events a real shim publishes to the sink are appended to ``FakeShim.events``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.ttrpc.errors import ConnectionClosedError
from domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
    UnknownError,
)
from domain.values import Bundle, Exit, Status
from shim.ports import (
    ProcessState,
    RuncOptions,
    ShimClient,
    ShimEvent,
    Stdio,
    TaskCheckpointedEvent,
    TaskCreateEvent,
    TaskDeleteEvent,
    TaskExecAddedEvent,
    TaskExecStartedEvent,
    TaskPausedEvent,
    TaskResumedEvent,
    TaskStartEvent,
    TaskStats,
)
from tests.shim.fake_shim import SIGKILL, UNLIMITED_MEMORY, FakeProcess, FakeShim, Program


class FakeClient:
    """Implements shim.ports.ShimClient on a FakeShim, as ShimTaskClient does on a real one."""

    def __init__(self, shim: FakeShim, on_close: Callable[[], None] | None = None) -> None:
        self.shim = shim
        self._closed_by_us = False
        self._closing = asyncio.Event()  # our aclose: calls in flight fail, as on a real one
        if on_close is not None and shim.alive:
            shim._on_close.append(on_close)
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        return self._closed_by_us or not self.shim.alive

    # --- lookups, with the real shim's errors ----------------------------------------------

    def _check_open(self) -> None:
        if self._closed_by_us:
            raise ConnectionClosedError("ttrpc: closed")
        if not self.shim.alive:
            raise ConnectionClosedError("ttrpc: closed (connection reset by peer)")

    def _task(self, task_id: str) -> FakeProcess:
        self._check_open()
        try:
            return self.shim.processes[task_id]
        except KeyError:
            raise NotFoundError("container not created") from None

    def _process(self, task_id: str, exec_id: str = "") -> FakeProcess:
        init = self._task(task_id)
        if not exec_id:
            return init
        try:
            return init.execs[exec_id]
        except KeyError:
            raise NotFoundError(f"process does not exist {exec_id}") from None

    def _publish(self, event: ShimEvent) -> None:
        self.shim.events.append(event)

    def _settle(self, task_id: str, process: FakeProcess) -> None:
        """A process whose program ends by itself ends now that it runs."""
        if self.shim.program is None or process.status is not Status.RUNNING:
            return
        status = self.shim.program(process.args)
        if status is not None:
            self.shim.exit(task_id, status, process.exec_id)

    # --- the port ---------------------------------------------------------------------------

    async def connect(self, task_id: str) -> int:
        self._check_open()
        return self.shim.pid

    async def create(self, task_id: str, bundle: str, stdio: Stdio, options: RuncOptions) -> int:
        self._check_open()
        if task_id in self.shim.processes:
            raise UnknownError(f"container with id exists: {task_id}")
        config = Path(bundle) / "config.json"
        try:
            spec = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise UnknownError(f"failed to create shim task: {config}: {exc}") from None
        process = FakeProcess(pid=self.shim.new_pid(), args=list(spec["process"]["args"]),
                              stdio=stdio)  # fmt: skip
        self.shim.processes[task_id] = process
        self.shim.ever_created = True
        self._publish(TaskCreateEvent(self.shim.namespace, task_id, process.pid))
        return process.pid

    async def exec(self, task_id: str, exec_id: str, process_json: bytes, stdio: Stdio) -> None:
        init = self._task(task_id)
        if exec_id in init.execs:
            raise AlreadyExistsError(f"id {exec_id}")
        if init.status in (Status.PAUSED, Status.STOPPED):
            raise UnknownError(f"cannot exec in a {init.status.value} state")
        try:
            args = list(json.loads(process_json)["args"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UnknownError(f"invalid process spec: {exc}") from None
        init.execs[exec_id] = FakeProcess(pid=0, exec_id=exec_id, args=args, stdio=stdio)
        self._publish(TaskExecAddedEvent(self.shim.namespace, task_id, exec_id))

    async def start(self, task_id: str, exec_id: str = "") -> int:
        process = self._process(task_id, exec_id)
        if process.status is not Status.CREATED:
            raise UnknownError(f"cannot start a {process.status.value} process")
        process.status = Status.RUNNING
        if exec_id:
            process.pid = self.shim.new_pid()
            self._publish(TaskExecStartedEvent(self.shim.namespace, task_id, exec_id, process.pid))
        else:
            self._publish(TaskStartEvent(self.shim.namespace, task_id, process.pid))
        if self.shim.during_start is not None and not exec_id:
            await self.shim.during_start()
        self._settle(task_id, process)
        return process.pid

    async def state(self, task_id: str, exec_id: str = "") -> ProcessState:
        p = self._process(task_id, exec_id)
        return ProcessState(pid=p.pid, status=p.status, exit_status=p.exit.status if p.exit else 0,
                            exited_at=p.exit.exited_at if p.exit else None)  # fmt: skip

    async def wait(self, task_id: str, exec_id: str = "") -> Exit:
        process = self._process(task_id, exec_id)
        if process.exit is not None:
            return process.exit
        # Blocks until the process exits, or fails as a real call does when the shim dies.
        gone = asyncio.Event()
        self.shim._on_close.append(gone.set)
        waiters = [asyncio.ensure_future(process.exited()), asyncio.ensure_future(gone.wait()),
                   asyncio.ensure_future(self._closing.wait())]  # fmt: skip
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            if gone.set in self.shim._on_close:
                self.shim._on_close.remove(gone.set)
        if self._closing.is_set():
            raise ConnectionClosedError("ttrpc: closed")
        if process.exit is None:
            raise ConnectionClosedError("ttrpc: closed (connection reset by peer)")
        return process.exit

    async def kill(self, task_id: str, signal: int, all: bool = False, exec_id: str = "") -> None:
        process = self._process(task_id, exec_id)
        if exec_id and process.pid == 0:
            raise FailedPreconditionError("process not created")
        if process.status is Status.STOPPED:
            raise NotFoundError("process already finished")
        if all and not exec_id:  # every process in the container's cgroup
            for other in process.execs.values():
                if other.status is Status.RUNNING:
                    self.shim.signal(task_id, other, signal)
        self.shim.signal(task_id, process, signal)

    async def delete(self, task_id: str, exec_id: str = "") -> Exit:
        process = self._process(task_id, exec_id)
        if process.status is Status.RUNNING:
            raise UnknownError("cannot delete a running process")
        if process.status is Status.PAUSED:
            raise UnknownError("cannot delete a paused process")
        if exec_id:
            del self.shim.processes[task_id].execs[exec_id]
            return process.exit or Exit(status=0, exited_at=datetime.now(UTC))
        if process.exit is None:  # runc delete of a created container kills its init
            process.finish(128 + SIGKILL)
        assert process.exit is not None
        del self.shim.processes[task_id]
        self._publish(TaskDeleteEvent(self.shim.namespace, task_id, "", process.pid,
                                      process.exit.status, process.exit.exited_at))  # fmt: skip
        return process.exit

    async def pids(self, task_id: str) -> list[tuple[int, str]]:
        init = self._task(task_id)
        if init.status is Status.STOPPED:
            return []
        execs = [(p.pid, p.exec_id) for p in init.execs.values() if p.status is Status.RUNNING]
        return [(init.pid, ""), *execs]

    async def pause(self, task_id: str) -> None:
        init = self._task(task_id)
        if init.status is Status.CREATED:
            raise UnknownError("cannot pause task in created state")
        if init.status is not Status.RUNNING:
            raise UnknownError(f"cannot pause a {init.status.value} container")
        init.status = Status.PAUSED
        for process in init.execs.values():
            if process.status is Status.RUNNING:
                process.status = Status.PAUSED
        self._publish(TaskPausedEvent(self.shim.namespace, task_id))

    async def resume(self, task_id: str) -> None:
        init = self._task(task_id)
        if init.status is Status.CREATED:
            raise UnknownError("cannot resume task in created state")
        if init.status is Status.RUNNING:
            raise UnknownError("cannot resume a running process")
        if init.status is not Status.PAUSED:
            raise UnknownError(f"cannot resume a {init.status.value} container")
        self._publish(TaskResumedEvent(self.shim.namespace, task_id))
        for process in [init, *init.execs.values()]:
            if process.status is Status.PAUSED:
                process.status = Status.RUNNING
                pending, process.pending_signal = process.pending_signal, 0
                if pending:
                    self.shim.signal(task_id, process, pending)

    async def close_io(self, task_id: str, exec_id: str = "") -> None:
        try:
            process = self._process(task_id, exec_id)
        except NotFoundError as exc:
            if not exec_id or task_id not in self.shim.processes:
                raise
            # The real shim's CloseIO returns this error without its gRPC code: Unknown.
            raise UnknownError(f"{exc}: not found") from None
        process.stdin_closed = True

    async def resize_pty(self, task_id: str, width: int, height: int, exec_id: str = "") -> None:
        self._process(task_id, exec_id)  # no terminal: nothing to resize, as the real shim

    async def update(self, task_id: str, resources: dict[str, Any]) -> None:
        init = self._task(task_id)
        if init.status is Status.STOPPED:
            raise UnknownError("cannot update a stopped container")
        for key, value in resources.items():
            if isinstance(value, dict):
                init.resources.setdefault(key, {}).update(value)
            else:
                init.resources[key] = value

    async def stats(self, task_id: str) -> TaskStats:
        init = self._task(task_id)
        live = [p for p in [init, *init.execs.values()] if p.status is not Status.STOPPED]
        if init.status is Status.STOPPED:
            live = []
        memory = init.resources.get("memory", {})
        return TaskStats(
            pids_current=len([p for p in live if p.pid]),
            pids_limit=int(init.resources.get("pids", {}).get("limit", 0)),
            cpu_usage_ns=1_000_000,
            cpu_user_ns=0,
            cpu_kernel_ns=0,
            memory_usage_bytes=512 * 1024 * max(len(live), 1),
            memory_limit_bytes=int(memory.get("limit", UNLIMITED_MEMORY)),
            memory_max_usage_bytes=2 * 1024 * 1024,
            oom_kills=0,
            cgroup_version=2,
        )

    async def checkpoint(
        self, task_id: str, image_path: str, *, exit: bool, work_path: str = ""
    ) -> None:
        init = self._task(task_id)
        if init.status is Status.STOPPED:
            raise UnknownError("cannot checkpoint a stopped container")
        if init.status is Status.CREATED:
            raise UnknownError("cannot checkpoint a created container")
        image = Path(image_path)
        image.mkdir(parents=True, exist_ok=True)
        (image / "inventory.img").write_bytes(b"fake criu image")
        init.checkpoints.append(image_path)
        self._publish(TaskCheckpointedEvent(self.shim.namespace, task_id, image_path))
        if exit:  # runc checkpoint stops the container once dumped
            self.shim.exit(task_id, 128 + SIGKILL)

    async def shutdown(self, task_id: str) -> None:
        self._check_open()
        if not self.shim.processes:  # a shim that still serves a container stays
            self.shim.alive = False

    async def aclose(self) -> None:
        self._closed_by_us = True
        self._closing.set()
        if self._on_close in self.shim._on_close:  # closed by us: no callback, as the real
            self.shim._on_close.remove(self._on_close)


class FakeShimBinary:
    """Starts fake shims, one per bundle, writing the address file a real one writes."""

    def __init__(self, program: Program | None = None) -> None:
        self.shims: dict[str, FakeShim] = {}
        self.cleaned: list[str] = []
        self._next_pid = 1000
        self._program = program

    async def start(self, bundle: Bundle, runtime: str, ttrpc_address: str) -> str:
        address = f"unix://fake/{bundle.id}"
        running = self.shims.get(bundle.path)
        if running is None or not running.alive:  # a live shim of the bundle is reused
            self._next_pid += 10
            self.shims[bundle.path] = FakeShim(
                pid=self._next_pid, namespace=bundle.namespace, program=self._program
            )
        (Path(bundle.path) / "address").write_text(address)
        return address

    async def delete(self, bundle: Bundle, runtime: str) -> Exit | None:
        """The shim's own cleanup: kills and removes what is left; None if nothing ever was."""
        self.cleaned.append(bundle.id)
        shim = self.shims.get(bundle.path)
        if shim is None or not shim.ever_created:
            return None
        shim.processes.clear()
        return Exit(status=128 + SIGKILL, exited_at=datetime.now(UTC))

    async def connect(
        self, bundle: Bundle, address: str, on_close: Callable[[], None] | None = None
    ) -> ShimClient:
        shim = self.shims.get(bundle.path)
        if shim is None or not shim.alive:
            raise UnavailableError(f"connection refused: {address}")
        return FakeClient(shim, on_close)

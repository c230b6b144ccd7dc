"""Fakes of the shim ports, for unit tests of TaskManager's own logic (one layer only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from domain.errors import NotFoundError, UnavailableError
from domain.values import Bundle, Exit, Status
from shim.ports import ProcessState, RuncOptions, ShimClient, Stdio


@dataclass
class FakeProcess:
    pid: int
    status: Status = Status.CREATED
    exit: Exit | None = None


@dataclass
class FakeShim:
    """One fake shim daemon: its tasks, and whether it is still alive."""

    pid: int
    alive: bool = True
    processes: dict[str, FakeProcess] = field(default_factory=dict)
    # Runs inside Start, before it returns: what another process might do meanwhile.
    during_start: Callable[[], Awaitable[None]] | None = None

    def exit(self, task_id: str, status: int) -> Exit:
        process = self.processes[task_id]
        process.status = Status.STOPPED
        process.exit = Exit(status=status, exited_at=datetime.now(UTC))
        return process.exit


class FakeClient:
    def __init__(self, shim: FakeShim) -> None:
        self.shim = shim

    @property
    def closed(self) -> bool:
        return not self.shim.alive

    def _process(self, task_id: str) -> FakeProcess:
        if not self.shim.alive:
            raise UnavailableError("ttrpc: closed")
        try:
            return self.shim.processes[task_id]
        except KeyError:
            raise NotFoundError("container not created") from None

    async def connect(self, task_id: str) -> int:
        if not self.shim.alive:
            raise UnavailableError("connection refused")
        return self.shim.pid

    async def create(self, task_id: str, bundle: str, stdio: Stdio, options: RuncOptions) -> int:
        self.shim.processes[task_id] = FakeProcess(pid=self.shim.pid + 1)
        return self.shim.pid + 1

    async def start(self, task_id: str, exec_id: str = "") -> int:
        process = self._process(task_id)
        process.status = Status.RUNNING
        if self.shim.during_start is not None:
            await self.shim.during_start()
        return process.pid

    async def state(self, task_id: str) -> ProcessState:
        p = self._process(task_id)
        return ProcessState(pid=p.pid, status=p.status, exit_status=p.exit.status if p.exit else 0,
                            exited_at=p.exit.exited_at if p.exit else None)  # fmt: skip

    async def wait(self, task_id: str, exec_id: str = "") -> Exit:
        process = self._process(task_id)
        assert process.exit is not None, "the fake only waits for processes that have exited"
        return process.exit

    async def kill(self, task_id: str, signal: int, all: bool = False) -> None:
        process = self._process(task_id)
        if process.status is Status.STOPPED:
            raise NotFoundError("process already finished")
        self.shim.exit(task_id, 128 + signal)

    async def delete(self, task_id: str, exec_id: str = "") -> Exit:
        process = self._process(task_id)
        del self.shim.processes[task_id]
        return process.exit or Exit(status=0, exited_at=datetime.now(UTC))

    async def pids(self, task_id: str) -> list[tuple[int, str]]:
        return [(self._process(task_id).pid, "")]

    async def pause(self, task_id: str) -> None:
        self._process(task_id).status = Status.PAUSED

    async def resume(self, task_id: str) -> None:
        self._process(task_id).status = Status.RUNNING

    async def shutdown(self, task_id: str) -> None:
        if not self.shim.processes:
            self.shim.alive = False

    async def aclose(self) -> None:
        return None


class FakeShimBinary:
    """Starts fake shims, one per bundle, writing the address file a real one writes."""

    def __init__(self) -> None:
        self.shims: dict[str, FakeShim] = {}
        self.cleaned: list[str] = []
        self._next_pid = 1000

    async def start(self, bundle: Bundle, runtime: str, ttrpc_address: str) -> str:
        self._next_pid += 10
        self.shims[bundle.path] = FakeShim(pid=self._next_pid)
        (Path(bundle.path) / "address").write_text(f"unix://fake/{bundle.id}")
        return f"unix://fake/{bundle.id}"

    async def delete(self, bundle: Bundle, runtime: str) -> Exit | None:
        self.cleaned.append(bundle.id)
        return Exit(status=137, exited_at=datetime.now(UTC))

    async def connect(
        self, bundle: Bundle, address: str, on_close: Callable[[], None] | None = None
    ) -> ShimClient:
        shim = self.shims.get(bundle.path)
        if shim is None or not shim.alive:
            raise UnavailableError(f"connection refused: {address}")
        return FakeClient(shim)

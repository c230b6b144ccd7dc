"""One task, by ID: containerd's Task interface in Python, over TaskManager.

TaskManager takes an ID on every call, as the CLI does; code that works with one task
(a supervisor, a test, an embedding program) holds a TaskHandle instead and calls the
operations the shim's Task service offers, each recorded in history like the CLI's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from domain.values import Exit, State
from shim.lifecycle.exec_handle import ExecHandle
from shim.ports import Stdio, TaskStats


class TaskOperations(Protocol):
    """What a handle needs of TaskManager: its operations, each taking the task's ID.

    Declared here so that this module does not import the manager that hands it out.
    """

    namespace: str

    async def get(self, task_id: str, *, reconcile: bool = True) -> State: ...
    async def start(self, task_id: str) -> State: ...
    async def kill(self, task_id: str, signal: int, *, all: bool = False) -> None: ...
    async def wait(self, task_id: str) -> Exit: ...
    async def pids(self, task_id: str) -> list[tuple[int, str]]: ...
    async def pause(self, task_id: str) -> State: ...
    async def resume(self, task_id: str) -> State: ...
    async def add_exec(
        self,
        task_id: str,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
        exec_id: str | None = None,
    ) -> ExecHandle: ...
    async def close_io(self, task_id: str) -> None: ...
    async def resize_pty(self, task_id: str, width: int, height: int) -> None: ...
    async def update(self, task_id: str, resources: dict[str, Any]) -> None: ...
    async def stats(self, task_id: str) -> TaskStats: ...
    async def checkpoint(self, task_id: str, image_path: Path, *, exit: bool = False) -> None: ...
    async def delete(self, task_id: str, *, force: bool = False) -> State | None: ...


class TaskHandle:
    """The task ``id`` of ``manager``'s namespace (whichever incarnation is live)."""

    def __init__(self, manager: TaskOperations, task_id: str) -> None:
        self.manager = manager
        self.id = task_id

    def __repr__(self) -> str:
        return f"<TaskHandle {self.manager.namespace}/{self.id}>"

    async def state(self) -> State:
        return await self.manager.get(self.id)

    async def start(self) -> State:
        return await self.manager.start(self.id)

    async def kill(self, signal: int, *, all: bool = False) -> None:
        await self.manager.kill(self.id, signal, all=all)

    async def wait(self) -> Exit:
        return await self.manager.wait(self.id)

    async def pids(self) -> list[tuple[int, str]]:
        return await self.manager.pids(self.id)

    async def pause(self) -> State:
        return await self.manager.pause(self.id)

    async def resume(self) -> State:
        return await self.manager.resume(self.id)

    async def exec(
        self,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
        exec_id: str | None = None,
    ) -> ExecHandle:
        """Register a process (ExecAdded); the handle starts, waits for and deletes it."""
        return await self.manager.add_exec(
            self.id, args, env=env, cwd=cwd, stdio=stdio, exec_id=exec_id
        )

    async def close_io(self) -> None:
        await self.manager.close_io(self.id)

    async def resize_pty(self, width: int, height: int) -> None:
        await self.manager.resize_pty(self.id, width, height)

    async def update(self, resources: dict[str, Any]) -> None:
        await self.manager.update(self.id, resources)

    async def stats(self) -> TaskStats:
        return await self.manager.stats(self.id)

    async def checkpoint(self, image_path: Path, *, exit: bool = False) -> None:
        await self.manager.checkpoint(self.id, image_path, exit=exit)

    async def delete(self, *, force: bool = False) -> State | None:
        """Delete the task; its shim is shut down (Shutdown) once it holds nothing."""
        return await self.manager.delete(self.id, force=force)

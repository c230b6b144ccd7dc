"""The fake shim's process model: what runs in it, and how each process ends.

Split from tests/shim/fakes.py (the fakes of the ports) so that each file holds one
concept: here the processes a FakeShim holds and the events it would publish; there the
clients and the binary that speak for it.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain.values import Exit, Status
from shim.ports import (
    ShimEvent,
    Stdio,
    TaskExitEvent,
)

SIGKILL = 9
UNLIMITED_MEMORY = 9223372036854771712  # what cgroups report for "no limit"
# How a command line ends by itself: its exit status, or None if it runs until signalled.
Program = Callable[[Sequence[str]], int | None]


def shell_exit(args: Sequence[str]) -> int | None:
    """``true`` -> 0, ``false`` -> 1, ``sh -c 'exit N'`` -> N; anything else keeps running."""
    if list(args) == ["true"]:
        return 0
    if list(args) == ["false"]:
        return 1
    if len(args) == 3 and args[0] == "sh" and args[1] == "-c":
        words = shlex.split(args[2])
        if len(words) == 2 and words[0] == "exit" and words[1].isdigit():
            return int(words[1]) % 256
    return None


@dataclass
class FakeProcess:
    """A task's init (``exec_id`` "") or one of its execs (pid 0 until started)."""

    pid: int
    status: Status = Status.CREATED
    exit: Exit | None = None
    exec_id: str = ""
    args: list[str] = field(default_factory=list)
    stdio: Stdio = field(default_factory=Stdio)
    stdin_closed: bool = False
    pending_signal: int = 0  # a SIGKILL sent while frozen: delivered on resume
    signals: list[int] = field(default_factory=list)  # every signal delivered, in order
    # The init's own: its execs, its cgroup limits (Update) and its checkpoints.
    execs: dict[str, FakeProcess] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)
    _exited: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def finish(self, status: int) -> Exit:
        self.status = Status.STOPPED
        self.exit = Exit(status=status, exited_at=datetime.now(UTC))
        self._exited.set()
        return self.exit

    async def exited(self) -> Exit:
        await self._exited.wait()
        assert self.exit is not None
        return self.exit


@dataclass
class FakeShim:
    """One fake shim daemon: its tasks, and whether it is still alive.

    Setting ``alive = False`` is the shim dying: its connections close (their ``on_close``
    callbacks run, as a real connection's do) and every call on them is refused.
    """

    pid: int
    alive: bool = True
    processes: dict[str, FakeProcess] = field(default_factory=dict)
    # Runs inside Start, before it returns: what another process might do meanwhile.
    during_start: Callable[[], Awaitable[None]] | None = None
    namespace: str = "default"
    program: Program | None = None
    events: list[ShimEvent] = field(default_factory=list)
    ever_created: bool = False
    _next_pid: int = 0
    _on_close: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def __setattr__(self, name: str, value: object) -> None:
        dying = name == "alive" and not value and getattr(self, "alive", False)
        super().__setattr__(name, value)
        if dying:
            callbacks, self._on_close = self._on_close, []
            for callback in callbacks:
                callback()

    def new_pid(self) -> int:
        self._next_pid += 1
        return self.pid + self._next_pid

    def exit(self, task_id: str, status: int, exec_id: str = "") -> Exit:
        """The process ends by itself with ``status`` (the shim reaps it and publishes)."""
        init = self.processes[task_id]
        process = init.execs[exec_id] if exec_id else init
        exit_ = process.finish(status)
        self.events.append(
            TaskExitEvent(self.namespace, task_id, exec_id or task_id, process.pid, status,
                          exit_.exited_at)
        )  # fmt: skip
        if not exec_id:
            # PID 1 of the container's pid namespace is gone: the kernel kills the rest.
            for other in init.execs.values():
                if other.status is Status.RUNNING:
                    self.exit(task_id, 128 + SIGKILL, other.exec_id)
        return exit_

    def signal(self, task_id: str, process: FakeProcess, signal: int) -> None:
        if signal == 0:
            return  # a probe
        process.signals.append(signal)
        if process.status is Status.PAUSED:
            process.pending_signal = signal if signal == SIGKILL else process.pending_signal
            return
        if process.exec_id or signal == SIGKILL:  # PID 1 ignores what it has no handler for
            self.exit(task_id, 128 + signal, process.exec_id)

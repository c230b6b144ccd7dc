"""A task in the foreground: our stdio connected to its, our signals forwarded to it.

Shared by `run` (the task's init) and `exec` (an extra process), and by `create` and
`run -d` for what runc does right after Create (the pid file).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal as signals
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.settings import Settings
from domain.errors import InvalidArgumentError, NotFoundError, ShimledgerError
from domain.state_dir import StateDir

if TYPE_CHECKING:
    import asyncio

    from adapters.fifo_io import ForegroundIO
    from cli.terminal import LocalTerminal, SizeFollower
    from shim.lifecycle.console import ConsoleSocket
    from shim.lifecycle.task_manager import TaskManager

logger = logging.getLogger(__name__)


def write_pid_file(path: Path | None, pid: int) -> None:
    """The pid, written whole or not at all, as runc's --pid-file is (a reader polls for it).

    Through a private temporary file (shim/private_files.py: no planted link in a shared
    directory is followed), then 0644 as runc leaves it: a pid is no secret.
    """
    if path is None:
        return
    from shim.private_files import write_private

    try:
        write_private(path, str(pid), mode=0o644)
    except OSError as error:  # named as asked, not as the temporary file beside it
        raise OSError(error.errno, error.strerror, str(path)) from None


def io_dir(settings: Settings, task_id: str) -> Path:
    # Named with our pid: reconciliation removes those whose command died.
    return StateDir(settings.state).io_dir(settings.namespace, task_id, os.getpid())


def foreground_io(
    settings: Settings, task_id: str, interactive: bool, terminal: bool = False
) -> ForegroundIO:
    """The FIFOs to the shim; with a terminal, stdin is always attached (as `ctr run -t`)."""
    from adapters.fifo_io import ForegroundIO

    if interactive and sys.stdin is None:
        raise InvalidArgumentError("--interactive needs a stdin, and this command has none")
    attach = interactive or (terminal and sys.stdin is not None)
    stdin = sys.stdin.fileno() if attach else None
    return ForegroundIO(io_dir(settings, task_id), sys.stdout.buffer, sys.stderr.buffer, stdin,
                        terminal=terminal)  # fmt: skip


def local_terminal(terminal: bool) -> contextlib.AbstractContextManager[LocalTerminal | None]:
    """Our terminal, raw while the task's pty is attached (cli/terminal.py); else nothing."""
    if not terminal:
        return contextlib.nullcontext()
    from cli.terminal import LocalTerminal

    return LocalTerminal(sys.stdin.fileno() if sys.stdin else -1, sys.stdout.fileno())


async def follow_size(
    local: LocalTerminal | None, resize: Callable[[int, int], Awaitable[None]]
) -> SizeFollower | None:
    """The task's pty kept at our terminal's size, from now on; None without a pty."""
    if local is None:
        return None
    from cli.terminal import SizeFollower

    follower = SizeFollower(local, resize)
    await follower.follow()
    return follower


async def close_stdin_at_eof(io: ForegroundIO, close: Callable[[], Awaitable[None]]) -> None:
    """Once our stdin is all copied, close the process's (the shim keeps it open till then)."""
    eof = io.stdin_eof
    if eof is None:
        return
    await eof
    try:
        await close()
    except ShimledgerError as exc:  # it exited first: nobody to tell
        logger.debug("stdin not closed: %s", exc)


async def after_create(
    tasks: TaskManager,
    task_id: str,
    then: Callable[[], None],
    start: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """The steps after Create (pid file, Start); if one fails, the task goes, as with runc."""
    try:
        then()
        if start is not None:
            await start()
    except (ShimledgerError, OSError):
        await tasks.delete(task_id, force=True)
        raise


async def run_in_foreground(
    tasks: TaskManager, settings: Settings, task_id: str, bundle: Path, runtime: str, *,
    interactive: bool, remove: bool, pid_file: Path | None, terminal: bool = False,
) -> int:  # fmt: skip
    """Our stdio connected to the task's, our signals forwarded to it; its exit status.

    With ``terminal``, the task gets a pty: our terminal goes raw and the pty follows its
    size, and our stdin stays attached until the task exits.
    """
    import asyncio

    async def forward(sig: int) -> None:
        try:
            await tasks.kill(task_id, sig)
        except ShimledgerError as exc:  # it exited meanwhile: nothing to forward to
            logger.debug("not forwarding signal %s: %s", sig, exc)

    io = foreground_io(settings, task_id, interactive, terminal)
    closer: asyncio.Task[None] | None = None
    follower: SizeFollower | None = None
    forwarding: set[asyncio.Future[None]] = set()  # strong references until each is done

    def on_signal(sig: int) -> None:
        future = asyncio.ensure_future(forward(sig))
        forwarding.add(future)
        future.add_done_callback(forwarding.discard)

    try:
        with local_terminal(terminal) as local:
            created = await tasks.create(task_id, bundle, runtime=runtime, stdio=io.stdio)
            io.shim_attached()
            loop = asyncio.get_running_loop()
            for sig in (signals.SIGINT, signals.SIGTERM, signals.SIGHUP):
                loop.add_signal_handler(sig, on_signal, sig)
            # Sized before Start (the pty is the shim's since Create): the process never
            # sees another size than ours.
            follower = await follow_size(local, lambda w, h: tasks.resize_pty(task_id, w, h))
            await after_create(tasks, task_id, lambda: write_pid_file(pid_file, created.pid),
                               lambda: tasks.start(task_id))  # fmt: skip
            if interactive and not terminal:
                closer = asyncio.ensure_future(
                    close_stdin_at_eof(io, lambda: tasks.close_io(task_id)))  # fmt: skip
            exit_ = await tasks.wait(task_id)
            await io.drain(timeout=5.0)
    finally:
        if follower is not None:
            follower.stop()
        if closer is not None:
            closer.cancel()
        io.close()
    if remove:
        try:
            await tasks.delete(task_id)
        except NotFoundError:  # another command deleted it meanwhile (delete -f): gone, as asked
            logger.debug("task %s was deleted already", task_id)
    return exit_.status


async def exec_in_foreground(
    tasks: TaskManager, settings: Settings, task_id: str, command: list[str], *,
    env: list[str] | None, cwd: str | None, interactive: bool, terminal: bool = False,
    user: tuple[int | None, int | None] = (None, None), additional_gids: Sequence[int] = (),
    base: Mapping[str, Any] | None = None, pid_file: Path | None = None,
) -> int:  # fmt: skip
    """An extra process in a running task, our stdio connected to its; its exit status.

    The exec is deleted however it ends (exit, error, Ctrl-C): unlike a task, it lives only
    as long as the command that runs it. ``terminal``: as run_in_foreground's; ``user``,
    ``additional_gids`` and ``base``: as TaskManager.add_exec's. A pid file that cannot be
    written kills the process (it was never the caller's to see), as a failed Start would.
    """
    import asyncio

    io = foreground_io(settings, task_id, interactive, terminal)
    closer: asyncio.Task[None] | None = None
    follower: SizeFollower | None = None
    try:
        with local_terminal(terminal) as local:
            process = await tasks.add_exec(
                task_id, command, env=env, cwd=cwd, stdio=io.stdio, user=user,
                additional_gids=additional_gids, base=base,
            )  # fmt: skip
            pid = await process.start()  # on failure it removes the exec itself
            try:
                io.shim_attached()  # the shim opened its ends of the FIFOs in Start
                try:
                    write_pid_file(pid_file, pid)
                except OSError:
                    await process.kill(signals.SIGKILL)
                    await process.wait()
                    raise
                follower = await follow_size(local, process.resize_pty)  # its pty: since Start
                if not terminal:
                    closer = asyncio.ensure_future(close_stdin_at_eof(io, process.close_io))
                exit_ = await process.wait()
                await io.drain(timeout=5.0)
            finally:
                await process.delete()
    finally:
        if follower is not None:
            follower.stop()
        if closer is not None:
            closer.cancel()
        io.close()
    return exit_.status


async def exec_detached(
    tasks: TaskManager, settings: Settings, task_id: str, command: list[str], *,
    env: list[str] | None, cwd: str | None, user: tuple[int | None, int | None] = (None, None),
    additional_gids: Sequence[int] = (), base: Mapping[str, Any] | None = None,
    pid_file: Path | None = None, console: ConsoleSocket | None = None,
) -> None:  # fmt: skip
    """runc's ``exec -d``: the process is started and left running in its task.

    Our stdio cannot follow it (the shim, not we, starts it), so its output goes into
    the task's log, beside the init's (``logs``), or nowhere if the task has none; with
    ``console`` (``-t --console-socket``) its pty goes to that socket, and output to the log
    too. Its exit is recorded when heard: by serve, or by the next command that reconciles
    the task (the shim keeps the exited exec, and its status, until the task is deleted).
    """
    import secrets

    from shim.lifecycle.bundle import Bundles
    from shim.ports import Stdio

    try:
        log = str(await tasks.log_path(task_id))
        stdio = Stdio(stdout=f"file://{log}", stderr=f"file://{log}")
    except NotFoundError:
        log, stdio = "", Stdio()  # no log (a foreground task's), or no task: add_exec says
    exec_id = f"exec-{secrets.token_hex(4)}"
    bundle = Bundles(StateDir(settings.state)).working(settings.namespace, task_id)
    process = await tasks.add_exec(
        task_id, command, env=env, cwd=cwd, user=user, additional_gids=additional_gids,
        base=base, exec_id=exec_id, stdio=console.stdio(bundle, exec_id) if console else stdio,
    )  # fmt: skip
    if console is not None:
        try:
            console.prepare(bundle, exec_id, log)  # before Start: the shim opens the console
        except BaseException:
            await process.delete()
            raise
    pid = await process.start()  # on failure it removes the exec itself
    try:
        if console is not None:
            console.check(bundle, exec_id)
        write_pid_file(pid_file, pid)
    except (OSError, ShimledgerError):
        await process.kill(signals.SIGKILL)
        await process.wait()
        await process.delete()
        raise

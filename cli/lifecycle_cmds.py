"""The runc-style lifecycle: create, start, run, kill, exec, pause, resume, delete.

Each command is a complete operation that runs without a daemon: it serves the event sink
while it runs, talks to shims, appends to the history, and exits. Names, arguments,
defaults and exit codes follow runc's where runc has the same command. What runs in the
foreground (`run`, `exec`) is orchestrated in ``cli.foreground``.
"""

from __future__ import annotations

import signal as signals
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.args import (
    BundleOption,
    ConsoleSocketOption,
    InteractiveFlag,
    PidFileOption,
    RuntimeOption,
    TaskArg,
    TaskIdsArg,
    TtyFlag,
)
from cli.common import expected_errors, fail, with_tasks
from cli.foreground import (
    after_create,
    exec_detached,
    exec_in_foreground,
    run_in_foreground,
    write_pid_file,
)
from cli.settings import Settings
from domain.errors import (
    InvalidArgumentError,
    NotFoundError,
    OwnedElsewhereError,
    ShimledgerError,
)
from shim import DEFAULT_RUNTIME

if TYPE_CHECKING:
    from cli.output import DeleteOutput
    from shim.lifecycle.console import ConsoleSocket
    from shim.lifecycle.task_manager import TaskManager


EXEC_FAILED = 255  # runc exec's status when the process could not be run


def parse_signal(text: str) -> int:
    """A signal by number, name or SIG-name, as runc's kill accepts it."""
    if text.isdigit():
        number = int(text)
        # Real-time signals too, as runc sends them; and 0, kill(2)'s "is it there?" probe.
        if number == 0 or number in signals.valid_signals():
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signals.Signals.__members__:
            return signals.Signals[name].value
    raise InvalidArgumentError(f"unknown signal {text!r}")


def parse_user(text: str) -> tuple[int, int | None]:
    """runc exec's --user: ``UID`` or ``UID:GID``, numbers (runc resolves no names either)."""
    uid, colon, gid = text.partition(":")
    if not uid.isdigit() or (colon and not gid.isdigit()):
        raise InvalidArgumentError(f"--user {text!r} is not UID or UID:GID (numbers)")
    return int(uid), int(gid) if colon else None


def read_process(path: Path) -> dict[str, Any]:
    """runc exec's --process FILE: an OCI Process object, as JSON."""
    from shim.lifecycle.bundle import read_json_object

    try:
        return read_json_object(path)
    except FileNotFoundError:
        raise NotFoundError(f"--process {path} does not exist") from None


def console_socket(path: Path | None, bundle: Path | None = None) -> ConsoleSocket | None:
    """--console-socket, for a process whose config asks for a terminal (as runc's)."""
    if path is None:
        return None
    from adapters.console_relay import binary_uri
    from shim.lifecycle.bundle import wants_terminal
    from shim.lifecycle.console import ConsoleSocket

    if bundle is not None and not wants_terminal(bundle):
        raise fail(f"--console-socket: {bundle.resolve() / 'config.json'} sets no "
                   "process.terminal, so there is no pty to send (as runc says)")  # fmt: skip
    return ConsoleSocket(path, relay=binary_uri())


def create(ctx: typer.Context, task_id: TaskArg, bundle: BundleOption = Path("."),
           runtime: RuntimeOption = DEFAULT_RUNTIME, pid_file: PidFileOption = None,
           console_path: ConsoleSocketOption = None) -> None:  # fmt: skip
    """Create a task from a bundle (its process waits for `start`)."""
    console = console_socket(console_path, bundle)

    async def work(tasks: TaskManager) -> None:
        created = await tasks.create(task_id, bundle, runtime=runtime, console=console)
        await after_create(tasks, task_id, lambda: write_pid_file(pid_file, created.pid))

    with_tasks(ctx.obj, work)


def start(ctx: typer.Context, task_id: TaskArg) -> None:
    """Start a created task."""
    with_tasks(ctx.obj, lambda tasks: tasks.start(task_id))


def run(
    ctx: typer.Context,
    task_id: TaskArg,
    bundle: BundleOption = Path("."),
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Do not wait for it.")] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the stopped task (runc's run deletes it).")
    ] = False,
    remove: Annotated[
        bool, typer.Option("--rm", help="Delete the task when it exits (the default).")
    ] = False,
    interactive: InteractiveFlag = False,
    tty: TtyFlag = False,
    runtime: RuntimeOption = DEFAULT_RUNTIME,
    pid_file: PidFileOption = None,
    console_path: ConsoleSocketOption = None,
) -> None:
    """Create and start a task; in the foreground, exit with its exit status.

    In the foreground a config with process.terminal=true gets a pty, as with runc's
    `run`; --tty gives one whatever the config says. As runc's `run`, the task is deleted
    once it has exited (its history keeps every step), unless --keep.
    """
    settings: Settings = ctx.obj
    foreground_only = [name for name, given in (("--rm", remove), ("--keep", keep),
                       ("--interactive", interactive), ("--tty", tty)) if given]  # fmt: skip
    if detach and foreground_only:
        raise fail(f"{foreground_only[0]} needs the foreground: it cannot go with --detach")
    if keep and remove:
        raise fail("--keep and --rm say opposite things: give one")
    if console_path is not None and not detach:
        raise fail("--console-socket needs --detach: in the foreground the pty is ours")
    console = console_socket(console_path, bundle)

    async def work(tasks: TaskManager) -> int:
        if detach:
            created = await tasks.create(task_id, bundle, runtime=runtime, console=console)
            await after_create(tasks, task_id, lambda: write_pid_file(pid_file, created.pid),
                               lambda: tasks.start(task_id))  # fmt: skip
            return 0
        from shim.lifecycle.bundle import wants_terminal

        terminal = tty or wants_terminal(bundle)
        return await run_in_foreground(tasks, settings, task_id, bundle, runtime,
                                       interactive=interactive, remove=not keep,
                                       pid_file=pid_file, terminal=terminal)  # fmt: skip

    raise typer.Exit(code=with_tasks(settings, work))


def kill(
    ctx: typer.Context,
    task_id: TaskArg,
    signal: Annotated[str, typer.Argument(help="Name or number.")] = "SIGTERM",
    all_: Annotated[bool, typer.Option("--all", "-a", help="Signal every process.")] = False,
) -> None:
    """Send a signal to a task's init process (default SIGTERM)."""
    with expected_errors():  # an unknown signal is refused before any shim is asked
        number = parse_signal(signal)
    with_tasks(ctx.obj, lambda tasks: tasks.kill(task_id, number, all=all_))


def exec_(
    ctx: typer.Context,
    task_id: TaskArg,
    command: Annotated[
        list[str] | None, typer.Argument(metavar="CMD...", help="After --.", show_default=False)
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="K=V; repeatable.")] = None,
    cwd: Annotated[str | None, typer.Option(help="Working directory inside the task.")] = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", metavar="UID[:GID]", help="Run as this user.")
    ] = None,
    additional_gids: Annotated[
        list[int] | None,
        typer.Option("--additional-gids", "-g", metavar="GID", help="Another group; repeatable."),
    ] = None,
    process: Annotated[
        Path | None,
        typer.Option("--process", "-p", metavar="FILE", dir_okay=False,
                     help="An OCI process.json to run instead of the task's process."),
    ] = None,  # fmt: skip
    pid_file: Annotated[
        Path | None,
        typer.Option("--pid-file", metavar="FILE", dir_okay=False,
                     help="Write the process's pid to FILE."),
    ] = None,  # fmt: skip
    interactive: InteractiveFlag = False,
    tty: TtyFlag = False,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Start it and return; output to `logs`.")
    ] = False,
    console_path: ConsoleSocketOption = None,
    preserve_fds: Annotated[
        int, typer.Option("--preserve-fds", metavar="N", help="runc's; only 0 through a shim.")
    ] = 0,
) -> None:
    """Run a command in a created or running task; exit with its exit status (255 if it
    cannot run), or at once with -d.

    As with runc's exec, a failure before the process runs (no such task, a task that is
    not running, a missing binary, a store that refuses) exits 255, not 1: so a caller can
    tell "could not exec" from a process that ran and exited 1.
    """
    settings: Settings = ctx.obj
    command = command or []
    if command and command[0] == "--":
        command = command[1:]
    for entry in env or []:
        if "=" not in entry:
            raise fail(f"--env {entry!r} is not K=V")
    with expected_errors():
        ids = parse_user(user) if user is not None else (None, None)
        base = read_process(process) if process is not None else None
    if not command and base is None:
        raise fail("exec needs a command (CMD... after --) or --process FILE")
    if preserve_fds:
        raise fail("--preserve-fds: the shim starts the process, so our file descriptors "
                   "cannot reach it")  # fmt: skip
    if console_path is not None and not (detach and tty):
        raise fail("--console-socket goes with -d and -t: a detached process's pty")
    if detach and interactive:
        raise fail("exec -d cannot take -i: nothing stays to attach our stdin to")
    if detach and tty and console_path is None:
        raise fail("exec -d -t needs --console-socket, as runc's: nothing stays to attach "
                   "the pty to")  # fmt: skip
    console = console_socket(console_path)

    async def work(tasks: TaskManager) -> int:
        if detach:
            await exec_detached(tasks, settings, task_id, command, env=env, cwd=cwd,
                                user=ids, additional_gids=additional_gids or [], base=base,
                                pid_file=pid_file, console=console)  # fmt: skip
            return 0
        return await exec_in_foreground(
            tasks, settings, task_id, command, env=env, cwd=cwd, interactive=interactive,
            terminal=tty, user=ids, additional_gids=additional_gids or [], base=base,
            pid_file=pid_file,
        )  # fmt: skip

    try:
        status = with_tasks(settings, work)
    except typer.Exit as failed:  # said on stderr already, in one line
        raise typer.Exit(code=EXEC_FAILED if failed.exit_code == 1 else failed.exit_code) from None
    raise typer.Exit(code=status)


def pause(ctx: typer.Context, task_id: TaskArg) -> None:
    """Freeze every process of a running task."""
    with_tasks(ctx.obj, lambda tasks: tasks.pause(task_id))


def resume(ctx: typer.Context, task_id: TaskArg) -> None:
    """Thaw a paused task."""
    with_tasks(ctx.obj, lambda tasks: tasks.resume(task_id))


def delete(
    ctx: typer.Context,
    task_ids: TaskIdsArg,
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill it if running.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="What became of each ID.")] = False,
) -> None:
    """Delete stopped (or, with --force, running) tasks; go on past a failure, exit 1 at the end.

    As with runc, --force of an ID that does not exist is no failure (a cleanup script's
    "make sure it is gone"): nothing is said, nothing recorded, and it counts as done.
    """
    from cli.output import dump_list

    settings: Settings = ctx.obj

    async def work(tasks: TaskManager) -> list[DeleteOutput]:
        return [await _delete_one(tasks, settings, task_id, force) for task_id in task_ids]

    results = with_tasks(settings, work)
    if as_json:
        typer.echo(dump_list(results))
    if any(r.error is not None for r in results):
        raise typer.Exit(code=1)


async def _delete_one(
    tasks: TaskManager, settings: Settings, task_id: str, force: bool
) -> DeleteOutput:
    """What became of one ID; a failure is said on stderr and the others still go."""
    from cli.output import DeleteOutput

    result = DeleteOutput(id=task_id, namespace=settings.namespace, deleted=False)
    try:
        final = await tasks.delete(task_id, force=force)
    except ShimledgerError as exc:  # say so, and go on with the others
        if force and isinstance(exc, NotFoundError) and not isinstance(exc, OwnedElsewhereError):
            return result  # nothing to delete: runc's delete --force exits 0 here too
        typer.echo(f"shimledger: {exc}", err=True)
        result.error = str(exc)
    else:
        result.deleted = True
        if final is not None:
            result.incarnation = final.incarnation
            result.exit_status = final.exit_status
            result.exited_at = final.exited_at
    return result


def register(app: typer.Typer) -> None:
    """Mount the lifecycle commands, in runc's order (--help lists them so)."""
    app.command()(create)
    app.command()(start)
    app.command()(run)
    app.command()(kill)
    app.command("exec", context_settings={"allow_interspersed_args": False})(exec_)
    app.command()(pause)
    app.command()(resume)
    app.command()(delete)

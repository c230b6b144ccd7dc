"""The shimledger command line: runc-style lifecycle commands plus history.

Each command is a complete operation that runs without a daemon: it serves the event
sink while it runs, talks to shims, appends to the history, and exits. Names, arguments,
defaults and exit codes follow runc's where runc has the same command.
"""

from __future__ import annotations

import signal as signals
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli import (
    history_cmds,
    inspect_cmds,
    projections_cmds,
    reconcile_cmd,
    serve_cmd,
    spec_cmd,
    task_ops_cmds,
)
from cli.common import LogFormat, configure_logging, fail, run_app, run_command
from cli.completion import complete_task_id
from cli.foreground import (
    after_create,
    close_stdin_at_eof,
    foreground_io,
    run_in_foreground,
    write_pid_file,
)
from cli.settings import DEFAULT_ROOT, DEFAULT_STATE, Settings
from domain.errors import InvalidArgumentError, ShimledgerError
from shim import DEFAULT_RUNTIME

app = typer.Typer(
    name="shimledger",
    help="Run OCI containers through containerd v2 shims, and keep their history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    # Boxes and colour in --help only for a person at a terminal; plain text when piped.
    rich_markup_mode="rich" if sys.stdout.isatty() else None,
)


@app.callback()
def _global(
    ctx: typer.Context,
    root: Annotated[
        Path,
        typer.Option(envvar="SHIMLEDGER_ROOT", readable=False, help="Where history is kept."),
    ] = DEFAULT_ROOT,
    state: Annotated[
        Path,
        typer.Option(
            envvar="SHIMLEDGER_STATE",
            readable=False,
            help="Where bundles, sockets and runc state live.",
        ),
    ] = DEFAULT_STATE,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", envvar="SHIMLEDGER_NAMESPACE")
    ] = "default",
    store: Annotated[
        str | None,
        typer.Option(
            envvar="SHIMLEDGER_STORE",
            help="Event store URL: sqlite:///PATH or postgresql://... (default: <root>/events.db).",
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Log debug output (shim logs included).")
    ] = False,
    log: Annotated[
        Path | None,
        typer.Option(
            "--log",
            metavar="FILE",
            dir_okay=False,
            help="Write log records to FILE (default: stderr).",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="text (logrus style) or json.")
    ] = LogFormat.text,
) -> None:
    configure_logging(debug=debug, log_file=log, log_format=log_format)
    ctx.obj = Settings(
        root=root.absolute(), state=state.absolute(), namespace=namespace, store=store
    )


def parse_signal(text: str) -> int:
    """A signal by number, name or SIG-name, as runc's kill accepts it."""
    if text.isdigit():
        number = int(text)
        if number in signals.valid_signals():  # real-time signals too, as runc sends them
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signals.Signals.__members__:
            return signals.Signals[name].value
    raise InvalidArgumentError(f"unknown signal {text!r}")


TaskArg = Annotated[str, typer.Argument(metavar="ID", autocompletion=complete_task_id)]
BundleOption = Annotated[
    Path, typer.Option("--bundle", "-b", help="The OCI bundle (default: current directory).")
]
RuntimeOption = Annotated[
    str, typer.Option(help="A v2 shim: a runtime name or the shim binary's absolute path.")
]
PidFileOption = Annotated[
    Path | None,
    typer.Option(
        "--pid-file", metavar="FILE", dir_okay=False, help="Write the task's init pid to FILE."
    ),
]
InteractiveFlag = Annotated[
    bool, typer.Option("--interactive", "-i", help="Attach stdin; EOF closes the process's.")
]


@app.command()
def create(ctx: typer.Context, task_id: TaskArg, bundle: BundleOption = Path("."),
           runtime: RuntimeOption = DEFAULT_RUNTIME,
           pid_file: PidFileOption = None) -> None:  # fmt: skip
    """Create a task from a bundle (its process waits for `start`)."""

    async def work() -> None:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            created = await tasks.create(task_id, bundle, runtime=runtime)
            await after_create(tasks, task_id, lambda: write_pid_file(pid_file, created.pid))

    run_command(work)


@app.command()
def start(ctx: typer.Context, task_id: TaskArg) -> None:
    """Start a created task."""

    async def work() -> None:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            await tasks.start(task_id)

    run_command(work)


@app.command()
def run(
    ctx: typer.Context,
    task_id: TaskArg,
    bundle: BundleOption = Path("."),
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Do not wait for it.")] = False,
    remove: Annotated[bool, typer.Option("--rm", help="Delete the task when it exits.")] = False,
    interactive: InteractiveFlag = False,
    runtime: RuntimeOption = DEFAULT_RUNTIME,
    pid_file: PidFileOption = None,
) -> None:
    """Create and start a task; in the foreground, exit with its exit status."""
    settings: Settings = ctx.obj
    if detach and (remove or interactive):
        raise fail(f"{'--rm' if remove else '--interactive'} needs the foreground: "
                   "it cannot go with --detach")  # fmt: skip

    async def work() -> int:
        from cli.bootstrap import bootstrap

        async with bootstrap(settings) as tasks:
            if detach:
                created = await tasks.create(task_id, bundle, runtime=runtime)
                await after_create(tasks, task_id, lambda: write_pid_file(pid_file, created.pid),
                                   lambda: tasks.start(task_id))  # fmt: skip
                return 0
            return await run_in_foreground(tasks, settings, task_id, bundle, runtime,
                                           interactive=interactive, remove=remove,
                                           pid_file=pid_file)  # fmt: skip

    raise typer.Exit(code=run_command(work))


@app.command()
def kill(
    ctx: typer.Context,
    task_id: TaskArg,
    signal: Annotated[str, typer.Argument(help="Name or number.")] = "SIGTERM",
    all_: Annotated[bool, typer.Option("--all", "-a", help="Signal every process.")] = False,
) -> None:
    """Send a signal to a task's init process (default SIGTERM)."""

    async def work() -> None:
        number = parse_signal(signal)
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            await tasks.kill(task_id, number, all=all_)

    run_command(work)


@app.command(context_settings={"allow_interspersed_args": False})
def exec(
    ctx: typer.Context,
    task_id: TaskArg,
    command: Annotated[list[str], typer.Argument(metavar="CMD...", help="After --.")],
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="K=V; repeatable.")] = None,
    cwd: Annotated[str | None, typer.Option(help="Working directory inside the task.")] = None,
    interactive: InteractiveFlag = False,
) -> None:
    """Run a command in a running task; exit with its exit status."""
    settings: Settings = ctx.obj
    if command and command[0] == "--":
        command = command[1:]
    for entry in env or []:
        if "=" not in entry:
            raise fail(f"--env {entry!r} is not K=V")

    async def work() -> int:
        import asyncio

        from cli.bootstrap import bootstrap

        async with bootstrap(settings) as tasks:
            io = foreground_io(settings, task_id, interactive)
            closer: asyncio.Task[None] | None = None
            try:
                process = await tasks.add_exec(task_id, command, env=env, cwd=cwd,
                                               stdio=io.stdio)  # fmt: skip
                await process.start()  # on failure it removes the exec itself
                try:
                    io.shim_attached()  # the shim opened its ends of the FIFOs in Start
                    closer = asyncio.ensure_future(close_stdin_at_eof(io, process.close_io))
                    exit_ = await process.wait()
                    await io.drain(timeout=5.0)
                finally:
                    await process.delete()
            finally:
                if closer is not None:
                    closer.cancel()
                io.close()
            return exit_.status

    raise typer.Exit(code=run_command(work))


@app.command()
def pause(ctx: typer.Context, task_id: TaskArg) -> None:
    """Freeze every process of a running task."""

    async def work() -> None:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            await tasks.pause(task_id)

    run_command(work)


@app.command()
def resume(ctx: typer.Context, task_id: TaskArg) -> None:
    """Thaw a paused task."""

    async def work() -> None:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            await tasks.resume(task_id)

    run_command(work)


@app.command()
def delete(
    ctx: typer.Context,
    task_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", autocompletion=complete_task_id)
    ],
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill it if running.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="What became of each ID.")] = False,
) -> None:
    """Delete stopped (or, with --force, running) tasks; go on past a failure, exit 1 at the end."""
    from cli.output import DeleteOutput, dump_list

    settings: Settings = ctx.obj

    async def work() -> list[DeleteOutput]:
        from cli.bootstrap import bootstrap

        results = []
        async with bootstrap(settings) as tasks:
            for task_id in task_ids:
                result = DeleteOutput(id=task_id, namespace=settings.namespace, deleted=False)
                try:
                    final = await tasks.delete(task_id, force=force)
                except ShimledgerError as exc:  # say so, and go on with the others
                    typer.echo(f"shimledger: {exc}", err=True)
                    result.error = str(exc)
                else:
                    result.deleted = True
                    if final is not None:
                        result.incarnation = final.incarnation
                        result.exit_status = final.exit_status
                        result.exited_at = final.exited_at
                results.append(result)
        return results

    results = run_command(work)
    if as_json:
        typer.echo(dump_list(results))
    if not all(r.deleted for r in results):
        raise typer.Exit(code=1)


inspect_cmds.register(app)
spec_cmd.register(app)
history_cmds.register(app)
reconcile_cmd.register(app)
serve_cmd.register(app)
task_ops_cmds.register(app)
app.add_typer(projections_cmds.app, name="projections")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()

"""The shimledger command line: runc-style lifecycle commands plus history.

Each command is a complete operation that runs without a daemon: it serves the event
sink while it runs, talks to shims, appends to the history, and exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal as signals
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli import history_cmds, projections_cmds
from cli.common import Format, run_command
from cli.settings import DEFAULT_ROOT, DEFAULT_STATE, Settings
from domain.errors import InvalidArgumentError, ShimledgerError
from shim import DEFAULT_RUNTIME

app = typer.Typer(
    name="shimledger",
    help="Run OCI containers through containerd v2 shims, and keep their history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
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
        typer.Option(envvar="SHIMLEDGER_STATE", readable=False,
                     help="Where bundles, sockets and runc state live."),
    ] = DEFAULT_STATE,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", envvar="SHIMLEDGER_NAMESPACE")
    ] = "default",
    store: Annotated[
        str | None,
        typer.Option(envvar="SHIMLEDGER_STORE",
                     help="Event store URL: sqlite:///PATH or postgresql://... "
                          "(default: <root>/events.db)."),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Log debug output, shim logs included.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Settings(
        root=root.absolute(), state=state.absolute(), namespace=namespace, store=store
    )


def parse_signal(text: str) -> int:
    """A signal by number, name or SIG-name, as runc's kill accepts it."""
    if text.isdigit():
        number = int(text)
        if number in {s.value for s in signals.Signals}:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signals.Signals.__members__:
            return signals.Signals[name].value
    raise InvalidArgumentError(f"unknown signal {text!r}")


LOG_POLL = 0.25

BundleOption = Annotated[
    Path, typer.Option("--bundle", "-b", help="The OCI bundle (default: current directory).")
]
RuntimeOption = Annotated[
    str, typer.Option(help="A v2 shim: a runtime name or the shim binary's absolute path.")
]


@app.command()
def create(ctx: typer.Context, task_id: Annotated[str, typer.Argument(metavar="ID")],
           bundle: BundleOption = Path("."),
           runtime: RuntimeOption = DEFAULT_RUNTIME) -> None:  # fmt: skip
    """Create a task from a bundle (its process waits for `start`)."""

    async def work() -> None:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            await tasks.create(task_id, bundle, runtime=runtime)

    run_command(work)


@app.command()
def start(ctx: typer.Context, task_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Start a created task."""

    async def work() -> None:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            await tasks.start(task_id)

    run_command(work)


@app.command()
def run(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="ID")],
    bundle: BundleOption = Path("."),
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Do not wait for it.")] = False,
    remove: Annotated[bool, typer.Option("--rm", help="Delete the task when it exits.")] = False,
    runtime: RuntimeOption = DEFAULT_RUNTIME,
) -> None:
    """Create and start a task; in the foreground, exit with its exit status."""
    settings: Settings = ctx.obj

    async def work() -> int:
        from adapters.fifo_io import ForegroundIO
        from cli.bootstrap import bootstrap

        if detach and remove:
            raise InvalidArgumentError("--rm needs the foreground: it cannot go with --detach")
        async with bootstrap(settings) as tasks:

            async def forward(sig: int) -> None:
                try:
                    await tasks.kill(task_id, sig)
                except ShimledgerError as exc:  # it exited meanwhile: nothing to forward to
                    logging.getLogger(__name__).debug("not forwarding signal %s: %s", sig, exc)

            if detach:
                await tasks.create(task_id, bundle, runtime=runtime)
                await tasks.start(task_id)
                return 0
            io_dir = settings.state / "io" / f"{settings.namespace}-{task_id}-{os.getpid()}"
            io = ForegroundIO(io_dir, sys.stdout.buffer, sys.stderr.buffer)
            try:
                await tasks.create(task_id, bundle, runtime=runtime, stdio=io.stdio)
                io.shim_attached()
                loop = asyncio.get_running_loop()
                for sig in (signals.SIGINT, signals.SIGTERM, signals.SIGHUP):
                    loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(forward(s)))
                try:
                    await tasks.start(task_id)
                except ShimledgerError:
                    await tasks.delete(task_id, force=True)
                    raise
                exit_ = await tasks.wait(task_id)
                await io.drain(timeout=5.0)
            finally:
                io.close()
            if remove:
                await tasks.delete(task_id)
            return exit_.status

    code = run_command(work)
    raise typer.Exit(code=code)


@app.command()
def kill(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="ID")],
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
    task_id: Annotated[str, typer.Argument(metavar="ID")],
    command: Annotated[list[str], typer.Argument(metavar="CMD...", help="After --.")],
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="K=V; repeatable.")]
    = None,
    cwd: Annotated[str | None, typer.Option(help="Working directory inside the task.")]
    = None,
) -> None:
    """Run a command in a running task; exit with its exit status."""
    settings: Settings = ctx.obj
    if command and command[0] == "--":
        command = command[1:]
    for entry in env or []:
        if "=" not in entry:
            raise typer.BadParameter(f"--env {entry!r} is not K=V")

    async def work() -> int:
        from adapters.fifo_io import ForegroundIO
        from cli.bootstrap import bootstrap

        async with bootstrap(settings) as tasks:
            io_dir = settings.state / "io" / f"{settings.namespace}-{task_id}-{os.getpid()}"
            io = ForegroundIO(io_dir, sys.stdout.buffer, sys.stderr.buffer)
            try:
                exit_ = await tasks.exec(task_id, command, env=env, cwd=cwd, stdio=io.stdio)
                io.shim_attached()  # the exec is over: EOF now means its output is all here
                await io.drain(timeout=5.0)
            finally:
                io.close()
            return exit_.status

    raise typer.Exit(code=run_command(work))


@app.command()
def wait(ctx: typer.Context, task_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Wait for a task to exit; print its exit status and exit with it."""

    async def work() -> int:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            return (await tasks.wait(task_id)).status

    status = run_command(work)
    typer.echo(status)
    raise typer.Exit(code=status)


@app.command()
def ps(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="ID")],
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """The processes running in a task."""

    async def work() -> list[tuple[int, str]]:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            return await tasks.pids(task_id)

    processes = run_command(work)
    if format is Format.json:
        typer.echo(json.dumps([{"pid": pid, "exec_id": e} for pid, e in processes]))
    else:
        from cli.output import table

        typer.echo(table([["PID", "EXEC"], *[[str(pid), e] for pid, e in processes]]))


@app.command()
def pause(ctx: typer.Context, task_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Freeze every process of a running task."""

    async def work() -> None:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            await tasks.pause(task_id)

    run_command(work)


@app.command()
def resume(ctx: typer.Context, task_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Thaw a paused task."""

    async def work() -> None:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            await tasks.resume(task_id)

    run_command(work)


@app.command()
def delete(
    ctx: typer.Context,
    task_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill it if running.")] = False,
) -> None:
    """Delete stopped (or, with --force, running) tasks."""

    async def work() -> bool:
        failed = False
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            for task_id in task_ids:
                try:
                    await tasks.delete(task_id, force=force)
                except ShimledgerError as exc:  # say so, and go on with the others
                    typer.echo(f"shimledger: {exc}", err=True)
                    failed = True
        return failed

    if run_command(work):
        raise typer.Exit(code=1)


@app.command()
def logs(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="ID")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the task exits.")]
    = False,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines first.")] = None,
) -> None:
    """Print a detached task's stdout and stderr (kept under the root dir)."""

    async def work() -> None:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            path = await tasks.log_path(task_id)
            with open(path, "rb") as log:
                data = log.read()
                if tail is not None:
                    data = b"".join(data.splitlines(keepends=True)[-tail:] if tail > 0 else [])
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
                while follow:
                    try:
                        state = await tasks.get(task_id)
                    except ShimledgerError:
                        state = None  # deleted meanwhile
                    await asyncio.sleep(LOG_POLL)
                    sys.stdout.buffer.write(log.read())
                    sys.stdout.flush()
                    if state is None or state.status not in ("created", "running", "paused"):
                        break

    try:
        run_command(work)
    except typer.Exit as exit_:
        if follow and exit_.exit_code == 130:
            raise typer.Exit(0) from None  # Ctrl-C is how --follow ends early
        raise


@app.command("list")
def list_(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="IDs only.")] = False,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """List the live tasks of the namespace."""

    from cli.output import TaskOutput, state_rows

    async def work() -> list[TaskOutput]:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            return [TaskOutput.of(s) for s in await tasks.tasks()]

    outputs = run_command(work)
    if quiet:
        for out in outputs:
            typer.echo(out.id)
    elif format is Format.json:
        typer.echo(json.dumps([o.model_dump(mode="json") for o in outputs]))
    else:
        typer.echo(state_rows(outputs))


@app.command()
def state(ctx: typer.Context, task_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Print a task's state as JSON."""
    from cli.output import TaskOutput

    async def work() -> TaskOutput:
        from cli.bootstrap import bootstrap

        async with bootstrap(ctx.obj) as tasks:
            return TaskOutput.of(await tasks.get(task_id))

    typer.echo(run_command(work).model_dump_json(indent=2))


history_cmds.register(app)
app.add_typer(projections_cmds.app, name="projections")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

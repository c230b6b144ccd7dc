"""Commands that look at live tasks: list, state, ps, wait, logs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.args import (
    AllNodesFlag,
    Format,
    FormatJsonFlag,
    FormatOption,
    JsonTextFlag,
    NodeFilterOption,
    TaskArg,
    whose_tasks,
)
from cli.common import expected_errors, fail, with_tasks
from cli.settings import Settings
from domain.errors import ShimledgerError

if TYPE_CHECKING:
    from shim.lifecycle.task_manager import TaskManager

LOG_POLL = 0.25
LISTED_STATUSES = ("created", "running", "paused", "stopped")


def list_(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="IDs only.")] = False,
    format: FormatOption = Format.table,
    as_json: FormatJsonFlag = False,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATUS",
            help="Only tasks in this status (created, running, paused, stopped); repeatable.",
        ),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Tasks of every namespace.")
    ] = False,
    node: NodeFilterOption = None,
    all_nodes: AllNodesFlag = False,
) -> None:
    """List the live tasks of the namespace (or of all namespaces), this node's by default."""
    from cli.output import StateOutput, dump_list
    from cli.render.tables import listing_rows

    wanted = set(status or ())
    if unknown := wanted - set(LISTED_STATUSES):
        raise fail(f"unknown status {', '.join(sorted(unknown))}: use one of "
                   f"{', '.join(LISTED_STATUSES)}")  # fmt: skip
    with expected_errors():
        whose = whose_tasks(ctx.obj, node, all_nodes)

    states = with_tasks(
        ctx.obj, lambda tasks: tasks.tasks(all_namespaces=all_namespaces, whose=whose)
    )
    here = ctx.obj.node
    outputs = [StateOutput.of(s, here) for s in states if not wanted or s.status in wanted]
    if quiet:
        for out in outputs:
            typer.echo(f"{out.namespace}/{out.id}" if all_namespaces else out.id)
    elif as_json or format is Format.json:
        typer.echo(dump_list(outputs))
    else:
        with_node = node is not None or all_nodes
        typer.echo(listing_rows(outputs, with_namespace=all_namespaces, with_node=with_node))


def state(
    ctx: typer.Context,
    task_id: TaskArg,
    node: NodeFilterOption = None,
    all_nodes: AllNodesFlag = False,
) -> None:
    """Print a task's state as JSON (as runc state does): this node's task of the ID."""
    from cli.output import StateOutput

    with expected_errors():
        whose = whose_tasks(ctx.obj, node, all_nodes)
    current = with_tasks(ctx.obj, lambda tasks: tasks.get(task_id, whose=whose))
    typer.echo(StateOutput.of(current, ctx.obj.node).model_dump_json(indent=2))


def _command_line(pid: int) -> str:
    """What the process runs, from /proc (the CLI shares the host's pid namespace)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""  # it exited meanwhile
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def ps(ctx: typer.Context, task_id: TaskArg, format: FormatOption = Format.table,
       as_json: FormatJsonFlag = False) -> None:  # fmt: skip
    """The processes running in a task."""
    from cli.output import ProcessOutput, dump_list
    from cli.render.tables import process_rows

    found = with_tasks(ctx.obj, lambda tasks: tasks.pids(task_id))
    processes = [ProcessOutput(pid=pid, exec_id=e, command=_command_line(pid)) for pid, e in found]
    if as_json or format is Format.json:
        typer.echo(dump_list(processes))
    else:
        typer.echo(process_rows(processes))


def wait(
    ctx: typer.Context,
    task_id: TaskArg,
    as_json: JsonTextFlag = False,
) -> None:
    """Wait for a task to exit; print its exit status and exit with it."""
    from cli.output import WaitOutput

    settings: Settings = ctx.obj
    exit_ = with_tasks(settings, lambda tasks: tasks.wait(task_id))
    waited = WaitOutput.of(task_id, settings.namespace, exit_)
    typer.echo(waited.model_dump_json() if as_json else waited.exit_status)
    raise typer.Exit(code=waited.exit_status)


def logs(
    ctx: typer.Context,
    task_id: TaskArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the task exits.")] = False,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines first.")] = None,
) -> None:
    """Print a detached task's stdout and stderr (kept under the root dir)."""
    try:
        with_tasks(ctx.obj, lambda tasks: _print_log(tasks, task_id, follow=follow, tail=tail))
    except typer.Exit as exit_:
        if follow and exit_.exit_code == 130:
            raise typer.Exit(0) from None  # Ctrl-C is how --follow ends early
        raise


def _drop_unwritten_output() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail a second time."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


async def _print_log(tasks: TaskManager, task_id: str, *, follow: bool, tail: int | None) -> None:
    """Copy the log (across its rotated files) to stdout; following, keep copying until the
    task is no longer live.

    ``--tail`` reads from the end, so it costs the lines asked for, not the log's size.
    This command rotates the log it reads when it is over the size (and keeps doing so
    while it follows), as serve does each second for every task it watches.
    The state is read before each pause and the log after it, so whatever the task wrote
    before it exited is still copied once it is seen to have exited.
    """
    import asyncio

    from shim.lifecycle.task_logs import LogFollower, LogRotation, rotate, write_log

    rotation = LogRotation.from_env()
    path = await tasks.log_path(task_id)
    rotate(path, rotation)
    try:
        offset = write_log(path, sys.stdout.buffer, tail=tail)
        follower = LogFollower(path, offset)
        while follow:
            try:
                state = await tasks.get(task_id)
            except ShimledgerError:
                state = None  # deleted meanwhile
            await asyncio.sleep(LOG_POLL)
            rotate(path, rotation)
            follower.copy_new(sys.stdout.buffer)
            if state is None or state.status not in ("created", "running", "paused"):
                break
    except BrokenPipeError:  # `logs ID | head`: the reader has all it wanted
        _drop_unwritten_output()


def register(app: typer.Typer) -> None:
    app.command()(ps)
    app.command()(wait)
    app.command()(logs)
    app.command("list")(list_)
    app.command()(state)

"""Commands that look at live tasks: list, state, ps, wait, logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.args import (
    AllNodesFlag,
    FilterOption,
    Format,
    FormatJsonFlag,
    FormatOption,
    JsonTextFlag,
    NodeFilterOption,
    TaskArg,
    whose_tasks,
)
from cli.common import drop_unwritten_output, expected_errors, fail, with_tasks
from cli.settings import Settings
from domain.errors import FailedPreconditionError, ShimledgerError

if TYPE_CHECKING:
    from shim.lifecycle.task_manager import TaskManager

LOG_POLL = 0.25
LISTED_STATUSES = ("created", "running", "paused", "stopped")


def list_(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="IDs only.")] = False,
    format: Annotated[
        str,
        typer.Option("--format", "-f", metavar="FORMAT",
                     help="table (plain when piped), json, or a Go template: '{{.ID}} {{.Pid}}'."),
    ] = "table",  # fmt: skip
    as_json: FormatJsonFlag = False,
    filters: FilterOption = None,
    since: Annotated[str | None, typer.Option(help="Only tasks created since this time.")] = None,
    until: Annotated[str | None, typer.Option(help="Only tasks created until this time.")] = None,
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
    """List the live tasks of the namespace (or of all namespaces), this node's by default.

    --filter takes id, namespace, status, exit-code and label (an annotation of the task's
    config: label=KEY or label=KEY=VALUE).
    """
    from cli.filters import TASK_KEYS, parse_filters
    from cli.output import StateOutput, dump_list
    from cli.output_format import output_format, task_fields
    from cli.render.tables import listing_rows
    from cli.timeparse import time_option

    wanted = set(status or ())
    if unknown := wanted - set(LISTED_STATUSES):
        raise fail(f"unknown status {', '.join(sorted(unknown))}: use one of "
                   f"{', '.join(LISTED_STATUSES)}")  # fmt: skip
    with expected_errors():
        whose = whose_tasks(ctx.obj, node, all_nodes)
        chosen = output_format(format, words=("table", "json"), default="table",
                               known=task_fields())  # fmt: skip
        matching = parse_filters(filters, TASK_KEYS)
        start, end = time_option("--since", since), time_option("--until", until)

    states = with_tasks(
        ctx.obj, lambda tasks: tasks.tasks(all_namespaces=all_namespaces, whose=whose)
    )
    here = ctx.obj.node
    outputs = [StateOutput.of(s, here) for s in states if not wanted or s.status in wanted]
    if matching:
        outputs = [o for o in outputs if matching.matches(o.model_dump(mode="json"))]
    if start is not None or end is not None:
        outputs = [o for o in outputs if (start is None or o.created >= start)
                   and (end is None or o.created <= end)]  # fmt: skip
    if chosen.template is not None and not quiet:
        typer.echo(chosen.template.render([o.model_dump(mode="json") for o in outputs]))
    elif quiet:
        for out in outputs:
            typer.echo(f"{out.namespace}/{out.id}" if all_namespaces else out.id)
    elif as_json or chosen.word == "json":
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


PsOptions = Annotated[
    list[str] | None,
    typer.Argument(metavar="[PS_OPTIONS]...", show_default=False,
                   help="Options for ps(1), after the ID (default -ef), as runc's."),
]  # fmt: skip
RichJsonFlag = Annotated[
    bool, typer.Option("--json", help="Each process's pid, exec ID and command line.")
]


def ps(
    ctx: typer.Context,
    task_id: TaskArg,
    ps_options: PsOptions = None,
    format: FormatOption = Format.table,
    as_json: RichJsonFlag = False,
) -> None:
    """The processes running in a task, as runc's ps: the lines of ps(1) that are the task's.

    ``--format json`` prints the pids, as runc's does; ``--json`` says more of each.
    """
    from cli.output import ProcessOutput, dump_list

    options = list(ps_options or [])
    if options[:1] == ["--"]:
        options = options[1:]
    if options and (as_json or format is Format.json):
        raise fail("ps options are for the table: --format json prints the task's pids")

    async def processes_of(tasks: TaskManager) -> list[tuple[int, str]]:
        try:
            return await tasks.pids(task_id)
        except FailedPreconditionError:
            return []  # a stopped task has none: runc's ps prints ps's header alone, exit 0

    found = with_tasks(ctx.obj, processes_of)
    if as_json:
        processes = [ProcessOutput(pid=p, exec_id=e, command=_command_line(p)) for p, e in found]
        typer.echo(dump_list(processes))
    elif format is Format.json:
        typer.echo(json.dumps([pid for pid, _ in found]))
    else:
        typer.echo(_ps_lines(options or ["-ef"], {pid for pid, _ in found}), nl=False)


def _ps_lines(options: list[str], pids: set[int]) -> str:
    """ps(1)'s header and the lines whose PID column is one of ``pids`` (runc's ps)."""
    import subprocess

    try:
        done = subprocess.run(["ps", *options], capture_output=True, text=True, check=False)
    except OSError as error:
        raise fail(f"cannot run ps: {error.strerror}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise fail(f"ps {' '.join(options)} exited {done.returncode}: "
                   f"{said[0] if said else 'and said nothing'}")  # fmt: skip
    header, *lines = done.stdout.splitlines() or [""]
    try:
        column = header.split().index("PID")
    except ValueError:
        raise fail(f"ps {' '.join(options)} printed no PID column (runc's ps needs one)") from None
    kept = [header]
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        try:
            pid = int(fields[column])
        except (IndexError, ValueError):
            raise fail(f"cannot read a pid in ps's line {line!r}") from None
        if pid in pids:
            kept.append(line)
    return "\n".join(kept) + "\n"


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
    with_tasks(ctx.obj, lambda tasks: _print_log(tasks, task_id, follow=follow, tail=tail))


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
        drop_unwritten_output()
    except asyncio.CancelledError:
        if not follow:
            raise  # a plain read interrupted: "interrupted", 130, as every command
        sys.stdout.flush()  # Ctrl-C or SIGTERM is how --follow ends early: quietly, exit 0


def register(app: typer.Typer) -> None:
    # Everything after the ID is ps(1)'s (`ps ID -o pid,comm`), as runc's flags end there.
    app.command(context_settings={"allow_interspersed_args": False})(ps)
    app.command()(wait)
    app.command()(logs)
    app.command("list")(list_)
    app.command()(state)

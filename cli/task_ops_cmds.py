"""Resource commands: `stats` (podman's name), `update` and `checkpoint` (runc's flags)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.args import JsonTextFlag, TaskArg
from cli.common import fail, with_tasks


def stats(
    ctx: typer.Context,
    task_id: TaskArg,
    as_json: JsonTextFlag = False,
) -> None:
    """A running task's cgroup counters: pids, CPU time, memory."""
    from cli.output import StatsOutput

    counters = with_tasks(ctx.obj, lambda tasks: tasks.stats(task_id))
    output = StatsOutput.from_stats(task_id, counters)
    if as_json:
        typer.echo(output.model_dump_json())
        return
    for key, value in output.model_dump().items():
        typer.echo(f"{key}\t{value}")


def update(
    ctx: typer.Context,
    task_id: TaskArg,
    resources: Annotated[
        Path | None,
        typer.Option("--resources", "-r", help="OCI LinuxResources JSON file ('-' for stdin)."),
    ] = None,
    memory: Annotated[int | None, typer.Option(help="Memory limit in bytes.")] = None,
    pids_limit: Annotated[int | None, typer.Option("--pids-limit", help="Max processes.")] = None,
    cpu_quota: Annotated[int | None, typer.Option("--cpu-quota", help="CFS quota (µs).")] = None,
    cpu_period: Annotated[int | None, typer.Option("--cpu-period", help="CFS period (µs).")] = None,
    cpu_shares: Annotated[int | None, typer.Option("--cpu-shares", help="CPU weight.")] = None,
) -> None:
    """Change a task's cgroup limits, as `runc update` does; history records them."""
    wanted = _resources(resources, memory, pids_limit, cpu_quota, cpu_period, cpu_shares)
    with_tasks(ctx.obj, lambda tasks: tasks.update(task_id, wanted))


def _resources(
    path: Path | None,
    memory: int | None,
    pids_limit: int | None,
    cpu_quota: int | None,
    cpu_period: int | None,
    cpu_shares: int | None,
) -> dict[str, Any]:
    """runc update's flags folded into an OCI LinuxResources object (flags win over -r)."""
    resources: dict[str, Any] = {}
    if path is not None:
        try:
            text = typer.get_text_stream("stdin").read() if str(path) == "-" else path.read_text()
            resources = json.loads(text)
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read resources from {path}: {exc}") from None
        if not isinstance(resources, dict):
            raise fail(f"resources in {path} must be a JSON object (OCI LinuxResources)")
    if memory is not None:
        resources.setdefault("memory", {})["limit"] = memory
    if pids_limit is not None:
        resources.setdefault("pids", {})["limit"] = pids_limit
    cpu = {"quota": cpu_quota, "period": cpu_period, "shares": cpu_shares}
    for key, value in cpu.items():
        if value is not None:
            resources.setdefault("cpu", {})[key] = value
    if not resources:
        raise fail("update needs -r FILE or at least one limit")
    return resources


def checkpoint(
    ctx: typer.Context,
    task_id: TaskArg,
    image_path: Annotated[
        Path | None,
        typer.Option("--image-path", help="Where CRIU writes the image (default: ./checkpoint)."),
    ] = None,
    leave_running: Annotated[
        bool, typer.Option("--leave-running", help="Keep the task running after the dump.")
    ] = False,
) -> None:
    """Dump a running task with CRIU (runc checkpoint); by default the task then stops."""
    image = (image_path or Path("checkpoint")).absolute()
    with_tasks(ctx.obj, lambda tasks: tasks.checkpoint(task_id, image, exit=not leave_running))


def register(app: typer.Typer) -> None:
    app.command()(stats)
    app.command()(update)
    app.command()(checkpoint)

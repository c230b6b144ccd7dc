"""Resource commands: `stats` (podman's name), `update` and `checkpoint` (runc's flags)."""

from __future__ import annotations

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




def _flag(help: str, metavar: str = "N", *names: str, hidden: bool = False) -> Any:
    """One of runc update's flags: taken as text, read by cli/resources.py as runc reads it."""
    return typer.Option(*names, metavar=metavar, help=help, hidden=hidden, show_default=False)


def update(
    ctx: typer.Context,
    task_id: TaskArg,
    resources: Annotated[
        Path | None,
        typer.Option("--resources", "-r", help="OCI LinuxResources JSON file ('-' for stdin)."),
    ] = None,
    memory: Annotated[str | None, _flag("Memory limit (512m, 1g, -1: none).", "BYTES")] = None,
    memory_reservation: Annotated[str | None, _flag("Memory soft limit.", "BYTES")] = None,
    memory_swap: Annotated[str | None, _flag("Memory plus swap limit.", "BYTES")] = None,
    kernel_memory: Annotated[str | None, _flag("Kernel memory limit (v1).", "BYTES")] = None,
    kernel_memory_tcp: Annotated[str | None, _flag("Kernel TCP buffers (v1).", "BYTES")] = None,
    pids_limit: Annotated[str | None, _flag("Max processes.")] = None,
    cpu_quota: Annotated[str | None, _flag("CFS quota (µs).")] = None,
    cpu_period: Annotated[str | None, _flag("CFS period (µs).")] = None,
    cpu_share: Annotated[
        str | None, _flag("CPU weight.", "N", "--cpu-share", "--cpu-shares")
    ] = None,
    cpu_rt_period: Annotated[str | None, _flag("Realtime period (µs).")] = None,
    cpu_rt_runtime: Annotated[str | None, _flag("Realtime runtime (µs).")] = None,
    cpuset_cpus: Annotated[str | None, _flag("CPUs (0-3,5).", "LIST")] = None,
    cpuset_mems: Annotated[str | None, _flag("Memory nodes.", "LIST")] = None,
    blkio_weight: Annotated[str | None, _flag("Block IO weight (10-1000).")] = None,
    l3_cache_schema: Annotated[str | None, _flag("", "SCHEMA", hidden=True)] = None,
    mem_bw_schema: Annotated[str | None, _flag("", "SCHEMA", hidden=True)] = None,
) -> None:
    """Change a task's cgroup limits, as `runc update` does; history records them.

    runc's flags and value forms; unlike runc's, a flag given with -r wins over the file.
    """
    from cli.resources import ResourceError, fold, read_resources_file

    if l3_cache_schema is not None or mem_bw_schema is not None:
        raise fail("--l3-cache-schema and --mem-bw-schema set Intel RDT, which is not a "
                   "cgroup limit: a shim's Update carries OCI LinuxResources only")  # fmt: skip
    flags = {"memory": memory, "memory-reservation": memory_reservation,
             "memory-swap": memory_swap, "kernel-memory": kernel_memory,
             "kernel-memory-tcp": kernel_memory_tcp, "pids-limit": pids_limit,
             "cpu-quota": cpu_quota, "cpu-period": cpu_period, "cpu-share": cpu_share,
             "cpu-rt-period": cpu_rt_period, "cpu-rt-runtime": cpu_rt_runtime,
             "cpuset-cpus": cpuset_cpus, "cpuset-mems": cpuset_mems,
             "blkio-weight": blkio_weight}  # fmt: skip
    try:
        wanted: dict[str, Any] = {}
        if resources is not None:
            stdin = typer.get_text_stream("stdin").read() if str(resources) == "-" else None
            wanted = read_resources_file(resources, stdin)
        wanted = fold(wanted, flags)
    except ResourceError as error:
        raise fail(str(error)) from None
    if not wanted:
        raise fail("update needs -r FILE or at least one limit")
    with_tasks(ctx.obj, lambda tasks: tasks.update(task_id, wanted))


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

"""`events ID` as runc's: a task's cgroup counters as runc's JSON events, once (``--stats``)
or every ``--interval`` (default 5s) until the task stops, with an ``oom`` event whenever
its OOM-kill count grows. Our own `events` (the history) is the same command without an ID.

The shim's Stats holds fewer counters than runc reads itself: the keys below are runc's
(types/events.go) for the values we have; those we do not have are left out rather than
printed as zeros that would read as measurements.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

import typer

from cli.common import drop_unwritten_output, expected_errors, fail, with_tasks
from cli.settings import Settings
from cli.timeparse import parse_go_duration
from domain.errors import FailedPreconditionError, InvalidArgumentError, ShimledgerError

if TYPE_CHECKING:
    from shim.lifecycle.task_manager import TaskManager
    from shim.ports import TaskStats

HAS_STATS = ("created", "running", "paused")


def runc_stats(stats: TaskStats) -> dict[str, Any]:
    """runc's Stats object from our TaskStats; zeros omitted where runc's JSON omits them."""

    def kept(**values: int) -> dict[str, int]:
        return {key: value for key, value in values.items() if value}

    usage = kept(total=stats.cpu_usage_ns) | {"kernel": stats.cpu_kernel_ns,
                                               "user": stats.cpu_user_ns}  # fmt: skip
    memory = {"limit": stats.memory_limit_bytes} | kept(
        usage=stats.memory_usage_bytes, max=stats.memory_max_usage_bytes
    )
    return {
        "cpu": {"usage": usage, "throttling": {}},
        "memory": {"usage": memory},
        "pids": kept(current=stats.pids_current, limit=stats.pids_limit),
    }


def _emit(kind: str, task_id: str, data: dict[str, Any] | None = None) -> None:
    event: dict[str, Any] = {"type": kind, "id": task_id}
    if data is not None:
        event["data"] = data
    typer.echo(json.dumps(event, separators=(",", ":")))
    sys.stdout.flush()


async def stream(tasks: TaskManager, task_id: str, *, once: bool, interval: float) -> None:
    """Print the events; return once the task has stopped (or after one, ``once``)."""
    state = await tasks.get(task_id)
    if state.status not in HAS_STATS:  # runc: "container with id ... is not running"
        raise FailedPreconditionError(
            f"task {task_id} is {state.status}: only a created, running or paused task has stats"
        )
    try:
        await _events(tasks, task_id, once=once, interval=interval)
    except BrokenPipeError:  # `events ID | head`: the reader has all it wanted
        drop_unwritten_output()
    except asyncio.CancelledError:
        return  # Ctrl-C or SIGTERM is how a stream ends early: quietly, exit 0, as -f's


async def _events(tasks: TaskManager, task_id: str, *, once: bool, interval: float) -> None:
    ooms: int | None = None
    while True:
        try:
            stats = await tasks.stats(task_id)
        except ShimledgerError:
            if (await tasks.get(task_id)).status not in HAS_STATS:
                return  # it stopped between two reads: the stream is over, as runc's
            raise
        _emit("stats", task_id, runc_stats(stats))
        if ooms is not None and stats.oom_kills > ooms:
            _emit("oom", task_id)
        ooms = stats.oom_kills
        if once:
            return
        await asyncio.sleep(interval)
        if (await tasks.get(task_id)).status not in HAS_STATS:
            return


def duration_of(option: str, text: str) -> float:
    """Seconds of a Go duration option; an error names the option."""
    try:
        return parse_go_duration(text).total_seconds()
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{option}: {exc}") from None


def runc_events(
    settings: Settings, task_id: str | None, once: bool, interval: str | None, mixed: list[str]
) -> None:
    """runc's `events [--stats] [--interval D] ID`; ``mixed``: history options also given."""
    if task_id is None:
        raise fail("--stats and --interval are runc's stats events: they need a task ID")
    if mixed:
        raise fail(f"{', '.join(mixed)}: options of the history's events, not of a task's "
                   f"stats (events {task_id}); for its history use --id {task_id}")  # fmt: skip
    with expected_errors():
        period = duration_of("--interval", interval or "5s")
    if period <= 0:
        raise fail(f"--interval {interval}: must be more than 0")
    with_tasks(settings, lambda tasks: stream(tasks, task_id, once=once, interval=period))

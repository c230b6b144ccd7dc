"""Thousands of recorded incarnations for the audit page, made through the event store.

Running thousands of containers would take an hour; the page only reads history, so the
history is written as the lifecycle commands write it (Task's own methods, saved by the
store's eventsourcing Application), many aggregates a save, with every event stamped by a
clock of our own so that the lives spread over a realistic half hour. bench/audit_page.py
builds its stores with this too, so the benchmark measures the page the test checks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

from eventsourcing.domain import CanCreateTimestamp

from adapters.event_store import LedgerApplication, sqlite_env
from domain.task import Task
from domain.values import Cause

NAMESPACES = ("web", "batch", "jobs", "infra", "edge")
CLI = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger kill", host="h")
SHIM = Cause(kind="shim-event", detail="/tasks/exit")
LOST = Cause(kind="reconciliation", detail="shim lost")
NASTY = "shimledger kill '<img src=x onerror=alert(1)>' KILL"  # a command line, as typed
NASTY_CLI = Cause(kind="cli", user="root", uid=0, pid=2, command=NASTY, host="h")
STEP = timedelta(seconds=1)  # between one ID's first creation and the next ID's
LIFE = timedelta(seconds=15)  # from an incarnation's creation to the next one's (of its ID)
BATCH = 500  # aggregates per Application.save


@dataclass
class Workload:
    """What was recorded, to check the page against: endings and marks by task key."""

    incarnations: int = 0
    endings: dict[str, str] = field(default_factory=dict)  # "ns/id#n" -> ending key
    marks: dict[str, list[str]] = field(default_factory=dict)  # "ns/id#n" -> mark kinds
    namespaces: Counter[str] = field(default_factory=Counter)


class _Clock:
    """The time eventsourcing stamps the next event with (create_timestamp is patched)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _life(task: Task, kind: int, clock: _Clock, live: bool, killer: Cause = CLI
          ) -> tuple[str, list[str]]:  # fmt: skip
    """Drive one incarnation the way the commands would; returns its ending and marks."""
    born = clock.now
    at = lambda seconds: born + timedelta(seconds=seconds)  # noqa: E731
    clock.now = at(0.2)
    task.start(task.pid, CLI)
    marks: list[str] = []
    status, ending = 0, "ok"
    if kind == 0:  # killed with SIGKILL: one kill mark, ends by signal
        clock.now = at(8)
        task.record_kill(9, False, killer)
        marks, status, ending = ["kill"], 137, "signal"
    elif kind == 1:
        status, ending = 3, "failed"
    elif kind == 2:  # paused for five seconds
        clock.now = at(3)
        task.pause(CLI)
        clock.now = at(8)
        task.resume(CLI)
        marks = ["pause"]
    elif kind == 3:  # an exec ran inside it
        clock.now = at(4)
        task.add_exec("probe", CLI)
        task.start_exec("probe", task.pid + 1, CLI)
        clock.now = at(6)
        task.record_exec_exit("probe", 0, clock.now, SHIM)
        marks = ["exec"]
    elif kind == 4:  # the OOM killer took its init
        clock.now = at(9)
        task.record_oom(SHIM)
        marks, status, ending = ["oom"], 137, "oom"
    elif kind == 5:  # its shim died; reconciliation says so
        clock.now = at(10)
        task.record_shim_lost(LOST)
        marks, status, ending = ["lost"], 255, "lost"
    if live and not marks:
        return "running", marks
    clock.now = at(12)
    task.record_exit(status, clock.now, LOST if ending == "lost" else SHIM)
    clock.now = at(13)
    task.delete(CLI)
    return ending, marks


def _plan(incarnations: int) -> list[int]:
    """How many incarnations each ID gets: 1, 2, 3, 1, 2, 3, ... until the total is made."""
    counts: list[int] = []
    while sum(counts) < incarnations:
        counts.append(min(1 + len(counts) % 3, incarnations - sum(counts)))
    return counts


def build_workload(root: Path, incarnations: int, *, end: datetime | None = None) -> Workload:
    """``incarnations`` lives over five namespaces, the last event before ``end`` (now).

    IDs restart: one in three has a second incarnation and one in three a third, each made
    after the one before was deleted, as `run` would. One in ten is killed, fails, pauses,
    runs an exec, is OOM-killed or loses its shim (each); the last incarnation of one ID
    in 97 is still running. The first killed task's killer typed markup on its command
    line, to show it is drawn as text.
    """
    root.mkdir(parents=True, exist_ok=True)
    plan = _plan(incarnations)
    start = (end or datetime.now(UTC)) - STEP * len(plan) - LIFE * 3 - timedelta(seconds=5)
    clock = _Clock(start)
    work = Workload()
    app = LedgerApplication(env=sqlite_env(root))
    batch: list[Task] = []
    try:
        with mock.patch.object(CanCreateTimestamp, "create_timestamp", staticmethod(clock)):
            for j, count in enumerate(plan):
                ns, task_id = NAMESPACES[j % len(NAMESPACES)], f"task-{j:05d}"
                for inc in range(1, count + 1):
                    clock.now = start + STEP * j + LIFE * (inc - 1)
                    task = Task(namespace=ns, task_id=task_id, incarnation=inc,
                                bundle=f"/b/{task_id}", pid=1000 + work.incarnations,
                                runtime="r", node="node-a", state_dir="",
                                cause=CLI)  # fmt: skip
                    live = inc == count and j % 97 == 0
                    key = f"{ns}/{task_id}#{inc}"
                    kind = (work.incarnations + j // len(NAMESPACES)) % 10
                    killer = NASTY_CLI if work.incarnations == 0 else CLI
                    work.endings[key], work.marks[key] = _life(task, kind, clock, live, killer)
                    work.namespaces[ns] += 1
                    work.incarnations += 1
                    batch.append(task)
                    if len(batch) == BATCH:
                        app.save(*batch)
                        batch = []
            app.save(*batch)
    finally:
        app.close()
    return work

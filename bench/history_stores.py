"""Stores for the history benchmark, built through eventsourcing many aggregates a save.

Events are stamped SECONDS_PER_EVENT apart, ending now, so time windows are realistic.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventsourcing.domain import CanCreateTimestamp  # noqa: E402

from adapters.event_store import LedgerApplication, sqlite_env  # noqa: E402
from cli.settings import Settings  # noqa: E402
from domain.task import Task  # noqa: E402
from domain.values import Cause  # noqa: E402

NAMESPACE = "default"
TARGET = "target"  # the ID `history` and `events --id` ask about: three incarnations
TARGET_EVENTS = 11  # two whole lifecycles (4 events each), then Created, Started, Exited
SECONDS_PER_EVENT = 0.6  # a steady rate: 1,000,000 events span ~7 days, 10 minutes ~1,000
SAVE_BATCH = 2500  # aggregates per Application.save (one transaction) while building
HOST = socket.gethostname()
SHIM_EXIT = Cause(kind="shim-event", detail="TaskExit")


class Clock:
    """Event timestamps one steady step apart, the last one now.

    A store is built in seconds but must look like days of history, so that
    ``events --since`` selects a realistic slice of it and not the whole store.
    eventsourcing stamps events in ``create_timestamp()``; the builders patch that to
    ``tick`` while they build.
    """

    def __init__(self, events: int) -> None:
        self.now = datetime.now(UTC) - timedelta(seconds=SECONDS_PER_EVENT * events)

    def tick(self) -> datetime:
        self.now += timedelta(seconds=SECONDS_PER_EVENT)
        return self.now


def cli_cause(task_id: str, pid: int) -> Cause:
    """A cause as big as a real command's, so that rows have realistic sizes."""
    command = f"shimledger run --rm {task_id}"
    return Cause(kind="cli", user="root", uid=0, pid=pid, command=command, host=HOST)


def lifecycle(task_id: str, n: int, clock: Clock, *, delete: bool, incarnation: int = 1) -> Task:
    """One incarnation of a task: Created, Started, Exited and, if ``delete``, Deleted."""
    pid = 10_000 + n % 50_000
    cause = cli_cause(task_id, pid)
    task = Task(
        namespace=NAMESPACE,
        task_id=task_id,
        incarnation=incarnation,
        bundle=f"/srv/bundles/{task_id}",
        pid=pid,
        runtime="io.containerd.runc.v2",
        node="node-a", state_dir="", cause=cause,
    )
    task.start(pid, cause)
    status = 137 if n % 50 == 0 else 1 if n % 10 == 0 else 0
    task.record_exit(status, clock.now, SHIM_EXIT)
    if delete:
        task.delete(cause)
    return task


def save_in_batches(root: Path, events: int, tasks: Callable[[Clock], Iterator[Task]],
                    env: dict[str, str] | None = None, batch_size: int = SAVE_BATCH
                    ) -> int:  # fmt: skip
    """Save the tasks through eventsourcing, ``SAVE_BATCH`` aggregates per
    ``Application.save`` (one transaction each): a million events in under a minute,
    where one save per event would take ten. Returns the head position. ``env`` picks
    another store than ``<root>/events.db`` (bench/postgres.py's)."""
    root.mkdir(parents=True, exist_ok=True)
    app = LedgerApplication(env=env or sqlite_env(root))
    clock = Clock(events)
    try:
        with mock.patch.object(CanCreateTimestamp, "create_timestamp", staticmethod(clock.tick)):
            batch: list[Task] = []
            for task in tasks(clock):
                batch.append(task)
                if len(batch) == batch_size:
                    app.save(*batch)
                    batch = []
            app.save(*batch)
        return app.recorder.max_notification_id() or 0
    finally:
        app.close()


def build_history(root: Path, events: int, env: dict[str, str] | None = None,
                  batch_size: int = SAVE_BATCH) -> int:  # fmt: skip
    """~``events`` events of short-lived tasks, every one deleted, except TARGET's third
    incarnation: TARGET lives at a third, at two thirds, and in the newest events."""
    count = (events - TARGET_EVENTS) // 4
    earlier = {count // 3: 1, 2 * count // 3: 2}

    def tasks(clock: Clock) -> Iterator[Task]:
        for n in range(count):
            if n in earlier:
                yield lifecycle(TARGET, n, clock, delete=True, incarnation=earlier[n])
            yield lifecycle(f"t{n:07d}", n, clock, delete=True)
        yield lifecycle(TARGET, count, clock, delete=False, incarnation=3)

    return save_in_batches(root, events, tasks, env, batch_size)


def build_live(root: Path, count: int) -> int:
    """``count`` live tasks, each Created, Started, Exited: stopped, so that `list`
    (which reconciles created, running and paused tasks with their shims) contacts none."""

    def tasks(clock: Clock) -> Iterator[Task]:
        for n in range(count):
            yield lifecycle(f"t{n:07d}", n, clock, delete=False)

    return save_in_batches(root, count * 3, tasks)


@dataclass
class Store:
    """One store on disk, and how it was made."""

    root: Path
    head: int
    built_in: float
    label: str

    @property
    def db(self) -> Path:
        return self.root / "events.db"

    def settings(self, state: Path) -> Settings:
        return Settings(root=self.root, state=state, namespace=NAMESPACE)


class Stores:
    """Builds each store once: the large size's replay store (N/10 events) is the small
    size's history store when N/10 = small, and then the two are one store."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._built: dict[str, Store] = {}

    def _get(self, name: str, label: str, build: Callable[[Path], int]) -> Store:
        if name not in self._built:
            start = time.perf_counter()
            head = build(self.work / name)
            built_in = time.perf_counter() - start
            self._built[name] = Store(self.work / name, head, built_in, label.format(head=head))
        return self._built[name]

    def history(self, events: int) -> Store:
        return self._get(
            f"history-{events}", "{head:,} events", lambda root: build_history(root, events)
        )

    def live(self, tasks: int) -> Store:
        return self._get(f"live-{tasks}", f"{tasks:,} tasks", lambda root: build_live(root, tasks))


# --- timing and reporting -----------------------------------------------------------------

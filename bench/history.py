#!/usr/bin/env python3
"""History at scale: append, projection rebuild and query times, as ratios in one run.

Every figure is a median of R runs set against a reference measured in the same run,
interleaved with it, on the same machine. The machine is shared: absolute numbers are for
scale only, the ratios are what to compare.

  append      one ``await EventStore.save(task)`` per lifecycle step (Created, Started,
              Exited, Deleted) against raw sqlite3 writing the same rows into the same
              table of the same file, one transaction per row, WAL, same ``synchronous``
  rebuild     ``TaskStatesView.rebuild()`` and ``EventIndex.rebuild()`` against a raw
              sqlite3 scan of every row of eventsourcing's ``stored_events``, decoding nothing
  commands    whole-process wall time of ``shimledger list / history / events / replay``
              against ``python -c pass`` (the venv's interpreter), and the in-process time
              of the coroutines those commands await

Each is measured at two sizes so that growth can be judged. ``--small N`` and ``--large N``
are the events in the store that ``history`` and ``events`` read (the issue asks for
1,000,000); the other stores scale with N: ``replay`` reads N/10 events, ``list`` shows
N/100 tasks, and the rebuilds replay N/50 events (they are the slowest figure, R times
over; the first catch-up of EventIndex, reported apart, is the same work at N events).
The stores are built through eventsourcing itself, many aggregates per
``Application.save`` (see ``save_in_batches``).

    .venv/bin/python bench/history.py [--small N] [--large N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from adapters.event_store import EventStore, LedgerApplication, sqlite_env  # noqa: E402
from domain.task import Task  # noqa: E402
from projections.event_index import EventIndex  # noqa: E402
from projections.task_states import TaskStatesView  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history_commands import bench_commands, commands  # noqa: E402
from history_stores import (  # noqa: E402
    NAMESPACE,
    SAVE_BATCH,
    SECONDS_PER_EVENT,
    SHIM_EXIT,
    Store,
    Stores,
    cli_cause,
)
from report import Report, Row, clocked, round_robin  # noqa: E402

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
APPEND_TASKS = 100  # lifecycles per append run: 400 events, one save each

View = type[TaskStatesView] | type[EventIndex]

def eventsourcing_synchronous(root: Path) -> int:
    """The ``PRAGMA synchronous`` of eventsourcing's own connections (it sets none)."""
    app = LedgerApplication(env=sqlite_env(root))
    try:
        with app.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute("PRAGMA synchronous")
            return int(cursor.fetchone()[0])
    finally:
        app.close()


async def append_lifecycles(store: EventStore, tasks: int, tag: str) -> None:
    """Whole lifecycles with one save per step, as four separate commands would save."""
    for n in range(tasks):
        task_id = f"{tag}-{n}"
        cause = cli_cause(task_id, 4242)
        task = Task(
            namespace=NAMESPACE,
            task_id=task_id,
            incarnation=1,
            bundle=f"/srv/bundles/{task_id}",
            pid=4242,
            runtime="io.containerd.runc.v2",
            node="node-a", state_dir="", cause=cause,
        )
        await store.save(task)
        task.start(4242, cause)
        await store.save(task)
        task.record_exit(0, datetime.now(UTC), SHIM_EXIT)
        await store.save(task)
        task.delete(cause)
        await store.save(task)


def newest_rows(db: Path, count: int) -> list[tuple[str, int, str, bytes]]:
    """The newest ``count`` rows, which the caller has just appended through EventStore:
    the raw contender writes exactly these rows again, under fresh originator IDs."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT originator_id, originator_version, topic, state "
            "FROM stored_events ORDER BY rowid DESC LIMIT ?",
            (count,),
        ).fetchall()
    finally:
        con.close()
    return list(reversed(rows))


def raw_append(db: Path, rows: list[tuple[str, int, str, bytes]], synchronous: int) -> None:
    """One transaction per row (BEGIN, INSERT, COMMIT: what eventsourcing does to save one
    event) into the same table of the same file, each aggregate under a fresh ID."""
    fresh: dict[str, str] = {}
    con = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        con.execute(f"PRAGMA synchronous={synchronous}")
        for originator, version, topic, state in rows:
            new_id = fresh.setdefault(originator, uuid.uuid4().hex)
            con.execute("BEGIN")
            con.execute(
                "INSERT INTO stored_events VALUES (?,?,?,?)", (new_id, version, topic, state)
            )
            con.execute("COMMIT")
    finally:
        con.close()


def bench_append(report: Report, store: Store, runs: int) -> None:
    """Run last on a store: appends add rows that the read figures must not see."""
    synchronous = eventsourcing_synchronous(store.root)
    loop = asyncio.new_event_loop()
    event_store = EventStore(sqlite_env(store.root))
    tags = (f"append{n}" for n in range(1_000_000))
    try:
        loop.run_until_complete(append_lifecycles(event_store, APPEND_TASKS, "warm"))
        rows = newest_rows(store.db, APPEND_TASKS * 4)  # the warm-up's: realistic sizes
        medians = round_robin(
            {
                "eventsourcing": lambda: loop.run_until_complete(
                    append_lifecycles(event_store, APPEND_TASKS, next(tags))
                ),
                "raw": lambda: raw_append(store.db, rows, synchronous),
            },
            runs,
            warm=False,
        )
    finally:
        loop.run_until_complete(event_store.aclose())
        loop.close()
    events = APPEND_TASKS * 4
    report.add(
        Row(
            "append: EventStore.save per step",
            f"into {store.label}",
            events / medians["eventsourcing"],
            "ev/s",
            f"raw sqlite3, txn/row, synchronous={synchronous}",
            events / medians["raw"],
        )
    )


# --- projections --------------------------------------------------------------------------


def raw_scan(db: Path) -> None:
    """Every row of stored_events in notification order, decoding nothing."""
    con = sqlite3.connect(db)
    try:
        for _row in con.execute("SELECT rowid, * FROM stored_events ORDER BY rowid"):
            pass
    finally:
        con.close()


def run_view(view_class: View, store: Store, *, fresh: bool) -> int:
    """``rebuild()`` (``fresh``) or ``catch_up()`` of one view, as the CLI opens it."""

    async def go() -> int:
        event_store = EventStore(sqlite_env(store.root))
        view = view_class(store.root / "projections", event_store)
        try:
            return await (view.rebuild() if fresh else view.catch_up())
        finally:
            await view.aclose()
            await event_store.aclose()

    return asyncio.run(go())


def bench_first_catch_up(report: Report, store: Store, view_class: View) -> None:
    """The first catch-up of a big store, once: a one-off cost, reported apart."""
    seconds = clocked(lambda: run_view(view_class, store, fresh=False))
    scan = statistics.median(clocked(lambda: raw_scan(store.db)) for _ in range(3))
    report.add(
        Row(
            f"first catch-up: {view_class.__name__} (1 run)",
            store.label,
            store.head / seconds,
            "ev/s",
            "raw sqlite3 scan",
            store.head / scan,
        )
    )


def bench_rebuild(report: Report, store: Store, runs: int) -> None:
    medians = round_robin(
        {
            "TaskStatesView": lambda: run_view(TaskStatesView, store, fresh=True),
            "EventIndex": lambda: run_view(EventIndex, store, fresh=True),
            "raw": lambda: raw_scan(store.db),
        },
        runs,
        warm=False,
    )
    for name in ("TaskStatesView", "EventIndex"):
        report.add(
            Row(
                f"rebuild: {name}",
                store.label,
                store.head / medians[name],
                "ev/s",
                "raw sqlite3 scan",
                store.head / medians["raw"],
            )
        )


def profile_rebuild(report: Report, store: Store) -> None:
    """What limits a rebuild, one line per view, from cProfile.

    What it finds (eventsourcing 9.5.6, aiosqlite 0.22, views as of this writing): the top
    entry, a third or more of the time, is the event loop idle in ``epoll.poll`` waiting for
    aiosqlite's worker thread. Each SQL statement of ``View.apply``, and each fetch and
    cursor close, is a round trip between the loop and that thread, 3 to 4 per event, and
    a round trip costs far more than the statement. Decoding events (eventsourcing's
    transcoder) and pydantic come well after.
    """
    for view_class in (TaskStatesView, EventIndex):
        profiler = cProfile.Profile()
        profiler.enable()
        run_view(view_class, store, fresh=True)
        profiler.disable()
        stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        total = sum(entry[2] for entry in stats.values())
        (file, line, name), top = max(stats.items(), key=lambda item: item[1][2])
        where = name if file == "~" else f"{Path(file).name}:{line}({name})"
        hops = sum(entry[0] for key, entry in stats.items() if "SimpleQueue" in key[2])
        report.note(
            f"profile of {view_class.__name__}.rebuild() on {store.label}: top cause "
            f"{where}, {top[2] / total:.0%} of the time; {hops / store.head:.1f} "
            f"aiosqlite thread round trips per event"
        )


# --- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    """One size: N events for history and events, N/10 for replay, N/50 for rebuilds,
    N/100 tasks for list."""

    events: int

    @property
    def replay_events(self) -> int:
        return self.events // 10

    @property
    def rebuild_events(self) -> int:
        return self.events // 50

    @property
    def live_tasks(self) -> int:
        return self.events // 100


@contextmanager
def workdir() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="sl-bench-history-", dir="/tmp"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_all(stores: Stores, sizes: list[Size]) -> None:
    print(
        f"stores (through eventsourcing, {SAVE_BATCH} aggregates per Application.save, "
        f"events stamped {SECONDS_PER_EVENT}s apart ending now):",
        flush=True,
    )
    shown = set()
    for size in sizes:
        for store in (
            stores.history(size.events),
            stores.history(size.replay_events),
            stores.history(size.rebuild_events),
            stores.live(size.live_tasks),
        ):
            if store.root in shown:
                continue  # one store serving two sizes
            shown.add(store.root)
            print(
                f"  {store.root.name}: {store.head:,} events, built in {store.built_in:.1f}s",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100_000, help="events for history/events")
    parser.add_argument("--large", type=int, default=1_000_000, help="events for history/events")
    parser.add_argument("--runs", type=int, default=3, help="runs per median")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("`shimledger list` serves the shims' event socket: run this as root")
    sizes = [Size(args.small), Size(args.large)]
    report = Report()
    started = time.perf_counter()
    with workdir() as work:
        stores = Stores(work)
        build_all(stores, sizes)

        print("\nfirst catch-up of the views the timed commands read", flush=True)
        for size in sizes:
            bench_first_catch_up(report, stores.history(size.events), EventIndex)
            bench_first_catch_up(report, stores.live(size.live_tasks), TaskStatesView)

        print("\nprojection rebuild", flush=True)
        profile_rebuild(report, stores.history(sizes[0].rebuild_events))
        for size in sizes:
            bench_rebuild(report, stores.history(size.rebuild_events), args.runs)

        print("\ncommands (list: every task is stopped, so no shim is contacted)", flush=True)
        for size in sizes:
            live, history = stores.live(size.live_tasks), stores.history(size.events)
            cmds = commands(live, history, stores.history(size.replay_events), size.live_tasks)
            bench_commands(report, cmds, work / "state", args.runs)

        print("\nappend (last: it adds rows to the stores)", flush=True)
        for size in sizes:
            bench_append(report, stores.history(size.events), args.runs)

    print(
        f"\nmedians of {args.runs} runs (first catch-up: 1 run), {os.cpu_count()} cores; "
        "ratio = value / reference; large/small = value at the large size / small size"
    )
    print(report.table())
    for size, name in zip(sizes, ("small", "large"), strict=True):
        print(
            f"{name}: history/events {size.events:,} events, replay "
            f"{size.replay_events:,} events, rebuild {size.rebuild_events:,} events, "
            f"list {size.live_tasks:,} stopped tasks"
        )
    for note in report.notes:
        print(note)
    print(f"whole benchmark: {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()

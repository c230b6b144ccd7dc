#!/usr/bin/env python3
"""The ledger at scale: verify, chained appends and checkpoints, as ratios in one run.

Every figure is a median of R runs set against a reference measured in the same run,
interleaved with it (round robin), on the same machine. The machine is shared: absolute
times are for scale only, the ratios are what to compare, and the load average is printed.
Every ratio is *reference time / figure time*: higher is better, 1.0 is as fast as the
reference.

  verify      ``LedgerService.verify([])`` through an EventStore (what `ledger verify`
              does in process: SQLiteRows + Verifier over every row, every chain, the
              signed head) against a raw sqlite3 scan of the same rows, iterated in Python,
              decoding nothing (target >= 0.5). Also `shimledger ledger verify` as a whole
              process, against the same scan: it checks this node's witness head too
              (a consistency proof, so it keeps every leaf).
  append      the same command-like workload (per lifecycle: save Created; load current,
              start, save; load current, exit, save; load current, delete, save) through
              EventStore into a fresh store, chained and not (a LedgerApplication with
              ``chained = False``) (target >= 0.9)
  checkpoint  ``LedgerService.checkpoint`` over the whole store (the first head: it folds
              every event), then again after 1,000 more events (it folds only those),
              each against the raw scan of the whole store; on a fresh copy of the store
              each run

The store is built once (bench/history_stores.py's task lifecycles, through
eventsourcing, SAVE_BATCH aggregates per save: it chains as every writer does) and copied
for anything that writes.

    .venv/bin/python bench/ledger.py [--events N] [--runs R] [--lifecycles L]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.event_store import EventStore, LedgerApplication, sqlite_env  # noqa: E402
from adapters.raw_events import SQLiteRows  # noqa: E402
from domain.ledger.chain import LINK_KEY, event_digest  # noqa: E402
from domain.ledger.head import recorded_head  # noqa: E402
from domain.ledger.merkle import Frontier  # noqa: E402
from domain.task import Task  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history_stores import (  # noqa: E402
    NAMESPACE,
    SAVE_BATCH,
    SHIM_EXIT,
    build_history,
    cli_cause,
)
from ledger_stores import (  # noqa: E402
    STORE_FILES,
    append_more,
    checkpoint,
    cli_verify,
    copy_store,
    first_state,
    raw_scan,
    row_count,
    verify_in_process,
)
from report import Figure, Table, clocked  # noqa: E402

MORE_EVENTS = 1000  # appended between the first checkpoint and the incremental one
SCAN = (
    "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
    "ORDER BY rowid"
)

Sample = dict[str, float]
"""One contender's run: figure name -> seconds (a contender may time several figures)."""


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text} ({load()})", flush=True)


def interleaved(
    contenders: dict[str, Callable[[], Sample]], runs: int, warm: tuple[str, ...] = ()
) -> dict[str, float]:
    """Median seconds of every figure, the contenders taken in turn (round robin) so that
    noise hits them all alike. Each contender times only its own work: copying a store
    or making a fresh one is its untimed setup. ``warm`` ones run once first, unmeasured."""
    for name in warm:
        contenders[name]()
    samples: dict[str, list[float]] = {}
    for run in range(runs):
        for fn in contenders.values():
            for figure, seconds in fn().items():
                samples.setdefault(figure, []).append(seconds)
        say(f"  run {run + 1}/{runs} done")
    return {figure: statistics.median(values) for figure, values in samples.items()}


# --- stores -------------------------------------------------------------------------------


# --- the figures --------------------------------------------------------------------------


def bench_reads(table: Table, base: Path, verified: Path, work: Path, runs: int) -> None:
    """verify (in process and the CLI), the scan, and both checkpoints, interleaved."""
    db = verified / "events.db"
    rows = row_count(db)
    events = row_count(base / "events.db")
    label = f"{rows:,} events"
    copy = work / "checkpoint"

    def scan() -> Sample:
        took = clocked(lambda: raw_scan(db))
        return {"scan": took}

    def verify() -> Sample:
        start = time.perf_counter()
        verdict = verify_in_process(verified)
        took = time.perf_counter() - start
        if verdict.findings or verdict.report.events != rows:
            raise SystemExit(f"verify: {verdict.report.events} events, {verdict.findings[:3]}")
        return {"verify": took}

    process = cli_verify(verified)

    def verify_cli() -> Sample:
        return {"cli": clocked(process)}

    def checkpoints() -> Sample:
        copy_store(base, copy)  # untimed: a store no head covers yet
        start = time.perf_counter()
        first = checkpoint(copy)
        first_took = time.perf_counter() - start
        if first.tree_size != events:  # as heads of at most MAX_TIPS tips: the last covers all
            raise SystemExit(f"first checkpoint signed {first.tree_size} of {events} events")
        append_more(copy, MORE_EVENTS)  # untimed
        total = row_count(copy / "events.db")
        start = time.perf_counter()
        second = checkpoint(copy)
        second_took = time.perf_counter() - start
        if second.tree_size != total or second.since < first.position:
            raise SystemExit(f"incremental checkpoint signed {second.tree_size} of {total}")
        shutil.rmtree(copy)
        return {"first": first_took, "incremental": second_took}

    say("verify, scan and checkpoints, interleaved")
    medians = interleaved(
        {"scan": scan, "verify": verify, "cli": verify_cli, "checkpoint": checkpoints},
        runs,
        warm=("scan", "verify"),
    )
    scan_ref = f"raw sqlite3 scan ({rows:,} rows)"
    table.add(Figure("verify: LedgerService.verify([])", label, medians["verify"], scan_ref,
                     medians["scan"], rows, 0.5))  # fmt: skip
    table.add(Figure("verify: `shimledger ledger verify` process", label, medians["cli"],
                     scan_ref, medians["scan"], rows))  # fmt: skip
    table.add(Figure("checkpoint: first (folds every event)", f"{events:,} events",
                     medians["first"], scan_ref, medians["scan"], events))  # fmt: skip
    table.add(Figure(f"checkpoint: incremental (+{MORE_EVENTS:,} events)",
                     f"{events:,} + {MORE_EVENTS + 2:,} events", medians["incremental"],
                     scan_ref, medians["scan"], MORE_EVENTS + 2))  # fmt: skip
    verify_pieces(table, verified, medians["verify"])


def verify_pieces(table: Table, root: Path, verify_median: float) -> None:
    """Where verify's time goes, once, each piece as a fraction of the verify median:
    reading the rows through SQLiteRows (CAST AS BLOB), finding the recorded heads (a
    ``topic = ?`` query) and decoding them (JSON, the tips digest the signature covers),
    hashing every event, and extending a Merkle frontier with the digests."""
    raw = SQLiteRows(str(root / "events.db"))
    rows: list[Any] = []
    read = clocked(lambda: rows.extend(raw.rows()))
    found: list[Any] = []
    finding = clocked(lambda: found.extend(raw.heads()))
    decoding = clocked(lambda: [recorded_head(row) for row in found])
    digests: list[bytes] = []
    hashing = clocked(lambda: digests.extend(event_digest(a, v, t, s) for _, a, v, t, s in rows))
    frontier = clocked(lambda: Frontier().extend(digests))
    rest = verify_median - read - finding - decoding - hashing - frontier
    share = {
        "reading rows (SQLiteRows)": read,
        "finding heads": finding,
        f"decoding {len(found)} head(s)": decoding,
        "event digests": hashing,
        "Merkle frontier": frontier,
        "the rest (Verifier.feed's chain and tip checks, per-row bookkeeping)": rest,
    }
    table.note(
        "verify's time, one run of each piece against the verify median: "
        + ", ".join(f"{name} {took / verify_median:.0%}" for name, took in share.items())
    )


# --- appends ------------------------------------------------------------------------------


class UnchainedApplication(LedgerApplication):
    chained = False


class UnchainedEventStore(EventStore):
    """EventStore on plain eventsourcing events: the reference of chained appends."""

    def _application(self) -> LedgerApplication:
        if self._app is None:
            self._app = UnchainedApplication(env=self._env)
        return super()._application()


async def current(store: EventStore, task_id: str) -> Task:
    task = await store.current(NAMESPACE, task_id)
    if task is None:
        raise SystemExit(f"task {task_id} was saved but does not load")
    return task


async def lifecycles(store: EventStore, count: int) -> None:
    """Whole lifecycles, one save per event, each step on the task as loaded (as four
    separate commands would: create; then load current, act, save)."""
    for n in range(count):
        task_id = f"t{n:07d}"
        cause = cli_cause(task_id, 4242)
        created = Task(
            namespace=NAMESPACE,
            task_id=task_id,
            incarnation=1,
            bundle=f"/srv/bundles/{task_id}",
            pid=4242,
            runtime="io.containerd.runc.v2",
            node="node-a",
            state_dir="",
            cause=cause,
        )
        await store.save(created)
        task = await current(store, task_id)
        task.start(4242, cause)
        await store.save(task)
        task = await current(store, task_id)
        task.record_exit(0, datetime.now(UTC), SHIM_EXIT)
        await store.save(task)
        task = await current(store, task_id)
        task.delete(cause)
        await store.save(task)


def appender(kind: type[EventStore], root: Path, count: int, chained: bool) -> Callable[[], Sample]:
    name = "chained" if chained else "unchained"

    def run() -> Sample:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(mode=0o700, parents=True)

        async def go() -> float:
            store = kind(sqlite_env(root))
            try:
                await store.prepare()  # untimed: the schema of a fresh store
                return await timed(store)
            finally:
                await store.aclose()

        async def timed(store: EventStore) -> float:
            start = time.perf_counter()
            await lifecycles(store, count)
            return time.perf_counter() - start

        took = asyncio.run(go())
        db = root / "events.db"
        stored = row_count(db)
        if stored != count * 4:
            raise SystemExit(f"{name} appends stored {stored} events, not {count * 4}")
        if first_state(db).startswith(LINK_KEY) != chained:
            raise SystemExit(f"{name} appends: the stored state is {first_state(db)[:40]!r}")
        return {name: took}

    return run


def bench_append(table: Table, work: Path, count: int, runs: int) -> None:
    say(f"appends: {count:,} lifecycles, one save per event, chained and not, interleaved")
    medians = interleaved(
        {
            "chained": appender(EventStore, work / "append-chained", count, True),
            "unchained": appender(UnchainedEventStore, work / "append-plain", count, False),
        },
        runs,
        warm=("chained", "unchained"),
    )
    events = count * 4
    table.add(
        Figure(
            "append: EventStore.save per event, chained",
            f"{count:,} lifecycles, {events:,} events",
            medians["chained"],
            "the same, chained = False",
            medians["unchained"],
            events,
            0.9,
        )
    )


# --- the run ------------------------------------------------------------------------------


@contextmanager
def workdir() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="sl-bench-ledger-", dir="/tmp"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the store")
    parser.add_argument("--runs", type=int, default=3, help="runs per median")
    parser.add_argument(
        "--lifecycles", type=int, default=2000, help="task lifecycles per append run (4 events)"
    )
    args = parser.parse_args()
    table = Table()
    started = time.perf_counter()
    load_before = load()
    with workdir() as work:
        base, verified = work / "base", work / "verified"
        say(f"building {args.events:,} events through eventsourcing ({SAVE_BATCH} per save)")
        built = clocked(lambda: build_history(base, args.events))
        head = row_count(base / "events.db")
        if not first_state(base / "events.db").startswith(LINK_KEY):
            raise SystemExit("the built store is not chained")
        size = sum((base / n).stat().st_size for n in STORE_FILES if (base / n).exists())
        say(f"  {head:,} events, {size / 1e6:,.0f} MB, built in {built:.1f}s")
        copy_store(base, verified)
        signing = clocked(lambda: checkpoint(verified))
        say(f"  signed one head over it in {signing:.1f}s (the store verify reads)")

        bench_reads(table, base, verified, work, args.runs)
        bench_append(table, work, args.lifecycles, args.runs)

    table.print_closing(args.runs, load_before, load(), started)


if __name__ == "__main__":
    main()

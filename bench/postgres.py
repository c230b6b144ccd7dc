#!/usr/bin/env python3
"""The PostgreSQL store against its references, in one run, on a cluster started here.

Every figure is a median, interleaved with its reference measured in the same run; the
machine is shared, so the load average is printed and the ratios are what to compare.

  append     one ``await EventStore.save(task)`` per lifecycle step on PostgreSQL, against
             raw psycopg writing the same rows into a table of the same shape, one
             transaction per row
  writers    8 processes appending at once (eventsourcing LOCKs the table EXCLUSIVE per
             append), against 8 raw psycopg writers
  start-up   ``shimledger list`` (whole process, bytecode compiled) on PostgreSQL against
             the SQLite store; and the same through a ``serve`` of each store, which
             imported psycopg and connected once (the CLI hands its command over)
  follow     ``events --follow`` from append to printed line: LISTEN/NOTIFY (PostgreSQL)
             against the poll loop (SQLite, every 0.2 s)
  history    ``history ID`` (whole process, and the store's call in process) on a large
             PostgreSQL store against one of 10,000 events

    .venv/bin/python bench/postgres.py [--large N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from history import append_lifecycles  # noqa: E402
from history_stores import NAMESPACE, TARGET, build_history  # noqa: E402
from pg_cluster import Cluster, cluster  # noqa: E402
from report import round_robin  # noqa: E402
from run import SHIMLEDGER, as_installed  # noqa: E402
from serve import Serve, handed_over  # noqa: E402

from adapters.event_store import EventStore, store_env  # noqa: E402
from domain.task import Task  # noqa: E402
from domain.values import Cause  # noqa: E402

WRITERS = 8
# Aggregates per save while building: 2,500 (SQLite's) stalls in psycopg's pipeline sync
# here (no CPU on either side; not looked into further), a few hundred do not.
PG_BATCH = 250
RAW_TABLE = "raw_events"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def connect(url: str) -> Any:
    import psycopg

    env = store_env(url, Path("/nonexistent"))
    return psycopg.connect(dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"],
                           user=env["POSTGRES_USER"], autocommit=True)  # fmt: skip


def lifecycles(url: str, tasks: int, tag: str) -> None:
    async def go() -> None:
        store = EventStore(store_env(url, Path("/nonexistent")))
        try:
            await append_lifecycles(store, tasks, tag)
        finally:
            await store.aclose()

    asyncio.run(go())


def stored_rows(url: str, count: int) -> list[tuple[str, int, str, bytes]]:
    with connect(url) as db:
        return [(str(o), int(v), str(t), bytes(s)) for o, v, t, s in db.execute(
            "SELECT originator_id, originator_version, topic, state FROM shimledger_events "
            "ORDER BY notification_id DESC LIMIT %s", (count,)).fetchall()]  # fmt: skip


def raw_table(url: str) -> None:
    with connect(url) as db:
        db.execute(f"CREATE TABLE IF NOT EXISTS {RAW_TABLE} (originator_id uuid NOT NULL, "
                   "originator_version bigint NOT NULL, topic text, state bytea, "
                   "notification_id bigserial, PRIMARY KEY (originator_id, originator_version))")  # fmt: skip  # noqa: E501


def raw_append(url: str, rows: list[tuple[str, int, str, bytes]]) -> None:
    """The same rows, one transaction (an autocommit INSERT) each, under fresh ids."""
    fresh: dict[str, uuid.UUID] = {}
    with connect(url) as db:
        for originator, version, topic, state in rows:
            new = fresh.setdefault(originator, uuid.uuid4())
            db.execute(f"INSERT INTO {RAW_TABLE} VALUES (%s, %s, %s, %s)",
                       (new, version, topic, state))  # fmt: skip


def bench_append(url: str, runs: int, tasks: int) -> None:
    lifecycles(url, tasks, "warm")
    rows = stored_rows(url, tasks * 4)[::-1]
    raw_table(url)
    counter = iter(range(1_000_000))
    medians = round_robin({
        "eventsourcing": lambda: lifecycles(url, tasks, f"a{next(counter)}"),
        "raw": lambda: raw_append(url, rows),
    }, runs)  # fmt: skip
    events = tasks * 4
    ours, raw = events / medians["eventsourcing"], events / medians["raw"]
    print(f"append, one save per step ({events} events): {ours:,.0f} ev/s; raw psycopg, "
          f"txn/row: {raw:,.0f} ev/s; ratio {ours / raw:.2f}", flush=True)  # fmt: skip


WORKER = """
import asyncio, sys
sys.path[:0] = [{root!r}, {bench!r}]
import postgres
kind, url, tasks, tag = sys.argv[1:]
asyncio.run(postgres.worker(kind, url, int(tasks), tag))
"""


async def worker(kind: str, url: str, tasks: int, tag: str) -> None:
    """One of the parallel writers: set up (the store opened, its schema looked at: all at
    once, as the store's schema step runs under an advisory lock), say ready, wait for go,
    append."""
    store = EventStore(store_env(url, Path("/nonexistent")))
    rows = stored_rows(url, tasks * 4)[::-1] if kind == "raw" else []
    await store.head()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    if kind == "raw":
        await asyncio.to_thread(raw_append, url, rows)
    else:
        await append_lifecycles(store, tasks, tag)
    await store.aclose()
    print("done", flush=True)


def parallel(kind: str, url: str, tasks: int, tag: str) -> float:
    """Wall time of WRITERS processes appending at once, from a common start."""
    code = WORKER.format(root=str(ROOT), bench=str(ROOT / "bench"))
    workers: list[subprocess.Popen[str]] = []
    try:
        for i in range(WRITERS):
            workers.append(subprocess.Popen(
                [sys.executable, "-c", code, kind, url, str(tasks), f"{tag}{i}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))  # fmt: skip
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "done"
        return time.perf_counter() - start
    finally:
        for process in workers:
            if process.wait(timeout=600) != 0:
                raise SystemExit(f"a {kind} writer failed")


def bench_writers(url: str, runs: int, tasks: int) -> None:
    raw_table(url)  # the store's own schema: made by the first round's 8 writers at once
    samples: dict[str, list[float]] = {"eventsourcing": [], "raw": []}
    for n in range(runs):
        samples["eventsourcing"].append(parallel("es", url, tasks, f"w{n}-"))
        samples["raw"].append(parallel("raw", url, tasks, ""))
    events = WRITERS * tasks * 4
    ours = events / statistics.median(samples["eventsourcing"])
    raw = events / statistics.median(samples["raw"])
    print(f"{WRITERS} writers at once ({events} events): {ours:,.0f} ev/s; {WRITERS} raw "
          f"psycopg writers: {raw:,.0f} ev/s; ratio {ours / raw:.2f}", flush=True)  # fmt: skip


def cli_env(work: Path, store: str | None) -> dict[str, str]:
    env = dict(os.environ, SHIMLEDGER_ROOT=str(work / "root"), SHIMLEDGER_STATE=str(work / "st"))
    env.pop("SHIMLEDGER_STORE", None)
    return {**env, "SHIMLEDGER_STORE": store} if store else env


def run_ok(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"{argv[1:]} failed: {done.stderr.decode()}")


def bench_startup(url: str, work: Path, runs: int) -> None:
    pg, lite = cli_env(work / "pg", url), cli_env(work / "lite", None)
    medians = round_robin({
        "postgresql": lambda: run_ok([SHIMLEDGER, "list"], pg),
        "sqlite": lambda: run_ok([SHIMLEDGER, "list"], lite),
        "python": lambda: run_ok([sys.executable, "-c", "pass"], lite),
    }, runs)  # fmt: skip
    print(f"`list` start-up: PostgreSQL {medians['postgresql'] * 1000:.0f} ms, SQLite "
          f"{medians['sqlite'] * 1000:.0f} ms (python -c pass {medians['python'] * 1000:.0f}"
          f" ms); ratio {medians['postgresql'] / medians['sqlite']:.2f}", flush=True)  # fmt: skip


def bench_served_startup(url: str, work: Path, runs: int) -> None:
    pg, lite = cli_env(work / "pg", url), cli_env(work / "lite", None)
    work.mkdir(parents=True, exist_ok=True)
    with Serve(pg, work / "serve-pg.log"), Serve(lite, work / "serve-lite.log"):
        handed_over(pg)
        handed_over(lite)
        medians = round_robin({
            "postgresql": lambda: run_ok([SHIMLEDGER, "list"], pg),
            "sqlite": lambda: run_ok([SHIMLEDGER, "list"], lite),
        }, runs)  # fmt: skip
    print(f"`list` through serve: PostgreSQL {medians['postgresql'] * 1000:.1f} ms, SQLite "
          f"{medians['sqlite'] * 1000:.1f} ms; ratio "
          f"{medians['postgresql'] / medians['sqlite']:.2f}", flush=True)  # fmt: skip


class Follower:
    """``events --follow --json`` in its own process, its lines read into a queue."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([SHIMLEDGER, "events", "--follow", "--json"], env=env,
                                        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                        text=True)  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def until(self, task_id: str) -> None:
        while json.loads(self.lines.get(timeout=60))["id"] != task_id:
            pass

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def bench_follow(url: str, work: Path, runs: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    stores = {"LISTEN/NOTIFY (PostgreSQL)": url, "polling (SQLite)": f"sqlite:///{work}/follow.db"}

    async def go() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {name: [] for name in stores}
        opened = {name: EventStore(store_env(s, work / "x")) for name, s in stores.items()}
        followers = {name: Follower(cli_env(work / "f", s)) for name, s in stores.items()}
        cause = Cause(kind="cli", user="root", uid=0, pid=1, command="bench", host="h")
        try:
            for n in range(runs + 1):  # the first round is the warm-up: followers ready
                for name, store in opened.items():
                    task = Task(namespace=NAMESPACE, task_id=f"f{n}", incarnation=1,
                                bundle="/b", pid=1, runtime="r", node="n", state_dir="",
                                cause=cause)  # fmt: skip
                    start = time.perf_counter()
                    await store.save(task)
                    await asyncio.to_thread(followers[name].until, f"f{n}")
                    if n:
                        samples[name].append(time.perf_counter() - start)
        finally:
            for follower in followers.values():
                follower.stop()
            for store in opened.values():
                await store.aclose()
        return samples

    samples = asyncio.run(go())
    medians = {name: statistics.median(values) for name, values in samples.items()}
    pushed, polled = medians.values()
    print("follow, append to printed line: " + ", ".join(
        f"{name} {value * 1000:.1f} ms" for name, value in medians.items()
    ) + f"; ratio {pushed / polled:.2f}", flush=True)  # fmt: skip


def bench_history(pg: Cluster, work: Path, large: int, runs: int) -> None:
    urls = {}
    for events in (10_000, large):
        url = urls[events] = pg.database(f"history_{events}")
        start = time.perf_counter()
        head = build_history(work / f"h{events}", events, store_env(url, work), PG_BATCH)
        print(f"  built {head:,} events on PostgreSQL in {time.perf_counter() - start:.0f} s",
              flush=True)  # fmt: skip

    def in_process(url: str) -> Callable[[], None]:
        def call() -> None:
            async def go() -> None:
                store = EventStore(store_env(url, work))
                await store.history(NAMESPACE, TARGET)  # the first call opens the store
                start = time.perf_counter()
                await store.history(NAMESPACE, TARGET)
                timings.setdefault(url, []).append(time.perf_counter() - start)
                await store.aclose()

            asyncio.run(go())

        return call

    timings: dict[str, list[float]] = {}
    contenders: dict[str, Callable[[], None]] = {}
    for events, url in urls.items():
        env = cli_env(work / f"h{events}", url)
        contenders[f"{events}"] = lambda env=env: run_ok([SHIMLEDGER, "history", TARGET], env)  # type: ignore[misc]
        contenders[f"{events} in process"] = in_process(url)
    medians = round_robin(contenders, runs)
    small, big = (f"{n}" for n in urls)
    print(f"`history ID`, whole process: {int(small):,} events {medians[small] * 1000:.0f} ms, "
          f"{int(big):,} events {medians[big] * 1000:.0f} ms; ratio "
          f"{medians[big] / medians[small]:.2f}", flush=True)  # fmt: skip
    calls = {url: statistics.median(values) for url, values in timings.items()}
    a, b = (calls[urls[n]] for n in urls)
    print(f"`history ID`, the store's call in process: {a * 1000:.1f} ms, {b * 1000:.1f} ms; "
          f"ratio {b / a:.2f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tasks", type=int, default=100, help="lifecycles per append sample")
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["startup"], help="only the start-up figures")
    args = parser.parse_args()
    as_installed()
    print(f"{os.cpu_count()} cores, {load()}; medians of {args.runs}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sl-pgbench-") as tmp, cluster() as pg:
        work = Path(tmp)
        if args.only is None:
            bench_append(pg.database("append"), args.runs, args.tasks)
            bench_writers(pg.database("writers"), max(3, args.runs // 2), args.tasks // 4)
        bench_startup(pg.database("startup"), work / "s", args.runs * 2)
        bench_served_startup(pg.database("served"), work / "v", args.runs * 5)
        if args.only is None:
            bench_follow(pg.database("follow"), work / "f", args.runs * 3)
            bench_history(pg, work / "h", args.large, args.runs)
    print(load(), flush=True)


if __name__ == "__main__":
    main()

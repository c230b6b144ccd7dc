#!/usr/bin/env python3
"""A fleet on one PostgreSQL store against one node on SQLite: lifecycles per second.

  fleet      8 nodes at once, each its own --root, --state and --node, all on one
             PostgreSQL store (a cluster started here); each node runs M
             ``shimledger run --rm`` of /bin/true one after another
  one node   the same 8 x M lifecycles on ONE node (one root, one state dir) with the
             SQLite store, from 8 parallel clients

The two sides are interleaved across --runs rounds after one unmeasured warm-up round
(schemas made, page cache warm), and reported as medians with the load average: the
machine is shared, so the ratio is what to compare. Every task, shim and the cluster are
cleaned up at the end, also on failure (through the task manager, as the tests do).

    .venv/bin/python bench/fleet.py [--runs R] [--tasks M]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

from busybox_bundle import make_bundle  # noqa: E402
from pg_cluster import cluster  # noqa: E402
from run import PATH, SHIMLEDGER, as_installed  # noqa: E402

from cli.settings import Settings  # noqa: E402

NODES = 8


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def node_settings(work: Path, store: str | None, name: str, node: str) -> Settings:
    """Where one node keeps its history and state, as the CLI's options would say."""
    return Settings(root=work / name / "root", state=work / name / "state", store=store,
                    node=node)  # fmt: skip


def cli_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ, PATH=PATH, SHIMLEDGER_ROOT=str(settings.root),
               SHIMLEDGER_STATE=str(settings.state), SHIMLEDGER_NODE=settings.node)  # fmt: skip
    env.pop("SHIMLEDGER_STORE", None)
    return {**env, "SHIMLEDGER_STORE": settings.store} if settings.store else env


def runs_in_turn(settings: Settings, bundle: Path, ids: list[str]) -> None:
    """One client: ``run --rm`` each id, one after another."""
    env = cli_env(settings)
    for task_id in ids:
        done = subprocess.run([SHIMLEDGER, "run", "--rm", "--bundle", str(bundle), task_id],
                              env=env, stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"run {task_id} on node {settings.node} failed "
                             f"({done.returncode}): {done.stderr.decode().strip()}")  # fmt: skip


def side(clients: list[tuple[Settings, list[str]]], bundle: Path) -> float:
    """Wall time of the clients running at once, from a common start to the last exit."""
    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        start = time.perf_counter()
        futures = [pool.submit(runs_in_turn, s, bundle, ids) for s, ids in clients]
        for future in futures:
            future.result()  # the first failure is raised once every client has stopped
        return time.perf_counter() - start


def clean(settings: Settings) -> list[str]:
    """Delete whatever a failed round left on this node; what was left over, if anything."""
    from tests.conftest import teardown  # the suite's cleanup: manager, runc, cgroups, pids

    if not settings.state.exists():
        return []
    return teardown(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured rounds")
    parser.add_argument("--tasks", type=int, default=5, help="lifecycles per node per round")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark runs containers: run it as root")
    as_installed()
    lifecycles = NODES * args.tasks
    print(f"{os.cpu_count()} cores, {load()}; {NODES} x {args.tasks} lifecycles per side, "
          f"medians of {args.runs}", flush=True)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="sl-fleet-", dir="/tmp"))
    nodes: list[Settings] = []
    try:
        bundle = make_bundle(work / "bundle", ["true"])
        with cluster() as pg:
            url = pg.database("fleet")
            fleet = [node_settings(work, url, f"pg{i}", f"node{i}") for i in range(NODES)]
            solo = node_settings(work, None, "lite", "solo")
            nodes = [*fleet, solo]
            try:
                samples: dict[str, list[float]] = {"fleet": [], "one": []}
                for n in range(args.runs + 1):  # round 0 warms up, unmeasured
                    ids = [[f"r{n}-c{c}-{j}" for j in range(args.tasks)] for c in range(NODES)]
                    clients = {"fleet": list(zip(fleet, ids, strict=True)),
                               "one": [(solo, i) for i in ids]}  # fmt: skip
                    # Each round swaps which side goes first, so neither always follows the other.
                    order = ["fleet", "one"] if n % 2 else ["one", "fleet"]
                    took = {name: side(clients[name], bundle) for name in order}
                    if n:
                        for name, seconds in took.items():
                            samples[name].append(seconds)
                        rates = {name: lifecycles / seconds for name, seconds in took.items()}
                        print(f"  round {n}: fleet {rates['fleet']:.2f}/s, one node "
                              f"{rates['one']:.2f}/s; {load()}", flush=True)  # fmt: skip
            finally:
                leftovers = [item for settings in nodes for item in clean(settings)]
                if leftovers:
                    print(f"cleaned up after a failure: {', '.join(leftovers)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fleet_rate = lifecycles / statistics.median(samples["fleet"])
    one_rate = lifecycles / statistics.median(samples["one"])
    print(f"{NODES} nodes on one PostgreSQL: {fleet_rate:.2f} lifecycles/s; one node on "
          f"SQLite, {NODES} clients: {one_rate:.2f} lifecycles/s; ratio "
          f"{fleet_rate / one_rate:.2f}", flush=True)  # fmt: skip
    print(load(), flush=True)


if __name__ == "__main__":
    main()

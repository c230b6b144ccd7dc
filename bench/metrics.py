#!/usr/bin/env python3
"""serve's /metrics at scale: scrape time with N incarnations in the store, as ratios.

Every figure is a median of R runs set against a reference measured in the same run,
interleaved with it (round robin). The machine is shared: absolute times are for scale,
the ratios are what to compare, and the load average is printed. Every ratio is
*reference time / figure time*: higher is better, 1.0 is as fast as the reference.

  scrape      an HTTP GET of a real `shimledger serve --metrics-address 127.0.0.1:0`'s
              /metrics (urllib, a new connection each, as Prometheus scrapes), against
              ``prometheus_client.generate_latest`` of a registry of prometheus_client's
              own Counter/Gauge/Histogram objects holding the same series with the same
              values (and the process collector), in this process; and against that
              registry served over HTTP by prometheus_client's own server in this process
  exposition  ``generate_latest`` of serve's registry (cli/metrics_export.py: the fold's
              snapshot as families) against ``generate_latest`` of the reference, both
              in this process: what our collector adds to the format's own cost

The store is written through eventsourcing directly (bench/history_stores.py's batched
saves), no container run: N incarnations of N/2 IDs over 10 namespaces, each ID created
twice, each run to its exit and deleted (serve would reconcile a stopped one whose bundle
is gone); exit statuses 0, 1, 2, 137 and 143: the series are the same whatever lives.
Also said: how long serve took to be ready over it (its views' first catch-up and the
metrics' first fold of the whole history), and the fold alone.

    .venv/bin/python bench/metrics.py [--incarnations N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import prometheus_client  # noqa: E402
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from adapters.event_store import EventStore, sqlite_env  # noqa: E402
from cli.metrics_export import MetricsFeed, registry_for  # noqa: E402
from domain.task import Task  # noqa: E402
from domain.values import Whose  # noqa: E402
from projections.metrics import LIFETIME_BUCKETS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history_stores import SHIM_EXIT, Clock, cli_cause, save_in_batches  # noqa: E402
from report import Figure, Table, round_robin  # noqa: E402

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
NODE = "bench-node"
NAMESPACES = 10
STATUSES = (0, 1, 2, 137, 143)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text} ({load()})", flush=True)


def build(root: Path, state: Path, incarnations: int) -> int:
    """The store: ``incarnations`` task lives owned by (NODE, state); its head position."""

    def tasks(clock: Clock) -> Iterator[Task]:
        for n in range(incarnations):
            task_id, incarnation = f"t{n // 2:06d}", n % 2 + 1
            cause = cli_cause(task_id, 10_000 + n)
            task = Task(namespace=f"ns{n // 2 % NAMESPACES}", task_id=task_id,
                        incarnation=incarnation, bundle=f"/srv/{task_id}", pid=10_000 + n,
                        runtime="io.containerd.runc.v2", node=NODE, state_dir=str(state),
                        cause=cause)  # fmt: skip
            task.start(10_000 + n, cause)
            task.record_exit(STATUSES[n % len(STATUSES)], clock.now, SHIM_EXIT)
            task.delete(cause)  # a stopped one would be reconciled (Deleted) by serve's start
            yield task

    return save_in_batches(root, incarnations * 4, tasks)


class Serve:
    """A real serve with metrics over the store; its URL from the line it says."""

    def __init__(self, root: Path, state: Path, log: Path) -> None:
        env = dict(os.environ, SHIMLEDGER_ROOT=str(root), SHIMLEDGER_STATE=str(state),
                   SHIMLEDGER_NODE=NODE, SHIMLEDGER_NAMESPACE="ns0")  # fmt: skip
        self.log = log
        start = time.perf_counter()
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [SHIMLEDGER, "serve", "--checkpoint-interval", "0",
                 "--metrics-address", "127.0.0.1:0"], env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        while b"commands on" not in log.read_bytes():
            if self.process.poll() is not None or time.perf_counter() - start > 600:
                raise SystemExit(f"serve did not start: {log.read_text()}")
            time.sleep(0.05)
        self.ready_in = time.perf_counter() - start
        found = re.search(r"metrics on (http://\S+)", log.read_text())
        assert found, log.read_text()
        self.url = found.group(1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


def reference_registry(text: str) -> CollectorRegistry:
    """prometheus_client's own metric objects holding what ``text`` holds (the process
    collector's series come from the reference's own process collector)."""
    registry = CollectorRegistry()
    prometheus_client.ProcessCollector(registry=registry)
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("shimledger_"):
            continue
        labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
        if family.type == "histogram":
            histogram = Histogram(family.name, family.documentation, labels,
                                  registry=registry, buckets=LIFETIME_BUCKETS)  # fmt: skip
            for s in family.samples:
                if s.name.endswith("_count") and s.value:
                    histogram.labels(*(s.labels[k] for k in labels)).observe(1.0)
                elif s.name.endswith("_count"):
                    histogram.labels(*(s.labels[k] for k in labels))
            continue
        kind = Counter if family.type == "counter" else Gauge
        metric = kind(family.name, family.documentation, labels, registry=registry)
        for s in family.samples:
            child = metric.labels(*(s.labels[k] for k in labels)) if labels else metric
            if isinstance(child, Counter):
                child.inc(s.value)
            else:
                child.set(s.value)
    return registry


def samples(text: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text))


async def folded(root: Path, state: Path) -> tuple[MetricsFeed, float, int]:
    """The feed after one refresh over the whole store, its time, and the events read."""
    store = EventStore(sqlite_env(root))
    try:
        feed = MetricsFeed(Whose(NODE, str(state)))
        start = time.perf_counter()
        await feed.refresh(store, {})
        seconds = time.perf_counter() - start
        assert feed.snapshot is not None
        return feed, seconds, feed.snapshot.position
    finally:
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--incarnations", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=101, help="runs per median")
    args = parser.parse_args()
    prometheus_client.disable_created_metrics()  # ours has no _created series either
    table = Table()
    started = time.perf_counter()
    load_before = load()
    work = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    state = Path(tempfile.mkdtemp(prefix="sl-bm-", dir="/tmp"))
    try:
        root = work / "root"
        say(f"writing {args.incarnations:,} incarnations through the store")
        head = build(root, state, args.incarnations)
        say(f"  {head:,} events")
        serve = Serve(root, state, work / "serve.log")
        try:
            say(f"  serve ready in {serve.ready_in:.2f}s (views' first catch-up, first fold)")
            ours = get(serve.url)
            reference = reference_registry(ours)
            theirs = prometheus_client.generate_latest(reference).decode()
            size = f"{args.incarnations:,} incarnations, {samples(ours)} samples"
            if samples(ours) != samples(theirs):
                raise SystemExit(f"not the same series: {samples(ours)} != {samples(theirs)}")
            server, thread = prometheus_client.start_http_server(0, "127.0.0.1", reference)
            their_url = f"http://127.0.0.1:{server.server_port}/metrics"
            feed, fold_seconds, position = asyncio.run(folded(root, state))
            in_process = registry_for(feed)
            medians = round_robin(
                {
                    "scrape": lambda: get(serve.url),
                    "reference": lambda: prometheus_client.generate_latest(reference),
                    "reference over HTTP": lambda: get(their_url),
                    "exposition": lambda: prometheus_client.generate_latest(in_process),
                },
                args.runs,
            )
            server.shutdown()
            server.server_close()
            thread.join()
        finally:
            serve.stop()
        table.add(Figure("scrape /metrics (HTTP)", size, medians["scrape"],
                         "generate_latest", medians["reference"]))  # fmt: skip
        table.add(Figure("scrape /metrics (HTTP)", size, medians["scrape"],
                         "prometheus_client's server", medians["reference over HTTP"]))  # fmt: skip
        table.add(Figure("exposition, in process", size, medians["exposition"],
                         "generate_latest", medians["reference"]))  # fmt: skip
        table.note(f"serve ready over the store in {serve.ready_in:.2f}s; the fold alone "
                   f"read {position:,} events in {fold_seconds:.2f}s "
                   f"({position / fold_seconds:,.0f} ev/s)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    table.print_closing(args.runs, load_before, load(), started)


if __name__ == "__main__":
    main()

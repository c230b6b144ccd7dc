#!/usr/bin/env python3
"""Many tasks at once: shimledger's one TaskManager against containerd driven by ctr.

Both sides run the same containerd-shim-runc-v2 and runc on the same busybox rootfs; what
differs is what drives the shims: one Python process (asyncio, SQLite history) or the
containerd daemon with its ctr clients. Measured in one run, medians of --runs rounds,
with the two sides taking turns at going first:

  throughput  --tasks lifecycles of /bin/true (create, start, wait, delete), all at once
              through one TaskManager on one event loop, against as many `ctr run --rm`
              from --clients parallel clients to a containerd started here.
  memory      the manager process holding --tasks sleeping tasks, against the containerd
              daemon holding the same: peak (VmHWM) and current (VmRSS) from /proc. The
              shims are the same binary on both sides and are summed apart (RSS, and PSS,
              which counts the pages they share once).

    .venv/bin/python bench/concurrency.py [--runs N] [--tasks 64] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import PATH, SHIMLEDGER, as_installed, containerd, make_bundle  # noqa: E402
from cli.bootstrap import Settings, bootstrap  # noqa: E402
from shim.lifecycle.task_manager import TaskManager  # noqa: E402

SHIM = "containerd-shim-runc-v2"


# --- /proc ---------------------------------------------------------------------------------


def status_kb(pid: int, field: str) -> int:
    """A ``Vm*`` line of /proc/PID/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes sharing them."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def shims_in(directory: Path) -> list[int]:
    """Pids of the shims working in ``directory`` (each shim's cwd is its task's bundle)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            exe = os.readlink(proc / "exe")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if Path(exe).name == SHIM and cwd.startswith(f"{directory}/"):
            found.append(int(proc.name))
    return found


def daemon_pid(config: Path) -> int:
    """The containerd that bench.run.containerd started with ``config``."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config).encode() in argv and Path(argv[0].decode()).name == "containerd":
            return int(proc.name)
    raise SystemExit(f"no containerd running with {config}")


@dataclass
class Holding:
    """Memory of one side holding its live tasks, in kB."""

    idle_rss: int  # the driving process before any task
    rss: int  # ... while holding them
    hwm: int  # ... its peak so far
    shims: int  # how many shims
    shim_rss: int  # their RSS, summed
    shim_pss: int  # their PSS, summed


def shim_figures(directory: Path) -> tuple[int, int, int]:
    pids = shims_in(directory)
    return (len(pids), sum(status_kb(p, "VmRSS") for p in pids), sum(pss_kb(p) for p in pids))


# --- shimledger: the worker process that is "the manager process" ------------------------


async def lifecycle(tasks: TaskManager, task_id: str, bundle: Path) -> int:
    await tasks.create(task_id, bundle)
    await tasks.start(task_id)
    status = (await tasks.wait(task_id)).status
    await tasks.delete(task_id)
    return status


def failures(ids: list[str], outcomes: list[object]) -> str:
    bad = [
        f"{i}: {o!r}" for i, o in zip(ids, outcomes, strict=True) if isinstance(o, BaseException)
    ]
    return f"{len(bad)} of {len(ids)} failed, e.g. {bad[0]}" if bad else ""


async def work(mode: str, root: Path, state: Path, bundle: Path, ids: list[str]) -> None:
    """Run in the worker: time the lifecycles, or hold the tasks until told to let go."""
    async with bootstrap(Settings(root=root, state=state, namespace="bench")) as tasks:
        if mode == "lifecycles":
            began = time.perf_counter()
            outcomes = await asyncio.gather(
                *(lifecycle(tasks, i, bundle) for i in ids), return_exceptions=True
            )
            elapsed = time.perf_counter() - began
            if problem := failures(ids, outcomes):
                raise SystemExit(f"lifecycles: {problem}")
            print(json.dumps({"seconds": elapsed}), flush=True)
            return
        idle = status_kb(os.getpid(), "VmRSS")

        async def up(task_id: str) -> None:
            await tasks.create(task_id, bundle)
            await tasks.start(task_id)

        outcomes = await asyncio.gather(*(up(i) for i in ids), return_exceptions=True)
        try:
            if problem := failures(ids, outcomes):
                raise SystemExit(f"hold: {problem}")
            me = os.getpid()
            figures = {"idle_rss": idle, "rss": status_kb(me, "VmRSS"),
                       "hwm": status_kb(me, "VmHWM")}  # fmt: skip
            print(json.dumps(figures), flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # the parent has measured the shims
        finally:
            await asyncio.gather(
                *(tasks.delete(i, force=True) for i in ids), return_exceptions=True
            )


def worker(mode: str, root: Path, state: Path, bundle: Path, ids: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", mode, "--root", str(root), "--state", str(state),
         "--bundle", str(bundle), *ids],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PATH=PATH),
    )  # fmt: skip


def finish(process: subprocess.Popen, what: str) -> None:
    if process.wait(timeout=300) != 0:
        raise SystemExit(f"the shimledger {what} worker failed (exit {process.returncode})")


def shimledger_lifecycles(root: Path, state: Path, bundle: Path, ids: list[str]) -> float:
    process = worker("lifecycles", root, state, bundle, ids)
    out, _ = process.communicate(timeout=300)
    finish(process, "lifecycles")
    return float(json.loads(out)["seconds"])


def shimledger_holding(root: Path, state: Path, bundle: Path, ids: list[str]) -> Holding:
    process = worker("hold", root, state, bundle, ids)
    try:
        assert process.stdout is not None and process.stdin is not None
        line = process.stdout.readline()
        if not line:
            raise SystemExit("the shimledger hold worker failed before holding its tasks")
        own = json.loads(line)
        holding = Holding(own["idle_rss"], own["rss"], own["hwm"], *shim_figures(state))
        process.stdin.write("\n")
        process.stdin.flush()
        finish(process, "hold")
        return holding
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            subprocess.run([SHIMLEDGER, "--root", str(root), "--state", str(state),
                            "-n", "bench", "delete", "-f", *ids],
                           capture_output=True, env=dict(os.environ, PATH=PATH))  # fmt: skip


# --- containerd and ctr ---------------------------------------------------------------------


def ctr(address: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ctr", "--address", address, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, env=dict(os.environ, PATH=PATH))  # fmt: skip


def checked(result: subprocess.CompletedProcess[bytes]) -> None:
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, result.args))}: {result.stderr.decode().strip()}")


def in_parallel(clients: int, ids: list[str], argv: list[str]) -> None:
    """``ctr ARGV... ID`` for each ID, ``clients`` at a time; ``{id}`` in argv is replaced."""
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(lambda i: ctr(*[a.replace("{id}", i) for a in argv]), ids))
    for result in results:
        checked(result)


def ctr_lifecycles(address: str, rootfs: Path, ids: list[str], clients: int) -> float:
    began = time.perf_counter()
    in_parallel(clients, ids, [address, "run", "--rm", "--rootfs", str(rootfs), "{id}",
                               "/bin/true"])  # fmt: skip
    return time.perf_counter() - began


@contextmanager
def ctr_tasks(address: str, rootfs: Path, ids: list[str], clients: int) -> Iterator[None]:
    """``ids`` sleeping in containerd; removed afterwards (a stopped containerd keeps them)."""
    try:
        in_parallel(clients, ids, [address, "run", "-d", "--rootfs", str(rootfs), "{id}",
                                   "/bin/sleep", "300"])  # fmt: skip
        yield
    finally:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(lambda i: (ctr(address, "task", "rm", "-f", i),
                                     ctr(address, "container", "rm", i)), ids))  # fmt: skip


def containerd_holding(work: Path, rootfs: Path, ids: list[str], clients: int) -> Holding:
    with containerd(work) as address:
        pid = daemon_pid(work / "config.toml")
        idle = status_kb(pid, "VmRSS")
        with ctr_tasks(address, rootfs, ids, clients):
            return Holding(idle, status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM"),
                           *shim_figures(work / "state"))  # fmt: skip


# --- the report -----------------------------------------------------------------------------


def mb(kb: float) -> str:
    return f"{kb / 1024:7.1f} MB"


def median_holding(rounds: list[Holding]) -> Holding:
    fields = Holding.__dataclass_fields__
    return Holding(**{f: int(statistics.median(getattr(h, f) for h in rounds)) for f in fields})


def report(args: argparse.Namespace, ours_s: list[float], ctr_s: list[float],
           ours_m: list[Holding], ctr_m: list[Holding]) -> None:  # fmt: skip
    n = args.tasks
    ours, theirs = statistics.median(ours_s), statistics.median(ctr_s)
    print(f"\n{n} lifecycles of /bin/true at once, median of {args.runs} rounds, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"  {'contender':44} {'wall':>8} {'containers/s':>13} {'x ctr':>7}")
    for name, value in ((f"shimledger, one TaskManager, {n} at once", ours),
                        (f"ctr run --rm, {args.clients} parallel clients", theirs)):  # fmt: skip
        print(f"  {name:44} {value:7.2f}s {n / value:13.1f} {(n / value) / (n / theirs):7.2f}")

    mine, daemon = median_holding(ours_m), median_holding(ctr_m)
    print(f"\nholding {n} sleeping tasks, median of {args.runs} rounds")
    print(f"  {'process':30} {'idle RSS':>10} {'RSS':>10} {'peak (HWM)':>10} {'x containerd':>13}")
    for name, h in (("shimledger manager (Python)", mine), ("containerd daemon", daemon)):
        print(f"  {name:30} {mb(h.idle_rss)} {mb(h.rss)} {mb(h.hwm)} "
              f"{h.hwm / daemon.hwm:13.2f}")  # fmt: skip
    print(f"  per task, above idle: shimledger {(mine.rss - mine.idle_rss) / n:.0f} kB, "
          f"containerd {(daemon.rss - daemon.idle_rss) / n:.0f} kB")  # fmt: skip
    print(f"\n  shims (same binary both sides)  {'count':>5} {'RSS sum':>10} {'PSS sum':>10}")
    for name, h in (("under shimledger", mine), ("under containerd", daemon)):
        print(f"  {name:32} {h.shims:5d} {mb(h.shim_rss)} {mb(h.shim_pss)}")


def turns(round_: int) -> tuple[str, str]:
    """Who goes first this round: the sides take turns, so that drift hits both alike."""
    return ("shimledger", "ctr") if round_ % 2 == 0 else ("ctr", "shimledger")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--worker", choices=["lifecycles", "hold"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("ids", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(work(args.worker, args.root, args.state, args.bundle, args.ids))
        return
    if os.geteuid() != 0:
        raise SystemExit("the benchmark runs containers: run it as root")
    as_installed()

    work_dir = Path(tempfile.mkdtemp(prefix="sl-bc-", dir="/tmp"))  # short: socket paths
    try:
        true = make_bundle(work_dir / "true", ["true"])
        sleep = make_bundle(work_dir / "sleep", ["sleep", "300"], rootfs=true / "rootfs")
        rootfs = true / "rootfs"
        root, state = work_dir / "root", work_dir / "st"

        def ids(prefix: str) -> list[str]:
            return [f"{prefix}-{n}" for n in range(args.tasks)]

        ours_s: list[float] = []
        ctr_s: list[float] = []
        with containerd(work_dir / "ctd") as address:
            # Warm-up, unmeasured: page cache, imports, containerd's first container.
            shimledger_lifecycles(root, state, true, ids("warm"))
            ctr_lifecycles(address, rootfs, ids("warm"), args.clients)
            for r in range(args.runs):
                for side in turns(r):
                    if side == "shimledger":
                        ours_s.append(shimledger_lifecycles(root, state, true, ids(f"s{r}")))
                    else:
                        ctr_s.append(ctr_lifecycles(address, rootfs, ids(f"c{r}"), args.clients))
                print(f"  round {r + 1}: shimledger {ours_s[-1]:.2f}s, ctr {ctr_s[-1]:.2f}s",
                      flush=True)  # fmt: skip

        ours_m: list[Holding] = []
        ctr_m: list[Holding] = []
        for r in range(args.runs):
            for side in turns(r):
                if side == "shimledger":
                    ours_m.append(shimledger_holding(root, state, sleep, ids(f"h{r}")))
                else:  # a fresh daemon each round, so that its peak is this round's
                    ctr_m.append(containerd_holding(work_dir / f"ctd-m{r}", rootfs,
                                                    ids(f"h{r}"), args.clients))  # fmt: skip
            print(f"  memory round {r + 1}: shimledger peak {mb(ours_m[-1].hwm)}, "
                  f"containerd peak {mb(ctr_m[-1].hwm)}", flush=True)  # fmt: skip
        report(args, ours_s, ctr_s, ours_m, ctr_m)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

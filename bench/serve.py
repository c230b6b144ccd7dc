#!/usr/bin/env python3
"""What a running `shimledger serve` buys: the CLI handed over to a warm fork, in ratios.

Without serve, every `shimledger` command starts Python and imports typer, pydantic,
eventsourcing and our modules, several hundred milliseconds before any work (see
bench/startup.py). With serve up for the state dir, cli/launcher.py (stdlib only) hands the
command over <state>/control.sock and serve's command server runs it in a fork that has
imported everything already. This bench says whether that is enough to beat the Go tools
on their own ground, each figure against a reference measured in the same run, interleaved
round-robin (medians; the machine is shared, so the load average is printed too):

  with serve   `run --rm` of /bin/true      against `ctr run --rm` (a containerd started here)
               `list`, `state ID` (running)  against `ctr tasks ls` (one running task)
               `--help`                      against `ctr --help`
  no serve     (SHIMLEDGER_NO_SERVE=1, a state dir that no serve watches)
               `run --rm`                    against `podman run --rm --rootfs` (runc)
               `list`                        against `ctr tasks ls`
  parallel     --lifecycles `run --rm` from --clients CLI clients through serve against as
               many `ctr run --rm` from as many clients: the rate, medians of --rounds
  memory       serve and its command server (RSS summed, and PSS, which counts the pages
               the fork shares once) holding --tasks `run -d` sleepers, against a fresh
               containerd holding as many `ctr run -d`: medians of --rounds

The CLI is timed as a user runs it: the venv's console script, on cached bytecode. A command
server that died (commands then silently run in-process) is counted, and serve restarted.

    .venv/bin/python bench/serve.py [--runs N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent / "scripts"), str(BENCH.parent), str(BENCH)]

import concurrency as conc  # noqa: E402
from busybox_bundle import make_bundle  # noqa: E402
from run import PATH, SHIMLEDGER, as_installed, containerd, timed  # noqa: E402
from startup import TASK_ID, ctr_task, reap_shims, running_task, shimledger_env  # noqa: E402

from cli import handoff  # noqa: E402

# No systemd here (cgroupfs, events to a file); runc, the engine shimledger drives; vfs, as
# --rootfs needs no layers and overlay may not mount on the temporary dir.
Timer = Callable[[], float]  # one run of a contender: its own seconds
PODMAN_GLOBALS = ("--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime=runc",
                  "--storage-driver=vfs")  # fmt: skip


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def phase(name: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {name} (load average {load()})", flush=True)


class Serve:
    """`shimledger serve` for env's state dir, started again whenever its command server has
    died (then commands would silently run in-process), each death counted; stopped (SIGTERM,
    then SIGKILL) however the ``with`` block ends."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.deaths, self.starts = env, log, 0, 0
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Serve:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([SHIMLEDGER, "serve"], env=self.env, stdout=out,
                                            stderr=out, stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while self.log.read_bytes().count(b"commands on") < self.starts:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text()[-2000:]
                raise SystemExit(f"serve did not hand commands over:\n{tail}")
            time.sleep(0.05)

    def processes(self) -> list[int]:
        """serve and its command server (its child running serve's own executable)."""
        assert self.process is not None
        pid = self.process.pid
        exe, found = os.readlink(f"/proc/{pid}/exe"), [pid]
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                if os.readlink(f"/proc/{child}/exe") == exe:
                    found.append(int(child))
            except OSError:
                continue  # a child just ended, or a zombie: a dead command server
        return found

    def answers(self) -> bool:
        """Whether the command server answers on its socket: a request of another version is
        refused by a live one (nothing runs), and a dead one's socket refuses to connect."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        probe.settimeout(10)
        try:
            probe.connect(handoff.control_socket(self.env["SHIMLEDGER_STATE"]))
            handoff.send_request(probe, handoff.Request("probe", [], "/", {}, []))
            return "refused" in (handoff.receive(probe) or {})
        except OSError:
            return False
        finally:
            probe.close()

    def check(self) -> bool:
        """Whether the command server is up; if not, serve is restarted and the death counted."""
        if self.answers():
            return True
        self.deaths += 1
        self.stop()
        self.start()
        return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def handed_over(env: dict[str, str]) -> None:
    """Stop unless commands reach serve: a client that ran the CLI itself imports typer."""
    result = subprocess.run([sys.executable, "-X", "importtime", SHIMLEDGER, "list"], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    if result.returncode != 0 or "typer" in imported:
        raise SystemExit(f"`shimledger list` was not handed to serve: {result.stderr[-2000:]}")


def podman_missing() -> str | None:
    """Why podman cannot be used (after trying to install it), or None if it is there."""
    if shutil.which("podman"):
        return None
    phase("podman missing: apt-get install -y podman")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "podman"]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # a stale package list: update once and try again
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
    if shutil.which("podman"):
        return None
    return f"apt-get install -y podman failed ({result.returncode}): {result.stderr[-300:]}"


def podman_argv(work: Path, rootfs: Path) -> list[str]:
    dirs = [f"--{d}={work / d}" for d in ("root", "runroot", "tmpdir")]
    # podman asks for the largest nofile and nproc, above this machine's hard limits (runc
    # then fails with EPERM); 1024, as the `runc spec` bundles of shimledger and ctr have.
    limits = ["--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024"]
    return ["podman", *dirs, *PODMAN_GLOBALS, "run", "--rm", "--network=none", *limits,
            "--rootfs", str(rootfs), "/bin/true"]  # fmt: skip


def parallel(clients: int, argvs: list[list[str]], env: dict[str, str]) -> float:
    """Wall seconds for all ``argvs``, ``clients`` at a time; stops if any failed."""
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(lambda a: subprocess.run(a, env=env, stdin=subprocess.DEVNULL,
                                                         capture_output=True), argvs))  # fmt: skip
    elapsed = time.perf_counter() - began
    for result in results:
        conc.checked(result)
    return elapsed


@dataclass
class Memory:
    """One side's driving process(es), in kB: idle, and holding the tasks."""

    processes: int
    idle_rss: int
    rss: int
    pss: int
    deaths: int = 0  # of serve's command server while the tasks were started


def figures(pids: list[int]) -> tuple[int, int]:
    return sum(conc.status_kb(p, "VmRSS") for p in pids), sum(conc.pss_kb(p) for p in pids)


def serve_holding(work: Path, bundle: Path, ids: list[str], clients: int) -> Memory:
    """A fresh serve holding ``ids`` (`run -d` through it); all deleted with `delete -f`."""
    env = shimledger_env(work / "root", work / "st")
    work.mkdir(parents=True)
    with Serve(env, work / "serve.log") as serve:
        idle, _ = figures(serve.processes())
        try:
            run = [[SHIMLEDGER, "run", "-d", "--bundle", str(bundle), i] for i in ids]
            parallel(clients, run, env)
            serve.check()  # a command server that died: a new one, as serve would hold it
            pids = serve.processes()
            return Memory(len(pids), idle, *figures(pids), serve.deaths)
        finally:
            delete = subprocess.run([SHIMLEDGER, "delete", "-f", *ids], env=env,
                                    capture_output=True, text=True)  # fmt: skip
            if delete.returncode != 0:
                print(f"warning: shimledger delete -f: {delete.stderr.strip()[-500:]}")
                for root in (work / "st" / "runc").glob("*"):
                    for left in root.iterdir():
                        subprocess.run(["runc", "--root", str(root), "delete", "-f", left.name],
                                       capture_output=True)  # fmt: skip
            reap_shims(work / "st", "shimledger delete -f")


def containerd_holding(work: Path, rootfs: Path, ids: list[str], clients: int) -> Memory:
    """A fresh containerd holding ``ids`` (`ctr run -d`); removed by concurrency.ctr_tasks."""
    with containerd(work) as address:
        pid = conc.daemon_pid(work / "config.toml")
        idle = conc.status_kb(pid, "VmRSS")
        with conc.ctr_tasks(address, rootfs, ids, clients):
            return Memory(1, idle, *figures([pid]))


@dataclass
class Row:
    figure: str
    ours: str
    reference: str
    ratio: float
    target: str  # "<= 0.9", ">= 2"

    def holds(self) -> bool:
        sign, bound = self.target.split()
        return self.ratio <= float(bound) if sign == "<=" else self.ratio >= float(bound)


def timing_rows(m: dict[str, float], podman_why: str | None) -> list[Row]:
    def row(figure: str, ours: str, ref: str, target: str) -> Row:
        mine, theirs = m[ours] * 1000, m[ref] * 1000
        return Row(figure, f"{mine:.1f} ms", f"{ref}: {theirs:.1f} ms", mine / theirs, target)

    rows = [
        row("serve: `run --rm` /bin/true", "run (serve)", "ctr run --rm", "<= 0.9"),
        row("serve: `list`", "list (serve)", "ctr tasks ls", "<= 2"),
        row("serve: `state ID` (running)", "state (serve)", "ctr tasks ls", "<= 2"),
        row("serve: `--help`", "--help (serve)", "ctr --help", "<= 2"),
    ]
    if podman_why is None:
        rows.append(row("no serve: `run --rm` /bin/true", "run (no serve)", "podman run --rm",
                        "<= 1.0"))  # fmt: skip
    rows.append(row("no serve: `list`", "list (no serve)", "ctr tasks ls", "<= 4"))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| figure | shimledger | reference | ratio | target | holds |", "|---" * 6 + "|"]
    lines += [f"| {r.figure} | {r.ours} | {r.reference} | {r.ratio:.2f} | {r.target} | "
              f"{'yes' if r.holds() else '**no**'} |" for r in rows]  # fmt: skip
    return "\n".join(lines)


def interleaved(contenders: dict[str, Timer], runs: int, serve: Serve) -> dict[str, float]:
    """report.round_robin (one warm-up, then medians of ``runs``), with serve's command server
    checked between samples, outside the clock: ``fn`` says its own seconds."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for run in range(runs + 1):
        for name, fn in contenders.items():
            seconds = fn()
            if run:
                samples[name].append(seconds)
            if "(serve)" in name:
                serve.check()
    return {name: statistics.median(values) for name, values in samples.items()}


@dataclass
class Setup:
    work: Path
    true: Path  # bundle of /bin/true
    sleep: Path  # bundle of sleep 1000, on the same rootfs
    served: dict[str, str]  # shimledger's environment for the state dir serve watches
    clients: int


def timings(setup: Setup, serve: Serve, address: str, runs: int, podman: str | None) -> list[Row]:
    rootfs, plain, counter = setup.true / "rootfs", dict(os.environ, PATH=PATH), iter(range(10**6))
    alone = dict(shimledger_env(setup.work / "ns" / "root", setup.work / "ns" / "state"),
                 SHIMLEDGER_NO_SERVE="1")  # fmt: skip

    def sl(argv: list[str], env: dict[str, str]) -> Timer:
        return lambda: timed([SHIMLEDGER, *argv], env)

    def sl_run(env: dict[str, str]) -> Timer:
        return lambda: timed([SHIMLEDGER, "run", "--rm", "--bundle", str(setup.true),
                              f"s{next(counter)}"], env)  # fmt: skip

    ctr = ["ctr", "--address", address]
    with running_task(setup.work / "ns", setup.sleep):
        contenders: dict[str, Timer] = {
            "run (serve)": sl_run(setup.served),
            "ctr run --rm": lambda: timed([*ctr, "run", "--rm", "--rootfs", str(rootfs),
                                           f"c{next(counter)}", "/bin/true"], plain),
            "list (serve)": sl(["list"], setup.served),
            "state (serve)": sl(["state", TASK_ID], setup.served),
            "ctr tasks ls": lambda: timed([*ctr, "tasks", "ls"], plain),
            "--help (serve)": sl(["--help"], setup.served),
            "ctr --help": lambda: timed(["ctr", "--help"], plain),
            "run (no serve)": sl_run(alone),
            "list (no serve)": sl(["list"], alone),
        }  # fmt: skip
        if podman is None:
            pm = make_bundle(setup.work / "pm-b", ["true"]) / "rootfs"  # podman writes to it
            argv = podman_argv(setup.work / "pm", pm)
            contenders["podman run --rm"] = lambda: timed(argv, plain)
        phase(f"timing: {len(contenders)} contenders, {runs} interleaved runs")
        medians = interleaved(contenders, runs, serve)
    rss, pss = figures(serve.processes())
    phase(f"timing done; serve (and its command server) that ran them: RSS {rss / 1024:.1f} MB,"
          f" PSS {pss / 1024:.1f} MB; its command server died {serve.deaths} times")  # fmt: skip
    return timing_rows(medians, podman)


def lifecycles(setup: Setup, serve: Serve, address: str, n: int, rounds: int) -> Row:
    phase(f"parallel: {n} lifecycles from {setup.clients} clients, {rounds} rounds")
    ours: list[float] = []
    theirs: list[float] = []
    died = 0
    for r in range(rounds):
        ids = [f"p{r}-{i}" for i in range(n)]
        for side in conc.turns(r):
            if side == "shimledger":
                run = [[SHIMLEDGER, "run", "--rm", "--bundle", str(setup.true), i] for i in ids]
                ours.append(parallel(setup.clients, run, setup.served))
                died += not serve.check()
            else:
                rootfs = setup.true / "rootfs"
                theirs.append(conc.ctr_lifecycles(address, rootfs, ids, setup.clients))
        print(f"  round {r + 1}: shimledger {ours[-1]:.2f}s, ctr {theirs[-1]:.2f}s, command "
              f"server died in {died} round(s) so far (load {load()})", flush=True)  # fmt: skip
    wall, ref = statistics.median(ours), statistics.median(theirs)
    note = f"; command server died in {died} of {rounds} rounds" if died else ""
    return Row(f"{n} `run --rm`, {setup.clients} clients, through serve{note}",
               f"{n / wall:.1f} /s ({wall:.2f} s)",
               f"ctr run --rm: {n / ref:.1f} /s ({ref:.2f} s)", ref / wall, ">= 2")  # fmt: skip


def memory(setup: Setup, k: int, rounds: int) -> list[Row]:
    phase(f"memory: {k} tasks held, {rounds} rounds, a fresh serve/containerd each")
    mine: list[Memory] = []
    daemon: list[Memory] = []
    for r in range(rounds):
        ids = [f"m{r}-{i}" for i in range(k)]
        for side in conc.turns(r):
            if side == "shimledger":
                mine.append(serve_holding(setup.work / f"m{r}", setup.sleep, ids, setup.clients))
            else:
                daemon.append(containerd_holding(setup.work / f"cm{r}", setup.true / "rootfs",
                                                 ids, setup.clients))  # fmt: skip
        print(f"  round {r + 1}: serve {mine[-1]}, containerd {daemon[-1]}", flush=True)
    s, c = (Memory(*(int(statistics.median(getattr(m, f) for m in side))
                     for f in Memory.__dataclass_fields__))
            for side in (mine, daemon))  # fmt: skip
    print(
        f"  idle RSS: serve {s.idle_rss / 1024:.1f} MB, containerd {c.idle_rss / 1024:.1f} MB;"
        f" command server deaths while starting tasks: {sum(m.deaths for m in mine)}"
    )
    return [Row(f"{what} holding {k} tasks (serve: {s.processes} processes summed)",
                f"{a / 1024:.1f} MB", f"containerd: {b / 1024:.1f} MB", a / b, "<= 0.5")
            for what, a, b in (("RSS", s.rss, c.rss), ("PSS", s.pss, c.pss))]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs per timing median")
    parser.add_argument("--rounds", type=int, default=3, help="parallel and memory rounds")
    parser.add_argument("--lifecycles", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=20, help="tasks held for memory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark runs containers: run it as root")
    as_installed()
    started = time.perf_counter()
    phase(f"shimledger serve bench, {os.cpu_count()} cores")
    podman = podman_missing()
    if podman:
        print(f"podman: not measured: {podman}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="sl-bs-", dir="/tmp"))  # short: socket paths
    try:
        true = make_bundle(work / "true", ["true"])
        sleep = make_bundle(work / "sleep", ["sleep", "1000"], rootfs=true / "rootfs")
        served = shimledger_env(work / "sv" / "root", work / "sv" / "state")
        setup = Setup(work, true, sleep, served, args.clients)
        with ExitStack() as stack:
            serve = stack.enter_context(Serve(served, work / "serve.log"))
            handed_over(served)
            stack.enter_context(running_task(work / "sv", sleep))
            address = stack.enter_context(containerd(work / "ctd"))
            stack.enter_context(ctr_task(address, true / "rootfs"))
            rows = timings(setup, serve, address, args.runs, podman)
            rows.append(lifecycles(setup, serve, address, args.lifecycles, args.rounds))
        rows += memory(setup, args.tasks, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmedians: timings of {args.runs} interleaved runs (one warm-up), parallel and "
          f"memory of {args.rounds} rounds; {os.cpu_count()} cores; load average at the end "
          f"{load()}; {time.perf_counter() - started:.0f} s in all")  # fmt: skip
    if podman:
        print(f"podman run --rm: not measured ({podman})")
    print(markdown(rows))
    print(f"\ntargets held: {sum(r.holds() for r in rows)} of {len(rows)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Start-up speed: whole-process wall time of the quick commands, as ratios in one run.

A CLI is judged by how fast it answers. Each contender is a whole process, timed from
fork to exit, interleaved round-robin with the others so that noise hits them alike, and
reported as a median (the machine is shared). The references are measured in the same run:

  python -c pass        the interpreter floor: the venv's own python, site and .pth included
  runc list             runc's root holding the one running container below (and empty)
  ctr tasks ls          a private containerd started here, its namespace holding one
                        running task (and an empty namespace)

against shimledger as a user runs it (the venv's console script):

  --help                typer's help, nothing run; piped (plain text), and on a
                        pseudo-terminal, where typer draws it with rich
  list                  an empty store, and a store of N stopped tasks (built through
                        eventsourcing, not by running containers: no shim is contacted)
  state ID              one running busybox task, made for the bench and deleted after:
                        reconciliation asks its shim (State RPC) before answering
  history ID            that task's history (Created, Started): the event store only

Then, for each shimledger command, which imports dominate: ``-X importtime`` run a few
times, the median per module, the top 10 by cumulative time with who imported each, and
self time summed by top-level package.

What it finds (typer 0.29, pydantic 2.14, eventsourcing 9.5.6, protobuf 7.36, the tree as of
this writing): `--help` piped costs ~5x the interpreter floor, half of it typer and asyncio
(imported at module level by cli/, unused by help); on a terminal, typer's rich help adds
~70 ms (rich.markdown, markdown_it, pygments). `list`, `state` and `history` cost ~14x the
floor, about 80% of it imports, nearly all needed by any command that reads the store:
asyncio, pydantic (typer's own parameter coercion imports it too), eventsourcing and the
Task aggregate (~110 dataclasses are generated at import, ~45 ms), protobuf for the event
sink. `history` also imports the whole shim stack through cli.bootstrap, which it does not
use. runc list and ctr tasks ls, Go binaries, answer in 5-10 ms: below the interpreter floor.

    .venv/bin/python bench/startup.py [--runs N] [--tasks N] [--import-runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pty
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent / "scripts"), str(BENCH.parent), str(BENCH)]

from busybox_bundle import make_bundle  # noqa: E402
from history_stores import NAMESPACE, build_live  # noqa: E402
from report import round_robin  # noqa: E402
from run import PATH, SHIMLEDGER, as_installed, containerd, timed  # noqa: E402

TASK_ID = "bench-startup"  # the running task `state`, `runc list` and `ctr tasks ls` see
PROJECT = ("cli", "domain", "adapters", "shim", "projections")
REFERENCES = ("python -c pass", "runc list (1 container)", "ctr tasks ls (1 task)")


def run_ok(argv: list[str], env: dict[str, str]) -> str:
    """Run a set-up step; its stdout, or the benchmark stops with its stderr."""
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if result.returncode != 0:
        error = result.stderr.decode().strip()
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {error}")
    return result.stdout.decode()


def shimledger_env(root: Path, state: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PATH=PATH,
        SHIMLEDGER_ROOT=str(root),
        SHIMLEDGER_STATE=str(state),
        SHIMLEDGER_NAMESPACE=NAMESPACE,
    )


@contextmanager
def running_task(work: Path, bundle: Path) -> Iterator[dict[str, str]]:
    """One busybox task running through shimledger (`run -d`); force-deleted afterwards."""
    env = shimledger_env(work / "root", work / "state")
    try:
        run_ok([SHIMLEDGER, "run", "-d", "--bundle", str(bundle), TASK_ID], env)
        status = json.loads(run_ok([SHIMLEDGER, "state", TASK_ID], env))["status"]
        if status != "running":
            raise SystemExit(f"the bench task is {status}, not running")
        yield env
    finally:
        delete = [SHIMLEDGER, "delete", "--force", TASK_ID]
        result = subprocess.run(delete, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        if result.returncode != 0:
            print(f"warning: {' '.join(delete)}: {result.stderr.decode().strip()[-500:]}")
        take_down(work / "state")


def take_down(state: Path) -> None:
    """Whatever the CLI under test left of TASK_ID: the container, then its shim.

    The tree under test may be broken mid-edit; nothing the bench started may outlive it.
    """
    for root in (state / "runc" / NAMESPACE, state / "runc"):
        if (root / TASK_ID).is_dir():
            force = ["runc", "--root", str(root), "delete", "--force", TASK_ID]
            subprocess.run(force, capture_output=True)
            print(f"warning: {TASK_ID} was left running; deleted with runc")
    reap_shims(state, "shimledger delete --force")


def reap_shims(directory: Path, after: str) -> None:
    """Wait for the shims serving from ``directory`` to exit; kill any that outlive it."""
    deadline = time.monotonic() + 5  # a shim exits within a second of Shutdown
    while (pids := shim_pids(directory)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        print(f"warning: a shim (pid {pid}) outlived {after}; killed")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def shim_pids(directory: Path) -> list[int]:
    """The shims with an argument under ``directory`` (the runc shim writes no pid file)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # not a process, or gone
        if entry.name.isdigit() and argv[0].endswith(b"containerd-shim-runc-v2"):
            if any(arg.startswith(str(directory).encode() + b"/") for arg in argv):
                pids.append(int(entry.name))
    return pids


@contextmanager
def ctr_task(address: str, rootfs: Path) -> Iterator[None]:
    """One busybox task running in the private containerd; killed and removed afterwards."""
    ctr = ["ctr", "--address", address]
    env = dict(os.environ, PATH=PATH)
    try:
        run_ok([*ctr, "run", "-d", "--rootfs", str(rootfs), TASK_ID, "/bin/sleep", "3600"], env)
        if "RUNNING" not in run_ok([*ctr, "tasks", "ls"], env):
            raise SystemExit("the bench task is not running in containerd")
        yield
    finally:
        kill = [*ctr, "tasks", "kill", "-s", "SIGKILL", TASK_ID]
        subprocess.run(kill, env=env, capture_output=True)
        deadline = time.monotonic() + 10
        delete = [*ctr, "tasks", "delete", TASK_ID]
        while subprocess.run(delete, env=env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                print(f"warning: ctr task {TASK_ID} not deleted", file=sys.stderr)
                break
            time.sleep(0.05)  # SIGKILL delivered, exit not yet reaped
        subprocess.run([*ctr, "containers", "delete", TASK_ID], env=env, capture_output=True)
        reap_shims(Path(address).parent, "ctr tasks delete")


def timed_on_terminal(argv: list[str], env: dict[str, str]) -> float:
    """run.timed with stdout and stderr on a pseudo-terminal (120x40, xterm): what a person
    at a terminal waits for, where the CLI may choose colour and boxes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(env, TERM="xterm-256color")
    start = time.perf_counter()
    try:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
        )
        os.close(slave)
        slave = -1
        while True:
            try:
                if not os.read(master, 65536):
                    break
            except OSError:  # EIO: the last writer has closed the terminal
                break
        code = process.wait()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({code}) on a terminal")
    return elapsed


def runc_root(state: Path) -> Path:
    """Where the shim keeps runc's state for our namespace (ManagerConfig.runc_root)."""
    for candidate in (state / "runc" / NAMESPACE, state / "runc"):
        if (candidate / TASK_ID).is_dir():
            return candidate
    raise SystemExit(f"runc state of {TASK_ID} not found under {state / 'runc'}")


# --- imports ------------------------------------------------------------------------------


@dataclass
class Imported:
    """One module in one ``-X importtime`` report (microseconds), and who imported it."""

    name: str
    self_us: int
    cumulative_us: int
    level: int
    parent: str = ""  # empty: imported at top level (the script, or a function at run time)


def parse_importtime(text: str) -> list[Imported]:
    """Lines are printed child first, indented two spaces per level below the importer."""
    modules: list[Imported] = []
    pending: dict[int, list[Imported]] = defaultdict(list)
    for line in text.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
        body = name[1:]
        level = (len(body) - len(body.lstrip(" "))) // 2
        module = Imported(body.strip(), int(self_us), int(cumulative_us), level)
        for child in pending.pop(level + 1, []):
            child.parent = module.name
        pending[level].append(module)
        modules.append(module)
    return modules


def package(name: str) -> str:
    top = name.split(".")[0]
    if top in PROJECT:
        return f"{top} (project)"
    if top in sys.stdlib_module_names or top.startswith("_"):
        return "(stdlib)"
    return top


@dataclass
class ImportProfile:
    """Medians over several ``-X importtime`` runs of one command."""

    modules: dict[str, Imported]
    total_us: float  # all imports: the sum of the top-level cumulative times

    def top(self, count: int) -> list[Imported]:
        return sorted(self.modules.values(), key=lambda m: -m.cumulative_us)[:count]

    def by_package(self) -> list[tuple[str, float, int]]:
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for module in self.modules.values():
            entry = sums[package(module.name)]
            entry[0] += module.self_us
            entry[1] += 1
        return sorted(((p, s, int(n)) for p, (s, n) in sums.items()), key=lambda e: -e[1])


def import_profile(argv: list[str], env: dict[str, str], runs: int) -> ImportProfile:
    samples: list[list[Imported]] = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed under -X importtime: {result.stderr}")
        samples.append(parse_importtime(result.stderr))
    seen: dict[str, list[Imported]] = defaultdict(list)
    for sample in samples:
        for module in sample:
            seen[module.name].append(module)
    modules = {
        name: Imported(
            name,
            int(statistics.median(m.self_us for m in found)),
            int(statistics.median(m.cumulative_us for m in found)),
            found[0].level,
            found[0].parent,
        )
        for name, found in seen.items()
    }
    total = statistics.median(
        sum(m.cumulative_us for m in sample if m.level == 0) for sample in samples
    )
    return ImportProfile(modules, total)


def print_imports(name: str, profile: ImportProfile, wall: float) -> None:
    print(
        f"\n{name}: imports {profile.total_us / 1000:.0f} ms of a {wall * 1000:.0f} ms run, "
        f"{len(profile.modules)} modules"
    )
    print(f"  {'top 10 by cumulative':44} {'cum ms':>7} {'self ms':>7}  imported by")
    for module in profile.top(10):
        label = "  " * min(module.level, 4) + module.name
        parent = module.parent or "(top level)"
        print(
            f"  {label:44} {module.cumulative_us / 1000:7.1f} "
            f"{module.self_us / 1000:7.1f}  {parent}"
        )
    packages = ", ".join(f"{p} {s / 1000:.0f} ms ({n})" for p, s, n in profile.by_package()[:8])
    print(f"  self time by package (modules): {packages}")


# --- the run ------------------------------------------------------------------------------


@dataclass
class Bench:
    """What the contenders run against: stores, a running task, a containerd."""

    work: Path
    tasks: int
    empty: dict[str, str]  # shimledger's environment: an empty store
    big: dict[str, str]  # a store of `tasks` stopped tasks
    live: dict[str, str]  # a store whose TASK_ID is running
    runc_live: Path  # runc's root holding TASK_ID
    address: str  # the private containerd, TASK_ID running in its default namespace


@contextmanager
def bench(work: Path, tasks: int) -> Iterator[Bench]:
    """Sets everything up, and takes down what runs, in reverse order, however it ends."""
    with ExitStack() as stack:
        bundle = make_bundle(work / "bundle", ["sleep", "3600"])
        start = time.perf_counter()
        events = build_live(work / "big" / "root", tasks)
        took = time.perf_counter() - start
        print(f"store of {tasks:,} stopped tasks ({events:,} events) built in {took:.1f}s")
        live = stack.enter_context(running_task(work / "live", bundle))
        address = stack.enter_context(containerd(work / "containerd"))
        stack.enter_context(ctr_task(address, bundle / "rootfs"))
        (work / "runc-empty").mkdir()
        setup = Bench(
            work,
            tasks,
            empty=shimledger_env(work / "empty" / "root", work / "empty" / "state"),
            big=shimledger_env(work / "big" / "root", work / "big" / "state"),
            live=live,
            runc_live=runc_root(work / "live" / "state"),
            address=address,
        )
        print(f"running: {TASK_ID}, through shimledger and in containerd", flush=True)
        yield setup


def shimledger_commands(setup: Bench) -> dict[str, tuple[list[str], dict[str, str]]]:
    return {
        "shimledger --help": (["--help"], setup.empty),
        "shimledger list (empty store)": (["list"], setup.empty),
        f"shimledger list ({setup.tasks:,} tasks)": (["list"], setup.big),
        "shimledger state ID (running)": (["state", TASK_ID], setup.live),
        "shimledger history ID": (["history", TASK_ID], setup.live),
    }


def references(setup: Bench) -> dict[str, list[str]]:
    ctr = ["ctr", "--address", setup.address]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "runc list (1 container)": ["runc", "--root", str(setup.runc_live), "list"],
        "runc list (empty root)": ["runc", "--root", str(setup.work / "runc-empty"), "list"],
        "ctr tasks ls (1 task)": [*ctr, "tasks", "ls"],
        "ctr tasks ls (empty namespace)": [*ctr, "--namespace", "bench-empty", "tasks", "ls"],
    }


def print_table(medians: dict[str, float], runs: int) -> None:
    print(
        f"\nwhole-process wall time, median of {runs} interleaved runs each (one warm-up), "
        f"{os.cpu_count()} cores; x REF = median / REF's median"
    )
    print(f"{'command':34} {'median':>9} {'x python':>9} {'x runc':>7} {'x ctr':>7}")
    refs = [medians[name] for name in REFERENCES]
    for name, median in medians.items():
        ratios = "".join(f" {median / ref:{w}.2f}" for ref, w in zip(refs, (9, 7, 7), strict=True))
        print(f"{name:34} {median * 1000:7.1f}ms{ratios}")
    print(
        f"shimledger: {SHIMLEDGER} (the console script); python: {sys.executable}; "
        "x runc, x ctr: against runc list and ctr tasks ls holding one running task"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per median")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in the big store")
    parser.add_argument("--import-runs", type=int, default=5, help="-X importtime runs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark runs containers: run it as root")
    if not Path(SHIMLEDGER).is_file():
        raise SystemExit(f"{SHIMLEDGER} missing: pip install -e . in the venv")
    as_installed()

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="sl-bench-startup-", dir="/tmp"))
    plain = dict(os.environ, PATH=PATH)
    try:
        with bench(work, args.tasks) as setup:
            commands = shimledger_commands(setup)
            contenders: dict[str, Callable[[], float]] = {
                name: lambda a=argv, e=env: timed([SHIMLEDGER, *a], e)
                for name, (argv, env) in commands.items()
            }
            contenders["shimledger --help (on a terminal)"] = lambda: timed_on_terminal(
                [SHIMLEDGER, "--help"], setup.empty
            )
            for name, argv in references(setup).items():
                contenders[name] = lambda a=argv: timed(a, plain)
            medians = round_robin(contenders, args.runs)
            profiles = {
                name: import_profile([SHIMLEDGER, *argv], env, args.import_runs)
                for name, (argv, env) in commands.items()
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print_table(medians, args.runs)
    print(
        f"\nimports, medians of {args.import_runs} runs under -X importtime (which slows "
        "imports a little); the totals include site's, which python -c pass pays too"
    )
    for name, profile in profiles.items():
        print_imports(name, profile, medians[name])
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()

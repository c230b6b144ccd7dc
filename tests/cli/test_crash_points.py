"""Crash injection through the real CLI: SIGKILL at every step, then the next command.

For each point in shim.crash_points.CRASH_POINTS a real `shimledger` process is told to
SIGKILL itself there. Then `reconcile` runs, and afterwards every runc container, shim
process and bundle in the state dir must belong to a live record (no mount may be left
under it at all) and `history --json` must tell exactly what happened. Then the command is
retried or finished, and nothing at all may be left. Plus: a SIGKILLed shim under a
running container, and a create killed after its Create RPC, adopted or cleaned.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.shim_binary import search_path
from cli.bootstrap import Settings, bootstrap
from cli.main import app
from cli.settings import default_node
from shim.crash_points import CRASH_POINTS, ENV, crash_point
from tests.conftest import cli_env, processes_in
from tests.waiting import wait_until

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
ROOT = Path(__file__).resolve().parents[2]
ID = "victim"
GRACE = 5.0  # how long a shim told to shut down may take to exit (it takes milliseconds)

Result = subprocess.CompletedProcess[str]


@dataclass
class Cli:
    """The real command line against the test's root and state dirs."""

    settings: Settings
    bundle: Path
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = cli_env(self.settings)
        self.env.pop(ENV, None)

    def __call__(self, *args: str, crash_at: str | None = None) -> Result:
        env = dict(self.env, **({ENV: crash_at} if crash_at else {}))
        return subprocess.run([SHIMLEDGER, *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return result

    def in_process(self, *args: str) -> Result:
        """A read-only command without a process of its own: history and list are quick."""
        options = ["--root", str(self.settings.root), "--state", str(self.settings.state),
                   "--namespace", self.settings.namespace]  # fmt: skip
        out = CliRunner().invoke(app, [*options, *args])
        return subprocess.CompletedProcess(args, out.exit_code, out.stdout, "")

    def history(self, task_id: str = ID) -> list[dict]:
        result = self.in_process("history", "--json", task_id)
        if result.returncode != 0:
            return []
        return json.loads(result.stdout)

    def types(self, task_id: str = ID) -> list[str]:
        return [e["type"] for e in self.history(task_id)]

    def reconcile(self) -> list[dict]:
        return json.loads(self.ok("reconcile", "--json").stdout)


def live_ids(cli: Cli) -> set[str]:
    result = cli.in_process("list", "-q")
    assert result.returncode == 0, result.stdout
    return set(result.stdout.split())


def runc_containers(state: Path) -> set[str]:
    found = set()
    for namespace_dir in (state / "runc").glob("*"):
        listing = subprocess.run(["runc", "--root", str(namespace_dir), "list", "-q"],
                                 capture_output=True, text=True, check=True,
                                 env={"PATH": search_path()})  # fmt: skip
        found |= set(listing.stdout.split())
    return found


def mounts_under(state: Path) -> list[str]:
    """Mount points at or under the state dir, from this process's mountinfo."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(state) or point.startswith(f"{state}/"):
            points.append(point)
    return points


def bundles(settings: Settings) -> set[str]:
    directory = settings.state / settings.namespace
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


def untracked(cli: Cli) -> list[str]:
    """What the state dir holds that no live record accounts for (empty: all tracked)."""
    settings, live = cli.settings, live_ids(cli)
    found = [f"runc container {c}" for c in runc_containers(settings.state) - live]
    found += [f"bundle {b}" for b in bundles(settings) - live]
    for pid, cwd in processes_in(settings.state):
        task_id = Path(cwd).relative_to(settings.state).parts[-1]
        if task_id not in live:
            found.append(f"process {pid} in {cwd}")
    found += [f"mount {m}" for m in mounts_under(settings.state)]
    return found


def nothing_left(cli: Cli) -> list[str]:
    """Everything the state dir still holds of any task; shims get a moment to exit."""
    settings = cli.settings
    deadline = time.monotonic() + GRACE
    while processes_in(settings.state) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = [f"runc container {c}" for c in runc_containers(settings.state)]
    found += [f"bundle {b}" for b in bundles(settings)]
    found += [f"process {pid} in {cwd}" for pid, cwd in processes_in(settings.state)]
    found += [f"mount {m}" for m in mounts_under(settings.state)]
    return found


# --- the scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """How to reach a point, what reconcile should do, what history says after each step."""

    setup: tuple[tuple[str, ...], ...]  # commands that must succeed first
    crash: tuple[str, ...]  # the command killed at the point
    before: tuple[str, ...]  # history right after the crash
    action: str  # what reconcile reports for ID
    after: tuple[str, ...]  # history after reconcile
    retry: tuple[str, ...]  # the retried or finishing command
    final: tuple[str, ...]  # history after `retry` (and delete -f, if still live)
    release: bool = False  # let the exec the crashed command ran end (and wait until it has)


CREATE = ("create", "--bundle", "{bundle}", ID)
RUN = ("run", "-d", "--bundle", "{bundle}", ID)
DELETED_CREATED = ("Killed", "Exited", "Deleted")  # delete -f of a created task
RAN = ("Created", "Started", "Killed", "Exited")
# An exec that ends when the test says so (a file appears in the rootfs), with status 7.
EXEC = ("exec", ID, "--", "sh", "-c", "until [ -e /go ]; do sleep 0.01; done; exit 7")
EXECUTED = ("Created", "Started", "ExecAdded", "ExecStarted")

SCENARIOS: dict[str, Scenario] = {
    "create.bundle-made": Scenario(
        (), CREATE, (), "cleaned", (), CREATE, ("Created", *DELETED_CREATED)),
    "create.shim-started": Scenario(
        (), CREATE, (), "cleaned", (), CREATE, ("Created", *DELETED_CREATED)),
    "create.task-created": Scenario(
        (), CREATE, (), "adopted", ("Created", "Adopted"), ("start", ID),
        ("Created", "Adopted", "Started", "Killed", "Exited", "Deleted")),
    "create.recorded": Scenario(
        (), CREATE, ("Created",), "unchanged", ("Created",), ("start", ID),
        ("Created", "Started", "Killed", "Exited", "Deleted")),
    "start.before-rpc": Scenario(
        (CREATE,), ("start", ID), ("Created",), "unchanged", ("Created",), ("start", ID),
        ("Created", "Started", "Killed", "Exited", "Deleted")),
    "start.rpc-done": Scenario(
        (CREATE,), ("start", ID), ("Created",), "start-recorded", ("Created", "Started"),
        ("kill", ID, "KILL"), (*RAN, "Deleted")),
    "kill.rpc-done": Scenario(
        (RUN,), ("kill", ID, "KILL"), ("Created", "Started"), "exit-recorded",
        ("Created", "Started", "Exited"), ("delete", ID),
        ("Created", "Started", "Exited", "Deleted")),
    "exec.started": Scenario(
        (RUN,), EXEC, EXECUTED, "exec-exit-recorded", (*EXECUTED, "ExecExited"),
        ("kill", ID, "KILL"), (*EXECUTED, "ExecExited", "Killed", "Exited", "Deleted"),
        release=True),
    "delete.process-stopped": Scenario(
        (RUN,), ("delete", "-f", ID), RAN, "unchanged", RAN, ("delete", ID), (*RAN, "Deleted")),
    "delete.rpc-done": Scenario(
        (RUN,), ("delete", "-f", ID), RAN, "unchanged", RAN, ("delete", ID), (*RAN, "Deleted")),
    "delete.shim-gone": Scenario(
        (RUN,), ("delete", "-f", ID), RAN, "leftovers-removed", RAN, ("delete", ID),
        (*RAN, "Deleted")),
    "delete.bundle-removed": Scenario(
        (RUN,), ("delete", "-f", ID), RAN, "delete-recorded", (*RAN, "Deleted"), ("list",),
        (*RAN, "Deleted")),
}  # fmt: skip


@pytest.fixture
def cli(settings: Settings, bundle: Callable[..., Path]) -> Cli:
    return Cli(settings, bundle("sleep", "300"))


def filled(command: tuple[str, ...], cli: Cli) -> list[str]:
    return [part.replace("{bundle}", str(cli.bundle)) for part in command]


def test_every_point_has_a_scenario_and_a_call_site() -> None:
    """The list, the calls in the code and this file's scenarios name the same points."""
    source = "".join(p.read_text() for p in sorted((ROOT / "shim").rglob("*.py")))
    calls = re.findall(r'crash_point\("([^"]+)"\)', source)
    assert sorted(calls) == sorted(CRASH_POINTS)
    assert len(set(calls)) == len(calls)
    assert list(SCENARIOS) == list(CRASH_POINTS)


def test_a_point_kills_only_when_named() -> None:
    code = "from shim.crash_points import crash_point; crash_point('start.rpc-done'); print('on')"

    def run(value: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, **{ENV: value})
        return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    assert (run("start.before-rpc").returncode, run("start.before-rpc").stdout) == (0, "on\n")
    assert run("start.rpc-done").returncode == -signal.SIGKILL
    crash_point("start.rpc-done")  # this process has no such variable set: nothing happens


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_command_killed_at_a_point_leaves_nothing_untracked(
    cli: Cli, point: str, cli_mode: str
) -> None:
    scenario = SCENARIOS[point]
    for command in scenario.setup:
        cli.ok(*filled(command, cli))
    crashed = cli(*filled(scenario.crash, cli), crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    types = tuple(cli.types())
    if cli_mode == "served":  # serve records the shim's events the killed command did not
        assert types[: len(scenario.before)] == scenario.before
        assert types == scenario.after[: len(types)]
    else:
        assert types == scenario.before
    if scenario.release:
        release_the_exec(cli)

    report = cli.reconcile()
    # (a foreground command's stdio FIFOs, removed once it is dead, are not the task's)
    [entry] = [e for e in report if e["id"] == ID and "stdio FIFOs" not in e["detail"]]
    history = cli.history()
    assert tuple(e["type"] for e in history) == scenario.after
    # A shim retries an event the killed command never acknowledged (after 1 s, 2 s, ...):
    # if that retry reached reconcile's event sink first, the fact is recorded once, by it.
    new = list(scenario.after[len(scenario.before) :])
    heard = [e["type"] for e in history if e["cause"]["kind"] == "shim-event"]
    once = (["Started"], ["Exited"], ["ExecExited"])
    if entry["action"] == "unchanged" and new in once and new[0] in heard:
        assert entry["recorded"] == []
    else:
        assert (entry["action"], entry["recorded"]) == (scenario.action, new), entry
    assert untracked(cli) == [], f"after reconcile at {point}"
    if "Exited" in scenario.after and point == "kill.rpc-done":
        exited = next(e for e in history if e["type"] == "Exited")
        assert exited["exit_status"] == 137  # the shim's own status, not 255
    if scenario.release:
        exec_exited = next(e for e in history if e["type"] == "ExecExited")
        assert exec_exited["exit_status"] == 7  # the shim's own status, not 255

    retried = cli(*filled(scenario.retry, cli))
    assert retried.returncode == 0, retried.stderr
    if ID in live_ids(cli):
        cli.ok("delete", "-f", ID)
    assert nothing_left(cli) == [], f"after finishing {point}"
    assert tuple(cli.types()) == scenario.final


def release_the_exec(cli: Cli) -> None:
    """Let EXEC end, and wait until it has (the shim reaped it): its exit is then a fact
    only the shim knows, as when it ends after its command was killed."""
    [started] = [e for e in cli.history() if e["type"] == "ExecStarted"]
    (cli.bundle / "rootfs" / "go").touch()
    wait_until(lambda: not alive(started["pid"]), "the exec did not end", step=0.02)


def test_a_sigkilled_shim_under_a_running_container(cli: Cli) -> None:
    cli.ok(*filled(RUN, cli))
    settings = cli.settings

    async def pids() -> tuple[int, int]:
        async with bootstrap(settings) as manager:
            shim = await manager.shim(ID)
            return shim.shim_pid, (await manager.get(ID)).pid

    shim_pid, container_pid = asyncio.run(pids())
    assert [pid for pid, _ in processes_in(settings.state)] == [shim_pid]
    os.kill(shim_pid, signal.SIGKILL)
    deadline = time.monotonic() + GRACE
    while processes_in(settings.state) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(container_pid), "the container outlives its shim until someone cleans up"
    assert ID in runc_containers(settings.state)

    [entry] = cli.reconcile()
    assert (entry["id"], entry["action"], entry["recorded"]) == (
        ID, "shim-lost", ["ShimLost", "Exited"])  # fmt: skip
    history = cli.history()
    assert [e["type"] for e in history] == ["Created", "Started", "ShimLost", "Exited"]
    assert history[-1]["exit_status"] == 255
    assert history[-1]["cause"] == {"kind": "reconciliation", "node": default_node(),
                                    "detail": "shim lost; exit status unknown"}  # fmt: skip
    assert runc_containers(settings.state) == set()
    assert not alive(container_pid)
    assert untracked(cli) == []
    assert json.loads(cli.ok("state", ID).stdout)["status"] == "stopped"

    cli.ok("delete", ID)
    assert nothing_left(cli) == []
    assert cli.types()[-1] == "Deleted"


def test_a_create_killed_after_its_create_rpc_is_adopted_by_reconcile(cli: Cli) -> None:
    """The task runs in its shim, but no record says so: reconcile adopts it."""
    crashed = cli(*filled(CREATE, cli), crash_at="create.task-created")
    assert crashed.returncode == -signal.SIGKILL
    assert cli.history() == [] and live_ids(cli) == set()
    assert untracked(cli) != []  # this is what reconcile is for

    [entry] = cli.reconcile()
    assert (entry["action"], entry["incarnation"], entry["recorded"]) == (
        "adopted", 1, ["Created", "Adopted"])  # fmt: skip
    [listed] = json.loads(cli.in_process("list", "--format", "json").stdout)
    history = cli.history()
    assert [e["type"] for e in history] == ["Created", "Adopted"]
    created = history[0]
    assert created["cause"]["kind"] == "reconciliation"
    assert (listed["id"], listed["status"], listed["pid"], listed["bundle"]) == (
        ID, "created", created["pid"], str(cli.bundle))  # fmt: skip
    assert created["runtime"] == "io.containerd.runc.v2"
    assert untracked(cli) == []
    assert cli.reconcile() == [{**entry, "action": "unchanged", "recorded": [],
                                "detail": "created"}]  # fmt: skip

    cli.ok("start", ID)  # the adopted task is a task like any other
    assert json.loads(cli.ok("state", ID).stdout)["status"] == "running"
    cli.ok("delete", "-f", ID)
    assert nothing_left(cli) == []


def test_the_same_leftovers_are_cleaned_by_delete_force(cli: Cli) -> None:
    """delete -f of an ID no record knows removes what the killed create left, unadopted."""
    crashed = cli(*filled(CREATE, cli), crash_at="create.task-created")
    assert crashed.returncode == -signal.SIGKILL
    assert ID in runc_containers(cli.settings.state)
    cli.ok("delete", "-f", ID)
    assert nothing_left(cli) == []
    assert cli.history() == [] and cli.reconcile() == []
    cli.ok(*filled(CREATE, cli))  # the ID is free again: incarnation 1, as if nothing happened
    assert [(e["type"], e["incarnation"]) for e in cli.history()] == [("Created", 1)]


@pytest.mark.alone("runs the serve it is about")
def test_the_shims_late_delete_event_leaves_the_delete_to_the_retried_command(
    cli: Cli, tmp_path: Path
) -> None:
    """A delete killed after its Delete RPC: the shim retries /tasks/delete (1, 3, 6 s
    later) to whoever serves the sink next. Heard by reconcile, or by the retried delete
    between its read and its edit, it made "Deleted" of a task whose bundle and shim
    were still there ("does not exist", a leftover). Here serve hears it for sure."""
    cli.ok(*filled(RUN, cli))
    crashed = cli("delete", "-f", ID, crash_at="delete.rpc-done")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    log = tmp_path / "serve.log"
    serve = subprocess.Popen([SHIMLEDGER, "--debug", "--log", str(log), "serve"], env=cli.env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: log.is_file() and "event /tasks/delete" in log.read_text(),
                   "no /tasks/delete", process=serve)
    finally:
        serve.terminate()  # it finishes the recordings in flight first
        assert serve.wait(timeout=30) == 0

    assert tuple(cli.types()) == RAN  # the event's exit was news to nobody
    assert ID in bundles(cli.settings)
    cli.ok("delete", ID)
    assert nothing_left(cli) == []
    assert tuple(cli.types()) == (*RAN, "Deleted")
    assert cli.history()[-1]["cause"]["kind"] == "cli"


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.alone("FIFOs named by the client's pid; test_handoff has the served twin")
def test_a_killed_foreground_run_leaves_fifos_that_reconcile_removes(cli: Cli) -> None:
    """The task is tracked (it runs on); the dead command's stdio FIFOs are cleaned."""
    run = subprocess.Popen([SHIMLEDGER, "run", "--bundle", str(cli.bundle), ID], env=cli.env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    wait_until(lambda: "Started" in cli.types(), "the run never started", process=run)
    run.kill()
    run.wait()
    fifos = cli.settings.state / "io" / cli.settings.namespace / f"{ID}-{run.pid}"
    assert fifos.is_dir()

    report = cli.reconcile()
    cleaned = [e for e in report if e["action"] == "cleaned" and str(run.pid) in e["detail"]]
    assert [e["id"] for e in cleaned] == [ID]
    assert not fifos.exists()
    assert ID in live_ids(cli)  # still running, still recorded
    cli.ok("delete", "-f", ID)
    assert nothing_left(cli) == []

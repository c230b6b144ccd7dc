"""Two owners on one history: two nodes (``--node``), each with its own state dir, one root.

Each is what one host of a fleet is (a PostgreSQL store shared by hosts behaves alike: the
rule is in the recorder, not the store). Neither may take the other's task for one whose
shim was lost, the same ID runs on both at once, each command acts on its own node's
incarnation, and naming the other's says whose it is. Real runc, real shims, real SQLite.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.bootstrap import Settings
from shim.crash_points import ENV
from tests.cli.test_serve import Service
from tests.conftest import cli_env, teardown
from tests.waiting import wait_until

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
TIMEOUT = 120  # per command: the machine is shared
DEADLINE = 60.0  # for an exit to be recorded after a kill
ROUNDS = 4  # creates racing across the two owners
CREATED = "create.task-created"  # a crash point: the shim holds the task, no Created yet

Bundle = Callable[..., Path]
Result = subprocess.CompletedProcess[str]


@dataclasses.dataclass
class Node:
    """The real command line of one owner: its --node, its state dir, the shared root."""

    settings: Settings

    @property
    def name(self) -> str:
        return self.settings.node

    @property
    def state(self) -> str:
        return str(self.settings.state)

    @property
    def env(self) -> dict[str, str]:
        env = dict(cli_env(self.settings), SHIMLEDGER_NODE=self.settings.node)
        return env | ({"SHIMLEDGER_STORE": self.settings.store} if self.settings.store else {})

    def __call__(self, *args: str) -> Result:
        return subprocess.run([SHIMLEDGER, *args], env=self.env, capture_output=True,
                              text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)  # fmt: skip

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.returncode == 0, f"{self.name} {args}: {result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [SHIMLEDGER, *args], env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def history(self, task_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.ok("history", "--json", task_id).stdout)
        return events


@pytest.fixture(params=["one-root", "two-roots-one-store"])
def nodes(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[tuple[Node, Node]]:
    """Node A (the test's state dir) and node B (a state dir of its own): on one root (two
    state dirs of one host), or each with its own root and one store (two hosts).

    Afterwards each node's tasks are deleted by that node, and nothing may be left in
    either state dir (the settings fixture checks A's, this one B's).
    """
    state_b = Path(tempfile.mkdtemp(prefix="sl-b-", dir="/tmp"))
    a = Node(dataclasses.replace(settings, node="hosta"))
    b = Node(dataclasses.replace(settings, state=state_b, node="hostb"))
    if request.param == "two-roots-one-store":
        (tmp_path / "store").mkdir()
        store = f"sqlite:///{tmp_path / 'store' / 'events.db'}"
        a = Node(dataclasses.replace(a.settings, store=store))
        b = Node(dataclasses.replace(b.settings, root=tmp_path / "root-b", store=store))
    try:
        yield a, b
    finally:
        for node in (a, b):  # first each node's own tasks, by that node
            for task_id in ("dup", "race"):
                node("delete", "-f", task_id)  # nothing to do is fine
        leftovers = teardown(a.settings) + teardown(b.settings)
        shutil.rmtree(state_b, ignore_errors=True)
        assert not leftovers, f"the test left these behind: {leftovers}"


def incarnations(history: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    by_number: dict[int, list[dict[str, Any]]] = {}
    for event in history:
        by_number.setdefault(event["incarnation"], []).append(event)
    return by_number


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def one_line(result: Result) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shimledger: "), result.stderr
    return lines[0]


def wait_for_exit(node: Node, task_id: str, incarnation: int) -> None:
    """Until the node's own `reconcile` (which asks its shims) has the exit recorded."""
    deadline = time.monotonic() + DEADLINE
    while "Exited" not in types(incarnations(node.history(task_id))[incarnation]):
        assert time.monotonic() < deadline, f"{task_id}#{incarnation}: no exit recorded"
        node.ok("reconcile")


def wait_for_log(node: Node, task_id: str, text: str) -> None:
    """Until the node's `logs` of its task shows ``text`` (the shim copies output on)."""
    wait_until(lambda: text in node("logs", task_id).stdout,
               f"{node.name}: no {text!r} in the log of {task_id}", timeout=DEADLINE, step=0.1)


def test_two_nodes_on_one_store_each_act_on_their_own_tasks(nodes, bundle: Bundle) -> None:
    a, b = nodes
    path_a = str(bundle("sh", "-c", "echo from-hosta; exec sleep 300"))
    path_b = str(bundle("sh", "-c", "echo from-hostb; exec sleep 300"))
    a.ok("run", "-d", "--bundle", path_a, "dup")
    wait_for_log(a, "dup", "from-hosta")
    before = a.history("dup")
    assert types(before) == ["Created", "Started"]

    # B has no working bundle for A's task: that is not a lost shim, it is not B's task.
    for args in (("list",), ("reconcile",), ("reconcile", "-A"), ("list", "-q")):
        b.ok(*args)
    assert b.history("dup") == before, "node B recorded on node A's task"

    # Naming A's task from B: one line that says whose it is.
    for args in (("kill", "dup", "KILL"), ("delete", "-f", "dup"), ("start", "dup")):
        line = one_line(b(*args))
        assert line == (
            f"shimledger: task dup runs on node hosta (state dir {a.state}); this is node hostb"
        ), line
    assert b.history("dup") == before

    # The same ID on B at the same time: a new incarnation, B's; both live.
    b.ok("run", "-d", "--bundle", path_b, "dup")
    wait_for_log(b, "dup", "from-hostb")
    assert "from-hosta" in a.ok("logs", "dup").stdout, "node B's create removed A's log"
    a.ok("reconcile", "-A")
    b.ok("reconcile", "-A")
    both = incarnations(a.history("dup"))
    assert sorted(both) == [1, 2]
    assert both[1] == before
    assert types(both[2]) == ["Created", "Started"]

    # B's kill and delete touch B's incarnation only.
    b.ok("kill", "dup", "KILL")
    wait_for_exit(b, "dup", 2)
    b.ok("delete", "dup")
    after_b = incarnations(a.history("dup"))
    assert after_b[1] == before, "node B's kill or delete touched node A's task"
    assert types(after_b[2]) == ["Created", "Started", "Killed", "Exited", "Deleted"]
    assert after_b[2][3]["exit_status"] == 137

    # A's kill and delete touch A's incarnation only (the latest of the ID is B's).
    a.ok("kill", "dup", "KILL")
    wait_for_exit(a, "dup", 1)
    a.ok("delete", "dup")
    final = incarnations(b.history("dup"))
    assert final[2] == after_b[2], "node A's kill or delete touched node B's task"
    assert types(final[1]) == ["Created", "Started", "Killed", "Exited", "Deleted"]
    assert final[1][3]["exit_status"] == 137

    # Who recorded what: each Created names its owner, each cause its node.
    for number, node in ((1, a), (2, b)):
        created = final[number][0]
        assert (created["node"], created["state_dir"]) == (node.name, node.state)
        assert {e["cause"].get("node") for e in final[number]} == {node.name}, final[number]


def test_creates_of_one_id_racing_on_two_nodes_both_succeed(nodes, bundle: Bundle) -> None:
    """Each node's lock is its own state dir's: both may number the new incarnation alike,
    and the store's conflict makes the later one take the next number, never a traceback."""
    a, b = nodes
    path = str(bundle("sleep", "300"))
    for round_ in range(ROUNDS):
        racers = [node.spawn("create", "--bundle", path, "race") for node in (a, b)]
        for node, racer in zip((a, b), racers, strict=True):
            stdout, stderr = racer.communicate(timeout=TIMEOUT)
            assert racer.returncode == 0, f"round {round_}, {node.name}: {stderr}"
            assert "Traceback" not in stderr, stderr
        latest = dict(sorted(incarnations(a.history("race")).items())[-2:])
        assert len(latest) == 2, latest
        owners = {events[0]["node"] for events in latest.values()}
        assert owners == {"hosta", "hostb"}, latest
        assert all(types(events) == ["Created"] for events in latest.values()), latest
        for node in (a, b):
            node.ok("delete", "race")
    history = incarnations(a.history("race"))
    assert sorted(history) == list(range(1, 2 * ROUNDS + 1))
    for number, events in history.items():
        assert types(events) == ["Created", "Killed", "Exited", "Deleted"], (number, events)
        assert {e["cause"].get("node") for e in events} == {events[0]["node"]}


def test_a_create_killed_on_one_node_is_adopted_by_it_past_the_others_task(
    nodes, bundle: Bundle
) -> None:
    """B's create is SIGKILLed after its Create RPC while A runs the ID: B's reconcile
    adopts B's working bundle as a new incarnation of B's (A's record of the ID does not
    hide it), and A's task is not touched."""
    a, b = nodes
    path = str(bundle("sleep", "300"))
    a.ok("run", "-d", "--bundle", path, "dup")
    before = a.history("dup")
    killed = subprocess.run(
        [SHIMLEDGER, "create", "--bundle", path, "dup"], env=dict(b.env, **{ENV: CREATED}),
        capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed
    assert a.history("dup") == before
    [entry] = [e for e in json.loads(b.ok("reconcile", "--json").stdout) if e["id"] == "dup"]
    assert (entry["action"], entry["incarnation"]) == ("adopted", 2), entry
    history = incarnations(a.history("dup"))
    assert history[1] == before
    assert types(history[2]) == ["Created", "Adopted"]
    assert (history[2][0]["node"], history[2][0]["state_dir"]) == ("hostb", b.state)
    assert {e["cause"].get("node") for e in history[2]} == {"hostb"}
    a.ok("reconcile")
    assert incarnations(a.history("dup"))[1] == before


@pytest.mark.alone("runs the serves it is about")
def test_serve_on_one_node_never_records_on_the_others_task(nodes, bundle: Bundle) -> None:
    """B's serve reconciles its state dir on start and watches its shims: A's task, with
    no bundle there, is neither lost nor watched; A's own exit is A's to record."""
    a, b = nodes
    a.ok("run", "-d", "--bundle", str(bundle("sleep", "300")), "dup")
    before = a.history("dup")
    service = Service(b.env)
    try:
        assert a.history("dup") == before, "B's serve recorded on A's task at start"
        a.ok("kill", "dup", "KILL")
        wait_for_exit(a, "dup", 1)
    finally:
        assert service.stop() == 0, service.lines
    history = a.history("dup")
    assert history[:2] == before and types(history) == ["Created", "Started", "Killed", "Exited"]
    assert {e["cause"].get("node") for e in history} == {"hosta"}


def test_each_state_dir_keeps_its_own_tasks_state_files(nodes, bundle: Bundle) -> None:
    """The runs-compatible state.json of each node's task, in its own state dir: one node
    catching up on the events of both must not make the other skip its own. B's create is
    killed right after Created was saved, before B's views caught up; A catches up first."""
    a, b = nodes
    path = str(bundle("sleep", "300"))
    a.ok("run", "-d", "--bundle", path, "dup")
    killed = subprocess.run(
        [SHIMLEDGER, "create", "--bundle", path, "dup"],
        env=dict(b.env, **{ENV: "create.recorded"}),
        capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed
    a.ok("list")  # a catches up on every event first, b's Created included
    b.ok("list")
    for node, incarnation, status in ((a, 1, "running"), (b, 2, "created")):
        saved = json.loads((Path(node.state) / "test" / "dup" / "state.json").read_text())
        assert (saved["Status"], saved["Incarnation"], saved["Node"]) == (
            status, incarnation, node.name)  # fmt: skip
        assert node.ok("projections", "verify").returncode == 0

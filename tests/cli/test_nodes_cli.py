"""Two nodes on one history, through the real CLI: each node's reads show its own tasks,
`--node`/`--all-nodes` the others' (with a NODE column), history/events/audit the fleet.

Node a is the test's own settings (its node name, its state dir); node b has a state dir
of its own and ``--node node-b``, on the same root. The IDs differ (the same ID on two
nodes is the lifecycle's business).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from tests.conftest import cli_runner, teardown, verify


@pytest.fixture
def node_b(settings: Settings) -> Iterator[Settings]:
    """A second node on the test's root: its own state dir and name; torn down as its own."""
    state = Path(tempfile.mkdtemp(prefix="sl-b-", dir="/tmp"))
    b = dataclasses.replace(settings, state=state, node="node-b")
    yield b
    leftovers = teardown(b)
    shutil.rmtree(state, ignore_errors=True)
    assert not leftovers, f"node b left these behind: {leftovers}"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


def test_each_node_lists_its_own_tasks_and_the_fleet_on_asking(
    settings: Settings, node_b: Settings, bundle: Callable[..., Path]
) -> None:
    a, b = cli_runner(settings), cli_runner(node_b)
    here = settings.node
    ok(a("run", "-d", "-b", str(bundle("sleep", "300")), "on-a"))
    ok(b("create", "-b", str(bundle("true")), "on-b"))

    # By default, each node's own, in the columns scripts have always read.
    mine = rows(ok(a("list")))
    assert mine[0] == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER", "EXIT"]
    assert [(r[0], r[2]) for r in mine[1:]] == [("on-a", "running")]
    assert [r[0] for r in rows(ok(b("list")))[1:]] == ["on-b"]
    assert [(t["id"], t["node"]) for t in json.loads(ok(a("list", "--json")))] == [("on-a", here)]
    assert ok(b("list", "-q")).split() == ["on-b"]

    # Another node's, and every node's: a NODE column last, after runc's own columns.
    theirs = rows(ok(a("list", "--node", "node-b")))
    assert theirs[0][0] == "ID" and theirs[0][-1] == "NODE"
    assert [(r[0], r[-1]) for r in theirs[1:]] == [("on-b", "node-b")]
    fleet = rows(ok(a("list", "--all-nodes")))
    assert fleet[0] == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER", "EXIT", "NODE"]
    assert sorted((r[-1], r[0], r[2]) for r in fleet[1:]) == sorted([
        (here, "on-a", "running"), ("node-b", "on-b", "created")])  # fmt: skip
    # Another node's bundle is not here to read: runc's keys from it are empty.
    [on_b] = json.loads(ok(a("list", "--node", "node-b", "--json")))
    assert (on_b["owner"], on_b["rootfs"], on_b["ociVersion"]) == ("", "", "")
    both = json.loads(ok(b("list", "--all-nodes", "--json")))
    assert sorted((t["id"], t["node"]) for t in both) == [("on-a", here), ("on-b", "node-b")]
    assert json.loads(ok(a("list", "--node", "nobody", "--json"))) == []

    # state: this node's task of the ID, or the named node's.
    missing = a("state", "on-b")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "task on-b runs on node node-b" in missing.stderr  # one line naming its owner
    shown = json.loads(ok(a("state", "--node", "node-b", "on-b")))
    assert (shown["id"], shown["node"], shown["status"]) == ("on-b", "node-b", "created")
    both_asked = a("list", "--node", "node-b", "--all-nodes")
    assert both_asked.returncode == 1 and both_asked.stderr.count("\n") == 1
    assert "--node or --all-nodes" in both_asked.stderr
    bad = a("list", "--node", "no/such")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1

    # Reading the other node's task recorded nothing on it.
    on_b = json.loads(ok(a("history", "--json", "on-b")))
    assert [(e["type"], e["node"]) for e in on_b] == [("Created", "node-b")]

    # history, events and audit: the whole fleet, narrowed with --node.
    piped = rows(ok(a("history", "on-a")))
    assert piped[0][-1] == "NODE" and {r[-1] for r in piped[1:]} == {here}
    nowhere = a("history", "--node", "node-b", "on-a")
    assert nowhere.returncode == 1 and "on node node-b" in nowhere.stderr
    fleet_events = [json.loads(line) for line in ok(b("events", "--json")).splitlines()]
    assert {(e["id"], e["node"]) for e in fleet_events} == {("on-a", here), ("on-b", "node-b")}
    b_events = [json.loads(line) for line in ok(a("events", "--json", "--node", "node-b"))
                .splitlines()]  # fmt: skip
    assert [(e["id"], e["type"], e["node"]) for e in b_events] == [("on-b", "Created", "node-b")]
    a_table = rows(ok(b("events", "--node", here)))
    assert {r[2] for r in a_table[1:]} == {"on-a"} and a_table[0][-2:] == ["NODE", "POSITION"]
    report = json.loads(ok(a("audit", "--json", "--node", "node-b")))
    assert [(life["id"], life["node"]) for life in report["lifetimes"]] == [("on-b", "node-b")]
    everything = json.loads(ok(a("audit", "--json")))
    assert sorted(life["node"] for life in everything["lifetimes"]) == sorted([here, "node-b"])
    stuck = ok(a("audit", "--node", "node-b", "--stuck-after", "0s")).split("\n\n")[-1]
    assert [(r[1], r[3], r[-1]) for r in rows(stuck)] == [
        ("KIND", "ID", "NODE"), ("stuck-created", "on-b", "node-b")]  # fmt: skip
    page = settings.root.parent / "audit.html"
    ok(a("audit", "--node", "node-b", "--stuck-after", "0s", "--html", str(page)))
    html = page.read_text()
    assert "on-b" in html and "node node-b" in html and "on-a" not in html

    # replay: this node's table by default, like list.
    assert [t["id"] for t in json.loads(ok(a("replay", "--at", "0s", "--json")))] == ["on-a"]
    replayed = json.loads(ok(a("replay", "--at", "0s", "--json", "--all-nodes")))
    assert sorted((t["id"], t["node"]) for t in replayed) == [("on-a", here), ("on-b", "node-b")]
    assert rows(ok(b("replay", "--at", "0s", "--node", here)))[0][:2] == ["NODE", "NAMESPACE"]

    # Each node's views agree with the history, state.json files included (each its own).
    ok(a("projections", "verify"))
    ok(b("projections", "verify"))
    a_file = json.loads((settings.state / settings.namespace / "on-a" / "state.json").read_text())
    b_file = json.loads((node_b.state / node_b.namespace / "on-b" / "state.json").read_text())
    assert (a_file["Node"], b_file["Node"]) == (here, "node-b")
    assert not (settings.state / settings.namespace / "on-b").exists()
    assert verify(node_b) == verify(settings) == {
        "task_states": [], "event_index": [], "state_files": []}  # fmt: skip


def test_a_history_from_before_nodes_lists_as_this_nodes(real: None, tmp_path: Path) -> None:
    """A store whose Created rows are v1 (no node): its tasks are this node's, and any
    node's that reads it (every node takes an unknown owner for its own)."""
    import asyncio

    from adapters.event_store import EventStore, sqlite_env
    from domain.task import Task
    from domain.values import Cause
    from tests.adapters.test_event_upcasting import stored_row

    root = tmp_path / "root"
    root.mkdir()
    cause = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger run old", host="h")

    async def write() -> Task:
        store = EventStore(sqlite_env(root))
        task = Task(namespace="default", task_id="old", incarnation=1, bundle="/b", pid=7,
                    runtime="io.containerd.runc.v2", node="", state_dir="",
                    cause=cause)  # fmt: skip
        task.start(7, cause)
        task.record_exit(3, datetime(2026, 1, 1, tzinfo=UTC), cause)
        await store.save(task)
        await store.aclose()
        return task

    task = asyncio.run(write())
    db = root / "events.db"
    topic, state = stored_row(db, task.id, 1)
    old = {k: v for k, v in state.items() if k not in ("class_version", "node", "state_dir")}
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(
            "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = 1",
            (json.dumps(old, separators=(",", ":")).encode(), task.id.hex),
        )
    assert "node" not in stored_row(db, task.id, 1)[1]

    state_dir = Path(tempfile.mkdtemp(prefix="sl-", dir="/tmp"))
    try:
        settings = Settings(root=root, state=state_dir, namespace="default", node="node-x")
        cli = cli_runner(settings)
        listed = json.loads(ok(cli("list", "--json")))
        assert [(t["id"], t["node"], t["status"], t["exit_status"]) for t in listed] == [
            ("old", "", "stopped", 3)]  # fmt: skip
        assert json.loads(ok(cli("list", "--json", "--node", "node-x")))[0]["id"] == "old"
        assert json.loads(ok(cli("list", "--json", "--node", "node-y"))) == []
        assert json.loads(ok(cli_runner(dataclasses.replace(settings, node="node-y"))(
            "list", "--json")))[0]["id"] == "old"  # fmt: skip
        listed_row = rows(ok(cli("list", "--all-nodes")))[1]
        assert (listed_row[0], listed_row[-1]) == ("old", "")  # no node recorded
        assert json.loads(ok(cli("state", "old")))["node"] == ""
        [created, *_] = json.loads(ok(cli("history", "--json", "old")))
        assert created["node"] == "" and "state_dir" in created
        ok(cli("projections", "verify"))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)

"""history, events, replay, audit and projections through the CLI, on a store built here.

These need no runtime: the events are appended through the real event store, as the
lifecycle commands would append them.
"""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.event_store import EventStore, sqlite_env
from cli.main import app
from domain.task import Task
from domain.values import Cause
from tests.conftest import at_a_shell

CLI = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger test", host="h")
SHIM = Cause(kind="shim-event", detail="/tasks/exit")


async def build_history(root: Path) -> list[int]:
    """Three incarnations and a few tasks; returns the head position after each step."""
    store = EventStore(sqlite_env(root))
    heads = []
    try:

        async def save(task: Task) -> None:
            await store.save(task)
            heads.append(await store.head())

        def new(task_id: str, incarnation: int = 1, namespace: str = "default") -> Task:
            return Task(
                namespace=namespace, task_id=task_id, incarnation=incarnation,
                bundle=f"/b/{task_id}", pid=100 + incarnation, runtime="r",
                node="node-a", state_dir="", cause=CLI,
            )  # fmt: skip

        ok = new("ok")
        ok.start(101, CLI)
        ok.record_exit(0, datetime.now(UTC), SHIM)
        ok.delete(CLI)
        await save(ok)                                     # heads[0]: ok done
        killed = new("ok", incarnation=2)
        killed.start(102, CLI)
        await save(killed)                                 # heads[1]: ok#2 running
        killed.record_kill(9, False, CLI)
        killed.record_exit(137, datetime.now(UTC), SHIM)
        await save(killed)                                 # heads[2]: ok#2 stopped by signal
        lost = new("lost", namespace="other")
        lost.start(200, CLI)
        lost.record_oom(SHIM)
        lost.record_shim_lost(Cause(kind="reconciliation", detail="shim lost"))
        lost.record_exit(255, datetime.now(UTC), Cause(kind="reconciliation"))
        await save(lost)                                   # heads[3]
        never = new("never")
        never.delete(CLI)
        await save(never)                                  # heads[4]
        stuck = new("stuck")
        stuck.start(300, CLI)
        await save(stuck)                                  # heads[5]
    finally:
        await store.aclose()
    return heads


@pytest.fixture
def root(tmp_path: Path) -> tuple[Path, list[int]]:
    return tmp_path, asyncio.run(build_history(tmp_path))


def cli(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--root", str(root), "--state", str(root / "s"), *args])
    return result.exit_code, result.output


def test_history_shows_every_incarnation_in_order(root) -> None:
    path, _ = root
    code, out = cli(path, "history", "--json", "ok")
    events = json.loads(out)
    assert code == 0
    assert [(e["type"], e["incarnation"]) for e in events] == [
        ("Created", 1), ("Started", 1), ("Exited", 1), ("Deleted", 1),
        ("Created", 2), ("Started", 2), ("Killed", 2), ("Exited", 2)]  # fmt: skip
    assert events[6]["signal"] == 9 and events[7]["signal"] == 9 and "signal" not in events[2]
    assert cli(path, "history", "nope") == (1, "shimledger: task nope has no history in "
                                               "namespace default\n")  # fmt: skip


def test_events_filter_by_type_namespace_id_and_time(root) -> None:
    path, heads = root
    lines = cli(path, "events", "--json", "--type", "Exited")[1].splitlines()
    exits = [json.loads(line) for line in lines]
    assert [(e["id"], e["exit_status"]) for e in exits] == [("ok", 0), ("ok", 137), ("lost", 255)]
    other = [json.loads(x) for x in cli(path, "events", "--json", "--namespace", "other")[1]
             .splitlines()]  # fmt: skip
    assert {e["id"] for e in other} == {"lost"} and len(other) == 5
    only = [json.loads(x) for x in cli(path, "events", "--json", "--id", "stuck")[1].splitlines()]
    assert [e["type"] for e in only] == ["Created", "Started"]
    assert cli(path, "events", "--json", "--since", "1h")[1].count("\n") == heads[-1]
    assert cli(path, "events", "--json", "--until", "1h")[1] == ""
    assert cli(path, "events", "--since", "yesterday-ish")[0] == 1


def test_replay_gives_the_table_as_it_stood(root) -> None:
    path, heads = root
    replay = functools.partial(cli, path, "--node", "node-a", "replay")  # whose tasks they are
    at = lambda n: json.loads(replay("--json", "--position", str(n))[1])  # noqa: E731
    assert at(heads[0]) == []
    [running] = at(heads[1])
    assert (running["id"], running["status"], running["incarnation"]) == ("ok", "running", 2)
    [stopped] = at(heads[2])
    assert (stopped["status"], stopped["exit_status"]) == ("stopped", 137)
    assert {(t["id"], t["node"]) for t in at(heads[-1])} == {
        ("ok", "node-a"), ("lost", "node-a"), ("stuck", "node-a")}  # fmt: skip
    assert json.loads(replay("--json", "--at", "1h")[1]) == []
    now = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    assert len(json.loads(replay("--json", "--at", now)[1])) == 3
    # Another node's table has none of them, unless it asks for node a's or every node's.
    elsewhere = functools.partial(cli, path, "--node", "node-b", "replay", "--json", "--at", now)
    assert json.loads(elsewhere()[1]) == []
    assert len(json.loads(elsewhere("--node", "node-a")[1])) == 3
    assert len(json.loads(elsewhere("--all-nodes")[1])) == 3
    assert cli(path, "replay")[0] == 2  # one of --at / --position is required


def test_audit_finds_the_anomalies(root) -> None:
    path, _ = root
    code, out = cli(path, "audit", "--json", "--stuck-after", "0s")
    report = json.loads(out)
    assert code == 0
    kinds = sorted((a["kind"], a["id"]) for a in report["anomalies"])
    # ok#2 was SIGKILLed: one anomaly for it (killed-by-signal), not also a non-zero exit;
    # lost's shim died and its 255 stands for "unknown": shim-lost, not also a non-zero exit.
    assert kinds == [
        ("deleted-without-exit", "never"), ("killed-by-signal", "ok"), ("oom", "lost"),
        ("shim-lost", "lost"), ("stuck-running", "stuck")]  # fmt: skip
    assert report["exit_statuses"] == {"0": 1, "137": 1, "255": 1}
    assert report["summary"]["incarnations"] == 5
    default_threshold = json.loads(cli(path, "audit", "--json")[1])
    assert "stuck" not in {a["id"] for a in default_threshold["anomalies"]}


def test_projections_status_rebuild_verify(root) -> None:
    path, heads = root
    status = json.loads(cli(path, "projections", "status", "--json")[1])
    views = {"task_states", "event_index", "state_files"}
    assert {(s["name"], s["lag"]) for s in status} == {(name, heads[-1]) for name in views}
    assert cli(path, "projections", "rebuild")[0] == 0
    status = json.loads(cli(path, "projections", "status", "--json")[1])
    assert all(s["lag"] == 0 and s["position"] == heads[-1] for s in status)
    code, out = cli(path, "projections", "verify")
    assert code == 0 and "task_states: ok" in out and "event_index: ok" in out
    assert cli(path, "projections", "rebuild", "nope")[0] == 1


def test_verify_reports_a_view_that_lies(root) -> None:
    import sqlite3

    path, _ = root
    assert cli(path, "projections", "verify")[0] == 0
    with sqlite3.connect(path / "projections" / "task_states.db") as db:
        db.execute("UPDATE task_states SET state = replace(state, '\"running\"', '\"paused\"')")
    code, out = cli(path, "projections", "verify")
    assert code == 1 and "task_states: 1 difference(s)" in out and "event_index: ok" in out
    code, out = cli(path, "projections", "verify", "--json")
    verdicts = {view["name"]: view["differences"] for view in json.loads(out)}
    assert code == 1 and len(verdicts["task_states"]) == 1 and verdicts["event_index"] == []
    assert cli(path, "projections", "rebuild", "task_states")[0] == 0
    assert cli(path, "projections", "verify")[0] == 0


def test_events_follow_shows_new_events_as_they_are_recorded(root) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    path, heads = root
    shimledger = str(Path(sys.executable).with_name("shimledger"))
    follower = subprocess.Popen(
        [shimledger, "--root", str(path), "events", "--follow", "--json", "--id", "late"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        preexec_fn=at_a_shell,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # let it print the (empty) backlog and start following

        async def append() -> None:
            store = EventStore(sqlite_env(path))
            task = Task(namespace="default", task_id="late", incarnation=1, bundle="/b",
                        pid=5, runtime="r", node="node-a", state_dir="", cause=CLI)  # fmt: skip
            await store.save(task)
            await store.aclose()

        asyncio.run(append())
        line = follower.stdout.readline()  # type: ignore[union-attr]
        record = json.loads(line)
        assert (record["type"], record["id"], record["position"]) == ("Created", "late",
                                                                      heads[-1] + 1)  # fmt: skip
        follower.send_signal(signal.SIGINT)  # how a user ends it: quietly, exit 0
        assert follower.wait(timeout=10) == 0
        assert follower.stderr.read() == ""  # type: ignore[union-attr]
    finally:
        follower.kill()
        follower.wait()
        follower.stdout.close()  # type: ignore[union-attr]
        follower.stderr.close()  # type: ignore[union-attr]

"""Two nodes, one PostgreSQL history: each runs its own tasks and never touches the other's.

Each node is what a host would be: its own root, state dir and node name, the CLI run in a
UTS namespace of its own whose host name is the node's (so the default node, the host
name, is what tells them apart: no ``--node``). Both point ``--store`` at the session's
real PostgreSQL cluster. The same task IDs run on both, at the same time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.settings import Settings
from tests.conftest import cli_env, teardown, verify

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
LIFECYCLE = ["Created", "Started", "Exited", "Deleted"]


@dataclass
class Node:
    """One host's view of the fleet: its settings and a way to run its CLI."""

    name: str
    settings: Settings

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The CLI as this host runs it: in a UTS namespace whose host name is the node's."""
        env = cli_env(self.settings) | {"SHIMLEDGER_STORE": str(self.settings.store)}
        env.pop("SHIMLEDGER_NODE", None)
        argv = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"',
                self.name, SHIMLEDGER, *args]  # fmt: skip
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    def ok(self, *args: str) -> str:
        result = self.cli(*args)
        assert result.returncode == 0, f"{self.name}: {args}: {result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args))


@pytest.fixture
def fleet(real: None, postgres_url: str, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    """Nodes alpha and beta on one database; afterwards each deletes its own tasks (through
    its own manager), nothing may be left, and each node's views agree with the history."""
    nodes = []
    for name in ("alpha", "beta"):
        state = Path(tempfile.mkdtemp(prefix=f"sl-{name[0]}-", dir="/tmp"))
        settings = Settings(root=tmp_path / name, state=state, namespace="test",
                            store=postgres_url, node=name)  # fmt: skip
        nodes.append(Node(name, settings))
    try:
        yield nodes[0], nodes[1]
    finally:
        leftovers = [f"{node.name}: {left}" for node in nodes for left in teardown(node.settings)]
        differences = {node.name: verify(node.settings) for node in nodes}
        for node in nodes:
            shutil.rmtree(node.settings.state, ignore_errors=True)
    assert not leftovers, f"the test left these behind: {leftovers}"
    assert not any(any(d.values()) for d in differences.values()), differences


def by_incarnation(history: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for record in history:
        grouped.setdefault(record["incarnation"], []).append(record)
    return grouped


def node_of(events: list[dict[str, Any]]) -> str:
    """The node an incarnation belongs to, as its Created says; every Cause must agree."""
    created = events[0]
    assert created["type"] == "Created"
    causes = {e["cause"].get("node") for e in events}
    assert causes == {created["node"]}, events
    return str(created["node"])


def test_parallel_lifecycles_of_the_same_ids_on_two_nodes(
    fleet: tuple[Node, Node], bundle: Callable[..., Path]
) -> None:
    alpha, beta = fleet
    path = str(bundle("sh", "-c", "exit 3"))
    ids = [f"job{n}" for n in range(5)]
    runs = [(node, task_id) for task_id in ids for node in (alpha, beta)]
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        results = list(pool.map(lambda r: r[0].cli("run", "--rm", "--bundle", path, r[1]), runs))
    for (node, task_id), result in zip(runs, results, strict=True):
        assert result.returncode == 3, f"{node.name} {task_id}: {result.stderr}"
        assert "Traceback" not in result.stderr

    for task_id in ids:
        history = alpha.json("history", "--json", task_id)
        assert beta.json("history", "--json", task_id) == history  # one fleet, one history
        incarnations = by_incarnation(history)
        assert sorted(incarnations) == [1, 2]
        owners = sorted(node_of(events) for events in incarnations.values())
        assert owners == ["alpha", "beta"]
        for events in incarnations.values():
            assert [e["type"] for e in events] == LIFECYCLE
            assert events[2]["exit_status"] == 3
    assert alpha.json("list", "--format", "json") == []
    assert beta.json("list", "--format", "json") == []


def test_a_node_never_reconciles_or_kills_the_other_nodes_task(
    fleet: tuple[Node, Node], bundle: Callable[..., Path]
) -> None:
    alpha, beta = fleet
    path = str(bundle("sleep", "300"))
    alpha.ok("run", "-d", "--bundle", path, "svc")
    before = alpha.json("history", "--json", "svc")
    assert [e["type"] for e in before] == ["Created", "Started"]

    # beta has no bundle, shim or socket for svc: nothing of that may read as a lost shim.
    assert beta.json("list", "--format", "json") == []
    beta.ok("reconcile", "-A")
    beta.ok("list", "--all-nodes")
    assert alpha.json("history", "--json", "svc") == before

    refused = beta.cli("kill", "svc", "KILL")
    assert refused.returncode != 0 and "alpha" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert alpha.json("history", "--json", "svc") == before

    # The same ID on beta while alpha's runs: beta's own incarnation, killed on beta alone.
    beta.ok("run", "-d", "--bundle", path, "svc")
    [mine] = beta.json("list", "--format", "json")
    assert (mine["id"], mine["status"], mine["incarnation"]) == ("svc", "running", 2)
    listed = beta.json("list", "--all-nodes", "--format", "json")
    assert sorted((t["node"], t["incarnation"], t["status"]) for t in listed) == [
        ("alpha", 1, "running"), ("beta", 2, "running")]  # fmt: skip
    beta.ok("kill", "svc", "KILL")
    beta.ok("delete", "-f", "svc")

    [theirs] = alpha.json("list", "--format", "json")
    assert (theirs["id"], theirs["status"], theirs["incarnation"]) == ("svc", "running", 1)
    alpha.ok("kill", "svc", "KILL")
    alpha.ok("delete", "-f", "svc")
    incarnations = by_incarnation(alpha.json("history", "--json", "svc"))
    assert {n: node_of(events) for n, events in incarnations.items()} == {1: "alpha", 2: "beta"}
    for events in incarnations.values():
        kinds = [e["type"] for e in events]
        assert kinds[:2] == ["Created", "Started"] and kinds[-1] == "Deleted", kinds
        assert "ShimLost" not in kinds, kinds
        assert kinds.count("Exited") == 1, kinds

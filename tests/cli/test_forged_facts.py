"""Facts only a task's own shim may state, through the real CLI, shim, runc and SQLite.

Any process of our user can connect to the event sink's socket. A /tasks/exit from anyone
but the task's shim must not end the task in history; a history that an old sink let such
an exit into is corrected by reconciliation (the shim still reports the init running),
and `delete -f` ends the task whatever its record says.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.empty_pb2 import Empty

from adapters.proto import events_pb2, forward_pb2
from adapters.ttrpc.client import TtrpcClient
from cli.bootstrap import Settings, wire
from domain.state_dir import StateDir
from domain.values import Cause
from tests.conftest import cli_env, cli_runner
from tests.waiting import wait_until

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
ID = "victim"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Run:
    return cli_runner(settings)


def history(cli: Run) -> list[dict[str, Any]]:
    result = cli("history", "--json", ID)
    assert result.returncode == 0, result.stderr
    events: list[dict[str, Any]] = json.loads(result.stdout)
    return events


def types(cli: Run) -> list[str]:
    return [e["type"] for e in history(cli)]


def sink_served(path: Path) -> bool:
    """True once some process listens on the sink (a placeholder refuses connections)."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
    return True


def forged_exit(pid: int, status: int) -> forward_pb2.ForwardRequest:
    """A /tasks/exit of the task's init, as any process could send it: no exited_at."""
    exit_ = events_pb2.TaskExit(container_id=ID, id=ID, pid=pid, exit_status=status)
    return forward_pb2.ForwardRequest(envelope=forward_pb2.Envelope(
        namespace="test", topic="/tasks/exit",
        event=AnyProto(type_url="containerd.events.TaskExit", value=exit_.SerializeToString()),
    ))  # fmt: skip


async def forward(path: Path, request: forward_pb2.ForwardRequest) -> None:
    """Send one event to the sink; the call returns once the sink has handled it."""
    async with await TtrpcClient.connect(f"unix://{path}") as client:
        await client.call("containerd.services.events.ttrpc.v1.Events", "Forward",
                          request, Empty, timeout=20)  # fmt: skip


def test_an_exit_sent_by_anyone_but_the_tasks_shim_is_not_recorded(
    cli: Run, bundle: Callable[..., Path], settings: Settings
) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), ID).returncode == 0
    pid = json.loads(cli("state", ID).stdout)["pid"]
    sink = StateDir(settings.state).events_socket
    # `wait` serves the event sink while it waits: the forged event reaches a recorder.
    waiter = subprocess.Popen([SHIMLEDGER, "wait", ID], env=cli_env(settings),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until(lambda: sink_served(sink), "timed out waiting for wait to serve the event sink")
        asyncio.run(forward(sink, forged_exit(pid, 42)))  # from this test's own pid

        assert types(cli) == ["Created", "Started"]
        assert json.loads(cli("state", ID).stdout)["status"] == "running"
        kill = cli("kill", ID, "KILL")
        assert kill.returncode == 0, kill.stderr
        _, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 137, err
    events = history(cli)
    assert [e["type"] for e in events] == ["Created", "Started", "Killed", "Exited"]
    assert events[-1]["exit_status"] == 137
    assert recent(events[-1]["exited_at"])
    assert cli("delete", ID).returncode == 0


def recent(timestamp: str) -> bool:
    return datetime.fromisoformat(timestamp) > datetime(2020, 1, 1, tzinfo=UTC)


def record_forged_exit(settings: Settings) -> None:
    """What the old sink let a forged /tasks/exit do: Exited(42) at the epoch, on record."""

    async def record() -> None:
        async with wire(settings, sink="refuse") as wiring:
            recorder = wiring.components.recorder
            async with recorder.editing(settings.namespace, ID) as task:
                assert task is not None
                task.observe_exit(42, EPOCH, Cause(kind="shim-event", detail="/tasks/exit"))

    asyncio.run(record())


def test_reconcile_retracts_an_exit_the_shim_contradicts(
    cli: Run, bundle: Callable[..., Path], settings: Settings
) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), ID).returncode == 0
    record_forged_exit(settings)
    assert json.loads(cli("state", ID).stdout)["status"] == "stopped"

    report = json.loads(cli("reconcile", "--json").stdout)
    [entry] = [e for e in report if e["id"] == ID]
    assert (entry["action"], entry["recorded"]) == ("exit-retracted", ["ExitRetracted"]), entry
    state = json.loads(cli("state", ID).stdout)
    assert (state["status"], state["exit_status"], state["exited_at"]) == ("running", None, None)
    retracted = history(cli)[-1]
    assert retracted["cause"]["kind"] == "reconciliation"
    assert json.loads(cli("reconcile", "--json").stdout)[0]["action"] == "unchanged"

    assert cli("kill", ID, "KILL").returncode == 0  # there is something to kill after all
    assert cli("wait", ID).returncode == 137
    assert cli("delete", ID).returncode == 0
    assert types(cli) == [
        "Created", "Started", "Exited", "ExitRetracted", "Killed", "Exited", "Deleted"]  # fmt: skip


def test_delete_force_ends_a_task_whose_record_says_stopped_while_it_runs(
    cli: Run, bundle: Callable[..., Path], settings: Settings
) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), ID).returncode == 0
    record_forged_exit(settings)

    deleted = cli("delete", "-f", ID)
    assert deleted.returncode == 0, deleted.stderr
    events = history(cli)
    assert [e["type"] for e in events] == [
        "Created", "Started", "Exited", "ExitRetracted", "Killed", "Exited", "Deleted"]  # fmt: skip
    assert events[-2]["exit_status"] == 137
    assert cli("list", "-q").stdout == ""


def test_kill_reaches_a_task_whose_record_says_stopped_while_it_runs(
    cli: Run, bundle: Callable[..., Path], settings: Settings
) -> None:
    """No reconcile first: kill asks the shim about a stopped record before it refuses."""
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), ID).returncode == 0
    record_forged_exit(settings)

    killed = cli("kill", ID, "KILL")
    assert killed.returncode == 0, killed.stderr
    assert cli("wait", ID).returncode == 137
    events = history(cli)
    assert [e["type"] for e in events] == [
        "Created", "Started", "Exited", "ExitRetracted", "Killed", "Exited"]  # fmt: skip
    assert events[-1]["exit_status"] == 137
    assert recent(events[-1]["exited_at"])
    assert cli("delete", ID).returncode == 0

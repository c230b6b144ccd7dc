"""ps as runc's (issue 13): ps(1)'s lines of the task's processes, the pids as JSON, our
richer JSON under --json; and wait, which ends the first test's task with its status."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from cli.bootstrap import Settings
from tests.conftest import cli_runner
from tests.waiting import wait_until

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return cli_runner(settings)


def test_ps_lists_the_processes_and_wait_returns_the_exit_status(cli, bundle) -> None:
    # It exits when the test says so (a file appears in its rootfs), never on a timer that
    # a loaded machine could outrun.
    path = bundle("sh", "-c", "sleep 300 & until [ -e /go ]; do sleep 0.01; done; exit 4")
    assert cli("run", "-d", "--bundle", str(path), "busy").returncode == 0
    init = json.loads(cli("state", "busy").stdout)["pid"]
    processes = json.loads(cli("ps", "--json", "busy").stdout)
    assert init in {p["pid"] for p in processes} and len(processes) >= 2
    assert all(p["exec_id"] == "" for p in processes)
    (path / "rootfs" / "go").touch()
    waited = cli("wait", "busy")
    assert (waited.returncode, waited.stdout) == (4, "4\n")
    gone = cli("ps", "busy")  # as runc's: ps's header, and nothing of the task
    assert (gone.returncode, gone.stdout.count("\n")) == (0, 1) and "PID" in gone.stdout
    assert json.loads(cli("ps", "--format", "json", "busy").stdout) == []
    missing = cli("ps", "nosuch")
    assert missing.returncode == 1 and "nosuch" in missing.stderr
    assert cli("delete", "busy").returncode == 0


def test_ps_prints_ps_lines_of_the_task_and_its_pids_as_runcs(cli, bundle) -> None:
    # Two processes that stay as they are while the test looks (no loop forking sleeps).
    assert cli("run", "-d", "-b", str(bundle("sh", "-c", "sleep 300 & exec sleep 301")),
               "steady").returncode == 0  # fmt: skip

    def commands() -> list[str]:
        return sorted(p["command"] for p in json.loads(cli("ps", "--json", "steady").stdout))

    wait_until(lambda: commands() == ["sleep 300", "sleep 301"], "the shell to exec a sleep")
    pids = json.loads(cli("ps", "--format", "json", "steady").stdout)  # runc's: the pids
    processes = json.loads(cli("ps", "--json", "steady").stdout)
    assert sorted(pids) == sorted(p["pid"] for p in processes) and len(pids) == 2

    # The table is ps(1)'s own (-ef by default), kept to the task's lines, as runc's.
    header, *lines = cli("ps", "steady").stdout.splitlines()
    assert header.split()[:2] == ["UID", "PID"] and "CMD" in header
    assert sorted(int(line.split()[1]) for line in lines) == sorted(pids)
    assert sorted(line.split()[-1] for line in lines) == ["300", "301"]
    # Whatever follows the ID is ps's, flags included (runc's flags end at the ID).
    custom = cli("ps", "steady", "-o", "pid,comm").stdout.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"]
    assert sorted(line.split() for line in custom[1:]) == sorted([str(p), "sleep"] for p in pids)
    assert cli("ps", "steady", "--", "-o", "pid").stdout.split() == ["PID", *map(str, sorted(pids))]
    no_pid = cli("ps", "steady", "-o", "comm")
    assert no_pid.returncode == 1 and "no PID column" in no_pid.stderr
    bad = cli("ps", "steady", "--no-such-ps-option")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "ps --no-such" in bad.stderr
    mixed = cli("ps", "--format", "json", "steady", "-o", "pid")
    assert mixed.returncode == 1 and "ps options are for the table" in mixed.stderr
    assert cli("delete", "-f", "steady").returncode == 0

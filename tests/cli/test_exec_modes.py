"""exec as runc has it beyond the foreground (issue 13): -d leaves the process running and
its exit is still recorded; a created task takes an exec; flags a shim cannot honour are
refused with the reason, and record nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from tests.conftest import cli_runner
from tests.waiting import wait_until

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return cli_runner(settings)


def history(cli: Cli, task_id: str) -> list[dict[str, object]]:
    return json.loads(cli("history", "--json", task_id).stdout)


def test_exec_detached_returns_at_once_logs_its_output_and_its_exit_is_recorded(
    cli: Cli, bundle, tmp_path: Path
) -> None:
    path = bundle("sleep", "300")
    assert cli("run", "-d", "-b", str(path), "host").returncode == 0
    go, pid_file = path / "rootfs" / "go", tmp_path / "exec.pid"
    # It ends when the test says so: returning at once cannot be told from a quick exit.
    script = "echo from-exec; until [ -e /go ]; do sleep 0.01; done; exit 3"
    done = cli("exec", "-d", "--pid-file", str(pid_file), "host", "--", "sh", "-c", script)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    pid = int(pid_file.read_text())
    assert Path(f"/proc/{pid}").exists()  # still running: the command did not wait for it
    assert pid in {p["pid"] for p in json.loads(cli("ps", "--json", "host").stdout)}
    wait_until(lambda: "from-exec" in cli("logs", "host").stdout, "the exec's output in the log")
    go.touch()

    def exec_exit() -> object:
        cli("state", "host")  # reconciles: the shim keeps the exec's exit until delete
        ended = [e for e in history(cli, "host") if e["type"] == "ExecExited"]
        return ended[0]["exit_status"] if ended else None

    wait_until(lambda: exec_exit() == 3, "the detached exec's exit to be recorded")
    types = [e["type"] for e in history(cli, "host")]
    assert types == ["Created", "Started", "ExecAdded", "ExecStarted", "ExecExited"]
    started = next(e for e in history(cli, "host") if e["type"] == "ExecStarted")
    assert started["pid"] == pid
    assert cli("delete", "-f", "host").returncode == 0


def test_a_created_task_takes_an_exec_as_runcs_does(cli: Cli, bundle) -> None:
    assert cli("create", "-b", str(bundle("sleep", "300")), "early").returncode == 0
    ran = cli("exec", "early", "--", "sh", "-c", "echo before-start; exit 5")
    assert (ran.returncode, ran.stdout) == (5, "before-start\n"), ran.stderr
    assert json.loads(cli("state", "early").stdout)["status"] == "created"
    assert cli("start", "early").returncode == 0
    assert [e["type"] for e in history(cli, "early")] == [
        "Created", "ExecAdded", "ExecStarted", "ExecExited", "Started"]  # fmt: skip
    assert cli("delete", "-f", "early").returncode == 0


REFUSED = [(["--preserve-fds", "2"], "--preserve-fds: the shim starts the process"),
           (["-d", "-t"], "exec -d -t needs --console-socket"),
           (["-d", "-i"], "exec -d cannot take -i")]  # fmt: skip


@pytest.mark.alone("refusals only: served, the same code refuses them in serve")
def test_what_a_shim_cannot_do_is_refused_and_records_nothing(cli: Cli, bundle) -> None:
    assert cli("run", "-d", "-b", str(bundle("sleep", "300")), "plain").returncode == 0
    for args, said in REFUSED:
        refused = cli("exec", *args, "plain", "--", "true")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, args
        assert said in refused.stderr, args
    assert [e["type"] for e in history(cli, "plain")] == ["Created", "Started"]
    assert cli("delete", "-f", "plain").returncode == 0

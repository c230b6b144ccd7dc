"""exec as runc has it (issue 13): its status (255 when it cannot run), env, cwd, user,
groups, process file and pid file; -d leaves the process running and its exit is still
recorded; a created task takes an exec; flags a shim cannot honour are refused with the
reason, and record nothing."""

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


def test_exec_runs_in_the_task_and_exits_with_its_status(cli, bundle) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "host").returncode == 0
    result = cli("exec", "--env", "FOO=bar", "--cwd", "/tmp", "host", "--",
                 "sh", "-c", "echo $FOO; pwd; echo oops >&2; exit 5")  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (5, "bar\n/tmp\n", "oops\n")
    assert json.loads(cli("state", "host").stdout)["status"] == "running"  # not the task's exit

    events = json.loads(cli("history", "--json", "host").stdout)
    execs = [(e["type"], e.get("exit_status")) for e in events if e["type"].startswith("Exec")]
    assert execs == [("ExecAdded", None), ("ExecStarted", None), ("ExecExited", 5)]
    assert len({e["exec_id"] for e in events if "exec_id" in e}) == 1

    # runc's exec says "could not run it" with 255, apart from any status the process has
    missing = cli("exec", "host", "--", "no-such-binary")
    assert missing.returncode == 255 and "no-such-binary" in missing.stderr
    # ... and history gives that exec its end: added, never started, 255 with the reason
    failed = [e for e in history(cli, "host")[-2:] if e["type"].startswith("Exec")]
    assert [(e["type"], e.get("exit_status")) for e in failed] == [("ExecAdded", None),
                                                                   ("ExecExited", 255)]  # fmt: skip
    assert failed[0]["exec_id"] == failed[1]["exec_id"]
    assert "did not start" in failed[1]["cause"]["detail"] and failed[1]["cause"]["kind"] == "cli"
    assert "no-such-binary" in failed[1]["cause"]["detail"]
    unknown = cli("exec", "nobody", "--", "true")
    assert unknown.returncode == 255 and "nobody does not exist" in unknown.stderr
    assert cli("kill", "host", "KILL").returncode == 0
    refused = cli("exec", "host", "--", "true")
    assert refused.returncode == 255 and "only a created or running task" in refused.stderr
    assert cli("delete", "host").returncode == 0


def test_exec_takes_runcs_user_groups_process_file_and_pid_file(cli, bundle, tmp_path) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "host").returncode == 0
    pid_file = tmp_path / "exec.pid"
    ran = cli("exec", "-u", "1000:1001", "-g", "10", "--additional-gids", "20",
              "--pid-file", str(pid_file), "host", "--", "id")  # fmt: skip
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "uid=1000 gid=1001 groups=10,20\n", "")
    started = [e for e in json.loads(cli("history", "--json", "host").stdout)
               if e["type"] == "ExecStarted"]  # fmt: skip
    assert pid_file.read_text() == str(started[-1]["pid"])  # the host's pid, as runc writes it

    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh", "-c", "echo from-file; pwd; id -u"],
                                   "cwd": "/tmp", "env": ["PATH=/bin"],
                                   "user": {"uid": 7, "gid": 7}}))  # fmt: skip
    from_file = cli("exec", "--process", str(process), "host")
    assert (from_file.returncode, from_file.stdout) == (0, "from-file\n/tmp\n7\n")

    for args, says in ((["-u", "root"], "is not UID or UID:GID"), ([], "needs a command"),
                       (["-p", str(tmp_path / "none.json")], "does not exist")):  # fmt: skip
        refused = cli("exec", *args, "host")
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr
    nowhere = str(tmp_path / "no" / "pid")
    unwritable = cli("exec", "--pid-file", nowhere, "host", "--", "sleep", "300")
    assert unwritable.returncode == 255
    assert unwritable.stderr == f"shimledger: {nowhere}: No such file or directory\n"  # as asked
    execs = [e["type"] for e in json.loads(cli("history", "--json", "host").stdout)
             if e["type"].startswith("Exec")]  # fmt: skip
    assert execs[-3:] == ["ExecAdded", "ExecStarted", "ExecExited"]  # killed, and recorded
    assert cli("delete", "-f", "host").returncode == 0


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

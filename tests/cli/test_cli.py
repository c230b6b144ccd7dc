"""The CLI as a user runs it: real processes, the real shim, exit codes and output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.bootstrap import Settings
from cli.lifecycle_cmds import parse_signal
from cli.main import app
from domain.errors import InvalidArgumentError
from tests.conftest import cli_env, processes_in

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))


@pytest.fixture
def cli(settings: Settings) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = cli_env(settings)

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SHIMLEDGER, *args], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip

    return run


def test_run_in_the_foreground_passes_output_and_exit_status(cli, bundle) -> None:
    path = bundle("sh", "-c", "echo hi; echo to-stderr >&2; exit 7")
    result = cli("run", "--rm", "--bundle", str(path), "fg")
    assert (result.returncode, result.stdout, result.stderr) == (7, "hi\n", "to-stderr\n")

    history = json.loads(cli("history", "--json", "fg").stdout)
    assert [e["type"] for e in history] == ["Created", "Started", "Exited", "Deleted"]
    assert history[2]["exit_status"] == 7
    assert all(e["id"] == "fg" and "T" in e["timestamp"] for e in history)
    assert history[0]["cause"]["kind"] == "cli" and history[0]["pid"] > 0
    assert "Exited" in cli("history", "fg").stdout
    assert json.loads(cli("list", "--format", "json").stdout) == []


def test_bundle_defaults_to_the_current_directory(cli, bundle) -> None:
    result = cli("run", "--rm", "here", cwd=bundle("sh", "-c", "exit 3"))
    assert result.returncode == 3, result.stderr


def test_create_start_list_state_kill_delete(cli, bundle, settings) -> None:
    path = bundle("sleep", "300")
    assert cli("create", "--bundle", str(path), "svc").returncode == 0
    [entry] = json.loads(cli("list", "--format", "json").stdout)
    assert entry["id"] == "svc" and entry["status"] == "created" and entry["pid"] > 0
    assert entry["bundle"] == str(path)

    state_file = settings.state / settings.namespace / "svc" / "state.json"
    saved = json.loads(state_file.read_text())  # runs-compatible, kept from the history
    assert (saved["ID"], saved["Status"], saved["Runtime"]) == (
        "svc", "created", "io.containerd.runc.v2")  # fmt: skip

    assert cli("start", "svc").returncode == 0
    assert json.loads(state_file.read_text())["Status"] == "running"
    state = json.loads(cli("state", "svc").stdout)
    assert state["status"] == "running" and state["exit_status"] is None
    assert cli("list", "-q").stdout.split() == ["svc"]
    assert "running" in cli("list").stdout

    again = cli("start", "svc")
    assert again.returncode == 1 and "only a created task can be started" in again.stderr

    refused = cli("delete", "svc")
    assert refused.returncode == 1 and "running" in refused.stderr

    assert cli("kill", "svc", "KILL").returncode == 0
    state = json.loads(cli("state", "svc").stdout)  # never stale: the exit is recorded first
    assert (state["status"], state["exit_status"]) == ("stopped", 137)

    assert cli("delete", "svc").returncode == 0
    assert cli("list", "-q").stdout == ""
    gone = cli("state", "svc")
    assert gone.returncode == 1 and "does not exist" in gone.stderr


def test_delete_force_kills_a_running_task(cli, bundle) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "bg").returncode == 0
    assert json.loads(cli("state", "bg").stdout)["status"] == "running"
    assert cli("delete", "-f", "bg").returncode == 0
    events = json.loads(cli("history", "--json", "bg").stdout)
    assert [(e["type"], e.get("exit_status")) for e in events][-2:] == [
        ("Exited", 137), ("Deleted", None)]  # fmt: skip


def test_version_and_help_answer_to_runcs_short_flags(cli) -> None:
    for flag in ("-v", "--version"):
        said = cli(flag)
        assert said.returncode == 0, said.stderr
        first, spec, *_ = said.stdout.splitlines()
        assert re.fullmatch(r"shimledger version \d+\.\d+\.\d+", first)
        runc = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout
        runc_spec = re.search(r"^spec: (\S+)$", runc, re.MULTILINE)
        assert runc_spec is not None, runc
        assert spec.startswith(f"spec: {runc_spec.group(1)} (runc ")
    assert cli("-h").stdout == cli("--help").stdout != ""
    assert cli("kill", "-h").stdout == cli("kill", "--help").stdout != ""


def test_kill_0_probes_and_kill_all_of_a_stopped_task_succeeds_as_runcs_do(cli, bundle) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "probed").returncode == 0
    assert cli("kill", "probed", "0").returncode == 0
    assert json.loads(cli("state", "probed").stdout)["status"] == "running"
    assert cli("kill", "probed", "KILL").returncode == 0
    assert cli("wait", "probed").returncode == 137
    stopped = cli("kill", "probed", "0")
    assert stopped.returncode == 1 and "nothing to kill" in stopped.stderr
    # runc kill --all of a stopped container signals what its cgroup still holds: exit 0
    assert cli("kill", "--all", "probed", "KILL").returncode == 0
    events = json.loads(cli("history", "--json", "probed").stdout)
    assert [(e["type"], e.get("signal")) for e in events if e["type"] == "Killed"] == [
        ("Killed", 9)]  # fmt: skip
    assert cli("delete", "probed").returncode == 0


def test_delete_force_of_an_id_that_does_not_exist_exits_0_as_runc_does(cli, bundle) -> None:
    missing = cli("delete", "never-was")
    assert missing.returncode == 1 and "never-was" in missing.stderr
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "real").returncode == 0
    forced = cli("delete", "--force", "--json", "never-was", "real")
    assert (forced.returncode, forced.stderr) == (0, "")
    entries = {e["id"]: e for e in json.loads(forced.stdout)}
    assert (entries["never-was"]["deleted"], entries["never-was"]["error"]) == (False, None)
    assert entries["real"]["deleted"] is True
    unrecorded = cli("history", "--json", "never-was")
    assert unrecorded.returncode == 1 and "no history" in unrecorded.stderr
    assert cli("list", "-q").stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["state", "nope"], "does not exist"),
        (["start", "nope"], "does not exist"),
        (["kill", "nope"], "does not exist"),
        (["delete", "nope"], "does not exist"),
        (["history", "nope"], "no history"),
        (["state", "../x"], "invalid"),
        (["create", "--bundle", "/does/not/exist", "x"], "does not exist"),
        (["create", "--bundle", "/", "x"], "no config.json"),
        (["kill", "x", "SIGNOPE"], "unknown signal"),
        (["run", "-d", "--rm", "x"], "cannot go with --detach"),
        (["--state", "/tmp/" + "s" * 120, "list"], "too long"),
        (["--root", "/etc/hostname", "history", "x"], "cannot use /etc/hostname"),
    ],
)
def test_errors_are_one_clear_line_and_exit_1(cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_missing_shim_or_bad_config_leaves_nothing_behind(cli, bundle, settings) -> None:
    path = bundle("true")
    missing = cli("create", "--runtime", "io.containerd.nope.v9", "--bundle", str(path), "x")
    assert missing.returncode == 1 and "containerd-shim-nope-v9 not found" in missing.stderr

    (path / "config.json").write_text("{not json")
    broken = cli("create", "--bundle", str(path), "x")
    assert broken.returncode == 1 and "not valid JSON" in broken.stderr

    assert not (settings.state / settings.namespace / "x").exists()
    assert cli("history", "x").returncode == 1


def test_a_non_root_user_is_told_what_needs_root(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(app, ["--root", str(tmp_path), "--state", str(tmp_path),
                                      "list"])  # fmt: skip
    assert result.exit_code == 1
    assert "needs root" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("text", "number"), [("9", 9), ("KILL", 9), ("SIGTERM", 15),
                                              ("hup", 1)])  # fmt: skip
def test_signals_by_number_or_name(text: str, number: int) -> None:
    assert parse_signal(text) == number


def test_unknown_signal_numbers_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        parse_signal("999")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda spec, path: spec["process"].update(terminal=True), "terminal=true"),
        (lambda spec, path: spec["root"].update(path=str(path / "nope")), "does not exist"),
        (lambda spec, path: spec["root"].update(path=7), "no root.path string"),
        (lambda spec, path: spec["process"].update(args=[]), "no process.args"),
        (lambda spec, path: spec["root"].update(path=str(path / "config.json")),
         "is not a directory"),
    ],
)
def test_a_bad_config_is_refused_before_anything_starts(cli, bundle, settings, change, message):
    path = bundle("true")
    spec = json.loads((path / "config.json").read_text())
    change(spec, path)
    (path / "config.json").write_text(json.dumps(spec))
    result = cli("create", "--bundle", str(path), "bad")
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (settings.state / settings.namespace / "bad").exists()


def test_delete_goes_on_past_an_unknown_id(cli, bundle) -> None:
    assert cli("create", "--bundle", str(bundle("true")), "real1").returncode == 0
    result = cli("delete", "nope", "real1")
    assert result.returncode == 1 and "nope" in result.stderr
    assert cli("list", "-q").stdout == ""


def test_sigterm_to_a_foreground_run_reaches_the_container(cli, bundle, settings) -> None:
    env = cli_env(settings)
    # pid 1 of a container ignores signals it has no handler for: give it one.
    path = bundle("sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.1; done")
    process = subprocess.Popen([SHIMLEDGER, "run", "--keep", "--bundle", str(path), "fwd"], env=env,
                               stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = cli("state", "fwd")
            if state.returncode == 0 and json.loads(state.stdout)["status"] == "running":
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 42
    finally:
        process.kill()
        process.wait()
    exited = json.loads(cli("history", "--json", "fwd").stdout)[-1]
    assert (exited["type"], exited["exit_status"]) == ("Exited", 42)
    assert cli("delete", "fwd").returncode == 0


@pytest.mark.parametrize("kill_with", [signal.SIGTERM, signal.SIGKILL])
def test_a_create_killed_at_any_moment_leaves_nothing_untracked(
    cli, bundle, settings, kill_with
) -> None:
    """Kill the CLI at a spread of moments; afterwards the ID is either a task or free.

    Three moments: each step of a create is killed at deterministically by
    tests/cli/test_crash_points.py; this is the same promise, by a plain signal.
    """
    env = cli_env(settings)
    path = bundle("sleep", "300")
    for n, delay in enumerate([0.05, 0.2, 0.4]):
        task_id = f"k{n}"
        process = subprocess.Popen([SHIMLEDGER, "create", "--bundle", str(path), task_id],
                                   env=env, stdin=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        process.send_signal(kill_with)
        process.wait(timeout=30)
        known = cli("state", task_id).returncode == 0
        leftover = (settings.state / settings.namespace / task_id).exists()
        if kill_with == signal.SIGTERM:
            assert known or not leftover, f"{task_id}: a bundle with no history after SIGTERM"
        # Whatever is there, delete -f clears it, and the ID can be used again.
        if known or leftover:
            assert cli("delete", "-f", task_id).returncode == 0
        assert not (settings.state / settings.namespace / task_id).exists()
        assert cli("create", "--bundle", str(path), task_id).returncode == 0
        assert cli("delete", task_id).returncode == 0


def test_a_foreground_run_deletes_its_task_once_exited_unless_keep_as_runc(cli, bundle) -> None:
    path = bundle("sh", "-c", "exit 3")
    assert cli("run", "--bundle", str(path), "gone").returncode == 3
    history = json.loads(cli("history", "--json", "gone").stdout)
    assert [e["type"] for e in history] == ["Created", "Started", "Exited", "Deleted"]
    assert cli("list", "-q").stdout == ""

    assert cli("run", "--keep", "--bundle", str(path), "kept").returncode == 3
    assert json.loads(cli("state", "kept").stdout)["status"] == "stopped"
    for flags, says in ((["--keep", "--rm"], "--keep and --rm say opposite things"),
                        (["-d", "--keep"], "--keep needs the foreground")):  # fmt: skip
        refused = cli("run", *flags, "--bundle", str(path), "x")
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr
    assert cli("delete", "kept").returncode == 0


def test_a_detached_task_keeps_its_output_in_a_log(cli, bundle) -> None:
    path = bundle("sh", "-c", "for i in 1 2 3; do echo out $i; echo err $i >&2; sleep 0.2; done")
    assert cli("run", "-d", "--bundle", str(path), "chatty").returncode == 0
    followed = cli("logs", "--follow", "chatty")  # returns once the task has exited
    assert followed.returncode == 0
    assert sorted(followed.stdout.splitlines()) == [
        "err 1", "err 2", "err 3", "out 1", "out 2", "out 3"]  # fmt: skip
    assert json.loads(cli("state", "chatty").stdout)["status"] == "stopped"
    assert cli("logs", "--tail", "1", "chatty").stdout == followed.stdout.splitlines(True)[-1]
    assert cli("delete", "chatty").returncode == 0
    assert cli("logs", "chatty").stdout == followed.stdout  # kept after delete


def test_a_foreground_task_has_no_log(cli, bundle) -> None:
    assert cli("run", "--rm", "--bundle", str(bundle("true")), "fg2").returncode == 0
    result = cli("logs", "fg2")
    assert result.returncode == 1 and "has no log" in result.stderr


def test_a_foreground_run_whose_shim_dies_exits_255_and_leaves_nothing(
    cli, bundle, settings
) -> None:
    env = cli_env(settings)
    path = bundle("sleep", "300")
    process = subprocess.Popen([SHIMLEDGER, "run", "--rm", "--bundle", str(path), "fg-lost"],
                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while cli("state", "fg-lost").returncode != 0 or json.loads(
        cli("state", "fg-lost").stdout)["status"] != "running":  # fmt: skip
        assert time.monotonic() < deadline and process.poll() is None, "the task never ran"
        time.sleep(0.05)
    [shim_pid] = [pid for pid, _ in processes_in(settings.state)
                  if Path(f"/proc/{pid}/comm").read_text().startswith("containerd-shim")]
    os.kill(shim_pid, signal.SIGKILL)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 255, err
    events = [e["type"] for e in json.loads(cli("history", "--json", "fg-lost").stdout)]
    assert events == ["Created", "Started", "ShimLost", "Exited", "Deleted"]


def test_the_shims_own_log_is_kept_beside_the_tasks(cli, bundle, settings) -> None:
    assert cli("run", "--rm", "--bundle", str(bundle("true")), "logged").returncode == 0
    kept = settings.root / "logs" / settings.namespace / "logged" / "shim.log"
    text = kept.read_text()
    assert 'msg="starting signal loop"' in text and "runtime=io.containerd.runc.v2" in text
    assert kept.stat().st_mode & 0o777 == 0o600

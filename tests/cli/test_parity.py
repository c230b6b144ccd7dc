"""runc parity through the real CLI: stdin, logging, JSON shapes, filters, terminals."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
from pathlib import Path

import pytest
import typer

from cli.bootstrap import Settings
from cli.common import run_click
from tests.cli.piped import SHIMLEDGER, Cli, piped_cli, plain
from tests.conftest import cli_env

ANSI = "\x1b["


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return piped_cli(settings)


# --- run -i / exec -i --------------------------------------------------------------------------


def test_run_interactive_passes_stdin_and_its_eof(cli, bundle) -> None:
    result = cli("run", "-i", "--rm", "--bundle", str(bundle("cat")), "cat1", input="hello\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello\n", "")

    # More than a pipe holds, and the count proves EOF came after the last byte.
    big = "".join(f"line {n}\n" for n in range(100_000))
    counted = cli("run", "-i", "--rm", "-b", str(bundle("wc", "-c")), "wc1", input=big)
    assert (counted.returncode, counted.stdout.strip()) == (0, str(len(big)))


def test_without_interactive_the_task_reads_no_stdin(cli, bundle) -> None:
    result = cli("run", "--rm", "-b", str(bundle("cat")), "cat2", input="not for it\n")
    assert (result.returncode, result.stdout) == (0, "")


def test_a_task_that_ignores_its_stdin_still_ends_the_run(cli, bundle, settings) -> None:
    # `yes` never ends: the run must end with the task, not with our stdin.
    producer = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
    try:
        result = subprocess.run(
            [SHIMLEDGER, "run", "-i", "--rm", "-b", str(bundle("sh", "-c", "exit 3")), "deaf"],
            stdin=producer.stdout, env=cli_env(settings), capture_output=True, timeout=60,
        )  # fmt: skip
    finally:
        producer.kill()
        producer.wait()
        assert producer.stdout is not None
        producer.stdout.close()
    assert result.returncode == 3, result.stderr


def test_exec_interactive_passes_stdin(cli, bundle) -> None:
    assert cli("run", "-d", "-b", str(bundle("sleep", "300")), "host").returncode == 0
    result = cli("exec", "-i", "host", "--", "wc", "-l", input="a\nb\nc\n")
    assert (result.returncode, result.stdout.strip()) == (0, "3")
    without = cli("exec", "host", "--", "cat", input="ignored\n")
    assert (without.returncode, without.stdout) == (0, "")
    assert cli("delete", "-f", "host").returncode == 0


def test_interactive_needs_the_foreground(cli) -> None:
    result = cli("run", "-d", "-i", "x")
    assert result.returncode == 1
    assert (
        result.stderr
        == "shimledger: --interactive needs the foreground: it cannot go with --detach\n"
    )


# --- --log, --log-format, --debug, errors ----------------------------------------------------


def test_log_file_gets_json_records_and_stderr_one_line(cli, tmp_path) -> None:
    log = tmp_path / "shimledger.log"
    result = cli("--log", str(log), "--log-format", "json", "state", "nope")
    assert result.returncode == 1
    assert result.stderr == "shimledger: task nope does not exist in namespace test\n"
    [record] = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"level", "msg", "time"} <= record.keys()
    assert (record["level"], record["msg"]) == (
        "error",
        "task nope does not exist in namespace test",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["time"])


def test_log_file_in_text_format_and_debug_adds_the_traceback(cli, tmp_path) -> None:
    log = tmp_path / "text.log"
    assert cli("--log", str(log), "state", "nope").returncode == 1
    [line] = log.read_text().splitlines()
    assert re.fullmatch(r'time="[^"]+Z" level=error msg="task nope does not exist in '
                        r'namespace test" logger=shimledger', line)  # fmt: skip

    debug_log = tmp_path / "debug.log"
    result = cli("--debug", "--log", str(debug_log), "--log-format", "json", "state", "nope")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    records = [json.loads(line) for line in debug_log.read_text().splitlines()]
    assert "debug" in {r["level"] for r in records}
    assert any("NotFoundError" in r.get("traceback", "") for r in records)
    assert not any(r["logger"].startswith("aiosqlite") for r in records)


def test_debug_without_a_log_file_shows_the_traceback_on_stderr(cli) -> None:
    result = cli("--debug", "state", "nope")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "level=debug" in result.stderr
    assert (
        result.stderr.splitlines()[-1] == "shimledger: task nope does not exist in namespace test"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--format", "xml"], "unknown --format 'xml': use table, json or a Go template"),
        (["kill"], "Missing argument 'ID'"),
        (["--bogus", "list"], "No such option: --bogus"),
        (["nosuch"], "No such command 'nosuch'"),
        (["--log-format", "xml", "list"], "'xml' is not one of 'text', 'json'"),
        (["--log", "/does/not/exist/x.log", "list"], "cannot open /does/not/exist/x.log"),
        (["list", "--status", "zombie"], "unknown status zombie"),
    ],
)
def test_usage_errors_are_one_plain_line_and_exit_1_like_runc(args, message) -> None:
    result = plain(*args)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("shimledger: ") and ANSI not in result.stderr
    assert "╭" not in result.stderr and "Traceback" not in result.stderr


def test_no_arguments_prints_help_and_succeeds_like_runc() -> None:
    result = plain()
    assert result.returncode == 0 and "Usage: shimledger" in result.stdout
    assert "╭" not in result.stdout and ANSI not in result.stdout  # plain: it is piped


def test_a_bug_shows_its_traceback_and_one_line(capsys) -> None:
    broken = typer.Typer()

    @broken.command()
    def explode() -> None:
        raise ZeroDivisionError("a bug")

    assert run_click(typer.main.get_command(broken), []) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "explode" in err
    assert err.splitlines()[-1] == ("shimledger: internal error (a bug; the traceback above "
                                    "shows where): ZeroDivisionError: a bug")  # fmt: skip


# --- completion ---------------------------------------------------------------------------------


def bash_complete(words: str, env: dict[str, str], script: Path) -> list[str]:
    """What bash offers after ``words`` (a trailing space: a new word), with our script loaded."""
    bin_dir = str(Path(SHIMLEDGER).parent)
    completed = subprocess.run(
        ["bash", "-c", f'source {script}; COMP_WORDS=({words}); '
                       'COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); '
                       '_shimledger_completion shimledger; echo "${COMPREPLY[@]}"'],
        env=env | {"PATH": f"{bin_dir}:{env['PATH']}"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.split()


def test_shell_completion_completes_commands_in_bash(tmp_path) -> None:
    script = plain("--show-completion", "bash")
    assert script.returncode == 0
    assert "complete -o default -F _shimledger_completion shimledger" in script.stdout
    (tmp_path / "completion.bash").write_text(script.stdout)
    assert bash_complete("shimledger li", dict(os.environ), tmp_path / "completion.bash") == [
        "list"]  # fmt: skip


def test_shell_completion_offers_the_namespaces_task_ids(cli, bundle, settings, tmp_path) -> None:
    for task_id in ("alpha", "alps", "beta"):
        assert cli("create", "-b", str(bundle("true")), task_id).returncode == 0
    script = tmp_path / "completion.bash"
    script.write_text(plain("--show-completion", "bash").stdout)
    env = cli_env(settings)
    assert bash_complete("shimledger state al", env, script) == ["alpha", "alps"]
    assert bash_complete("shimledger kill ''", env, script) == ["alpha", "alps", "beta"]
    assert bash_complete("shimledger -n elsewhere state ''", env, script) == []
    assert cli("delete", "alpha", "alps", "beta").returncode == 0


# --- JSON shapes, filters, pid files -------------------------------------------------------------

# runc's keys of `runc state` and `runc list --format json`, in runc's order, then ours.
RUNC_KEYS = ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner",
             "annotations"]  # fmt: skip
TASK_KEYS = [*RUNC_KEYS, "namespace", "incarnation", "started", "exit_status", "exited_at",
             "node"]  # fmt: skip


def test_json_shapes_have_stable_keys(cli, bundle, tmp_path, settings) -> None:
    pid_file = tmp_path / "pid"
    path = bundle("sleep", "300")
    config = json.loads((path / "config.json").read_text())
    config["annotations"] = {"org.example.team": "ledger", "empty": ""}
    (path / "config.json").write_text(json.dumps(config))
    assert cli("run", "-d", "--pid-file", str(pid_file), "-b", str(path), "shape").returncode == 0
    state = json.loads(cli("state", "shape").stdout)
    assert list(state) == TASK_KEYS and int(pid_file.read_text()) == state["pid"]
    assert state["node"] == settings.node  # the CLI's, from SHIMLEDGER_NODE
    assert (state["ociVersion"], state["owner"]) == (config["ociVersion"], "root")
    assert state["rootfs"] == str((path / config["root"]["path"]).resolve())
    assert state["annotations"] == config["annotations"] and state["bundle"] == str(path)

    [entry] = json.loads(cli("list", "--json").stdout)
    assert list(entry) == TASK_KEYS
    assert json.loads(cli("list", "--format", "json").stdout) == [entry]

    processes = json.loads(cli("ps", "--json", "shape").stdout)
    assert all(set(p) == {"pid", "exec_id", "command"} for p in processes)
    assert "sleep 300" in {p["command"] for p in processes}

    assert cli("kill", "shape", "KILL").returncode == 0
    waited = cli("wait", "--json", "shape")
    assert waited.returncode == 137
    assert json.loads(waited.stdout).keys() == {"id", "namespace", "exit_status", "exited_at"}
    assert json.loads(waited.stdout)["exit_status"] == 137
    stopped = json.loads(cli("state", "shape").stdout)
    assert (stopped["status"], stopped["pid"], stopped["exit_status"]) == ("stopped", 0, 137)
    assert json.loads(cli("list", "--json").stdout)[0]["pid"] == 0  # runc's: 0 once stopped

    deleted = cli("delete", "--json", "shape", "ghost")
    assert deleted.returncode == 1 and "ghost" in deleted.stderr
    first, second = json.loads(deleted.stdout)
    assert set(first) == set(second) == {"id", "namespace", "deleted", "incarnation",
                                         "exit_status", "exited_at", "error"}  # fmt: skip
    assert (first["id"], first["deleted"], first["exit_status"], first["error"]) == (
        "shape", True, 137, None)  # fmt: skip
    assert (second["id"], second["deleted"]) == ("ghost", False) and "ghost" in second["error"]


def test_create_writes_the_pid_file(cli, bundle, tmp_path) -> None:
    pid_file = tmp_path / "created.pid"
    assert (
        cli("create", "--pid-file", str(pid_file), "-b", str(bundle("true")), "pf").returncode == 0
    )
    assert int(pid_file.read_text()) == json.loads(cli("state", "pf").stdout)["pid"]
    assert cli("delete", "pf").returncode == 0


def test_a_pid_file_that_cannot_be_written_leaves_no_task(cli, bundle) -> None:
    result = cli("create", "--pid-file", "/does/not/exist/pid", "-b", str(bundle("true")), "pf2")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert cli("list", "-q").stdout == ""


def test_list_filters_by_status_and_namespace(cli, bundle) -> None:
    assert cli("create", "-b", str(bundle("sleep", "300")), "waiting").returncode == 0
    assert cli("run", "-d", "-b", str(bundle("sleep", "300")), "busy").returncode == 0
    assert cli("-n", "other", "create", "-b", str(bundle("true")), "elsewhere").returncode == 0

    def ids(*args: str) -> list[str]:
        result = cli("list", "-q", *args)
        assert result.returncode == 0, result.stderr
        return sorted(result.stdout.split())

    assert ids() == ["busy", "waiting"]
    assert ids("--status", "created") == ["waiting"]
    either = ids("-s", "running", "-s", "created")
    assert either == ["busy", "waiting"], cli("history", "busy").stdout
    assert ids("--status", "stopped") == []
    assert ids("--all-namespaces") == ["other/elsewhere", "test/busy", "test/waiting"]
    everywhere = json.loads(cli("list", "-A", "--status", "created", "--json").stdout)
    assert sorted((e["namespace"], e["id"]) for e in everywhere) == [
        ("other", "elsewhere"), ("test", "waiting")]  # fmt: skip
    header = cli("list", "-A").stdout.splitlines()[0]
    assert header.split("\t")[0] == "ID" and header.split("\t")[-1] == "NAMESPACE"


# --- terminals and pipes -------------------------------------------------------------------------


def on_a_terminal(settings: Settings, *args: str, **extra_env: str) -> str:
    """Run the CLI with its stdout on a pseudo-terminal; what a person would see."""
    controller, terminal = pty.openpty()
    env = cli_env(settings) | {"TERM": "xterm"}
    env.pop("NO_COLOR", None)
    env |= extra_env
    process = subprocess.Popen([SHIMLEDGER, *args], stdout=terminal, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, env=env)  # fmt: skip
    os.close(terminal)
    chunks = []
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    return b"".join(chunks).decode()


def test_tables_and_colour_on_a_terminal_plain_tabs_when_piped(cli, bundle, settings) -> None:
    assert cli("run", "-d", "-b", str(bundle("sleep", "300")), "shown").returncode == 0

    piped = cli("list").stdout
    assert ANSI not in piped
    rows = [line.split("\t") for line in piped.splitlines()]
    assert rows[0] == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER", "EXIT"]
    assert rows[1][0] == "shown" and rows[1][2] == "running" and rows[1][6] == ""  # empty kept
    assert rows[1][5] == "root"

    for args in (["ps", "shown"], ["history", "shown"], ["state", "shown"], ["--help"],
                 ["list", "--help"], ["events"]):  # fmt: skip
        result = cli(*args)
        assert result.returncode == 0 and ANSI not in result.stdout + result.stderr, args
        assert "╭" not in result.stdout, args

    shown = on_a_terminal(settings, "list")
    assert ANSI in shown and "\t" not in shown
    assert re.search(r"ID\s+PID\s+STATUS", re.sub(r"\x1b\[[0-9;]*m", "", shown))

    monochrome = on_a_terminal(settings, "--help")
    assert "Usage" in monochrome
    assert cli("delete", "-f", "shown").returncode == 0


def test_no_color_keeps_the_terminal_table_but_drops_the_colour(cli, bundle, settings) -> None:
    assert cli("create", "-b", str(bundle("true")), "grey").returncode == 0
    shown = on_a_terminal(settings, "list", NO_COLOR="1")
    assert ANSI not in shown and "\t" not in shown and "grey" in shown
    assert cli("delete", "grey").returncode == 0

"""`list` answered from the view file alone (cli/quick_reads.py): the same bytes as the full
CLI's, and the full CLI whenever that cannot be proved.

Which path answered is told by ``--debug``: the quick path writes one record saying so,
which the full path never does. The full path is forced with ``--log FILE`` (an option the
quick path leaves to it), which changes nothing on stdout.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cli import quick_reads
from cli.bootstrap import Settings
from projections.schemas import BOOKKEEPING
from projections.task_states import TaskStatesView
from projections.view_file import expected_schema
from tests.conftest import cli_env, processes_in
from tests.waiting import wait_until

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
QUICK = "answered by the quick path"
alone = pytest.mark.alone("the quick path runs only when no serve takes the command")
Run = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def cli(settings: Settings, tmp_path: Path) -> Run:
    env = dict(cli_env(settings), SHIMLEDGER_NO_SERVE="1")
    env.pop("SHIMLEDGER_STORE", None)

    def run(*args: str, extra: dict[str, str] | None = None, stdout: int | None = None
            ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        return subprocess.run(
            [SHIMLEDGER, *args], env={**env, **(extra or {})}, timeout=60,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    return run


def quick(cli: Run, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    """`--debug list ARGS`, which must have been answered by the quick path."""
    result = cli("--debug", "list", *args, **kw)
    assert result.returncode == 0 and QUICK.encode() in result.stderr, result.stderr
    return result


def full(cli: Run, tmp_path: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    """The full CLI's `list ARGS` (forced by --log, debug records going to that file)."""
    log = tmp_path / "full.log"
    result = cli("--debug", "--log", str(log), "list", *args, **kw)
    assert QUICK.encode() not in result.stderr and QUICK not in log.read_text()
    return result


def fell_back(cli: Run, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    """`--debug ARGS`, which the full path must have answered."""
    result = cli("--debug", *args, **kw)
    assert QUICK.encode() not in result.stderr, result.stderr
    return result


@pytest.fixture
def stopped(cli: Run, bundle: Callable[..., Path]) -> list[str]:
    """Two tasks run detached to their end (exit 3), and one of another namespace: IDs with
    each separator an ID may hold, in the order list sorts them."""
    path = bundle("sh", "-c", "exit 3")
    ids = ["a-1", "b.2_3"]
    everyone = [*(("test", i) for i in ids), ("other", "x")]
    for namespace, task_id in everyone:
        assert cli("-n", namespace, "run", "-d", "--bundle", str(path), task_id).returncode == 0
    for namespace, task_id in everyone:  # wait: one call, whenever the task ends
        assert cli("-n", namespace, "wait", task_id).returncode == 3
    # The full path (--log keeps the quick one out) catches the views up: what the commands
    # above recorded may not be folded in yet, and the quick path would rightly fall back.
    assert cli("--log", os.devnull, "list").returncode == 0
    return ids


def test_the_view_schema_is_the_views_own() -> None:
    assert expected_schema(quick_reads.VIEW_SCHEMA) == expected_schema(
        BOOKKEEPING + TaskStatesView.schema
    )


HANDLED = [(), ("--json",), ("--format", "json"), ("--format=json",), ("-f", "table"), ("-q",),
           ("--quiet",), ("-A",), ("-A", "-q"), ("--all-namespaces", "--json"),
           ("--status", "stopped"), ("-s", "running"), ("-s", "running", "-q"),
           ("--json", "--format", "table")]  # fmt: skip


@alone
def test_each_handled_form_prints_the_full_paths_bytes(cli, stopped, tmp_path) -> None:
    for args in HANDLED:
        expected = full(cli, tmp_path, *args)
        got = quick(cli, *args)
        assert (got.returncode, got.stdout) == (expected.returncode, expected.stdout), args
    assert quick(cli).stdout.decode().splitlines()[1:] == [
        line for line in full(cli, tmp_path).stdout.decode().splitlines()[1:]
    ]
    assert [line.split("\t")[0] for line in quick(cli).stdout.decode().splitlines()] == [
        "ID",
        *stopped,
    ]


@alone
def test_no_task_and_other_nodes(cli, settings, tmp_path, bundle) -> None:
    assert cli("run", "--rm", "--bundle", str(bundle("true")), "gone").returncode == 0
    # Its Deleted came after the view's last catch-up (delete reads the view first): a lag.
    assert fell_back(cli, "list").returncode == 0
    for args in [(), ("-q",), ("--json",)]:
        assert quick(cli, *args).stdout == full(cli, tmp_path, *args).stdout
    assert quick(cli, "-q").stdout == b""
    other = {"SHIMLEDGER_NODE": "elsewhere"}
    assert quick(cli, extra=other).stdout == full(cli, tmp_path, extra=other).stdout


@alone
@pytest.mark.parametrize(
    "args",
    [("--store", "sqlite:///{root}/events.db"), ("--log", "{tmp}/l"), ("--node", "elsewhere")],
)
def test_an_option_it_leaves_to_the_full_path(cli, settings, stopped, tmp_path, args) -> None:
    args = tuple(a.format(root=settings.root, tmp=tmp_path) for a in args)
    if args[0] == "--node":  # a list option: the node's tasks, with a NODE column
        result, expected = fell_back(cli, "list", *args), full(cli, tmp_path, *args)
    else:
        result, expected = fell_back(cli, *args, "list"), full(cli, tmp_path)
    assert result.returncode == 0 and result.stdout == expected.stdout


@alone
def test_environment_it_leaves_to_the_full_path(cli, settings, stopped, tmp_path) -> None:
    expected = full(cli, tmp_path).stdout
    for extra in [{"SHIMLEDGER_STORE": f"sqlite:///{settings.root}/events.db"},
                  {"SHIMLEDGER_LOG_MAX_SIZE": "10M"}, {"COMPRESSOR_TOPIC": ""}]:  # fmt: skip
        result = fell_back(cli, "list", extra=extra)
        assert (result.returncode, result.stdout) == (0, expected), extra


@alone
def test_a_lagging_view_falls_back(cli, settings, stopped, tmp_path, bundle) -> None:
    view = settings.root / "projections" / "task_states.db"
    shutil.copy(view, tmp_path / "old.db")
    assert cli("run", "--rm", "--bundle", str(bundle("true")), "later").returncode == 0
    shutil.copy(tmp_path / "old.db", view)  # the view as it was: behind the store's head
    result = fell_back(cli, "list", "--json")
    assert b'"later"' not in result.stdout and result.returncode == 0  # run --rm: deleted
    assert quick(cli, "--json").stdout == result.stdout  # the full path caught it up


@alone
def test_a_view_from_another_store_or_schema_falls_back(cli, settings, stopped, tmp_path) -> None:
    expected = full(cli, tmp_path).stdout
    view = settings.root / "projections" / "task_states.db"
    for change in ["UPDATE store SET first_event = 'another store'",
                   "DROP INDEX task_states_node"]:  # fmt: skip
        with sqlite3.connect(view) as db:
            db.execute(change)
        assert fell_back(cli, "list").stdout == expected, change  # the full path rebuilt it
        assert quick(cli).stdout == expected
    view.unlink()
    assert fell_back(cli, "list").stdout == expected
    assert quick(cli).stdout == expected


@alone
def test_a_task_with_a_process_falls_back_and_a_dead_shim_is_seen(
    cli, settings, bundle, tmp_path
) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "live").returncode == 0
    result = fell_back(cli, "list")
    assert b"\trunning\t" in result.stdout
    [shim] = [pid for pid, _ in processes_in(settings.state)
              if Path(f"/proc/{pid}/comm").read_text().startswith("containerd-shim")]  # fmt: skip
    os.kill(shim, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{shim}").exists(), "the shim to go")
    result = fell_back(cli, "list")  # the view still says running: the full path reconciles
    row = result.stdout.decode().splitlines()[-1].split("\t")
    assert (row[0], row[2], row[-2:]) == ("live", "stopped", ["root", "255"]), result.stdout
    assert quick(cli).stdout == result.stdout == full(cli, tmp_path).stdout


@alone
def test_a_terminal_falls_back(cli, stopped) -> None:
    controller, terminal = pty.openpty()
    try:
        result = cli("--debug", "list", "-q", stdout=terminal)
        shown = os.read(controller, 4096)
    finally:
        os.close(controller)
        os.close(terminal)
    assert result.returncode == 0 and QUICK.encode() not in result.stderr
    assert shown.split() == [i.encode() for i in stopped]


@alone
def test_a_state_dir_of_another_root_falls_back(cli, settings, stopped, tmp_path) -> None:
    result = fell_back(cli, "--root", str(tmp_path / "another"), "list")
    assert result.returncode == 1 and b"belongs to root" in result.stderr


@alone
def test_argv_the_quick_path_leaves_alone(cli, settings, stopped, capfd, monkeypatch) -> None:
    """In this process: the plain form answers (so the check can fail), the others do not."""
    env = cli_env(settings)
    assert cli("list").returncode == 0  # whichever path: the view is caught up after it
    assert quick_reads.answer(["list"], env) == 0
    for argv in [["list", "--help"], ["--help", "list"], ["list", "x"], ["list", "-qA"],
                 ["list", "--all-nodes"], ["list", "-s", "gone"], ["list", "--format", "JSON"],
                 ["-n", "io", "list"], ["-n", "a..b", "list"], ["--node", "x y", "list"],
                 ["--root", "--debug", "list"], ["list", "--json=1"], ["state", "list"],
                 ["--log-format", "xml", "list"], ["list", "--", "-q"]]:  # fmt: skip
        assert quick_reads.answer(argv, env) is None, argv
    for extra in [{"_SHIMLEDGER_COMPLETE": "bash_source"}, {"SHIMLEDGER_ROOT": ""},
                  {"PERSISTENCE_MODULE": "eventsourcing.popo"}]:  # fmt: skip
        assert quick_reads.answer(["list"], {**env, **extra}) is None, extra
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert quick_reads.answer(["list"], env) is None
    assert quick_reads.answer(["--debug", "list"], env) is None  # never a debug line alone
    assert QUICK not in capfd.readouterr().err


@alone
def test_the_quick_path_loads_the_stdlib_alone(cli, settings, stopped) -> None:
    from tests.test_architecture import not_stdlib

    code = "import sys, os; from cli import quick_reads as q; c = q.answer(['list'], os.environ)"
    code += "; print(c, *sorted(sys.modules), file=sys.stderr)"
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(settings),
                            capture_output=True, text=True, check=True)  # fmt: skip
    code_, *loaded = result.stderr.split()
    assert code_ == "0" and "sqlite3" in loaded and not_stdlib(loaded) == []


def test_served_list_is_served_and_the_same(settings, cli_mode, cli, stopped, tmp_path) -> None:
    env = {"SHIMLEDGER_NO_SERVE": "0"}
    result = cli("--debug", "list", extra=env)
    assert result.returncode == 0
    if cli_mode == "served":
        assert QUICK.encode() not in result.stderr and b"handed over by pid" in result.stderr
    else:
        assert QUICK.encode() in result.stderr
    assert result.stdout == full(cli, tmp_path).stdout

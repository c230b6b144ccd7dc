"""CLI processes racing each other on one root and state dir, as users (and scripts) do.

Every command is its own process, so the per-task file locks and the store's conflict
checks are all that keep two of them from both winning a transition. Each race is run a
few times with the second process started a little earlier or later, so that both orders
(and the overlap in between) come up: start twice, kill against delete --force, delete
twice. Each transition must have exactly one winner, the loser one clear line of error,
and history each event once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli.bootstrap import Settings
from domain.state_dir import StateDir
from tests.conftest import cli_env
from tests.waiting import wait_until

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
TIMEOUT = 120  # per process: the machine is shared, and 8 start at once

# How much later (negative: earlier) the second racer starts than the first.
STAGGER = [0.0, 0.05, -0.05, 0.15, -0.15]

Bundle = Callable[..., Path]


class Racer:
    """A finished shimledger process: its pid (as history's causes name it) and its result."""

    def __init__(self, process: subprocess.Popen[str], args: tuple[str, ...]) -> None:
        self.pid = process.pid
        self.args = args
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        self.returncode = process.returncode
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self) -> str:
        return f"<{' '.join(self.args)}: exit {self.returncode}, stderr {self.stderr!r}>"


class Cli:
    """Runs shimledger against the test's root and state dirs, alone or several at once."""

    def __init__(self, settings: Settings) -> None:
        self.env = cli_env(settings)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [SHIMLEDGER, *args], env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def spawn_shell(self, script: str, *args: str) -> subprocess.Popen[str]:
        """``sh -c SCRIPT sh ARGS...``: several commands in a row, as a user's script runs them."""
        return subprocess.Popen(
            ["sh", "-c", script, "sh", *args], env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def __call__(self, *args: str) -> Racer:
        return Racer(self.spawn(*args), args)

    def race(self, first: tuple[str, ...], second: tuple[str, ...], stagger: float) -> list[Racer]:
        """Start both commands ``stagger`` seconds apart (in either order); both results."""
        if stagger >= 0:
            a = self.spawn(*first)
            time.sleep(stagger)
            b = self.spawn(*second)
        else:
            b = self.spawn(*second)
            time.sleep(-stagger)
            a = self.spawn(*first)
        return [Racer(a, first), Racer(b, second)]

    def history(self, task_id: str) -> list[dict[str, Any]]:
        result = self("history", "--json", task_id)
        assert result.returncode == 0, result
        events: list[dict[str, Any]] = json.loads(result.stdout)
        return events


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return Cli(settings)


def one_clear_line(racer: Racer) -> str:
    """The loser's complaint: exit 1, one line on stderr, no traceback."""
    assert racer.returncode == 1, racer
    lines = racer.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shimledger: "), racer
    assert "Traceback" not in racer.stderr
    return lines[0]


def types(history: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in history]


# --- many CLIs, each on its own task ------------------------------------------------------


def test_eight_parallel_runs_on_their_own_tasks_all_complete(cli: Cli, bundle: Bundle) -> None:
    statuses = {f"par{n}": 10 + n for n in range(8)}
    paths = {task_id: bundle("sh", "-c", f"exit {status}") for task_id, status in statuses.items()}
    processes = {
        task_id: cli.spawn("run", "--rm", "--bundle", str(paths[task_id]), task_id)
        for task_id in statuses
    }
    results = {task_id: Racer(p, ("run", task_id)) for task_id, p in processes.items()}

    for task_id, status in statuses.items():
        assert results[task_id].returncode == status, results[task_id]
        history = cli.history(task_id)
        assert types(history) == ["Created", "Started", "Exited", "Deleted"], task_id
        assert history[2]["exit_status"] == status
        assert {e["cause"]["pid"] for e in history if e["cause"]["kind"] == "cli"} == {
            results[task_id].pid
        }
    assert cli("list", "-q").stdout == ""


def test_eight_parallel_create_start_wait_delete_sequences(cli: Cli, bundle: Bundle) -> None:
    """Each step a process of its own: events of one task are often served by another's sink."""
    path = bundle("sh", "-c", "sleep 0.2; exit 3")
    script = (
        f'set -e; S={SHIMLEDGER}; $S create --bundle {path} "$1"; $S start "$1"; '
        '$S wait "$1" || test $? = 3; $S delete "$1"'
    )
    workers = [cli.spawn_shell(script, f"seq{n}") for n in range(8)]
    results = [Racer(worker, ("sequence", f"seq{n}")) for n, worker in enumerate(workers)]

    assert [r.returncode for r in results] == [0] * 8, results
    for n in range(8):
        history = cli.history(f"seq{n}")
        assert types(history) == ["Created", "Started", "Exited", "Deleted"], f"seq{n}"
        assert history[2]["exit_status"] == 3
    assert cli("list", "-q").stdout == ""


# --- two CLIs, one task -------------------------------------------------------------------


@pytest.mark.parametrize("stagger", STAGGER)
def test_start_twice_at_once_exactly_one_wins(cli: Cli, bundle: Bundle, stagger: float) -> None:
    assert cli("create", "--bundle", str(bundle("sleep", "300")), "st").returncode == 0

    racers = cli.race(("start", "st"), ("start", "st"), stagger)

    assert sorted(r.returncode for r in racers) == [0, 1], racers
    [winner] = [r for r in racers if r.returncode == 0]
    [loser] = [r for r in racers if r.returncode != 0]
    assert one_clear_line(loser) == (
        "shimledger: task st is running: only a created task can be started"
    )
    history = cli.history("st")
    assert types(history) == ["Created", "Started"]
    assert history[1]["cause"]["pid"] == winner.pid
    assert json.loads(cli("state", "st").stdout)["status"] == "running"
    assert cli("delete", "-f", "st").returncode == 0


@pytest.mark.parametrize("stagger", STAGGER)
def test_kill_against_delete_force_each_transition_once(
    cli: Cli, bundle: Bundle, stagger: float
) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "kd").returncode == 0

    killer, deleter = cli.race(("kill", "kd", "KILL"), ("delete", "-f", "kd"), stagger)

    # --force means the task goes, whoever killed it.
    assert deleter.returncode == 0, deleter
    if killer.returncode != 0:
        # It came too late: the task had stopped, or was gone already.
        message = one_clear_line(killer)
        assert message in (
            "shimledger: task kd is stopped: nothing to kill",
            "shimledger: task kd is not running",
            "shimledger: task kd does not exist in namespace test",
        ), message

    history = cli.history("kd")
    kinds = types(history)
    assert kinds[:2] == ["Created", "Started"] and kinds[-2:] == ["Exited", "Deleted"], kinds
    assert set(kinds[2:-2]) == {"Killed"}, kinds  # one or two kills, all before the exit
    killed_by = [e["cause"]["pid"] for e in history if e["type"] == "Killed"]
    # The kill command's Killed is there exactly when it said it succeeded; the delete's
    # own kill at most once; and at least one of them did it.
    assert killed_by.count(killer.pid) == (1 if killer.returncode == 0 else 0), history
    assert killed_by.count(deleter.pid) <= 1 and set(killed_by) <= {killer.pid, deleter.pid}
    assert history[-2]["exit_status"] == 137 and history[-2]["signal"] == 9
    assert history[-1]["cause"]["pid"] == deleter.pid
    assert cli("list", "-q").stdout == ""


@pytest.mark.parametrize("stagger", STAGGER[:3])
def test_delete_twice_at_once_deletes_once(cli: Cli, bundle: Bundle, stagger: float) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("true")), "dd").returncode == 0
    assert cli("wait", "dd").returncode == 0

    racers = cli.race(("delete", "dd"), ("delete", "dd"), stagger)

    assert sorted(r.returncode for r in racers) == [0, 1], racers
    [winner] = [r for r in racers if r.returncode == 0]
    [loser] = [r for r in racers if r.returncode != 0]
    assert one_clear_line(loser) == "shimledger: task dd does not exist in namespace test"
    history = cli.history("dd")
    assert types(history) == ["Created", "Started", "Exited", "Deleted"]
    assert history[-1]["cause"]["pid"] == winner.pid



def lock_is_free(path: Path) -> bool:
    """True if no process holds the task's lock (an flock, as adapters.file_lock takes it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases it
    return True


def test_delete_force_records_the_exit_of_an_exec_whose_command_is_too_late(
    cli: Cli, bundle: Bundle, settings: Settings
) -> None:
    """delete -f while an exec runs: the exec's command (here SIGSTOPped, so always late,
    as it was 1 time in 6 by itself) and the shim's events (served by that command) come
    after Deleted; delete -f records the exec's exit itself, before the task's own."""
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "ex").returncode == 0
    execer = cli.spawn("exec", "ex", "--", "sleep", "300")
    wait_until(lambda: "ExecStarted" in types(cli.history("ex")), "the exec never started",
               timeout=TIMEOUT, process=execer, step=0.02)
    lock = StateDir(settings.state).lock_file(settings.namespace, "ex")
    deadline = time.monotonic() + TIMEOUT
    while True:  # stopped where it holds no lock (not inside an event's recording)
        os.kill(execer.pid, signal.SIGSTOP)
        if lock_is_free(lock):
            break
        os.kill(execer.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the exec's command never let go of the lock"
        time.sleep(0.01)
    try:
        deleter = cli("delete", "-f", "ex")
    finally:
        os.kill(execer.pid, signal.SIGCONT)
    exec_result = Racer(execer, ("exec", "ex"))

    assert deleter.returncode == 0, deleter
    assert exec_result.returncode == 137, exec_result  # its own command saw it killed
    history = cli.history("ex")
    assert types(history) == [
        "Created", "Started", "ExecAdded", "ExecStarted", "Killed", "ExecExited", "Exited",
        "Deleted",
    ], history  # fmt: skip
    assert history[5]["exit_status"] == 137
    assert cli("list", "-q").stdout == ""

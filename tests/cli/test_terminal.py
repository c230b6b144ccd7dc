"""Terminals end to end (issue 13): `run -t` and `exec -t` through a real pty, as a person
at a terminal uses them: type, read, resize, interrupt, exit; the terminal as it was after."""

from __future__ import annotations

import json
import subprocess
import termios
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from tests.cli.pty_session import PtySession
from tests.conftest import cli_env, cli_runner

SHIMLEDGER = str(Path(__file__).parents[2] / ".venv" / "bin" / "shimledger")
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return cli_runner(settings)


@pytest.fixture
def session(settings: Settings) -> Iterator[Callable[..., PtySession]]:
    """`shimledger ARGS...` on a fresh pty; killed at the end if it still runs (its task
    is deleted by the settings fixture's teardown, through the manager)."""
    opened: list[PtySession] = []

    def open_(*args: str, rows: int = 24, columns: int = 80) -> PtySession:
        env = cli_env(settings) | {"TERM": "xterm", "PS1": "$ "}
        opened.append(PtySession([SHIMLEDGER, *args], env, rows=rows, columns=columns))
        return opened[-1]

    yield open_
    for one in opened:
        one.close()


def raw(modes: list) -> bool:
    """Echo, line editing and keyboard signals all off: what `tty.setraw` makes."""
    lflag = modes[3]
    return not lflag & (termios.ECHO | termios.ICANON | termios.ISIG)


def test_run_tty_is_an_interactive_shell_that_follows_the_terminal(session, bundle) -> None:
    shell = session("run", "-t", "--rm", "--bundle", str(bundle("sh")), "shell",
                    rows=40, columns=120)  # fmt: skip
    shell.type("echo $((6*7))\r")
    shell.expect(r"\n42\r\n")
    assert raw(shell.modes()), "our terminal stays cooked while the task's pty is attached"

    shell.type("stty size\r")  # sized before Start: the shell never saw another size
    shell.expect(r"\n40 120\r\n")
    shell.resize(30, 100)  # SIGWINCH to us: ResizePty, asynchronously; the shell polls
    shell.type('until [ "$(stty size)" = "30 100" ]; do sleep 0.1; done; echo resized\r')
    shell.expect(r"\nresized\r\n")

    shell.type("exit 3\r")
    assert shell.wait() == 3
    assert shell.modes() == shell.before, "the terminal was not put back as it was"


def test_ctrl_c_reaches_the_container_not_the_command(session, bundle) -> None:
    script = 'trap "echo interrupted; exit 7" INT; echo ready; while :; do sleep 1; done'
    task = session("run", "-t", "--rm", "--bundle", str(bundle("sh", "-c", script)), "trapper")
    task.expect(r"ready\r\n")  # the trap is set
    task.type("\x03")  # Ctrl-C: a keystroke for the task's line discipline, not our SIGINT
    task.expect(r"interrupted\r\n")
    assert task.wait() == 7
    assert task.modes() == task.before


def test_exec_tty_in_a_running_task(cli: Cli, session, bundle) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "host").returncode == 0
    shell = session("exec", "-t", "host", "sh")
    shell.type("echo $((6*7)); tty\r")
    shell.expect(r"\n42\r\n/dev/pts/\d+\r\n")
    shell.resize(33, 99)
    shell.type('until [ "$(stty size)" = "33 99" ]; do sleep 0.1; done; echo resized\r')
    shell.expect(r"\nresized\r\n")
    shell.type("exit 5\r")
    assert shell.wait() == 5
    assert shell.modes() == shell.before
    history = json.loads(cli("history", "--json", "host").stdout)
    assert [e["type"] for e in history][-3:] == ["ExecAdded", "ExecStarted", "ExecExited"]


def test_a_config_asking_for_a_terminal_gets_one_from_run_as_with_runc(
    cli: Cli, session, bundle
) -> None:
    path = bundle("sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo on-a-tty; tty")
    spec = json.loads((path / "config.json").read_text())
    spec["process"]["terminal"] = True
    (path / "config.json").write_text(json.dumps(spec))

    task = session("run", "--rm", "--bundle", str(path), "asks")  # no -t: the config says
    task.expect(r"on-a-tty\r\n/dev/pts/\d+\r\n")
    assert task.wait() == 0

    for detached in (["create"], ["run", "-d"]):  # runc: only with --console-socket
        refused = cli(*detached, "--bundle", str(path), "asks")
        assert refused.returncode == 1 and "process.terminal=true" in refused.stderr
        assert "--console-socket" in refused.stderr and "Traceback" not in refused.stderr
    assert cli("list", "-q").stdout == ""


def test_tty_needs_the_foreground(cli: Cli, bundle) -> None:
    refused = cli("run", "-d", "-t", "--bundle", str(bundle("true")), "x")
    assert refused.returncode == 1
    said = "shimledger: --tty needs the foreground: it cannot go with --detach"
    assert refused.stderr.strip() == said


def test_run_tty_with_stdin_at_eof_still_gets_all_the_output(cli: Cli, bundle) -> None:
    # A script piped into `run -t`: input ends at once, the output comes after it.
    script = "[ -t 1 ] && echo still-on-a-tty; exit 4"
    result = cli("run", "-t", "--rm", "--bundle", str(bundle("sh", "-c", script)), "piped")
    # (the pty's \r\n, read as text)
    assert (result.returncode, result.stdout) == (4, "still-on-a-tty\n"), result.stderr

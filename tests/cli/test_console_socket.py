"""--console-socket as runc has it (issue 13): a detached terminal process's pty reaches a
recvtty-style receiver, which types into the container's shell and reads its answers, and
its output still goes to `logs`; a socket that cannot take it fails the command and leaves
nothing behind."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from tests.conftest import cli_runner
from tests.waiting import wait_until

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return cli_runner(settings)


class Receiver:
    """runc's recvtty, in a test: takes the pty master sent to its socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.server.settimeout(60)
        self.master = -1
        self.seen = b""

    def receive(self) -> str:
        """The name the sender gave the pty (runc sends the pty's path)."""
        connection, _ = self.server.accept()
        with connection:
            message, fds, _, _ = socket.recv_fds(connection, 4096, 1)
        [self.master] = fds
        return message.decode()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            assert time.monotonic() < deadline, f"{text!r} never came: {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # EIO: every holder of the slave is gone
                    assert text.encode() in self.seen, self.seen
        return self.seen.decode(errors="replace")

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
        self.server.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    taking = Receiver(tmp_path / "console.sock")
    yield taking
    taking.close()


def terminal_bundle(bundle: Callable[..., Path], *args: str) -> Path:
    """A bundle whose config asks for a terminal, as runc's `spec` writes it."""
    path = bundle(*args)
    config = json.loads((path / "config.json").read_text())
    config["process"]["terminal"] = True
    (path / "config.json").write_text(json.dumps(config))
    return path


def types(cli: Cli, task_id: str) -> list[str]:
    return [e["type"] for e in json.loads(cli("history", "--json", task_id).stdout)]


def test_create_sends_the_pty_and_a_receiver_drives_the_shell(
    cli: Cli, bundle, receiver: Receiver
) -> None:
    path = terminal_bundle(bundle, "sh")
    created = cli("create", "--console-socket", str(receiver.path), "-b", str(path), "tty")
    assert created.returncode == 0, created.stderr
    assert receiver.receive().startswith("/dev/pts/")
    assert cli("start", "tty").returncode == 0
    receiver.type("echo $((6*7))\n")
    assert "42" in receiver.read_until("42\r\n")
    receiver.type("stty size; exit 3\n")
    receiver.read_until("exit 3")
    waited = cli("wait", "tty")
    assert waited.returncode == 3
    assert "42" in cli("logs", "tty").stdout  # what the pty showed, in the task's log
    assert types(cli, "tty") == ["Created", "Started", "Exited"]
    assert cli("delete", "tty").returncode == 0


def test_exec_detached_with_a_terminal_sends_its_own_pty(
    cli: Cli, bundle, receiver: Receiver
) -> None:
    assert cli("run", "-d", "-b", str(bundle("sleep", "300")), "host").returncode == 0
    ran = cli("exec", "-d", "-t", "--console-socket", str(receiver.path), "host", "--", "sh")
    assert (ran.returncode, ran.stdout) == (0, ""), ran.stderr
    receiver.receive()
    receiver.type("echo in-exec-$((6*7))\n")
    receiver.read_until("in-exec-42")
    receiver.type("exit 4\n")

    def exec_exit() -> object:
        cli("state", "host")  # reconciles the exec's exit, if nobody heard it
        ended = [e for e in json.loads(cli("history", "--json", "host").stdout)
                 if e["type"] == "ExecExited"]  # fmt: skip
        return ended[0]["exit_status"] if ended else None

    wait_until(lambda: exec_exit() == 4, "the exec's exit to be recorded")
    assert cli("delete", "-f", "host").returncode == 0


@pytest.mark.alone("refusals only: served, the same code refuses them in serve")
def test_a_socket_that_cannot_take_the_pty_fails_and_leaves_nothing(
    cli: Cli, bundle, tmp_path: Path
) -> None:
    path = terminal_bundle(bundle, "sh")
    deaf = tmp_path / "deaf.sock"  # bound, never listened on: connect is refused
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unheard:
        unheard.bind(str(deaf))
        refused = cli("run", "-d", "--console-socket", str(deaf), "-b", str(path), "lost")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"--console-socket {deaf}: ConnectionRefusedError" in refused.stderr
    plain = tmp_path / "plain-file"
    plain.write_text("")
    for args, said in [(["create", "--console-socket", str(plain)], "not a socket"),
                       (["create", "--console-socket", str(tmp_path / "none")],
                        "No such file or directory"),
                       (["run", "--console-socket", str(deaf)], "needs --detach")]:  # fmt: skip
        failed = cli(*args, "-b", str(path), "lost")
        assert failed.returncode == 1 and said in failed.stderr, (args, failed.stderr)
    no_terminal = cli("create", "--console-socket", str(deaf), "-b", str(bundle("true")), "lost")
    assert no_terminal.returncode == 1 and "no pty to send" in no_terminal.stderr
    assert json.loads(cli("list", "--json").stdout) == []
    assert cli("history", "lost").returncode == 1  # nothing was recorded of it

"""`shimledger serve` as an operator runs it: a real process beside real commands and shims."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from tests.conftest import at_a_shell, cli_env, processes_in

pytestmark = pytest.mark.alone("each test runs the serve it is about")

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
READY = "shimledger serve: events on"


class Service:
    """One `serve` process; its stderr is collected line by line."""

    def __init__(self, env: dict[str, str], *, wait: bool = True) -> None:
        self.process = subprocess.Popen(
            [SHIMLEDGER, "--debug", "serve"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait and not self._ready.wait(30):
            self.process.kill()
            raise AssertionError(f"serve did not become ready: {self.lines}")

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(READY):
                self._ready.set()

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        finally:
            self._reader.join(timeout=5)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return cli_env(settings)


@pytest.fixture
def cli(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SHIMLEDGER, *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip

    return run


@pytest.fixture
def services(env: dict[str, str]) -> Iterator[Callable[[], Service]]:
    started: list[Service] = []

    def start(wait: bool = True) -> Service:
        service = Service(env, wait=wait)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def history(cli: Callable[..., subprocess.CompletedProcess[str]], task_id: str) -> list[dict]:
    """The recorded history only: `history` reads the store and reconciles nothing."""
    result = cli("history", "--json", task_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_serve_records_exits_itself_and_survives_a_restart_losing_nothing(
    cli, bundle, services
) -> None:
    service = services()
    long = bundle("sleep", "300")
    assert cli("run", "-d", "--bundle", str(long), "steady").returncode == 0
    pid = json.loads(cli("state", "steady").stdout)["pid"]
    quick = bundle("sh", "-c", "sleep 1; exit 4")
    assert cli("run", "-d", "--bundle", str(quick), "quick").returncode == 0
    # Nobody runs a command: the shim's /tasks/exit reaches serve, which records it.
    wait_for(lambda: "Exited" in [e["type"] for e in history(cli, "quick")], "quick's exit")
    exited = history(cli, "quick")[-1]
    assert (exited["exit_status"], exited["cause"]["kind"]) == (4, "shim-event")

    later = bundle("sh", "-c", "sleep 3; exit 5")
    assert cli("run", "-d", "--bundle", str(later), "later").returncode == 0
    later_pid = json.loads(cli("state", "later").stdout)["pid"]
    assert service.stop() == 0
    assert any("containers keep running" in line for line in service.lines)
    os.kill(pid, 0)  # stopping serve did not disturb the running container
    wait_for(lambda: not Path(f"/proc/{later_pid}").exists(), "later to exit unheard")
    assert [e["type"] for e in history(cli, "later")] == ["Created", "Started"]

    restarted = services()
    # On start, serve reconciled: the exit that happened while it was down is in history,
    # with the shim's own status.
    assert any("later" in line and "exit-recorded" in line for line in restarted.lines), (
        restarted.lines
    )
    later_history = history(cli, "later")
    assert [e["type"] for e in later_history] == ["Created", "Started", "Exited"]
    assert later_history[-1]["exit_status"] == 5
    assert [e["type"] for e in history(cli, "steady")] == ["Created", "Started"]
    assert json.loads(cli("state", "steady").stdout)["status"] == "running"
    os.kill(pid, 0)
    assert restarted.stop() == 0


def test_serve_notices_a_killed_shim_without_any_command(cli, bundle, services, settings) -> None:
    service = services()
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "doomed").returncode == 0
    [(shim_pid, _)] = processes_in(settings.state)  # the shim runs in its bundle
    watching = f"watching the shim of {settings.namespace}/doomed"
    wait_for(lambda: any(watching in line for line in service.lines), "serve to watch it")
    os.kill(shim_pid, signal.SIGKILL)
    wait_for(lambda: "ShimLost" in [e["type"] for e in history(cli, "doomed")], "ShimLost")
    wait_for(lambda: history(cli, "doomed")[-1]["type"] == "Exited", "Exited(255)")
    assert history(cli, "doomed")[-1]["exit_status"] == 255


def test_events_follow_shows_new_events_while_serve_runs(cli, bundle, services, env) -> None:
    services()
    follower = subprocess.Popen(
        [SHIMLEDGER, "events", "--follow", "--json"], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=at_a_shell,
    )  # fmt: skip
    seen: list[dict] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(1)
        assert cli("run", "--rm", "--bundle", str(bundle("true")), "seen").returncode == 0
        wait_for(lambda: [e["type"] for e in seen if e["id"] == "seen"]
                 == ["Created", "Started", "Exited", "Deleted"], "the followed events")  # fmt: skip
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=10)
        reader.join(timeout=5)
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()


def test_serve_stops_cleanly_while_a_command_still_holds_the_event_sink(
    bundle, services, env, settings
) -> None:
    """A foreground run serves the sink for its whole life; SIGTERM must not wait for it."""
    path = bundle("sh", "-c", "trap 'exit 0' TERM; sleep 60 & wait")
    holder = subprocess.Popen([SHIMLEDGER, "run", "--bundle", str(path), "holder"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # Its shim exists once it serves the sink (no other command may run meanwhile: a
        # `state` here could take the sink first).
        wait_for(lambda: bool(processes_in(settings.state)), "the foreground run")
        service = services(wait=False)
        # It says why it waits once its signal handlers are in place: a SIGTERM before that
        # would test the interpreter's default, not serve's clean stop.
        wait_for(lambda: any("waiting: the event sink" in line for line in service.lines),
                 "serve to wait for the sink")  # fmt: skip
        assert service.process.poll() is None  # still waiting for the sink
        assert service.stop() == 0
        assert any("stopped before the event sink was free" in line for line in service.lines)
    finally:
        holder.send_signal(signal.SIGTERM)  # forwarded to the container, which exits 0
        out, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err

"""Every CLI test runs twice: with the whole CLI in the command's process ("alone"), and
handed by the `shimledger` entry point to a `serve` of the test's state dir ("served").

The two must be indistinguishable but for speed (cli/launcher.py), so the same assertions
hold both ways. A test about the daemonless path itself (what a command does when nobody
serves the event sink, or one that runs its own serve) is marked ``alone``, with why.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from cli.handoff import control_socket
from tests import conftest
from tests.conftest import serve_env
from tests.waiting import wait_until

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "alone(why): runs only without serve")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cli_mode" not in metafunc.fixturenames:
        return
    served = "settings" in metafunc.fixturenames and not metafunc.definition.get_closest_marker(
        "alone"
    )
    metafunc.parametrize("cli_mode", ["alone", "served"] if served else ["alone"], indirect=True)


@pytest.fixture(autouse=True)
def cli_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """ "served": every state dir the test's commands use (through cli_env) gets a real
    `shimledger serve` of its own, started on first use with the settings it is used
    with, and stopped by SIGTERM when the test ends (whatever the test did)."""
    mode = getattr(request, "param", "alone")
    if mode != "served":
        yield mode
        return
    request.getfixturevalue("settings")  # torn down after the serves stop
    log_dir = Path(request.getfixturevalue("tmp_path"))
    services: dict[Path, Serving] = {}

    def ensure(settings: Settings) -> None:
        if settings.state not in services:
            service = Serving(settings, log_dir / f"serve-{len(services)}.log")
            services[settings.state] = service
            service.start(required=False)

    conftest.SERVE_FOR = ensure
    try:
        yield mode
    finally:
        conftest.SERVE_FOR = None
        for service in services.values():
            service.stop()


class Serving:
    """A `shimledger serve` process for ``settings``, ready to take commands."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, required: bool = True) -> subprocess.Popen[bytes]:
        """Start serve and wait until it takes commands. ``required=False``: a serve that
        cannot start (the test broke the root on purpose) leaves the commands to run
        alone, as they would."""
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                # No checkpoints: signing the ledger is tests/cli/test_ledger_real.py's, and
                # a head signed as every served test's serve stops costs the suite minutes
                [SHIMLEDGER, "serve", "--checkpoint-interval", "0"], env=serve_env(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        process = self.process
        ready = lambda: b"commands on" in self.log.read_bytes()  # noqa: E731
        if required:
            wait_until(ready, f"serve to take commands ({self.log})", process=process)
        else:
            wait_until(lambda: ready() or process.poll() is not None or b"no commands" in
                       self.log.read_bytes(), f"serve to start ({self.log})")  # fmt: skip
        return process

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"serve did not stop on SIGTERM: {self.log.read_text()}") from None


class serving:
    """A `shimledger serve` for ``settings`` for the block's length."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.service = Serving(settings, log)

    def __enter__(self) -> subprocess.Popen[bytes]:
        process = self.service.start()
        assert Path(control_socket(str(self.service.settings.state))).is_socket()
        return process

    def __exit__(self, *_: object) -> None:
        self.service.stop()


@pytest.fixture
def built_history(tmp_path: Path) -> tuple[Path, list[int]]:
    """A root whose store holds tests/cli/test_history_cli.py's few tasks (appended through
    the real event store, no runtime), and the head position after each step."""
    import asyncio

    from tests.cli.test_history_cli import build_history

    return tmp_path, asyncio.run(build_history(tmp_path))

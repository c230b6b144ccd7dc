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
from tests.conftest import cli_env
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
    """ "served": a real `shimledger serve` on the test's settings for the test's length."""
    mode = getattr(request, "param", "alone")
    if mode != "served":
        yield mode
        return
    settings: Settings = request.getfixturevalue("settings")
    with serving(settings, Path(request.getfixturevalue("tmp_path")) / "serve.log"):
        yield mode


class serving:
    """A `shimledger serve` process for ``settings``, ready to take commands; stopped by
    SIGTERM on the way out (whatever the test did)."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log

    def __enter__(self) -> subprocess.Popen[bytes]:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [SHIMLEDGER, "serve"], env=cli_env(self.settings), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(lambda: b"commands on" in self.log.read_bytes(),
                   f"serve to take commands ({self.log})", process=self.process)  # fmt: skip
        assert Path(control_socket(str(self.settings.state))).is_socket()
        return self.process

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"serve did not stop on SIGTERM: {self.log.read_text()}") from None

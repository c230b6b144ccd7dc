"""The CLI as a pipe sees it: what test_parity.py and test_spec.py run commands with."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cli.bootstrap import Settings
from tests.conftest import cli_env

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))

Cli = Callable[..., subprocess.CompletedProcess[str]]


def piped_cli(settings: Settings) -> Cli:
    """The test's CLI; ``input`` is its stdin (default: /dev/null), ``cwd`` its directory."""

    def run(*args: str, input: str | None = None, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [SHIMLEDGER, *args], env=cli_env(settings), cwd=cwd, capture_output=True,
            text=True, timeout=60, input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip

    return run


def plain(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Commands that need no root dir of a test: spec, --help, completion, usage errors."""
    return subprocess.run([SHIMLEDGER, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip

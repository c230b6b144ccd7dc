"""Running shimledger as root and as another local user (nobody), for the privacy tests.

The venv's interpreter lives where only root may look (pyenv under /root), so `nobody`
runs the same entry point, cli.main:main, with the system's python3 of the same version
and the venv's packages on PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.settings import Settings
from tests.conftest import ROOT, cli_env

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
SITE_PACKAGES = Path(sys.prefix) / "lib" / VERSION / "site-packages"
ENTRY = "import sys; from cli.main import main; sys.argv[0] = 'shimledger'; main()"


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as root."""
    return subprocess.run([SHIMLEDGER, *args], env=cli_env(settings), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def as_nobody(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``argv`` run by the local user nobody (runuser), with only ``env`` besides PATH."""
    clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})}
    command = ["runuser", "-u", "nobody", "--", "env", "-i",
               *(f"{k}={v}" for k, v in clean.items()), *argv]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=60,
                          stdin=subprocess.DEVNULL, cwd="/")  # fmt: skip


def nobody_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI's entry point run by nobody, pointed at the test's root and state."""
    python = shutil.which(VERSION, path="/usr/bin:/usr/local/bin")
    if python is None or shutil.which("runuser") is None:
        reason = f"a system {VERSION} and runuser, to run the CLI as nobody"
        if os.environ.get("CI"):
            pytest.fail(f"missing {reason}")
        pytest.skip(f"needs {reason}")
    env = {
        "PYTHONPATH": f"{ROOT}:{SITE_PACKAGES}",
        "SHIMLEDGER_ROOT": str(settings.root),
        "SHIMLEDGER_STATE": str(settings.state),
        "SHIMLEDGER_NAMESPACE": settings.namespace,
    }
    return as_nobody(python, "-c", ENTRY, *args, env=env)

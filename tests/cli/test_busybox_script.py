"""scripts/busybox_bundle.py, as the README tells users to run it: from a shell, any DIR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli.bootstrap import Settings
from tests.conftest import ROOT, cli_env

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))


def test_a_relative_dir_makes_a_bundle_that_runs(settings: Settings, tmp_path: Path) -> None:
    """runc reads a relative root.path against the bundle: it must be written absolute."""
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "busybox_bundle.py"), "rel",
                           "echo", "hi"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    root_path = json.loads((tmp_path / "rel" / "config.json").read_text())["root"]["path"]
    assert root_path == str(tmp_path / "rel" / "rootfs")

    ran = subprocess.run([SHIMLEDGER, "run", "--rm", "--bundle", "rel", "x"], cwd=tmp_path,
                         env=cli_env(settings), capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)  # fmt: skip
    assert (ran.returncode, ran.stdout) == (0, "hi\n"), ran.stderr

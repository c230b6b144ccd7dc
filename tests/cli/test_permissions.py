"""What shimledger leaves on disk is private: directories 0711 or tighter, sockets 0600."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from cli.bootstrap import Settings
from tests.conftest import cli_env

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))


def test_state_and_root_dirs_are_private_and_sockets_owner_only(settings: Settings, bundle) -> None:
    env = cli_env(settings)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SHIMLEDGER, *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip

    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "private").returncode == 0
    try:
        too_open: list[str] = []
        sockets: list[Path] = []
        for top in (settings.state, settings.root):
            for path in [top, *top.rglob("*")]:
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode) and mode & 0o066:
                    too_open.append(f"{path} {oct(mode & 0o777)}")
                if stat.S_ISSOCK(mode):
                    sockets.append(path)
        address = (settings.state / settings.namespace / "private" / "address").read_text()
        sockets.append(Path(address.strip().removeprefix("unix://")))  # the shim's own
        assert not too_open, too_open
        assert settings.state / "events.sock" in sockets
        modes = {str(s): oct(s.lstat().st_mode & 0o777) for s in sockets}
        assert set(modes.values()) == {"0o600"}, modes
    finally:
        assert cli("delete", "-f", "private").returncode == 0

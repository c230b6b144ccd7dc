"""Views remember the store they were built from (issue 15), and their files are private.

One --root, several stores: each command reads the views of the store it is given, and a
view built from another store is rebuilt (said at info level), never mixed in.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from cli.settings import Settings
from tests.cli.privacy_helpers import SHIMLEDGER
from tests.conftest import cli_env, processes_in


def _cli(settings: Settings, *args: str, log: Path | None = None
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The real CLI on ``settings``' store, logging at info level into ``log``."""
    env = cli_env(settings)
    if log is not None:
        args = ("--log", str(log), *args)
    if settings.store:
        env["SHIMLEDGER_STORE"] = settings.store
    return subprocess.run([SHIMLEDGER, *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def _ok(settings: Settings, *args: str, log: Path | None = None) -> str:
    done = _cli(settings, *args, log=log)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def _views_agree_with(settings: Settings, ids: set[str], log: Path, *, verify: bool = False
                      ) -> None:  # fmt: skip
    """The views list ``ids``, have caught up, and (``verify``) match a fresh replay."""
    listed = json.loads(_ok(settings, "list", "--json", log=log))
    assert {t["id"] for t in listed} == ids
    events = _ok(settings, "events", "--json", log=log).splitlines()  # the event index too
    assert {json.loads(line)["id"] for line in events} == ids
    for row in json.loads(_ok(settings, "projections", "status", "--json")):
        assert row["lag"] == 0 and row["position"] == row["head"], row
    if verify:
        assert _cli(settings, "projections", "verify").returncode == 0


@pytest.mark.alone("two stores on one root take turns with its views: two serves would fight")
def test_views_are_rebuilt_when_the_store_changes_and_back_again(settings, bundle,
                                                                  tmp_path) -> None:  # fmt: skip
    a = replace(settings, store=f"sqlite:///{tmp_path / 'a.db'}")
    # A state dir is bound to one root and store (issue 12): B's tasks get their own.
    b = replace(settings, store=f"sqlite:///{tmp_path / 'b.db'}",
                state=Path(tempfile.mkdtemp(prefix="sl-", dir="/tmp")))  # fmt: skip
    log = tmp_path / "log"
    try:
        for name in ("one", "two"):
            assert _cli(a, "run", "--keep", "--bundle", str(bundle("true")), name).returncode == 0
        _views_agree_with(a, {"one", "two"}, log)
        assert "rebuilding" not in log.read_text()

        kept = _cli(b, "run", "--keep", "--bundle", str(bundle("true")), "three", log=log)
        assert kept.returncode == 0
        _views_agree_with(b, {"three"}, log, verify=True)
        said = log.read_text()
        assert "a.db; rebuilding it from sqlite://" in said and "b.db" in said, said

        log.unlink()
        _views_agree_with(a, {"one", "two"}, log)
        assert "b.db; rebuilding it from sqlite://" in log.read_text()
        log.unlink()
        _views_agree_with(a, {"one", "two"}, log, verify=True)  # nothing to rebuild now
        assert "rebuilding" not in log.read_text()
    finally:  # through each store's own history (the fixture's teardown reads events.db)
        _cli(a, "delete", "-f", "one", "two")
        _cli(b, "delete", "-f", "three")
        assert not processes_in(b.state)
        shutil.rmtree(b.state, ignore_errors=True)


def test_a_store_recreated_at_the_same_place_is_another_history(settings, bundle,
                                                                tmp_path) -> None:  # fmt: skip
    a = replace(settings, store=f"sqlite:///{tmp_path / 'a.db'}")
    try:
        for name in ("old", "older"):
            assert _cli(a, "run", "--rm", "--bundle", str(bundle("true")), name).returncode == 0
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp_path / 'a.db'}{suffix}").unlink(missing_ok=True)
        assert _cli(a, "run", "--keep", "--bundle", str(bundle("true")), "new",
                    log=tmp_path / "log").returncode == 0  # fmt: skip
        _views_agree_with(a, {"new"}, tmp_path / "log")
        assert "an earlier store at that place" in (tmp_path / "log").read_text()
    finally:
        _cli(a, "delete", "-f", "new")


def test_every_file_under_the_root_is_private_and_old_view_files_are_narrowed(
    settings, bundle
) -> None:
    assert _cli(settings, "run", "--rm", "--bundle", str(bundle("true")), "private").returncode == 0
    assert _cli(settings, "events").returncode == 0  # every view has its file now

    def too_open() -> list[str]:
        found = []
        for path in [settings.root, *settings.root.rglob("*")]:
            mode = path.lstat().st_mode
            wanted = 0o700 if stat.S_ISDIR(mode) else 0o600
            if stat.S_IMODE(mode) != wanted:
                found.append(f"{path} {oct(stat.S_IMODE(mode))}")
        return found

    assert not too_open()
    views = sorted((settings.root / "projections").glob("*.db"))
    assert len(views) == 3
    for view in views:  # as an older shimledger left them
        os.chmod(view, 0o644)
    journal = Path(f"{views[0]}-journal")
    journal.write_bytes(b"")
    os.chmod(journal, 0o644)
    assert _cli(settings, "projections", "status").returncode == 0  # opens every view
    assert not too_open()

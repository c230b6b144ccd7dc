"""Faults of the environment through the real CLI: one line naming the path or value, exit 1.

A full disk, a read-only root, a root this process may not write, an events.db that is not
a database, a time nobody can mean, a runtime whose ``start`` prints garbage or never
returns: none is a bug of shimledger, so none may print a traceback or "internal error",
and none may leave a bundle or a shim behind (the ``settings`` fixture checks the shims;
``nothing_left`` the bundles and the history).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from busybox_bundle import make_bundle

from adapters.shim_binary import DELETE_TIMEOUT_ENV, resolve_runtime
from cli.bootstrap import Settings
from domain.state_dir import StateDir
from shim import DEFAULT_RUNTIME
from tests.cli.test_bad_input import SHIMLEDGER, Cli, nothing_left, refused
from tests.conftest import cli_env, processes_in
from tests.waiting import wait_until


@pytest.fixture
def cli(settings: Settings) -> Cli:
    """The shimledger command on the test's state dir; ``prefix`` runs it under another
    command (setpriv), ``env`` adds variables."""
    base = cli_env(settings)

    def run(*args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run([*prefix, SHIMLEDGER, *args], env=base | (env or {}),
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    return run


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good bundle, for the cases where only something else is wrong."""
    return make_bundle(tmp_path_factory.mktemp("sleeper"), ["sleep", "300"])


READ_COMMANDS = [
    ["events"],
    ["events", "--json"],
    ["list"],
    ["history", "x"],
    ["audit"],
    ["projections", "status"],
    ["reconcile"],
]


def _with_history(cli: Cli, root: Path) -> None:
    """Make a store and its views in ``root``, as any first command does (with a state dir
    of its own: the test's state dir is bound to the root it is then used with)."""
    result = cli("--root", str(root), "--state", str(root.with_name(f"{root.name}.state")),
                 "list")  # fmt: skip
    assert result.returncode == 0, result.stderr


Mount = Callable[..., Path]


@pytest.fixture
def mount() -> Iterator[Mount]:
    """``mount(*options, source, name)``: mount on a fresh point; all unmounted after."""
    top = Path(tempfile.mkdtemp(prefix="slm-", dir="/tmp"))
    points: list[Path] = []

    def make(*args: str) -> Path:
        point = top / args[-1]
        point.mkdir(exist_ok=True)
        subprocess.run(["mount", *args[:-1], str(point)], check=True, capture_output=True)
        points.append(point)
        return point

    yield make
    for point in reversed(points):
        subprocess.run(["umount", str(point)], check=True, capture_output=True)
    shutil.rmtree(top)


@pytest.fixture
def full_root(cli: Cli, mount: Mount) -> Path:
    """A root on a 2 MiB tmpfs that holds a history and then is filled to the last byte."""
    disk = mount("-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", "disk")
    _with_history(cli, disk / "root")
    # Unbuffered, and down to single bytes: a buffered file would keep what did not fit
    # and fail again on close; 64 KiB writes alone would leave the last partial block free.
    with (disk / "filler").open("wb", buffering=0) as filler:
        for size in (65536, 4096, 1):
            try:
                while filler.write(b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return disk / "root"


@pytest.fixture
def read_only_root(cli: Cli, mount: Mount, tmp_path: Path) -> Path:
    """A root holding a history, seen through a read-only bind mount."""
    source = tmp_path / "writable-root"
    _with_history(cli, source)
    view = mount("--bind", str(source), "ro")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
    return view


def unbind(settings: Settings) -> None:
    """The command above bound the test's state dir to its root; the teardown uses the
    test's own root on it, so the binding goes (nothing else was made: checked above)."""
    StateDir(settings.state).binding.unlink(missing_ok=True)


@pytest.mark.alone("the fault is made under the root after serve opened it")
@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_a_full_disk_under_the_root_is_one_line_naming_it(cli, settings, full_root, command):
    result = cli("--root", str(full_root), *command)
    line = refused(result, str(full_root), "No space left on device")
    assert "internal error" not in line


@pytest.mark.alone("the fault is made under the root after serve opened it")
def test_create_on_a_full_disk_leaves_nothing(cli, settings, sleeper, full_root) -> None:
    result = cli("--root", str(full_root), "run", "-d", "--bundle", str(sleeper), "x")
    refused(result, str(full_root), "No space left on device")
    nothing_left(cli, settings)
    unbind(settings)


@pytest.mark.alone("the fault is made under the root after serve opened it")
@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_a_read_only_root_is_one_line_naming_it(cli, settings, read_only_root, command):
    result = cli("--root", str(read_only_root), *command)
    line = refused(result, str(read_only_root), "Read-only file system")
    assert "internal error" not in line


@pytest.mark.alone("the fault is made under the root after serve opened it")
def test_create_on_a_read_only_root_leaves_nothing(cli, settings, sleeper, read_only_root):
    result = cli("--root", str(read_only_root), "create", "--bundle", str(sleeper), "x")
    refused(result, str(read_only_root), "Read-only file system")
    nothing_left(cli, settings)
    unbind(settings)


@pytest.mark.parametrize("command", [["events"], ["audit"], ["projections", "status"]],
                         ids=" ".join)  # fmt: skip
def test_a_root_this_process_may_not_write_is_one_line_naming_it(
    cli, settings, tmp_path, command
) -> None:
    """EACCES from the kernel: a root owned by nobody, and we run as root without the
    capabilities that pass over file permissions (setpriv), so the files say no.

    (runuser -u nobody cannot run the venv's interpreter on this host: it lives under
    /root, mode 0700; and another check stops a non-root user before any file is opened.)
    """
    root = tmp_path / "nobodys"
    _with_history(cli, root)
    for path in [root, *root.rglob("*")]:
        os.chown(path, 65534, 65534)
    root.chmod(0o711)
    (root / "projections").chmod(0o711)
    no_override = "-dac_override,-dac_read_search,-fowner"
    without_caps = ("setpriv", f"--bounding-set={no_override}", f"--inh-caps={no_override}")
    result = cli("--root", str(root), *command, prefix=without_caps)
    refused(result, str(root), "Permission denied")


@pytest.mark.alone("the fault is made under the root after serve opened it")
@pytest.mark.parametrize("command", [["list"], ["events"], ["history", "x"], ["serve"]],
                         ids=" ".join)  # fmt: skip
def test_an_events_db_that_is_not_a_database_is_one_line_naming_it(
    cli, settings, tmp_path, command
) -> None:
    root = tmp_path / "corrupt"
    root.mkdir()
    (root / "events.db").write_bytes(b"this is not SQLite\n" * 100)
    result = cli("--root", str(root), *command)
    refused(result, str(root / "events.db"), "not an SQLite database")


# --- times nobody can mean ---------------------------------------------------------------------


BAD_TIMES = ["bogus", "", "2026-13-01", "99999999999d", "1000000d", "9" * 400 + "s",
             "0001-01-01T00:00+05:00", "9999-12-31T23:59-05:00"]  # fmt: skip


OPTIONS = [["events", "--since"], ["events", "--until"], ["audit", "--since"],
           ["audit", "--until"], ["replay", "--at"]]  # fmt: skip
CASES = [(["events", "--since"], value) for value in BAD_TIMES] + [
    (option, value) for option in OPTIONS[1:] for value in ("bogus", "1000000d")
]


@pytest.mark.parametrize(("command", "value"), CASES,
                         ids=[f"{' '.join(c)}={v[:16]}" for c, v in CASES])  # fmt: skip
def test_a_bad_or_overflowing_time_is_one_line_naming_it(cli, settings, command, value):
    line = refused(cli(*command, value), command[-1], repr(value))
    assert "internal error" not in line


@pytest.mark.parametrize("value", ["x", "99999999999w"])
def test_a_bad_or_overflowing_stuck_after_is_one_line_naming_it(cli, settings, value):
    refused(cli("audit", "--stuck-after", value), "--stuck-after", repr(value))


# --- runtimes that misbehave -------------------------------------------------------------------


def fake_runtime(directory: Path, start: str) -> Path:
    """An executable that answers ``start`` with the shell code ``start``; ``delete``
    (which the failed create runs to clean up) succeeds and says nothing."""
    path = directory / "fake-shim"
    path.write_text(
        "#!/bin/sh\n"
        'for action; do :; done\n'
        f'if [ "$action" = start ]; then {start}; fi\n'
        "exit 0\n"
    )
    path.chmod(0o755)
    return path


def test_a_runtime_whose_start_prints_invalid_utf8_is_one_line(cli, settings, sleeper, tmp_path):
    runtime = fake_runtime(tmp_path, r"printf '\377\376 not an address\n'")
    result = cli("create", "--runtime", str(runtime), "--bundle", str(sleeper), "x")
    refused(result, str(runtime), "not UTF-8", "failed to start shim for task x")
    nothing_left(cli, settings)


def test_a_runtime_whose_start_never_returns_is_killed_at_the_deadline(
    cli, settings, sleeper, tmp_path
) -> None:
    """The start (and the child it waits for) is killed after SHIMLEDGER_SHIM_START_TIMEOUT:
    no hang, no process left in the bundle (the fixture checks), no bundle, no history."""
    runtime = fake_runtime(tmp_path, "sleep 1000")
    for command in (["create"], ["run", "-d"], ["run", "--rm"]):
        result = cli(*command, "--runtime", str(runtime), "--bundle", str(sleeper), "x",
                     env={"SHIMLEDGER_SHIM_START_TIMEOUT": "0.5"}, timeout=30)  # fmt: skip
        refused(result, str(runtime), "did not finish within 0.5s",
                "SHIMLEDGER_SHIM_START_TIMEOUT")  # fmt: skip
        nothing_left(cli, settings)


def test_a_runtime_whose_delete_never_returns_fails_the_delete_and_loses_nothing(
    cli, settings, sleeper, tmp_path
) -> None:
    """The real shim, but its ``delete`` action (run for a shim that died) hangs while a
    file exists: delete -f fails at SHIMLEDGER_SHIM_DELETE_TIMEOUT in one line, records
    nothing and keeps the bundle and the container; once the action works, delete -f ends
    the task."""
    hang = tmp_path / "hang"
    hang.touch()
    runtime = tmp_path / "hanging-delete-shim"
    runtime.write_text(
        "#!/bin/sh\n"
        'for action; do :; done\n'
        f'if [ "$action" = delete ] && [ -e {hang} ]; then sleep 1000; fi\n'
        f'exec {resolve_runtime(DEFAULT_RUNTIME)} "$@"\n'
    )
    runtime.chmod(0o755)
    ran = cli("run", "-d", "--runtime", str(runtime), "--bundle", str(sleeper), "x")
    assert ran.returncode == 0, ran.stderr
    [(shim_pid, _)] = processes_in(settings.state)
    os.kill(shim_pid, signal.SIGKILL)
    wait_until(lambda: not processes_in(settings.state), "the killed shim did not go")
    before = cli("events", "--json").stdout

    result = cli("delete", "-f", "x", env={DELETE_TIMEOUT_ENV: "0.5"}, timeout=30)
    refused(result, "shim delete of task x", str(runtime), "did not finish within 0.5s",
            DELETE_TIMEOUT_ENV)  # fmt: skip
    assert cli("events", "--json").stdout == before
    assert (settings.state / settings.namespace / "x" / "config.json").is_file()
    assert (settings.state / "runc" / settings.namespace / "x").is_dir()

    hang.unlink()
    deleted = cli("delete", "-f", "x")
    assert deleted.returncode == 0, deleted.stderr
    assert [e["type"] for e in json.loads(cli("history", "--json", "x").stdout)] == [
        "Created", "Started", "ShimLost", "Exited", "Deleted"]  # fmt: skip
    nothing_left(cli, settings, cli("events", "--json").stdout)


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan"])
def test_a_bad_start_timeout_is_one_line_naming_it(cli, settings, sleeper, value) -> None:
    result = cli("create", "--bundle", str(sleeper), "x",
                 env={"SHIMLEDGER_SHIM_START_TIMEOUT": value})  # fmt: skip
    refused(result, "SHIMLEDGER_SHIM_START_TIMEOUT", repr(value))
    nothing_left(cli, settings)

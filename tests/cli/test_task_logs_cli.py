"""Task logs through the real CLI and the real shim: tail from the end, rotation, deletes."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from tests.cli.test_serve import Service, wait_for
from tests.conftest import at_a_shell, cli_env

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Run:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SHIMLEDGER, *args], env={**cli_env(settings), **env},
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    return run


def log_dir(settings: Settings, task_id: str) -> Path:
    return settings.root / "logs" / settings.namespace / task_id


def numbered(first: int, last: int) -> str:
    return "".join(f"line {n}\n" for n in range(first, last + 1))


def test_tail_of_a_big_log_reads_from_the_end(cli, bundle, settings) -> None:
    """50 MB of log, one line asked for: the command's peak memory stays far below the log."""
    assert cli("run", "-d", "--bundle", str(bundle("echo", "first")), "big").returncode == 0
    assert cli("wait", "big").returncode == 0
    with open(log_dir(settings, "big") / "1.log", "ab") as log:
        block = b"y" * 1023 + b"\n"
        for _ in range(50 * 1024):
            log.write(block)
        log.write(b"the end\n")
    # The peak RSS of that one process, measured by a small parent of its own: the kernel's
    # ru_maxrss of a child also counts what its parent held when it forked (pytest's, here).
    measure = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode;"
               " open(sys.argv[1], 'w').write(str(resource.getrusage("
               "resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)")  # fmt: skip
    peak_file = settings.root / "peak"
    result = subprocess.run([sys.executable, "-I", "-c", measure, str(peak_file),
                             SHIMLEDGER, "logs", "--tail", "1", "big"],
                            env=cli_env(settings), capture_output=True, timeout=120,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = result.stdout
    usage_kb = int(peak_file.read_text())
    assert printed == b"the end\n"
    peak_mb = usage_kb / 1024  # kB on Linux
    assert peak_mb < 100, f"logs --tail 1 of a 50 MB log peaked at {peak_mb:.0f} MB"
    # It was over the default size (10 MB): reading it rotated it, and reads on across.
    assert (log_dir(settings, "big") / "1.log.1").exists()
    assert cli("logs", "--tail", "2", "big").stdout == "y" * 1023 + "\nthe end\n"


# Writes its output in batches, each when the test creates /go<N> in its rootfs.
BATCHES = 6
WRITER = (
    f"for b in $(seq {BATCHES}); do until [ -e /go$b ]; do sleep 0.01; done; "
    "seq $(( (b - 1) * 100 + 1 )) $(( b * 100 )) | sed 's/^/line /'; done"
)


def test_a_real_task_writing_past_the_cap_rotates_and_logs_reads_across(
    cli, bundle, settings
) -> None:
    cap = {"SHIMLEDGER_LOG_MAX_SIZE": "512", "SHIMLEDGER_LOG_MAX_FILES": "20"}
    path = bundle("sh", "-c", WRITER)
    assert cli("run", "-d", "--bundle", str(path), "writer").returncode == 0
    for batch in range(1, BATCHES + 1):
        (path / "rootfs" / f"go{batch}").touch()
        # each `logs` rotates the log it reads once it is over the cap
        wait_for(lambda b=batch: cli("logs", "--tail", "1", "writer", **cap).stdout
                 == f"line {b * 100}\n", f"batch {batch}")  # fmt: skip
    assert cli("wait", "writer").returncode == 0
    files = sorted(p.name for p in log_dir(settings, "writer").glob("1.log*"))
    assert "1.log.1" in files and "1.log.2" in files and len(files) <= 20
    whole = cli("logs", "writer", **cap)
    assert (whole.returncode, whole.stdout) == (0, numbered(1, BATCHES * 100))  # in order
    tail = cli("logs", "--tail", "250", "writer", **cap).stdout
    assert tail == numbered(BATCHES * 100 - 249, BATCHES * 100)


@pytest.mark.alone("runs the serve it is about")
def test_serve_rotates_the_logs_of_the_tasks_it_watches(cli, bundle, settings) -> None:
    cap = {"SHIMLEDGER_LOG_MAX_SIZE": "1k", "SHIMLEDGER_LOG_MAX_FILES": "2"}
    service = Service({**cli_env(settings), **cap})
    try:
        script = "seq 2000 | sed 's/^/line /'; until [ -e /go ]; do sleep 0.01; done"
        path = bundle("sh", "-c", script)
        assert cli("run", "-d", "--bundle", str(path), "chatty").returncode == 0
        rotated = log_dir(settings, "chatty") / "1.log.1"
        wait_for(rotated.exists, "serve rotating the log")  # no command touched the log
        (path / "rootfs" / "go").touch()
        assert cli("wait", "chatty").returncode == 0
        assert cli("logs", "chatty").stdout == numbered(1, 2000)
    finally:
        assert service.stop() == 0


def test_any_command_rotates_the_logs_and_every_log_file_is_private(
    cli, bundle, settings
) -> None:
    """No serve and no `logs`: a `list` rotates the namespace's logs over the cap. The
    shim writes the live log (it keeps the mode of a file that exists); every file under
    <root>/logs is 0600, every dir 0700."""
    cap = {"SHIMLEDGER_LOG_MAX_SIZE": "1k", "SHIMLEDGER_LOG_MAX_FILES": "2"}
    path = bundle("sh", "-c", "seq 2000 | sed 's/^/line /'; until [ -e /go ]; do sleep 0.01; done")
    assert cli("run", "-d", "--bundle", str(path), "quiet").returncode == 0
    live = log_dir(settings, "quiet") / "1.log"
    wait_for(lambda: live.stat().st_size >= len(numbered(1, 2000)), "the task's output")
    rotated = live.with_name("1.log.1")
    assert not rotated.exists()
    assert cli("list", **cap).returncode == 0
    assert rotated.exists() and live.stat().st_size < 1024

    logs = settings.root / "logs"
    found = {p.relative_to(logs).as_posix(): oct(p.lstat().st_mode & 0o7777)
             for p in [logs, *logs.rglob("*")]}  # fmt: skip
    assert found == {".": "0o700", "test": "0o700", "test/quiet": "0o700",
                     "test/quiet/1.log": "0o600", "test/quiet/1.log.1": "0o600",
                     "test/quiet/shim.log": "0o600"}  # fmt: skip
    (path / "rootfs" / "go").touch()
    assert cli("wait", "quiet").returncode == 0
    assert cli("logs", "quiet").stdout == numbered(1, 2000)


def test_logs_stay_after_delete_until_the_id_is_created_again(cli, bundle, settings) -> None:
    path = bundle("echo", "hello")
    assert cli("run", "-d", "--bundle", str(path), "kept").returncode == 0
    assert cli("wait", "kept").returncode == 0
    assert cli("delete", "kept").returncode == 0
    assert cli("logs", "kept").stdout == "hello\n"  # like docker's, until the name is reused
    (log_dir(settings, "kept") / "1.log.1").write_text("older\n")  # as a rotation leaves it
    assert cli("run", "-d", "--bundle", str(path), "kept").returncode == 0
    assert cli("wait", "kept").returncode == 0
    names = sorted(p.name for p in log_dir(settings, "kept").iterdir())
    assert names == ["2.log", "shim.log"]
    assert cli("logs", "kept").stdout == "hello\n"


def test_a_bad_rotation_setting_is_one_line(cli, bundle) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("true")), "set").returncode == 0
    result = cli("logs", "set", SHIMLEDGER_LOG_MAX_SIZE="lots")
    assert result.returncode == 1
    assert result.stderr == (
        "shimledger: SHIMLEDGER_LOG_MAX_SIZE='lots' is not a size: use bytes or e.g. 512k, "
        "10M, 1G\n"
    )


def test_logs_into_a_closed_pipe_is_quiet(cli, bundle, settings) -> None:
    assert cli("run", "-d", "--bundle", str(bundle("seq", "100000")), "piped").returncode == 0
    assert cli("wait", "piped").returncode == 0
    shell = subprocess.run(f"'{SHIMLEDGER}' logs piped | head -1", shell=True,
                           env=cli_env(settings), capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert (shell.stdout, shell.stderr) == ("1\n", "")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_logs_follow_ends_quietly_on_ctrl_c_or_sigterm(cli, bundle, settings, how) -> None:
    """Like events -f: a signal is how a follow ends, so exit 0 and nothing on stderr."""
    path = bundle("sh", "-c", "echo ready; exec sleep 60")
    assert cli("run", "-d", "--bundle", str(path), "followed").returncode == 0
    try:
        follower = subprocess.Popen([SHIMLEDGER, "logs", "-f", "followed"], env=cli_env(settings),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, preexec_fn=at_a_shell)  # fmt: skip
        try:
            assert follower.stdout is not None and follower.stdout.readline() == b"ready\n"
            follower.send_signal(how)
            assert follower.wait(timeout=30) == 0
            assert follower.stderr is not None and follower.stderr.read() == b""
        finally:
            follower.kill()
            follower.communicate()
    finally:
        assert cli("delete", "--force", "followed").returncode == 0

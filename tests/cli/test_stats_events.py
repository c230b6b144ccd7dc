"""`events ID` as runc's (issue 13): a task's cgroup stats as runc's JSON events, once with
--stats or every --interval until the task stops, and an oom event when a process of it is
OOM-killed; our history's `events` is the same command without an ID."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cli.bootstrap import Settings
from cli.timeparse import parse_go_duration
from domain.errors import InvalidArgumentError
from tests.conftest import at_a_shell, cli_env, cli_runner

Cli = Callable[..., subprocess.CompletedProcess[str]]
SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
MiB = 1024**2


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return cli_runner(settings)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5), ("300ms", 0.3), ("1h30m", 5400), ("1.5s", 1.5), ("2m3.5s", 123.5),
     ("250us", 0.00025), ("0", 0)],
)  # fmt: skip
def test_go_durations_read_as_go_reads_them(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "1x", "s", "1h 30m", "-5s", "5sec"])
def test_a_duration_go_refuses_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a duration"):
        parse_go_duration(text)


def next_line(stream: Any, process: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """The stream's next line, failing (not hanging) if none comes before the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            line: str = stream.readline()
            assert line, f"the stream ended (exit {process.wait()})"
            return line
    raise AssertionError("no event came")


def test_stats_once_and_a_stream_that_ends_with_its_task(
    cli: Cli, bundle, settings: Settings
) -> None:
    path = bundle("sleep", "300")
    config = json.loads((path / "config.json").read_text())
    config["linux"].setdefault("resources", {})["memory"] = {"limit": 32 * MiB}
    (path / "config.json").write_text(json.dumps(config))
    assert cli("run", "-d", "-b", str(path), "measured").returncode == 0

    once = cli("events", "--stats", "measured")
    assert once.returncode == 0 and once.stdout.count("\n") == 1, once.stderr
    event = json.loads(once.stdout)
    assert (event["type"], event["id"]) == ("stats", "measured")
    data = event["data"]
    assert set(data) == {"cpu", "memory", "pids"} and data["pids"]["current"] == 1
    assert data["memory"]["usage"]["limit"] == 32 * MiB and data["memory"]["usage"]["usage"] > 0
    assert {"kernel", "user"} <= set(data["cpu"]["usage"])

    stream = subprocess.Popen([SHIMLEDGER, "events", "--interval", "50ms", "measured"],
                              env=cli_env(settings), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, preexec_fn=at_a_shell)  # fmt: skip
    try:
        assert json.loads(next_line(stream.stdout, stream))["type"] == "stats"
        # A process of the task outgrows the limit: the kernel OOM-kills it, not the init.
        eater = cli("exec", "-d", "measured", "--", "tail", "/dev/zero")
        assert eater.returncode == 0, eater.stderr
        while (event := json.loads(next_line(stream.stdout, stream)))["type"] != "oom":
            assert event["type"] == "stats"
        assert event == {"type": "oom", "id": "measured"}
        assert cli("kill", "measured", "KILL").returncode == 0
        _, err = stream.communicate(timeout=60)  # the stream ends once the task has
        assert stream.returncode == 0, err
    finally:
        if stream.poll() is None:
            stream.kill()
            stream.wait()
    assert cli("delete", "measured").returncode == 0


@pytest.mark.alone("refusals only: served, the same code refuses them in serve")
def test_stats_events_refuse_what_runc_refuses(cli: Cli, bundle) -> None:
    assert cli("run", "-b", str(bundle("true")), "--keep", "done").returncode == 0
    for args, said in [(["--stats", "done"], "task done is stopped"),
                       (["--stats"], "need a task ID"),
                       (["--interval", "1x", "done"], "--interval: '1x' is not a duration"),
                       (["--interval", "0", "done"], "must be more than 0"),
                       (["--since", "1h", "done"], "--since: options of the history's events"),
                       (["--stats", "nosuch"], "nosuch")]:  # fmt: skip
        refused = cli("events", *args)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, (args, refused.stderr)
        assert said in refused.stderr, args
    assert cli("delete", "done").returncode == 0

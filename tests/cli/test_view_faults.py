"""Views are caches: a damaged, foreign, half-built or swapped view file costs a rebuild.

Through the real CLI (real shim, real runc, real SQLite): whatever is found in
``<root>/projections/``, reading commands work with one warning line, `projections
rebuild` finishes and leaves nothing behind, and a running `serve` goes on catching up
after another process rebuilt the files under it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from cli.ledger import state_files_name
from tests.cli.test_serve import SHIMLEDGER, Service, wait_for
from tests.conftest import cli_env

Cli = Callable[..., subprocess.CompletedProcess[str]]
# Each view's main table, which a "foreign" file holds with other columns (an older
# release's schema, or someone else's database at that path).
MAIN_TABLE = {"task_states": "task_states", "event_index": "events", "state_files": "originators"}
BOUNDED = 60  # seconds: a rebuild of a few events that takes longer hangs


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return cli_env(settings)


@pytest.fixture
def cli(env: dict[str, str]) -> Cli:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SHIMLEDGER, *args], env=env, capture_output=True, text=True,
                              timeout=BOUNDED, stdin=subprocess.DEVNULL)  # fmt: skip

    return run


@pytest.fixture
def services(env: dict[str, str]) -> Iterator[Callable[[], Service]]:
    started: list[Service] = []

    def start() -> Service:
        started.append(Service(env))
        return started[-1]

    yield start
    for service in started:
        service.stop()


def views_dir(settings: Settings) -> Path:
    return settings.root / "projections"


def spoil(path: Path, kind: str) -> None:
    """Replace a view file by garbage, or by a valid SQLite file of another schema."""
    path.unlink(missing_ok=True)
    if kind == "garbage":
        path.write_bytes(b"this is not a database\n" * 200)
        return
    with sqlite3.connect(path) as db:
        table = MAIN_TABLE[path.stem.split("-")[0]]  # state_files-<digest>.db too
        db.execute(f"CREATE TABLE {table} (x)")
        db.execute("INSERT INTO " + table + " VALUES ('not ours')")
    db.close()


def warnings(*results: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for r in results for line in r.stderr.splitlines() if line.strip()]


def leftovers(settings: Settings) -> list[str]:
    return sorted(p.name for p in views_dir(settings).glob(".*.rebuild.*"))


@pytest.mark.alone("with serve running, serve may be the one to rebuild it (and warn in its log)")
@pytest.mark.parametrize("kind", ["garbage", "foreign"])
@pytest.mark.parametrize("view", ["task_states", "event_index", "state_files"])
def test_a_damaged_view_file_is_rebuilt_with_one_warning(
    cli: Cli, bundle, settings: Settings, view: str, kind: str
) -> None:
    assert cli("create", "--bundle", str(bundle("sleep", "300")), "kept").returncode == 0
    assert cli("events").returncode == 0  # every view file exists
    name = state_files_name(settings) if view == "state_files" else f"{view}.db"
    file = views_dir(settings) / name
    spoil(file, kind)

    listed = cli("list", "--format", "json")
    state = cli("state", "kept")
    history = cli("history", "--json", "kept")
    events = cli("events", "--json")
    for result in (listed, state, history, events):
        assert result.returncode == 0, result.stderr
    assert [t["id"] for t in json.loads(listed.stdout)] == ["kept"]
    assert json.loads(state.stdout)["status"] == "created"
    assert [e["type"] for e in json.loads(history.stdout)] == ["Created"]
    assert [json.loads(line)["type"] for line in events.stdout.splitlines()] == ["Created"]
    [warning] = warnings(listed, state, history, events)
    assert "level=warning" in warning and f"{file.name} is unusable" in warning
    assert "rebuilding it from the history" in warning

    verified = cli("projections", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stderr == ""
    saved = settings.state / settings.namespace / "kept" / "state.json"
    assert json.loads(saved.read_text())["Status"] == "created"
    assert leftovers(settings) == []


@pytest.mark.alone(
    "with serve running, serve's own catch-up may find the damage and rebuild too: its copy"
    " is still being built, and rightly left alone, when the command's rebuild returns"
)
def test_rebuild_of_damaged_files_finishes_and_leaves_nothing_behind(
    cli: Cli, bundle, settings: Settings
) -> None:
    assert cli("run", "--rm", "--bundle", str(bundle("true")), "gone").returncode == 0
    assert cli("events").returncode == 0
    spoil(views_dir(settings) / "task_states.db", "garbage")
    spoil(views_dir(settings) / "event_index.db", "foreign")
    spoil(views_dir(settings) / state_files_name(settings), "garbage")

    rebuilt = cli("projections", "rebuild")  # the fixture's timeout bounds it
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "Traceback" not in rebuilt.stderr
    assert leftovers(settings) == []
    assert cli("projections", "verify").returncode == 0
    listed = cli("list", "--format", "json")
    assert (listed.returncode, json.loads(listed.stdout), listed.stderr) == (0, [], "")


def dead_pid() -> int:
    """A pid no process has now: a child that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("command", [("list",), ("projections", "rebuild", "task_states")])
def test_a_rebuild_file_of_a_dead_process_is_removed(
    cli: Cli, bundle, settings: Settings, command: tuple[str, ...]
) -> None:
    assert cli("run", "--rm", "--bundle", str(bundle("true")), "once").returncode == 0
    pid = dead_pid()
    stale = views_dir(settings) / f".task_states.db.rebuild.{pid}"
    stale.write_bytes(b"\0" * 65536)  # a rebuild SIGKILLed midway
    stale.with_name(f"{stale.name}-journal").write_bytes(b"\0" * 512)
    building = views_dir(settings) / ".task_states.db.rebuild.1"  # init's: a live pid

    building.write_bytes(b"")
    try:
        result = cli(*command)
        assert result.returncode == 0, result.stderr
        assert leftovers(settings) == [building.name]
    finally:
        building.unlink()


@pytest.mark.alone("runs the serve it is about")
def test_serve_goes_on_after_a_rebuild_swaps_its_files(
    cli: Cli, bundle, settings: Settings, services
) -> None:
    service = services()
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "before").returncode == 0

    def lag() -> dict[str, int]:
        result = cli("projections", "status", "--json")
        assert result.returncode == 0, result.stderr
        return {row["name"]: row["lag"] for row in json.loads(result.stdout)}

    wait_for(lambda: set(lag().values()) == {0}, "serve to catch up every view")
    rebuilt = cli("projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr

    # Only serve catches up the event index (no command below reads it): lag 0 after a
    # new task's events means serve writes to the swapped-in file.
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "after").returncode == 0
    wait_for(lambda: set(lag().values()) == {0}, "serve to catch up after the rebuild")
    broken = ("Traceback", "a round of watching failed")
    failed = [line for line in service.lines if any(word in line for word in broken)]
    assert failed == [], service.lines
    assert service.stop() == 0, service.lines
    assert cli("projections", "verify").returncode == 0

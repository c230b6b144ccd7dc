"""A PostgreSQL store through the real CLI: its schema made once, never raced, never re-made,
and nothing lost while the server is away.

Real server (tests/postgres_cluster.py), real runc and shim where a task runs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.shim_binary import search_path
from cli.bootstrap import Settings
from tests.cli import test_store_faults
from tests.cli.test_bad_input import SHIMLEDGER, refused
from tests.cli.test_store_faults import Run
from tests.conftest import cli_env
from tests.postgres_cluster import TCP_DB, PostgresServer, TcpStore, empty_database
from tests.waiting import wait_until

# A serve started with the test's settings would bind the state dir to another store.
pytestmark = pytest.mark.alone("the store is set in the commands' environment, not settings")

Cli = Callable[..., subprocess.CompletedProcess[str]]
STEP = 60.0  # a guard on every wait for processes, never a threshold
NO_X = "shimledger: task x has no history in namespace default\n"
store_cli = test_store_faults.store_cli  # the fixture: shimledger on a root of its own


def _all_at_once(commands: list[list[str]], env: dict[str, str]) -> list[tuple[int, str]]:
    """Start every command before waiting for any; their exit codes and stderr."""
    procs = [subprocess.Popen([SHIMLEDGER, *c], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
             for c in commands]  # fmt: skip
    return [(p.communicate(timeout=STEP * 3)[1], p.returncode)[::-1] for p in procs]


def test_store_init_creates_the_schema_once(store_cli: Run, postgres_url: str) -> None:
    first = store_cli(postgres_url, "store", "init")
    assert (first.returncode, first.stdout) == (0, f"store {postgres_url}: schema created\n")
    again = store_cli(postgres_url, "store", "init")
    assert again.stdout == f"store {postgres_url}: schema already there\n", again.stderr


def test_commands_started_at_once_on_a_fresh_database_all_succeed(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """Every command finds the schema missing; one makes it under the advisory lock, the
    others wait for it and find it made: no DDL collides ('tuple concurrently updated').
    Two rounds of twelve commands at once (each round on a fresh database)."""
    for round_ in range(2):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SHIMLEDGER_STORE": postgres_url,
               "SHIMLEDGER_ROOT": str(tmp_path / f"root{round_}"),
               "SHIMLEDGER_STATE": str(tmp_path / f"state{round_}")}  # fmt: skip
        commands = [["history", "x"], ["events", "--json"], ["store", "init"]] * 4
        results = _all_at_once(commands, env)
        wanted = [(1, NO_X), (0, ""), (0, "")] * 4  # an unknown task: the usual answer
        assert results == wanted, f"round {round_}: {results}"
        empty_database(postgres_server)


@pytest.fixture
def pg_cli(settings: Settings, postgres_url: str) -> Iterator[Cli]:
    """shimledger on the test's state dir, its history in the PostgreSQL test database;
    every task still live at the end is deleted through the CLI."""
    env = cli_env(settings) | {"SHIMLEDGER_STORE": postgres_url}

    def run(*args: str, store: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = {"SHIMLEDGER_STORE": store} if store else {}
        return subprocess.run([SHIMLEDGER, *args], env=env | extra, capture_output=True,
                              text=True, timeout=STEP, stdin=subprocess.DEVNULL)  # fmt: skip

    yield run
    live = run("list", "-q", "-A").stdout.split()
    if live:
        run("delete", "-f", *live)


def _types(cli: Cli, task_id: str) -> list[str]:
    done = cli("history", "--json", task_id)
    assert done.returncode == 0, done.stderr
    return [e["type"] for e in json.loads(done.stdout)]


def test_lifecycles_started_at_once_on_a_fresh_database_all_run(
    pg_cli: Cli, settings: Settings,
    postgres_url: str, bundle: Callable[..., Path],
) -> None:  # fmt: skip
    path = str(bundle("true"))
    env = cli_env(settings) | {"SHIMLEDGER_STORE": postgres_url}
    results = _all_at_once([["run", "--rm", "--bundle", path, f"t{i}"] for i in range(8)], env)
    assert results == [(0, "")] * 8
    for i in range(8):
        assert _types(pg_cli, f"t{i}") == ["Created", "Started", "Exited", "Deleted"]


@pytest.fixture
def app_role(postgres_tcp: TcpStore) -> Iterator[TcpStore]:
    """A role that may read and append the schema ``shim`` made, and create nothing."""
    server = postgres_tcp.server
    server.psql("CREATE ROLE shim_app LOGIN PASSWORD 'app-pw'", db="postgres")
    try:
        yield TcpStore(server, user="shim_app", password="app-pw")
    finally:
        server.psql("DROP OWNED BY shim_app", db=TCP_DB)
        server.psql("DROP ROLE shim_app", db="postgres")


def test_ordinary_commands_run_no_ddl_once_the_schema_exists(
    pg_cli: Cli, postgres_tcp: TcpStore,
    app_role: TcpStore, bundle: Callable[..., Path],
) -> None:  # fmt: skip
    """The owner runs `store init`; a role with SELECT, INSERT and UPDATE only then runs
    whole lifecycles: any CREATE ... IF NOT EXISTS or CREATE OR REPLACE would be refused."""
    owner = postgres_tcp.url()
    assert pg_cli("store", "init", store=owner).returncode == 0
    postgres_tcp.server.psql(
        "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO shim_app; "
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO shim_app", db=TCP_DB)  # fmt: skip
    app = app_role.url()
    done = pg_cli("run", "--rm", "--bundle", str(bundle("true")), "least", store=app)
    assert (done.returncode, done.stderr) == (0, "")
    assert _types(lambda *a: pg_cli(*a, store=app), "least") == [
        "Created", "Started", "Exited", "Deleted"]  # fmt: skip
    refused(pg_cli("history", "x", store=app_role.url(password="wrong")),
            "password authentication failed for user \"shim_app\"")  # fmt: skip


def _stopped(settings: Settings, task_ids: list[str]) -> bool:
    runc_root = settings.state / "runc" / settings.namespace
    for task_id in task_ids:
        state = subprocess.run(["runc", "--root", str(runc_root), "state", task_id],
                               capture_output=True, text=True,
                               env={"PATH": search_path()})  # fmt: skip
        if state.returncode != 0 or json.loads(state.stdout)["status"] != "stopped":
            return False
    return True


def test_a_server_stopped_mid_burst_loses_nothing(
    pg_cli: Cli, settings: Settings,
    postgres_server: PostgresServer, postgres_url: str, bundle: Callable[..., Path],
) -> None:  # fmt: skip
    """While the server is away every command fails in one line naming the store; the
    tasks that exit meanwhile are recorded, with their status, once it is back."""
    waiter = bundle("sh", "-c", "while [ ! -e /go ]; do sleep 0.05; done; exit 7")
    quick = str(bundle("true"))
    ids = ["w0", "w1", "w2"]
    for task_id in ids:
        assert pg_cli("run", "-d", "--bundle", str(waiter), task_id).returncode == 0
    postgres_server.stop("fast")
    try:
        (waiter / "rootfs" / "go").touch()
        burst = [["run", "--rm", "--bundle", quick, f"b{i}"] for i in range(4)]
        burst += [["list"], ["history", "w0"], ["kill", "w1", "KILL"], ["store", "init"]]
        env = cli_env(settings) | {"SHIMLEDGER_STORE": postgres_url}
        for code, stderr in _all_at_once(burst, env):
            lines = stderr.strip().splitlines()
            assert code == 1 and len(lines) == 1, stderr
            assert lines[0].startswith("shimledger: store postgresql://postgres@/"), stderr
            assert lines[0].endswith("(is the server running?)"), stderr
        wait_until(lambda: _stopped(settings, ids), "the tasks did not exit", timeout=STEP)
    finally:
        postgres_server.start()
    listed = pg_cli("list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert sorted((t["id"], t["status"]) for t in json.loads(listed.stdout)) == [
        (i, "stopped") for i in ids]  # fmt: skip
    for task_id in ids:
        events = json.loads(pg_cli("history", "--json", task_id).stdout)
        assert [(e["type"], e.get("exit_status")) for e in events] == [
            ("Created", None), ("Started", None), ("Exited", 7)]  # fmt: skip
    assert pg_cli("delete", *ids).returncode == 0
    for i in range(4):  # refused before anything was recorded
        refused(pg_cli("history", f"b{i}"), f"task b{i} has no history")


def _connections(server: PostgresServer) -> int:
    """Sessions open on the test database, the one asking excepted."""
    return int(server.psql("SELECT count(*) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()"))


def test_a_command_holds_one_connection(
    pg_cli: Cli, settings: Settings, postgres_server: PostgresServer, postgres_url: str,
    bundle: Callable[..., Path],
) -> None:  # fmt: skip
    """A `wait` that blocks on its task keeps the store open: with one connection, not the
    5 to 15 of eventsourcing's default pool (17 processes would exhaust the server)."""
    assert pg_cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "held").returncode == 0
    assert _connections(postgres_server) == 0  # the command above has closed its own
    env = cli_env(settings) | {"SHIMLEDGER_STORE": postgres_url}
    waiting = subprocess.Popen([SHIMLEDGER, "wait", "held"], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_until(lambda: _connections(postgres_server) != 0, "wait never connected",
                   timeout=STEP, process=waiting)
        held = _connections(postgres_server)
        assert waiting.poll() is None, "wait returned early"
        assert held == 1
    finally:
        pg_cli("kill", "held", "KILL")
        out, err = waiting.communicate(timeout=STEP)
    assert (waiting.returncode, err) == (137, ""), err
    assert pg_cli("delete", "held").returncode == 0

"""`events --follow` on PostgreSQL is pushed by LISTEN/NOTIFY (issue 15), through the real
CLI against the session's own cluster: the follower holds a LISTEN on the store's channel,
and prints what another command appends."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from cli.settings import Settings
from tests.cli.privacy_helpers import SHIMLEDGER
from tests.conftest import at_a_shell, cli_env
from tests.postgres_cluster import PostgresServer
from tests.waiting import wait_until

# A serve started with the test's settings would bind the state dir to another store.
pytestmark = pytest.mark.alone("the store is set in the commands' environment, not settings")

DEADLINE = 60.0  # seconds: generous under load; every wait ends as soon as its condition holds


def _env(settings: Settings) -> dict[str, str]:
    assert settings.store
    return {**cli_env(settings), "SHIMLEDGER_STORE": settings.store}


def _listeners(server: PostgresServer) -> list[str]:
    """The server's sessions whose last statement was a LISTEN (and that still listen)."""
    import psycopg

    from tests.postgres_cluster import PG_DB, PG_USER

    with psycopg.connect(dbname=PG_DB, host=str(server.sockets), port=server.port,
                         user=PG_USER, autocommit=True) as connection:  # fmt: skip
        rows = connection.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = %s AND state = 'idle' "
            "AND query ILIKE 'LISTEN %%'", (PG_DB,),
        ).fetchall()  # fmt: skip
    return [str(row[0]) for row in rows]


Follower = tuple[Settings, "subprocess.Popen[str]", "queue.Queue[str]"]


@pytest.fixture
def follower(settings: Settings, postgres_url: str) -> Iterator[Follower]:
    """``events --follow --json`` on the test database, its lines read into a queue."""
    ours = replace(settings, store=postgres_url)
    process = subprocess.Popen([SHIMLEDGER, "events", "--follow", "--json"], env=_env(ours),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL, preexec_fn=at_a_shell)  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield ours, process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(timeout=DEADLINE)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def test_follow_listens_and_prints_an_event_another_command_appends(
    follower, bundle, postgres_server
) -> None:
    settings, process, lines = follower
    deadline = time.monotonic() + DEADLINE  # for the listening and the lines alike
    wait_until(lambda: _listeners(postgres_server), "the follower never LISTENed",
               timeout=DEADLINE, process=process)
    found = _listeners(postgres_server)
    assert found and "shimledger_events" in found[0], "the follower never LISTENed"

    run = subprocess.run([SHIMLEDGER, "run", "--rm", "--bundle", str(bundle("true")), "late"],
                         env=_env(settings), capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen: list[str] = []
    while "Deleted" not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"follow printed only {seen}"
        record = json.loads(lines.get(timeout=left))
        assert record["id"] == "late"
        seen.append(record["type"])
    assert seen[0] == "Created" and seen[-1] == "Deleted", seen
    process.send_signal(signal.SIGINT)  # how a user ends it: quietly, exit 0
    assert process.wait(timeout=DEADLINE) == 0
    assert process.stderr.read() == ""

"""The event store: chosen by URL, and safe for several processes appending at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapters.event_store import EventStore, sqlite_env, store_env
from domain.errors import InvalidArgumentError
from domain.task import Task
from domain.values import Cause

ROOT = Path(__file__).resolve().parents[2]


def test_the_store_is_chosen_by_url(tmp_path: Path) -> None:
    assert store_env(None, tmp_path)["SQLITE_DBNAME"] == str(tmp_path / "events.db")
    assert store_env("sqlite:///srv/h.db", tmp_path)["SQLITE_DBNAME"] == "/srv/h.db"
    pg = store_env("postgresql://ledger:p%40ss@db.example:6543/history", tmp_path)
    keys = ("POSTGRES_DBNAME", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER")
    assert [pg[k] for k in keys] == ["history", "db.example", "6543", "ledger"]
    # A unix socket, as libpq spells it: the socket's directory in ?host=, the netloc empty.
    local = store_env("postgresql://ledger@/history?host=/run/pg%20sock", tmp_path)
    assert [local[k] for k in keys] == ["history", "/run/pg sock", "5432", "ledger"]
    assert store_env("postgresql://@/h?host=/s&sslmode=disable", tmp_path)["POSTGRES_HOST"] == "/s"
    for bad in ("mysql://x/y", "postgresql://host-only", "sqlite://", "postgresql:///db",
                "postgresql://u@/db?host=relative"):  # fmt: skip
        with pytest.raises(InvalidArgumentError):
            store_env(bad, tmp_path)


WRITER = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from adapters.event_store import EventStore, sqlite_env
    from domain.errors import ConflictError
    from domain.values import Cause

    async def main(n):
        store = EventStore(sqlite_env(Path({path!r})))
        conflicts = 0
        for i in range({count}):
            while True:  # retry on fresh state, as TaskManager does
                task = await store.current("default", "shared")
                task.record_kill(n, False, Cause(kind="cli", pid=n, detail=str(i)))
                try:
                    await store.save(task)
                    break
                except ConflictError:
                    conflicts += 1
        await store.aclose()
        print(conflicts)

    asyncio.run(main(int(sys.argv[1])))
""")


def test_concurrent_appends_from_processes_are_neither_lost_nor_doubled(tmp_path: Path) -> None:
    writers, count = 6, 15

    async def seed() -> None:
        store = EventStore(sqlite_env(tmp_path))
        task = Task(namespace="default", task_id="shared", incarnation=1, bundle="/b", pid=1,
                    runtime="r", node="node-a", state_dir="", cause=Cause(kind="cli"))  # fmt: skip
        task.start(2, Cause(kind="cli"))
        await store.save(task)
        await store.aclose()

    asyncio.run(seed())
    script = WRITER.format(root=str(ROOT), path=str(tmp_path), count=count)
    processes = [subprocess.Popen([sys.executable, "-c", script, str(n + 1)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n in range(writers)]  # fmt: skip
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in outputs]

    async def read() -> list[object]:
        store = EventStore(sqlite_env(tmp_path))
        try:
            return await store.history("default", "shared")
        finally:
            await store.aclose()

    events = asyncio.run(read())
    kills = [(e.signal, e.cause.detail) for e in events if type(e).__name__ == "Killed"]
    assert len(kills) == writers * count
    assert len(set(kills)) == len(kills), "an append was doubled"
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))

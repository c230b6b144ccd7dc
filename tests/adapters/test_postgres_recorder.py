"""The PostgreSQL store's write path (adapters/postgres_recorder.py), on a real server: a
save is one statement, it still takes the table lock that keeps positions in commit
order, and a store made before the append functions existed gets them when opened."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.event_store import EventStore, store_env
from adapters.postgres_recorder import APPEND_FUNCTIONS
from domain.task import Task
from domain.values import Cause
from tests.conftest import event_types as types
from tests.waiting import wait_until_async

CLI = Cause(kind="cli", uid=0)
TABLE = "shimledger_events"


def new_task(task_id: str) -> Task:
    return Task(
        namespace="default", task_id=task_id, incarnation=1, bundle="/b", pid=7,
        runtime="io.containerd.runc.v2", node="node-a", state_dir="", cause=CLI,
    )  # fmt: skip


@pytest.fixture
async def store(postgres_url: str, tmp_path: Path) -> AsyncIterator[EventStore]:
    opened = EventStore(store_env(postgres_url, tmp_path))
    await opened.prepare()
    yield opened
    await opened.aclose()


@pytest.fixture
def sql(postgres_url: str, tmp_path: Path) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own, beside the store's (autocommit unless it says BEGIN)."""
    env = store_env(postgres_url, tmp_path)
    with psycopg.connect(host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]),
                         dbname=env["POSTGRES_DBNAME"], user=env["POSTGRES_USER"],
                         autocommit=True) as conn:  # fmt: skip
        yield conn


async def test_a_save_of_one_event_is_one_statement(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = new_task("one")
    await store.save(task)  # the first save of a connection may prepare; count the next
    statements: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(query if isinstance(query, str) else repr(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    task.start(8, CLI)
    await store.save(task)
    assert len(statements) == 1, statements
    assert "shimledger_append_event" in statements[0]
    monkeypatch.undo()
    assert types(await store.history("default", "one")) == ["Created", "Started"]


async def test_a_save_waits_for_the_table_lock_so_positions_follow_commit_order(
    store: EventStore, sql: psycopg.Connection[Any]
) -> None:
    """Another transaction has inserted a row, its position taken and not yet committed
    (a plain INSERT's lock, which other plain INSERTs do not wait for). Our save must wait
    for it: had it committed first, at the next position, a reader that had read up to
    ours would never go back for the row below it."""
    await store.save(new_task("before"))
    with sql.transaction():
        [(theirs,)] = sql.execute(
            f"INSERT INTO {TABLE} (originator_id, originator_version, topic, state) "
            "VALUES (%s, 1, 'test:Other', '{}') RETURNING notification_id",
            (uuid.uuid4(),),
        ).fetchall()
        save = asyncio.ensure_future(store.save(new_task("after")))

        def waiting() -> bool:
            rows = sql.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
                (TABLE,),
            ).fetchall()
            return bool(rows[0][0])

        await wait_until_async(waiting, "the save never asked for the table's lock")
        assert not save.done()
    await save
    [(ours,)] = sql.execute(
        f"SELECT notification_id FROM {TABLE} WHERE topic <> 'test:Other' "
        "ORDER BY notification_id DESC LIMIT 1"
    ).fetchall()
    assert ours > theirs


async def test_a_store_made_before_the_append_functions_gets_them_when_opened(
    postgres_url: str, tmp_path: Path, sql: psycopg.Connection[Any]
) -> None:
    env = store_env(postgres_url, tmp_path)
    old = EventStore(env)
    assert await old.prepare() is True  # this call made the schema
    await old.save(new_task("old"))
    await old.aclose()
    for name in APPEND_FUNCTIONS:  # as the schema was before this recorder
        sql.execute(f"DROP FUNCTION {name}")

    reopened = EventStore(env)
    try:
        assert await reopened.prepare() is False  # the table was there: not "created"
        task = await reopened.current("default", "old")
        assert task is not None
        task.start(9, CLI)
        await reopened.save(task)
        assert types(await reopened.history("default", "old")) == ["Created", "Started"]
    finally:
        await reopened.aclose()
    found = sql.execute(
        "SELECT proname FROM pg_proc WHERE proname = ANY(%s) ORDER BY proname",
        (list(APPEND_FUNCTIONS),),
    ).fetchall()
    assert [name for (name,) in found] == sorted(APPEND_FUNCTIONS)

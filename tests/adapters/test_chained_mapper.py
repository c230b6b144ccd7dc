"""Every event the store writes links to its predecessor's stored bytes, however written.

Real SQLite; the links are read back with the plain sqlite3 module and checked against
digests computed here from the rows, so a mapper that linked to the wrong bytes fails.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from adapters.event_store import EventStore, store_env
from domain.errors import ConflictError
from domain.ledger.chain import GENESIS, event_digest, link_of
from domain.task import Task
from domain.values import Cause

CAUSE = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger run t")


def new_task(task_id: str) -> Task:
    return Task(namespace="default", task_id=task_id, incarnation=1, bundle="/b", pid=7,
                runtime="io.containerd.runc.v2", node="n", state_dir="/s", cause=CAUSE)  # fmt: skip


def links(db: Path) -> list[tuple[int, str, bytes | None, bytes]]:
    """(version, aggregate, stored link, digest of the row) in position order."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT originator_id, originator_version, topic, state FROM stored_events "
            "ORDER BY rowid"
        ).fetchall()
    return [(v, o, link_of(s), event_digest(o, v, t, s)) for o, v, t, s in rows]


def assert_chained(db: Path) -> int:
    last: dict[str, bytes] = {}
    for version, aggregate, link, digest in links(db):
        expected = GENESIS.encode() if version == 1 else last[aggregate].hex().encode()
        assert link == expected, (aggregate, version)
        last[aggregate] = digest
    return len(last)


async def test_a_save_after_a_load_links_each_event_to_the_one_before(tmp_path: Path) -> None:
    store = EventStore(store_env(None, tmp_path))
    try:
        task = new_task("a")
        task.start(7, CAUSE)  # two events in one save: the second links to the first
        await store.save(task)
        loaded = await store.current("default", "a")
        assert loaded is not None
        loaded.record_kill(15, False, CAUSE)
        await store.save(loaded)
        history = await store.history("default", "a")
        assert all("_prev" not in vars(e) for e in history)  # the link never reaches the domain
    finally:
        await store.aclose()
    assert assert_chained(tmp_path / "events.db") == 1


async def test_a_writer_that_never_read_the_aggregate_reads_its_predecessor(tmp_path: Path) -> None:
    env = store_env(None, tmp_path)
    first, second = EventStore(env), EventStore(env)
    try:
        await first.save(new_task("b"))
        task = await first.current("default", "b")
        assert task is not None
        task.start(7, CAUSE)
        await second.save(task)  # second's mapper knows nothing of b: it must read v1
    finally:
        await first.aclose()
        await second.aclose()
    assert assert_chained(tmp_path / "events.db") == 1


async def test_the_loser_of_a_race_relinks_to_the_winners_event(tmp_path: Path) -> None:
    env = store_env(None, tmp_path)
    one, two = EventStore(env), EventStore(env)
    try:
        await one.save(new_task("c"))
        a, b = await one.current("default", "c"), await two.current("default", "c")
        assert a is not None and b is not None
        a.start(7, CAUSE)
        b.record_kill(9, False, CAUSE)
        await one.save(a)
        with pytest.raises(ConflictError):
            await two.save(b)  # its version 2 is taken: its link (to v1) never stored
        retry = await two.current("default", "c")
        assert retry is not None
        retry.record_kill(9, False, CAUSE)
        await two.save(retry)  # version 3, linked to one's version 2
    finally:
        await one.aclose()
        await two.aclose()
    assert [v for v, *_ in links(tmp_path / "events.db")] == [1, 2, 3]
    assert assert_chained(tmp_path / "events.db") == 1

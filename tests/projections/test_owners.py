"""Ledger over a history two owners share, with a task recorded before nodes existed.

Incarnation numbers are fleet-wide per ID: node a's ``dup`` is incarnation 1, node b's
incarnation 2, both live at once. ``old`` is a real v1 row (its Created has no node nor
state dir), which every owner takes for its own.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.event_store import EventStore
from domain.task import Task
from domain.values import EVERY_NODE, Cause, Owner, Whose
from projections.event_index import EventFilter
from projections.state_files import state_of
from projections.task_states import key_of, replay
from projections.verify import verify_views
from tests.adapters.test_event_upcasting import insert_row, stored_row
from tests.projections.test_legacy_topics import Ledger

CLI = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger test", host="h")
A = Owner("node-a", "")  # its state dir is the test's (Ledger.owner)
B = Owner("node-b", "/run/b")


def task(task_id: str, incarnation: int, owner: Owner, pid: int) -> Task:
    return Task(namespace="default", task_id=task_id, incarnation=incarnation, bundle="/b",
                pid=pid, runtime="r", node=owner.node, state_dir=owner.state_dir,
                cause=CLI)  # fmt: skip


async def write_v1_created(store: EventStore, db: Path, task_id: str) -> None:
    """A Created row as written before nodes: v1, no ``node`` nor ``state_dir``."""
    reference = task(f"{task_id}-ref", 1, A, 30)
    await store.save(reference)
    topic, state = stored_row(db, reference.id, 1)
    old = {k: v for k, v in state.items() if k not in ("class_version", "node", "state_dir")}
    old["task_id"] = task_id
    reference.delete(CLI)
    await store.save(reference)
    insert_row(db, Task.create_id("default", task_id, 1), 1, topic, old)


@pytest.fixture
async def views(tmp_path: Path) -> AsyncIterator[Ledger]:
    """Node a's views: a's dup#1 running, b's dup#2 created, old (v1) created, a's gone#1
    deleted. The working bundles of all three IDs are in a's state dir."""
    opened = Ledger(tmp_path, bundles=("dup", "old", "old-ref", "gone"))
    assert opened.owner == Owner(A.node, str(tmp_path / "state"))
    first = task("dup", 1, opened.owner, 10)
    first.start(11, CLI)
    await opened.store.save(first)
    await opened.store.save(task("dup", 2, B, 20))
    await write_v1_created(opened.store, tmp_path / "events.db", "old")
    gone = task("gone", 1, opened.owner, 40)
    gone.delete(CLI)
    await opened.store.save(gone)
    yield opened
    await opened.aclose()


def summary(states: list[Any]) -> list[tuple[str, int, str, str]]:
    return [(s.id, s.incarnation, s.node, s.status.value) for s in states]


async def test_each_owner_has_its_own_current_task_of_an_id(views: Ledger) -> None:
    await views.task_states.catch_up()
    everyone = await views.task_states.tasks()
    assert summary(everyone) == [
        ("dup", 1, "node-a", "running"), ("dup", 2, "node-b", "created"), ("old", 1, "", "created"),
    ]  # fmt: skip
    assert [(s.node, s.state_dir) for s in everyone] == [
        ("node-a", views.owner.state_dir), ("node-b", "/run/b"), ("", "")]  # fmt: skip
    mine = await views.task_states.tasks("default", Whose.owner(views.owner))
    assert summary(mine) == [("dup", 1, "node-a", "running"), ("old", 1, "", "created")]
    theirs = await views.task_states.tasks(None, Whose.owner(B))
    assert summary(theirs) == [("dup", 2, "node-b", "created"), ("old", 1, "", "created")]
    # Asked from node a, node b's tasks are those b recorded: the old one is a's.
    assert summary(await views.task_states.tasks(None, Whose.node_of("node-b", views.owner))) == [
        ("dup", 2, "node-b", "created")]  # fmt: skip
    assert summary(await views.task_states.tasks(None, Whose.node_of("node-a", views.owner))) == [
        ("dup", 1, "node-a", "running"), ("old", 1, "", "created")]  # fmt: skip
    assert await views.task_states.tasks(None, Whose.owner(Owner("node-a", "/elsewhere"))) == [
        s for s in everyone if s.id == "old"]  # fmt: skip

    a_dup = await views.task_states.get("default", "dup", Whose.owner(views.owner))
    b_dup = await views.task_states.get("default", "dup", Whose.owner(B))
    assert a_dup is not None and (a_dup.incarnation, a_dup.pid) == (1, 11)
    assert b_dup is not None and (b_dup.incarnation, b_dup.pid) == (2, 20)
    latest = await views.task_states.get("default", "dup", EVERY_NODE)
    assert latest == b_dup
    assert await views.task_states.get("default", "gone", Whose.owner(views.owner)) is None
    old = await views.task_states.get("default", "old", Whose.owner(B))
    assert old is not None and old.node == ""

    events = [e for _, e in await views.store.read(0, 100)]
    assert replay(events) == {key_of(s): s for s in everyone}


async def test_an_owners_newer_incarnation_takes_its_row_only(views: Ledger) -> None:
    first = await views.store.incarnation("default", "dup", 1)
    assert first is not None
    first.record_exit(0, datetime.now(UTC), CLI)
    first.delete(CLI)
    await views.store.save(first)
    await views.store.save(task("dup", 3, views.owner, 30))
    await views.task_states.catch_up()
    assert summary(await views.task_states.tasks()) == [
        ("dup", 3, "node-a", "created"), ("dup", 2, "node-b", "created"),
        ("old", 1, "", "created"),
    ]  # fmt: skip
    assert await verify_views(views.store, views.task_states, views.event_index) == {
        "task_states": [], "event_index": []}  # fmt: skip


async def test_events_name_their_tasks_node_and_filter_by_it(views: Ledger) -> None:
    here = views.owner
    await views.event_index.catch_up()
    records = await views.event_index.query(EventFilter())
    assert [(r.id, r.incarnation, r.node) for r in records if r.type == "Created"] == [
        ("dup", 1, "node-a"), ("dup", 2, "node-b"), ("old-ref", 1, "node-a"), ("old", 1, ""),
        ("gone", 1, "node-a"),
    ]  # fmt: skip
    started = next(r for r in records if r.type == "Started")
    assert started.node == "node-a" and json.loads(started.model_dump_json())["node"] == "node-a"
    b_only = await views.event_index.query(EventFilter(whose=Whose.node_of("node-b", here)))
    assert [(r.id, r.type) for r in b_only] == [("dup", "Created")]
    a_node = Whose.node_of("node-a", here)
    a_too = await views.event_index.query(EventFilter(id="old", whose=a_node))
    assert [(r.id, r.node) for r in a_too] == [("old", "")]  # node a's reader owns old
    assert await views.event_index.query(EventFilter(whose=Whose.node_of("node-c", here))) == []


async def test_state_files_are_written_for_this_owners_tasks_only(views: Ledger) -> None:
    await views.state_files.catch_up()
    assert views.files[("default", "gone")] is None  # written, then removed at its Deleted
    dup = state_of(json.loads(views.state_files.file_of("default", "dup").read_text()))
    # b's dup#2 has its file in b's state dir: a's file still says a's incarnation 1.
    assert (dup.incarnation, dup.node, dup.state_dir, dup.status.value) == (
        1, "node-a", views.owner.state_dir, "running")  # fmt: skip
    old = state_of(json.loads(views.state_files.file_of("default", "old").read_text()))
    assert (old.node, old.state_dir) == ("", "")
    assert await verify_views(
        views.store, views.task_states, views.event_index, views.state_files
    ) == {"task_states": [], "event_index": [], "state_files": []}


async def test_a_view_file_of_the_schema_before_nodes_is_rebuilt(
    views: Ledger, tmp_path: Path
) -> None:
    """A task_states file an older shimledger left (no node column) is rebuilt, not used."""
    path = tmp_path / "projections" / "task_states.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            "CREATE TABLE position (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "position INTEGER NOT NULL);"
            "CREATE TABLE task_states (namespace TEXT NOT NULL, id TEXT NOT NULL, "
            "originator TEXT NOT NULL UNIQUE, status TEXT NOT NULL, state TEXT NOT NULL, "
            "PRIMARY KEY (namespace, id));"
            "CREATE INDEX task_states_status ON task_states (namespace, status);"
            "INSERT INTO position VALUES (1, 999);"
        )
    assert await views.task_states.catch_up() == await views.store.head()
    assert [s.node for s in await views.task_states.tasks()] == ["node-a", "node-b", ""]

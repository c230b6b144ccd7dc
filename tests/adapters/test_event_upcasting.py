"""Old events still load: an Exited stored before v2 added ``signal`` is upcast on the way in.

The v1 event is written straight into the store's SQLite file in the shape eventsourcing
gave it then: the same topic, and the JSON state without ``class_version`` (the Mapper
writes that key only for a class_version above 1) and without ``signal``. The shape is not
written out by hand here: it is the stored form of a current Exited, minus those two keys.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.utils import get_topic

from adapters.event_store import EventStore, sqlite_env
from domain.task import Task
from domain.values import Cause, Owner, Status

CLI = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger test", host="h")
SHIM = Cause(kind="shim-event", detail="/tasks/exit")
EXITED_AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = EventStore(sqlite_env(tmp_path))
    yield store
    await store.aclose()


def new_task(task_id: str) -> Task:
    return Task(
        namespace="default",
        task_id=task_id,
        incarnation=1,
        bundle="/b",
        pid=10,
        runtime="io.containerd.runc.v2",
        node="node-a", state_dir="", cause=CLI,
    )


def stored_row(db: Path, originator_id: UUID, version: int) -> tuple[str, dict[str, Any]]:
    """The topic and the decoded JSON state of one stored event, read with plain sqlite3."""
    with closing(sqlite3.connect(db)) as connection:
        topic, state = connection.execute(
            "SELECT topic, state FROM stored_events"
            " WHERE originator_id = ? AND originator_version = ?",
            (originator_id.hex, version),
        ).fetchone()
    return topic, json.loads(state)  # neither compressed nor encrypted: plain UTF-8 JSON


def insert_row(
    db: Path, originator_id: UUID, version: int, topic: str, state: dict[str, Any]
) -> None:
    encoded = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode("utf8")
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(
            "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
            " VALUES (?, ?, ?, ?)",
            (originator_id.hex, version, topic, encoded),
        )


async def a_current_exited_event(store: EventStore) -> Task:
    """A task "ref" saved through Created, Started and a current Exited(137) at version 3."""
    reference = new_task("ref")
    reference.start(11, CLI)
    reference.record_exit(137, EXITED_AT, SHIM)
    await store.save(reference)
    return reference


async def test_a_current_exited_event_is_stored_as_v2_and_round_trips(
    store: EventStore, tmp_path: Path
) -> None:
    reference = await a_current_exited_event(store)

    topic, state = stored_row(tmp_path / "events.db", reference.id, 3)
    assert topic == get_topic(Task.Exited)
    assert state["class_version"] == 2
    assert (state["exit_status"], state["signal"]) == (137, 9)

    exited = (await store.history("default", "ref"))[-1]
    assert isinstance(exited, Task.Exited)
    assert (exited.exit_status, exited.exited_at, exited.signal) == (137, EXITED_AT, 9)
    assert exited.cause == SHIM
    assert "class_version" not in vars(exited)
    loaded = await store.current("default", "ref")
    assert loaded is not None and loaded.status is Status.STOPPED
    assert loaded.exit is not None and loaded.exit.status == 137


@pytest.mark.parametrize(
    ("exit_status", "signal"),
    [(137, 9), (143, 15), (192, 64), (3, None), (0, None), (128, None), (193, None)],
)
async def test_a_v1_exited_event_still_loads_with_its_signal_derived(
    store: EventStore, tmp_path: Path, exit_status: int, signal: int | None
) -> None:
    db = tmp_path / "events.db"
    reference = await a_current_exited_event(store)
    topic, v2_state = stored_row(db, reference.id, 3)
    v1_state = {k: v for k, v in v2_state.items() if k not in ("class_version", "signal")}
    v1_state["exit_status"] = exit_status

    old = new_task("old")
    old.start(12, CLI)
    await store.save(old)  # versions 1 and 2: Created, Started
    insert_row(db, old.id, 3, topic, v1_state)
    _, stored = stored_row(db, old.id, 3)
    assert "class_version" not in stored and "signal" not in stored

    task = await store.current("default", "old")
    assert task is not None
    assert (task.status, task.version, task.pid) == (Status.STOPPED, 3, 12)
    assert task.exit is not None
    assert (task.exit.status, task.exit.exited_at) == (exit_status, EXITED_AT)

    history = await store.history("default", "old")
    assert [type(e).__name__ for e in history] == ["Created", "Started", "Exited"]
    exited = history[-1]
    assert isinstance(exited, Task.Exited)
    assert (exited.exit_status, exited.signal, exited.cause) == (exit_status, signal, SHIM)
    assert "class_version" not in vars(exited)

    # Projections read the same event off the notification log: upcast there too.
    notifications = await store.read(0, 100)
    [from_log] = [
        e for _, e in notifications if e.originator_id == old.id and e.originator_version == 3
    ]
    assert isinstance(from_log, Task.Exited) and from_log.signal == signal

    # And the old history goes on: an event appended after the v1 one loads with it.
    task.delete(CLI)
    await store.save(task)
    deleted = await store.current("default", "old")
    assert deleted is not None and deleted.status is Status.DELETED and deleted.version == 4


async def test_a_v1_created_event_loads_as_a_task_of_no_known_owner(
    store: EventStore, tmp_path: Path
) -> None:
    """Created v1 had neither node nor state_dir: it loads with both empty, which every
    Owner takes for its own (a history from before nodes stays its host's)."""
    db = tmp_path / "events.db"
    reference = new_task("ref")
    await store.save(reference)
    topic, v2_state = stored_row(db, reference.id, 1)
    assert v2_state["class_version"] == 2 and v2_state["node"] == "node-a"
    v1_state = {
        k: v for k, v in v2_state.items() if k not in ("class_version", "node", "state_dir")
    }
    v1_state["task_id"] = "old"
    old_id = Task.create_id("default", "old", 1)
    v1_state["originator_id"] = str(old_id)  # as eventsourcing stored the Created's state
    insert_row(db, old_id, 1, topic, {k: v for k, v in v1_state.items() if k != "originator_id"})

    task = await store.current("default", "old")
    assert task is not None
    assert (task.node, task.state_dir, task.task_id, task.pid) == ("", "", "old", 10)
    assert task.owned_by(Owner("node-b", "/run/b")) and task.owned_by(Owner("node-a", "/s"))
    [created] = await store.history("default", "old")
    assert isinstance(created, Task.Created) and created.cause == CLI
    assert (created.node, created.state_dir) == ("", "")
    assert not reference.owned_by(Owner("node-b", "")) and reference.owned_by(Owner("node-a", "/x"))

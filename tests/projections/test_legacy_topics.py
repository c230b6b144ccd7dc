"""Histories written before the stable topics still load, through the store and every view.

Until the event catalogue had explicit topics, the store wrote eventsourcing's default:
``domain.task:Task.Started`` (module:qualname) for each event, and ``domain.task:Task`` as
each Created's ``originator_topic``. Here such a history is put straight into a store's
SQLite file: every kind of event is first written through a reference store (so the rows'
shape comes from the Mapper, not from this file), then copied row by row into a second
store with those old topics, and one Exited also in its v1 shape. Everything that reads
the second store must answer as it does for the reference.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.event_store import EventStore, sqlite_env
from domain.events import EVENT_TYPES, Created, Exited, ExitRetracted
from domain.state_dir import StateDir
from domain.task import LEGACY_TOPICS, Task
from domain.values import Cause, Owner, Status
from projections.audit import AuditReport, audit
from projections.event_index import EventFilter, EventIndex
from projections.records import history_records
from projections.state_files import StateFiles, state_of
from projections.task_states import TaskStatesView, key_of, replay, replay_table
from projections.verify import verify_views

CLI = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger test", host="h")
SHIM = Cause(kind="shim-event", detail="/tasks/exit")
AT = datetime(2026, 1, 1, tzinfo=UTC)
OLD_PREFIX = "domain.task:Task."
# The events there were before the stable topics; those declared since never had an old one.
OLD_EVENTS = tuple(cls for cls in EVENT_TYPES if cls is not ExitRetracted)


def new_task(task_id: str, incarnation: int = 1, pid: int = 10) -> Task:
    return Task(namespace="default", task_id=task_id, incarnation=incarnation, bundle="/b",
                pid=pid, runtime="io.containerd.runc.v2",
                node="node-a", state_dir="", cause=CLI)  # fmt: skip


def every_kind_of_history() -> list[Task]:
    """web#1 has every one of the 15 events; web#2 runs; db exited 143 (its Exited goes v1)."""
    first = new_task("web")
    first.start(11, CLI)
    first.record_kill(15, False, CLI)
    first.pause(CLI)
    first.resume(CLI)
    first.record_oom(SHIM)
    first.add_exec("e1", CLI)
    first.start_exec("e1", 12, CLI)
    first.record_exec_exit("e1", 0, AT, SHIM)
    first.record_update({"memory": {"limit": 1 << 20}}, CLI)
    first.record_checkpoint("/img", False, CLI)
    first.adopt(Cause(kind="reconciliation", detail="shim found alive"))
    first.record_shim_lost(Cause(kind="reconciliation", detail="shim gone"))
    first.record_exit(137, AT, Cause(kind="shim", detail="Wait"))
    first.delete(CLI)
    assert {type(e).__name__ for e in first.pending_events} == {c.__name__ for c in OLD_EVENTS}
    second = new_task("web", incarnation=2, pid=20)
    second.start(21, CLI)
    db = new_task("db", pid=30)
    db.start(31, CLI)
    db.record_exit(143, AT, SHIM)
    return [first, second, db]


def rows(db: Path) -> list[tuple[str, int, str, bytes]]:
    with closing(sqlite3.connect(db)) as connection:
        return connection.execute(
            "SELECT originator_id, originator_version, topic, state FROM stored_events"
            " ORDER BY rowid"
        ).fetchall()


def as_written_before(topic: str, state: bytes) -> tuple[str, bytes]:
    """The row as the store wrote it before stable topics (and, for Exited, before v2)."""
    name = topic.removeprefix("shimledger.task:")
    assert name != topic, f"not a stable topic: {topic}"
    data: dict[str, Any] = json.loads(state)
    if "originator_topic" in data:
        assert data["originator_topic"] == "shimledger.task:Task"
        data["originator_topic"] = "domain.task:Task"
    if name == Exited.__name__ and data["exit_status"] == 143:
        del data["class_version"], data["signal"]
    encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf8")
    return OLD_PREFIX + name, encoded


class Ledger:
    """A store and every view over it, in their own directories."""

    def __init__(self, root: Path, node: str = "node-a", bundles: tuple[str, ...] = ("web", "db")
                 ) -> None:  # fmt: skip
        self.root = root
        self.state_dir = root / "state"
        self.store = EventStore(sqlite_env(root))
        projections = root / "projections"
        self.task_states = TaskStatesView(projections, self.store)
        self.event_index = EventIndex(projections, self.store)
        self.files: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.owner = Owner(node, str(self.state_dir))
        self.state_files = StateFiles(projections, self.store, StateDir(self.state_dir), self.save,
                                      owner=self.owner)  # fmt: skip
        for task_id in bundles:  # working bundles, as create would have made them
            (self.state_dir / "default" / task_id).mkdir(parents=True)

    def save(self, namespace: str, task_id: str, document: dict[str, Any] | None) -> None:
        """As shim.bundle does: a state.json in the working bundle, none once deleted."""
        self.files[(namespace, task_id)] = document
        path = self.state_files.file_of(namespace, task_id)
        if document is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(json.dumps(document))

    async def aclose(self) -> None:
        for view in (self.task_states, self.event_index, self.state_files):
            await view.aclose()
        await self.store.aclose()


@pytest.fixture
async def reference(tmp_path: Path) -> AsyncIterator[Ledger]:
    ledger = Ledger(tmp_path / "reference")
    for task in every_kind_of_history():
        await ledger.store.save(task)
    yield ledger
    await ledger.aclose()


@pytest.fixture
async def legacy(tmp_path: Path, reference: Ledger) -> AsyncIterator[Ledger]:
    ledger = Ledger(tmp_path / "legacy")
    await ledger.store.head()  # creates the store's tables
    db = ledger.root / "events.db"
    with closing(sqlite3.connect(db)) as connection, connection:
        for originator, version, topic, state in rows(reference.root / "events.db"):
            old_topic, old_state = as_written_before(topic, state)
            connection.execute(
                "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
                " VALUES (?, ?, ?, ?)",
                (originator, version, old_topic, old_state),
            )
    yield ledger
    await ledger.aclose()


def test_every_old_topic_resolves_to_todays_class() -> None:
    from eventsourcing.utils import TopicError, get_topic, register_topic, resolve_topic

    class Elsewhere:
        """Stands for the module path an old topic names, should the class move."""

    # Registered (not merely importable by its old path): the registry refuses another class.
    for old in ["domain.task:Task", *(f"{OLD_PREFIX}{cls.__name__}" for cls in OLD_EVENTS)]:
        with pytest.raises(TopicError):
            register_topic(old, Elsewhere)
    assert set(LEGACY_TOPICS) == {
        "domain.task:Task",
        *(f"{OLD_PREFIX}{cls.__name__}" for cls in OLD_EVENTS),
    }
    assert resolve_topic("domain.task:Task") is Task
    assert get_topic(Task) == "shimledger.task:Task"
    for cls in OLD_EVENTS:
        current = getattr(Task, cls.__name__)
        assert issubclass(current, cls)
        assert get_topic(current) == f"shimledger.task:{cls.__name__}"
        assert resolve_topic(f"{OLD_PREFIX}{cls.__name__}") is current
        assert resolve_topic(f"shimledger.task:{cls.__name__}") is current


async def test_the_rows_really_are_old(legacy: Ledger) -> None:
    stored = rows(legacy.root / "events.db")
    assert len(stored) == 15 + 2 + 3
    assert {topic for _, _, topic, _ in stored} == {
        f"{OLD_PREFIX}{cls.__name__}" for cls in OLD_EVENTS
    }
    assert all(b"shimledger.task" not in state for *_, state in stored)


async def test_the_store_loads_old_histories_and_goes_on_appending(
    legacy: Ledger, reference: Ledger
) -> None:
    for task_id in ("web", "db"):
        old = await legacy.store.history("default", task_id)
        new = await reference.store.history("default", task_id)
        assert [type(e) for e in old] == [type(e) for e in new]
        # The same events, but for what each Created stored as its aggregate's topic.
        assert [without_topic(e) for e in old] == [without_topic(e) for e in new]
        assert {e.originator_topic for e in old if isinstance(e, Created)} == {"domain.task:Task"}
    [*_, exited] = await legacy.store.history("default", "db")
    assert isinstance(exited, Task.Exited) and exited.signal == 15  # upcast from v1

    web = await legacy.store.current("default", "web")
    assert web is not None and (web.incarnation, web.status, web.pid) == (2, Status.RUNNING, 21)
    db = await legacy.store.current("default", "db")
    assert db is not None and db.status is Status.STOPPED and db.exit is not None
    assert db.exit.status == 143
    first: Task | None = None
    for event in (await legacy.store.history("default", "web"))[:15]:  # web#1, replayed
        first = event.mutate(first)
    assert first is not None and first.status is Status.DELETED
    assert (first.checkpoints, first.execs["e1"].pid) == (["/img"], 12)

    db.delete(CLI)  # a new event, with a new topic, after the old ones
    await legacy.store.save(db)
    reloaded = await legacy.store.current("default", "db")
    assert reloaded is not None and reloaded.status is Status.DELETED and reloaded.version == 4
    assert rows(legacy.root / "events.db")[-1][2] == "shimledger.task:Deleted"


def without_topic(event: object) -> dict[str, Any]:
    return {k: v for k, v in vars(event).items() if k != "originator_topic"}


def audit_of(records: list[Any]) -> AuditReport:
    return audit(records, since=None, until=AT + timedelta(days=1), stuck_after=timedelta(0))


async def test_every_view_reads_old_histories_as_it_reads_new_ones(
    legacy: Ledger, reference: Ledger
) -> None:
    expected_states = {
        ("default", "web"): (Status.RUNNING, 2, 21, None),
        ("default", "db"): (Status.STOPPED, 1, 31, 143),
    }
    answers = []
    for ledger in (legacy, reference):
        head = await ledger.store.head()
        for view in (ledger.task_states, ledger.event_index, ledger.state_files):
            assert await view.catch_up() == head == 20

        states = {key_of(s): s for s in await ledger.task_states.tasks()}
        assert {k[:2]: (s.status, s.incarnation, s.pid, s.exit_status)
                for k, s in states.items()} == expected_states  # fmt: skip
        events = [e for _, e in await ledger.store.read(0, 100)]
        assert replay(events) == states
        assert await replay_table(ledger.store) == states
        assert await replay_table(ledger.store, at=AT - timedelta(days=1)) == {}

        files = {k: state_of(d) for k, d in ledger.files.items() if d is not None}
        assert files == {k[:2]: s for k, s in states.items()}
        assert ledger.files[("default", "web")] is not None  # web#2 rewrote what web#1 removed

        records = await ledger.event_index.query(EventFilter())
        assert [r.type for r in records[:15]] == [
            "Created", "Started", "Killed", "Paused", "Resumed", "OOM", "ExecAdded",
            "ExecStarted", "ExecExited", "Updated", "Checkpointed", "Adopted", "ShimLost",
            "Exited", "Deleted",
        ]  # fmt: skip
        assert [(r.id, r.incarnation) for r in records[15:]] == [("web", 2)] * 2 + [("db", 1)] * 3
        assert records[-1].fields()["signal"] == 15
        killed = await ledger.event_index.query(EventFilter(types=["Killed"]))
        assert [r.fields()["signal"] for r in killed] == [15]

        history = history_records(await ledger.store.history("default", "web"))
        assert [r.model_dump(mode="json", exclude={"position"}) for r in history] == [
            r.model_dump(mode="json", exclude={"position"}) for r in records[:17]
        ]

        report = audit_of(records)
        lives = {(life.id, life.incarnation): life for life in report.lifetimes}
        web1, db = lives[("web", 1)], lives[("db", 1)]
        assert (web1.exit_status, web1.signal, web1.ooms, web1.shim_lost) == (137, 9, 1, True)
        assert web1.killed_by == [{"signal": 15, **CLI.as_dict()}]
        assert (web1.ended, db.ended, lives[("web", 2)].ended) == ("lost", "signal", "live")

        assert await verify_views(
            ledger.store, ledger.task_states, ledger.event_index, ledger.state_files
        ) == {"task_states": [], "event_index": [], "state_files": []}
        answers.append(
            (states, [r.model_dump(mode="json") for r in records], report.model_dump(mode="json"))
        )
    assert answers[0] == answers[1]

"""runs-compatible ``state.json`` per live task, in its working bundle under the state dir.

The Go tool `runs` (whose pkg/shim shimledger succeeds) saved each task's create options
as ``state.json`` for other tools to read; this view keeps the same file, written from
the history. Each file holds absolute values (an event sets fields, never adds to them),
so re-applying a page after a crash rewrites the same content: with the position
committed after the files, the effect is exactly once. Files are written atomically
(rename), and only where the working bundle exists: history never recreates state.
Only this owner's tasks (Owner.owns: this node and state dir) have files here: another
node's task of the same ID has its working bundle, and its file, on that node.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from domain.events import Created, TaskEvent
from domain.state_dir import StateDir
from domain.task import Task
from domain.values import Owner, State
from projections.task_states import evolve
from projections.view import EventSource, View

# Writes (or, given None, removes) a task's state.json: shim.lifecycle.bundle.save_container_state,
# handed in by the composition root so that this view does not reach into shim/.
SaveState = Callable[[str, str, dict[str, Any] | None], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS originators (
    originator TEXT PRIMARY KEY, namespace TEXT NOT NULL, id TEXT NOT NULL, runtime TEXT NOT NULL,
    node TEXT NOT NULL, state_dir TEXT NOT NULL
);
"""


def state_document(state: State, runtime: str) -> dict[str, Any]:
    """The file's content: runs' CreateOpts fields, then the task's current state."""
    return {
        "ID": state.id,
        "Namespace": state.namespace,
        "Bundle": state.bundle,
        "Runtime": runtime,
        "Rootfs": [],
        "IO": {"Stdin": "", "Stdout": "", "Stderr": "", "Terminal": False},
        "Checkpoint": "",
        "Incarnation": state.incarnation,
        "Pid": state.pid,
        "Status": state.status.value,
        "Created": state.created.isoformat(),
        "Started": state.started.isoformat() if state.started else None,
        "ExitStatus": state.exit_status,
        "ExitedAt": state.exited_at.isoformat() if state.exited_at else None,
        "Node": state.node,
        "StateDir": state.state_dir,
    }


def state_of(document: dict[str, Any]) -> State:
    return State(
        id=document["ID"], namespace=document["Namespace"], incarnation=document["Incarnation"],
        pid=document["Pid"], status=document["Status"], bundle=document["Bundle"],
        created=document["Created"], started=document["Started"],
        exit_status=document["ExitStatus"], exited_at=document["ExitedAt"],
        node=document.get("Node", ""), state_dir=document.get("StateDir", ""),
    )  # fmt: skip


class StateFiles(View):
    """Keeps ``<state>/<namespace>/<id>/state.json`` for every live task of ``owner``."""

    name = "state_files"
    schema = _SCHEMA

    def __init__(
        self,
        directory: Path,
        source: EventSource,
        state_dir: StateDir,
        save: SaveState,
        *,
        owner: Owner,
        file_name: str | None = None,
    ) -> None:
        super().__init__(directory, source)
        # One file (and so one position) per state dir: state dirs sharing a root each
        # write their own tasks' files, and one's catching up must not skip the other's.
        if file_name is not None:
            self.path = directory / file_name
        self._state_dir = state_dir
        self._save = save
        self.owner = owner

    def file_of(self, namespace: str, task_id: str) -> Path:
        return self._state_dir.state_file(namespace, task_id)

    async def apply(self, db: aiosqlite.Connection, position: int, event: Any) -> None:
        await self._apply(event, db)

    @functools.singledispatchmethod
    async def _apply(self, event: TaskEvent, db: aiosqlite.Connection) -> None:
        """Any event after Created: rewrite the file of the incarnation it belongs to."""
        originator = str(event.originator_id)
        async with db.execute(
            "SELECT namespace, id, runtime, node, state_dir FROM originators WHERE originator = ?",
            (originator,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None or not self.owner.owns(row[3], row[4]):
            return  # another owner's task: its file is in its own state dir
        namespace, task_id, runtime = row[:3]
        path = self.file_of(namespace, task_id)
        try:
            document = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return  # the bundle is gone (deleted, or state lost in a reboot): nothing to keep
        current = state_of(document)
        if Task.create_id(namespace, task_id, current.incarnation) != event.originator_id:
            return  # an older incarnation's event
        self._write(namespace, task_id, evolve(current, event), runtime)

    @_apply.register
    async def _(self, event: Created, db: aiosqlite.Connection) -> None:
        """A new incarnation: remember whose it is (and its runtime), write its first file."""
        await db.execute(
            "INSERT OR REPLACE INTO originators VALUES (?, ?, ?, ?, ?, ?)",
            (str(event.originator_id), event.namespace, event.task_id, event.runtime,
             event.node, event.state_dir),
        )  # fmt: skip
        if not self.owner.owns(event.node, event.state_dir):
            return
        self._write(event.namespace, event.task_id, evolve(None, event), event.runtime)

    def _write(self, namespace: str, task_id: str, state: State | None, runtime: str) -> None:
        document = None if state is None else state_document(state, runtime)
        self._save(namespace, task_id, document)

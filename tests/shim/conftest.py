"""Fixtures of the shim layer's tests: what a user hands ``create``, and a manager."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.event_store import EventStore, sqlite_env
from adapters.file_lock import TaskLocks
from cli.bootstrap import compose
from domain.state_dir import StateDir
from domain.values import Cause
from projections.task_states import TaskStatesView
from shim.lifecycle.shim_manager import ManagerConfig
from shim.lifecycle.task_manager import TaskManager
from shim.ports import ShimBinary


@pytest.fixture
def user_bundle(tmp_path: Path) -> Path:
    """A bundle whose config.json runs ``true`` (the fake shims never run it)."""
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    spec = {"process": {"args": ["true"], "terminal": False}, "root": {"path": "rootfs"}}
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


@contextlib.asynccontextmanager
async def new_manager(
    tmp_path: Path, binary: ShimBinary, node: str = ""
) -> AsyncIterator[TaskManager]:
    """A TaskManager as one CLI process has it (its own store and view connections), wired
    by the composition root with a fake shim binary. With ``node``, that node's, with a
    state dir (and views) of its own on the same store."""
    suffix = f"-{node}" if node else ""
    store = EventStore(sqlite_env(tmp_path))
    view = TaskStatesView(tmp_path / f"projections{suffix}", store)
    state = StateDir(tmp_path / f"state{suffix}")
    components = compose(
        namespace="default",
        config=ManagerConfig(state=state, ttrpc_address="unix://sink", node=node),
        binary=binary, store=store, view=view, locks=TaskLocks(state),
        cause=lambda: Cause(kind="cli", uid=0, node=node or None),
    )  # fmt: skip
    try:
        yield components.manager
    finally:
        await components.manager.aclose()
        await view.aclose()
        await store.aclose()

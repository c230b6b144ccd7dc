"""Two owners (nodes, each with its own state dir) on one store: TaskManager's rules.

Fake shims, a real SQLite store and view: each manager is what one node's command has
(its own store connection, its own locks), so the store's conflict check is real.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from domain.errors import OwnedElsewhereError
from domain.values import Bundle
from tests.conftest import event_types as types
from tests.shim.conftest import new_manager
from tests.shim.fakes import FakeShimBinary


class HookedShimBinary(FakeShimBinary):
    """Runs ``before_start`` once, as the next shim is started: another node's command."""

    before_start: Callable[[], Awaitable[object]] | None = None

    async def start(self, bundle: Bundle, runtime: str, ttrpc_address: str) -> str:
        hook, self.before_start = self.before_start, None
        if hook is not None:
            await hook()
        return await super().start(bundle, runtime, ttrpc_address)


async def test_a_create_whose_number_another_node_took_takes_the_next(
    tmp_path: Path, user_bundle: Path
) -> None:
    binary_a, binary_b = FakeShimBinary(), HookedShimBinary()
    async with new_manager(tmp_path, binary_a, "a") as a, new_manager(tmp_path, binary_b, "b") as b:
        # B has read the ID's latest incarnation (none) when A creates the ID and saves
        # incarnation 1: B's save of 1 conflicts, and B records 2.
        binary_b.before_start = lambda: a.create("x", user_bundle)
        await b.create("x", user_bundle)
        history = await a.history("x")
    assert types(history) == ["Created", "Created"]
    assert [(e.incarnation, e.node) for e in history] == [(1, "a"), (2, "b")]


async def test_another_nodes_task_is_neither_reconciled_nor_touched(
    tmp_path: Path, user_bundle: Path
) -> None:
    binary_a, binary_b = FakeShimBinary(), FakeShimBinary()
    async with new_manager(tmp_path, binary_a, "a") as a, new_manager(tmp_path, binary_b, "b") as b:
        await a.create("x", user_bundle)
        await a.start("x")
        before = types(await a.history("x"))
        await b.tasks()
        assert [r.task_id for r in await b.reconcile_all(all_namespaces=True)] == []
        for step in (b.kill("x", 9), b.start("x"), b.delete("x", force=True)):
            with pytest.raises(OwnedElsewhereError, match="task x runs on node a .*node b"):
                await step
        assert types(await a.history("x")) == before == ["Created", "Started"]
        await a.delete("x", force=True)

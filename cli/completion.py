"""Shell completion of task IDs, read from the task-states view (no shim is asked)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from cli.settings import DEFAULT_ROOT, DEFAULT_STATE, Settings, default_node
from domain.values import Whose

logger = logging.getLogger(__name__)


def _settings(ctx: typer.Context) -> Settings:
    """The global options as parsed so far (completion runs no callback, so no ctx.obj)."""
    params = ctx.find_root().params
    return Settings(
        root=Path(params.get("root") or DEFAULT_ROOT).absolute(),
        state=Path(params.get("state") or DEFAULT_STATE).absolute(),
        namespace=params.get("namespace") or "default",
        store=params.get("store"),
        node=params.get("node") or default_node(),
    )


def complete_task_id(ctx: typer.Context, incomplete: str) -> list[str]:
    """The live task IDs of the namespace that start with what was typed."""
    settings = _settings(ctx)
    if not (settings.root / "projections").is_dir():
        return []  # never create a root dir just to complete a word

    import asyncio

    async def ids() -> list[str]:
        from cli.ledger import open_ledger

        async with open_ledger(settings) as ledger:
            await ledger.task_states.catch_up()
            states = await ledger.task_states.tasks(settings.namespace, Whose.owner(settings.owner))
        return sorted({s.id for s in states if s.id.startswith(incomplete)})

    try:
        return asyncio.run(ids())
    except Exception as exc:  # a completion must print words, never a traceback
        logger.debug("no task IDs to complete: %s", exc)
        return []

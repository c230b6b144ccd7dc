"""What every command shares: running its coroutine, and mapping errors to exit codes."""

from __future__ import annotations

import asyncio
import enum
import signal as signals
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from domain.errors import ShimledgerError

T = TypeVar("T")


class Format(enum.StrEnum):
    table = "table"
    json = "json"


def run_command(work: Callable[[], Awaitable[T]]) -> T:
    """Run one command's coroutine; an expected error becomes one line on stderr and exit 1.

    SIGTERM and SIGHUP cancel the command like Ctrl-C does, so its cleanup steps run and
    nothing half-made is left behind.
    """

    async def cancellable() -> T:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        for sig in (signals.SIGTERM, signals.SIGHUP):
            loop.add_signal_handler(sig, main.cancel)
        return await work()

    try:
        return asyncio.run(cancellable())
    except ShimledgerError as exc:
        typer.echo(f"shimledger: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except OSError as exc:  # the environment said no: a path, a permission, a limit
        typer.echo(f"shimledger: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except (asyncio.CancelledError, KeyboardInterrupt):
        typer.echo("shimledger: interrupted", err=True)
        raise typer.Exit(code=130) from None

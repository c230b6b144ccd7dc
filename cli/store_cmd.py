"""`shimledger store init`: create the event store's schema once, before any command runs.

Any command creates a missing PostgreSQL schema itself (under an advisory lock, so many
starting at once never race), but a fleet's operator may rather make it once, as the
database's owner, and let the hosts' roles only read and append: ordinary commands run no
DDL once the tables exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cli.common import with_ledger
from cli.settings import Settings

if TYPE_CHECKING:
    from cli.ledger import Ledger

app = typer.Typer(help="The event store itself: create its schema.")


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the store's tables if they are missing (SQLite: its file), and say which."""
    settings: Settings = ctx.obj

    async def work(ledger: Ledger) -> bool | None:
        return await ledger.store.prepare()

    made = with_ledger(settings, work)
    what = {True: "schema created", False: "schema already there", None: "schema ready"}[made]
    typer.echo(f"store {_shown(settings)}: {what}")


def _shown(settings: Settings) -> str:
    from adapters.url_redaction import redact_url

    return redact_url(settings.store) if settings.store else str(settings.root / "events.db")


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="store")

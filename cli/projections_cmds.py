"""`shimledger projections ...`: how far each view has caught up; rebuild; verify."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.args import BareJsonFlag
from cli.common import with_ledger
from domain.errors import NotFoundError

if TYPE_CHECKING:
    from cli.ledger import Ledger

app = typer.Typer(help="The views derived from the history: status, rebuild, verify.")


@app.command()
def status(ctx: typer.Context, as_json: BareJsonFlag = False) -> None:
    """Each view's position against the head of the event store, and its lag."""
    from cli.output import ViewStatusOutput, dump_list
    from cli.render.tables import table

    async def work(ledger: Ledger) -> list[ViewStatusOutput]:
        head = await ledger.store.head()
        return [
            ViewStatusOutput(name=name, position=(p := await view.position()), head=head,
                             lag=head - p)
            for name, view in ledger.views.items()
        ]  # fmt: skip

    rows = with_ledger(ctx.obj, work)
    if as_json:
        typer.echo(dump_list(rows))
    else:
        cells = [[r.name, str(r.position), str(r.head), str(r.lag)] for r in rows]
        typer.echo(table([["VIEW", "POSITION", "HEAD", "LAG"], *cells]))


@app.command()
def rebuild(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One view; all when omitted.")] = None,
) -> None:
    """Replay the history into a fresh file per view and swap it in atomically."""

    async def work(ledger: Ledger) -> None:
        for view in _chosen(ledger, name):
            head = await ledger.store.head()
            with typer.progressbar(length=max(head, 1), label=f"rebuilding {view.name}",
                                   file=sys.stderr) as bar:  # fmt: skip
                done = 0

                def progress(position: int, _: int) -> None:
                    nonlocal done
                    bar.update(position - done)
                    done = position

                await view.rebuild(progress)

    with_ledger(ctx.obj, work)


@app.command()
def verify(ctx: typer.Context, as_json: BareJsonFlag = False) -> None:
    """Compare each view with a fresh replay of the history; exit 1 if any differs."""
    from projections.verify import verify_views

    async def work(ledger: Ledger) -> dict[str, list[str]]:
        return await verify_views(
            ledger.store, ledger.task_states, ledger.event_index, ledger.state_files
        )

    differences = with_ledger(ctx.obj, work)
    if as_json:
        from cli.output import VerifyOutput, dump_list

        typer.echo(dump_list([VerifyOutput(name=n, differences=d) for n, d in differences.items()]))
    for name, lines in {} if as_json else differences.items():
        typer.echo(f"{name}: {'ok' if not lines else f'{len(lines)} difference(s)'}")
        for line in lines[:50]:
            typer.echo(f"  {line}")
    if any(differences.values()):
        raise typer.Exit(code=1)


def _chosen(ledger: Ledger, name: str | None) -> list[Any]:
    views = ledger.views
    if name is None:
        return list(views.values())
    if name not in views:
        raise NotFoundError(f"no view named {name}: there are {', '.join(views)}")
    return [views[name]]

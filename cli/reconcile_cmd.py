"""`shimledger reconcile`: compare every record and every working bundle with reality.

After a crash (of a command, a shim, or the machine) this says, one line per task, what
was found and what was recorded or removed: exits nobody heard, lost shims, deletes cut
short, and working bundles no record knows, adopted or cleaned.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.args import JsonFlag
from cli.common import with_tasks


def reconcile(
    ctx: typer.Context,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Every namespace in the state dir.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Compare each task's record with its shim and the state dir; say what was done.

    Exits nobody heard are recorded with the shim's status and time; a dead shim gets its
    delete action, ShimLost and Exited(255); a working bundle no record knows is adopted
    (its shim holds a task) or cleaned (removed with whatever it left).
    """
    from cli.output import ReconcileOutput, dump_list
    from cli.render.tables import table

    report = with_tasks(ctx.obj, lambda tasks: tasks.reconcile_all(all_namespaces=all_namespaces))
    rows = [
        ReconcileOutput(
            namespace=r.namespace, id=r.task_id, incarnation=r.incarnation,
            action=r.action.value, recorded=list(r.recorded), detail=r.detail,
        )
        for r in report
    ]  # fmt: skip
    failed = any(r.action == "failed" for r in rows)
    if as_json:
        typer.echo(dump_list(rows))
    elif rows:
        head = ["NAMESPACE", "ID", "INC", "ACTION", "RECORDED", "DETAIL"]
        cells = [
            [r.namespace, r.id, "" if r.incarnation is None else str(r.incarnation),
             r.action, ",".join(r.recorded) or "-", r.detail]
            for r in rows
        ]  # fmt: skip
        typer.echo(table([head, *cells]))
    if failed:
        raise typer.Exit(code=1)  # the report says which, and why


def register(app: typer.Typer) -> None:
    app.command()(reconcile)

"""Questions to the history: history, events, replay, audit. None of them needs a shim."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import events_cmd
from cli.args import (
    AllNodesFlag,
    FilterOption,
    JsonFlag,
    NodeFilterOption,
    TaskArg,
    TemplateFormatOption,
    TimeOption,
    whose_events,
    whose_tasks,
)
from cli.common import expected_errors, with_ledger
from cli.settings import Settings
from cli.timeparse import duration_option, time_option
from domain.errors import InvalidArgumentError, NotFoundError
from domain.identifiers import validate_identifier

if TYPE_CHECKING:
    from cli.ledger import Ledger
    from cli.output import TaskOutput
    from projections.audit import AuditReport
    from projections.records import EventRecord

# The heavier modules (pydantic models, eventsourcing, aiosqlite) are imported inside
# the commands that need them, so that --help and the other commands start quickly.


def _dump(records: list[EventRecord]) -> str:
    return json.dumps([r.model_dump(mode="json", exclude_none=True) for r in records])


def history(
    ctx: typer.Context,
    task_id: TaskArg,
    as_json: JsonFlag = False,
    node: NodeFilterOption = None,
    since: TimeOption = None,
    until: TimeOption = None,
    filters: FilterOption = None,
    format: TemplateFormatOption = None,
) -> None:
    """Every event of a task ID, across all its incarnations on every node, oldest first.

    --since/--until keep the events recorded in that window; --filter takes type (or
    event) and exit-code.
    """
    from cli.filters import parse_filters
    from cli.output_format import event_fields, output_format
    from cli.render.tables import colour_enabled, event_rows, on_terminal
    from projections.records import history_records

    settings: Settings = ctx.obj
    with expected_errors():  # bad input is refused before the root dir is opened
        validate_identifier("task ID", task_id)
        whose = whose_events(settings, node)
        wanted = parse_filters(filters, ("type", "event", "exit-code"))
        chosen = output_format(format, words=("json",), default="", known=event_fields(),
                               as_json=as_json)  # fmt: skip
        window = (time_option("--since", since), time_option("--until", until))

    async def work(ledger: Ledger) -> list[EventRecord]:
        events = await ledger.store.history(settings.namespace, task_id)
        # Events name their task's node only (whose_events asks for no state dir).
        records = [r for r in history_records(events) if whose.matches(r.node, "")]
        if not records:
            on = f" on node {node}" if node is not None else ""
            raise NotFoundError(
                f"task {task_id} has no history in namespace {settings.namespace}{on}"
            )
        return records

    records = with_ledger(settings, work)
    if window != (None, None):
        start, end = window
        records = [r for r in records if (start is None or r.timestamp >= start)
                   and (end is None or r.timestamp <= end)]  # fmt: skip
    if wanted:
        records = [r for r in records if wanted.matches(r.model_dump(mode="json"))]
    if chosen.template is not None:
        items = [r.model_dump(mode="json", exclude_none=True) for r in records]
        typer.echo(chosen.template.render(items))
        return
    as_json = chosen.word == "json"  # --json, or --format json
    if not as_json and on_terminal():
        # A person is reading: a timeline per incarnation. Pipes keep the parseable table.
        import shutil

        from cli.render.timeline import timeline_text

        width = shutil.get_terminal_size().columns
        now = datetime.now().astimezone()
        typer.echo(timeline_text(records, now=now, width=width, colour=colour_enabled()))
        return
    typer.echo(_dump(records) if as_json else event_rows(records, with_task=False))


def replay(
    ctx: typer.Context,
    at: Annotated[str | None, typer.Option(help="The table as it stood at this time.")] = None,
    position: Annotated[int | None, typer.Option(help="... or after this event position.")] = None,
    as_json: JsonFlag = False,
    node: NodeFilterOption = None,
    all_nodes: AllNodesFlag = False,
) -> None:
    """The task table (this node's, by default) as it stood then, from the events themselves."""
    if (at is None) == (position is None):
        raise typer.BadParameter("give exactly one of --at and --position")
    from cli.output import TaskOutput
    from cli.render.tables import state_rows
    from projections.task_states import replay_table

    settings: Settings = ctx.obj
    with expected_errors():
        moment = time_option("--at", at)
        if position is not None and position < 0:
            raise InvalidArgumentError("--position must be 0 or more")
        whose = whose_tasks(settings, node, all_nodes)

    async def work(ledger: Ledger) -> list[TaskOutput]:
        states = await replay_table(ledger.store, stop=position, at=moment)
        return [TaskOutput.of(states[key]) for key in sorted(states)
                if whose.matches(states[key].node, states[key].state_dir)]  # fmt: skip

    outputs = with_ledger(settings, work)
    if as_json:
        typer.echo(json.dumps([o.model_dump(mode="json") for o in outputs]))
    else:
        with_node = node is not None or all_nodes
        typer.echo(state_rows(outputs, with_namespace=True, with_node=with_node))


def audit_command(
    ctx: typer.Context,
    since: TimeOption = None,
    until: TimeOption = None,
    stuck_after: Annotated[
        str, typer.Option(help="Created or running longer is an anomaly.")
    ] = "1h",
    as_json: JsonFlag = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            dir_okay=False,
            help="Write a self-contained HTML page (timeline, counts, anomalies).",
        ),
    ] = None,
    node: NodeFilterOption = None,
    filters: FilterOption = None,
    format: TemplateFormatOption = None,
) -> None:
    """Lifetimes, exit statuses and anomalies: failures, signals, OOMs, lost shims, stuck tasks.

    Every node's tasks, or node NODE's with --node. With --html the report goes to FILE as
    a page to look at, instead of the table. --filter keeps the incarnations with an event
    that matches (id, namespace, type or event, exit-code); a --format template prints one
    line per incarnation (its lifetime's fields: {{.ID}} {{.ExitStatus}} ...).
    """
    from cli.filters import EVENT_KEYS, parse_filters
    from cli.output_format import output_format
    from cli.render.tables import table
    from projections.audit import Lifetime, audit
    from projections.event_index import EventFilter

    settings: Settings = ctx.obj
    with expected_errors():  # bad input is the user's: one line, before the root is opened
        start = time_option("--since", since)
        end = time_option("--until", until) or datetime.now().astimezone()
        threshold = duration_option("--stuck-after", stuck_after)
        whose = whose_events(settings, node)
        wanted = parse_filters(filters, EVENT_KEYS)
        chosen = output_format(format, words=("json",), default="",
                               known=Lifetime.model_fields, as_json=as_json)  # fmt: skip

    async def work(ledger: Ledger) -> AuditReport:
        await ledger.event_index.catch_up()
        # No --until: every event, also those a stepped-back clock dates after now.
        records = await ledger.event_index.query(
            EventFilter(until=end if until else None, whose=whose)
        )
        if wanted:
            items = [r.model_dump(mode="json") for r in records]
            lives = wanted.incarnations(items)
            records = [r for r, i in zip(records, items, strict=True)
                       if (i["node"], r.namespace, r.id, r.incarnation) in lives]  # fmt: skip
        return audit(records, since=start, until=end, stuck_after=threshold)

    report = with_ledger(settings, work)
    if html is not None:
        _write_page(report, html)
    if chosen.template is not None:
        typer.echo(chosen.template.render([x.model_dump(mode="json") for x in report.lifetimes]))
        return
    if chosen.word == "json":  # --json, or --format json
        typer.echo(report.model_dump_json(indent=2))
        return
    if html is not None:
        return
    typer.echo(table([[k, str(v)] for k, v in report.summary.items()]))
    counts = ", ".join(f"{status}: {n}" for status, n in report.exit_statuses.items())
    typer.echo(f"\nexit statuses: {counts or 'none'}")
    if report.anomalies:
        typer.echo("\n" + table([["AT", "KIND", "NAMESPACE", "ID", "INC", "DETAIL", "NODE"]] + [
            [a.at.isoformat(), a.kind, a.namespace, a.id, str(a.incarnation), a.detail, a.node]
            for a in report.anomalies]))  # fmt: skip


def _write_page(report: AuditReport, path: Path) -> None:
    """Write the page whole or not at all (a browser never opens half of it), 0600: it
    holds every task's command lines. In a shared directory such as /tmp, nobody else's
    link is followed (shim/private_files.py)."""
    from cli.render.page import audit_page
    from shim.private_files import write_private

    try:
        write_private(path, audit_page(report))
    except OSError as exc:
        typer.echo(f"shimledger: cannot write {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(code=1) from None


def register(app: typer.Typer) -> None:
    app.command()(history)
    app.command()(events_cmd.events)
    app.command()(replay)
    app.command("audit")(audit_command)

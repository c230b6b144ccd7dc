"""`shimledger events`: every task's events, filtered, as a table, JSON lines, CloudEvents
or a template; with --follow a stream that --after resumes exactly where it stopped.

Every line carries its event's position (the table's POSITION column, ``position`` in JSON
and in CloudEvents): a consumer keeps the last one it handled and restarts with
``--after`` it, and sees neither a gap nor a repeat, since positions only grow in the order
events are committed.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.args import FilterOption, JsonFlag, NodeFilterOption, TimeOption, whose_events
from cli.common import expected_errors, with_ledger
from cli.settings import Settings
from cli.timeparse import time_option
from domain.errors import InvalidArgumentError

if TYPE_CHECKING:
    from adapters.append_watch import AppendWatch
    from cli.filters import Filters
    from cli.ledger import Ledger
    from cli.output_format import OutputFormat
    from projections.event_index import EventFilter
    from projections.records import EventRecord

FORMATS = ("table", "json", "cloudevents")

# Prints a batch of records; the first batch (True) is the one a table's header heads.
_Show = Callable[["list[EventRecord]", bool], None]


def events(
    ctx: typer.Context,
    since: TimeOption = None,
    until: TimeOption = None,
    types: Annotated[
        list[str] | None, typer.Option("--type", help="Event type; repeatable.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Only this namespace.")
    ] = None,
    task_id: Annotated[str | None, typer.Option("--id", help="Only this task ID.")] = None,
    node: NodeFilterOption = None,
    filters: FilterOption = None,
    after: Annotated[
        int | None,
        typer.Option(metavar="POSITION", help="Only the events after this position (resume)."),
    ] = None,
    as_json: JsonFlag = False,
    format: Annotated[
        str | None,
        typer.Option("--format", metavar="FORMAT",
                     help="table, json, cloudevents, or a Go template: '{{.ID}} {{.Type}}'."),
    ] = None,  # fmt: skip
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    stats_of: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", show_default=False,
                       help="A task's live cgroup stats as runc's events instead (JSON)."),
    ] = None,  # fmt: skip
    stats: Annotated[
        bool, typer.Option("--stats", help="With ID: one stats event, then exit (runc's).")
    ] = False,
    interval: Annotated[
        str | None, typer.Option(metavar="DURATION", help="With ID: between stats (5s).")
    ] = None,
) -> None:
    """Events of every task of every node, filtered by time, type, namespace, ID and node.

    With a task ID after the options it is runc's `events`: that task's cgroup stats as
    JSON lines, every --interval until it stops, or once with --stats.
    """
    settings: Settings = ctx.obj
    if stats_of is not None or stats or interval is not None:
        from cli.stats_events import runc_events

        history_options = {"--since": since, "--until": until, "--type": types,
                           "--namespace": namespace, "--id": task_id, "--node": node,
                           "--filter": filters, "--after": after, "--format": format,
                           "--json": as_json or None, "--follow": follow or None}  # fmt: skip
        runc_events(settings, stats_of, stats, interval,
                    [name for name, value in history_options.items() if value])  # fmt: skip
        return
    from cli.filters import EVENT_KEYS, parse_filters
    from cli.output_format import event_fields, output_format
    from projections.event_index import EventFilter

    with expected_errors():  # bad input is the user's: one line, before the root is opened
        if after is not None and after < 0:
            raise InvalidArgumentError("--after must be 0 or more")
        chosen = output_format(format, words=FORMATS, default="table", known=event_fields(),
                               as_json=as_json)  # fmt: skip
        wanted = parse_filters(filters, EVENT_KEYS)
        # The filters narrow the query where its indexes can (one ID, one namespace, the
        # types); every record read is still matched against them all.
        selection = EventFilter(
            since=time_option("--since", since),
            until=time_option("--until", until),
            types=tuple(types or sorted(wanted.accepted.get("type", ()))),
            namespace=namespace if namespace is not None else wanted.only("namespace"),
            id=task_id if task_id is not None else wanted.only("id"),
            whose=whose_events(settings, node),
            after=after or 0,
        )
    show = _printer(chosen, wanted)
    with_ledger(settings, lambda ledger: _stream(ledger, selection, show, follow))


async def _stream(ledger: Ledger, selection: EventFilter, show: _Show, follow: bool) -> None:
    from adapters.append_watch import watching

    # Listening starts before the first read: an append between the two is not missed.
    async with watching(ledger.store) if follow else contextlib.nullcontext() as watch:
        await ledger.event_index.catch_up()
        records = await ledger.event_index.query(selection)
        show(records, True)
        if records:
            after = records[-1].position or 0
        else:
            after = max(selection.after, await ledger.event_index.position())
        if watch is not None:
            await _follow(ledger, watch, selection, show, after)


async def _follow(
    ledger: Ledger, watch: AppendWatch, selection: EventFilter, show: _Show, after: int
) -> None:
    """Print what is appended from now on: woken by the store's NOTIFY on PostgreSQL
    (with a read every few seconds in case one is missed), polled on SQLite."""
    import asyncio
    import dataclasses

    try:
        while True:
            await watch.wait()
            await ledger.event_index.catch_up()
            fresh = await ledger.event_index.query(dataclasses.replace(selection, after=after))
            if fresh:
                show(fresh, False)
                after = fresh[-1].position or after
    except asyncio.CancelledError:
        return  # Ctrl-C or SIGTERM is how --follow ends: quietly, exit 0


def _printer(chosen: OutputFormat, wanted: Filters) -> _Show:
    from cli.render.tables import event_rows

    def show(records: list[EventRecord], header: bool) -> None:
        items: list[dict[str, Any]] = []
        if wanted or chosen.word not in ("table", "json"):
            items = [r.model_dump(mode="json", exclude_none=True) for r in records]
        if wanted:
            kept = [(r, i) for r, i in zip(records, items, strict=True) if wanted.matches(i)]
            records, items = [r for r, _ in kept], [i for _, i in kept]
        if chosen.template is not None:
            if items or (header and chosen.template.table):
                text = chosen.template.render(items)
                typer.echo(text if header or not chosen.template.table else _body(text))
        elif chosen.word == "cloudevents":
            from cli.render.cloudevents import cloud_event_line

            for item in items:  # one CloudEvent a line (structured mode, JSON)
                typer.echo(cloud_event_line(item))
        elif chosen.word == "json":
            for record in records:  # one JSON object a line: followable, greppable
                typer.echo(record.model_dump_json(exclude_none=True))
        elif records:
            text = event_rows(records, with_task=True, with_position=True)
            typer.echo(text if header else _body(text))
        sys.stdout.flush()

    return show


def _body(text: str) -> str:
    return text.split("\n", 1)[1] if "\n" in text else ""

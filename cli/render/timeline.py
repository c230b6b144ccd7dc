"""`history ID` for a person at a terminal: each incarnation as a timeline, not a log table.

Piped output stays the plain table (scripts parse it); on a terminal people want to see how
long each step took and how each incarnation ended, so times become offsets from Created,
a small bar shows where in the incarnation's life each event fell, and outcomes get colour.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import groupby

from cli.render.palette import BOLD, DIM, ENDING, EXITED, KILLED, event_colour
from cli.render.tables import describe, paint, who
from cli.render.words import duration, elapsed, ending_of, outcome, signal_suffix
from projections.audit import Lifetime, audit
from projections.records import EventRecord

BAR_WIDTH = 20
_NEVER = timedelta(days=36500)  # history shows no "stuck" anomalies: the threshold is moot


def details(record: EventRecord) -> str:
    """The fields that matter, in words where a key=value would make people decode."""
    fields = record.fields()
    if record.type == EXITED:
        text = f"exit {fields.get('exit_status')}"
        signal = fields.get("signal")
        return text + (f", signal {signal}{signal_suffix(signal)}" if signal is not None else "")
    if record.type == KILLED:
        signal = fields.get("signal")
        return f"signal {signal}{signal_suffix(signal)}" + (" to all" if fields.get("all") else "")
    return describe(record)


def bar(offset: float, span: float, width: int = BAR_WIDTH) -> str:
    """Where in the life an event fell: the past drawn heavy, the event a dot, the rest thin."""
    at = 0 if span <= 0 else max(0, min(width - 1, int(offset / span * (width - 1) + 0.5)))
    return "\u2501" * at + "\u25cf" + "\u2500" * (width - 1 - at)


def _style(
    text: str, colour: str | None, use_colour: bool, *, bold: bool = False, dim: bool = False
) -> str:
    if not use_colour:
        return text
    codes = [code for code, on in ((colour, True), (BOLD, bold), (DIM, dim)) if code and on]
    return paint(text, ";".join(codes))


def _fit(text: str, room: int) -> str:
    if room <= 1:
        return ""
    return text if len(text) <= room else text[: room - 1] + "\u2026"


def timeline_text(
    records: list[EventRecord], *, now: datetime, width: int = 120, colour: bool = True
) -> str:
    """One ID's history, oldest first, grouped by incarnation, with offsets and outcomes."""
    if not records:
        return ""
    report = audit(records, since=None, until=now, stuck_after=_NEVER)
    lives = {life.incarnation: life for life in report.lifetimes}
    first = records[0]
    count = len({r.incarnation for r in records})
    lines = [
        _style(first.id, None, colour, bold=True)
        + f"  namespace {first.namespace}, {count} incarnation{'s' if count != 1 else ''}"
    ]
    previous_end: datetime | None = None
    texts = _with_clock_steps(records)
    for incarnation, group in groupby(records, key=lambda r: r.incarnation):
        events = list(group)
        life = lives.get(incarnation)
        lines.append("")
        lines.append(_heading(incarnation, events, life, previous_end, now, width, colour))
        start = events[0].timestamp
        span = (_last_moment(life, events, now) - start).total_seconds()
        offsets = ["+0", *(_offset((e.timestamp - start).total_seconds()) for e in events[1:])]
        offset_width = max(len(o) for o in offsets)
        name_width = max(len(e.type) for e in events)
        bar_width = BAR_WIDTH if width >= 100 else BAR_WIDTH // 2
        detail_width = max(len(texts[id(e)]) for e in events)
        shown_cause: str | None = None
        for event, offset in zip(events, offsets, strict=True):
            at = (event.timestamp - start).total_seconds()
            head = f"    {offset.rjust(offset_width)}  {bar(at, span, bar_width)}  "
            name = _style(event.type.ljust(name_width), event_colour(event), colour)
            text = texts[id(event)]
            # Who did it, only when it changes: most steps of a run share one command.
            by = who(event.cause)
            room = width - len(head) - name_width - 2
            if by == shown_cause:
                lines.append(f"{head}{name}  {_fit(text, room)}".rstrip())
                continue
            shown_cause = by
            said = f"by {by}"
            # Causes line up in a column, unless a long detail pushes one further right.
            column = max(min(detail_width, 40), len(text)) + 2
            if room - column >= 20:
                cause = _style(_fit(said, room - column), None, colour, dim=True)
                lines.append(f"{head}{name}  {text.ljust(column)}{cause}")
            else:  # too narrow: the cause gets its own, indented line
                lines.append(f"{head}{name}  {_fit(text, room)}".rstrip())
                indent = len(head) + name_width + 2
                lines.append(
                    " " * indent + _style(_fit(said, width - indent), None, colour, dim=True)
                )
        previous_end = life.deleted if life else None
    return "\n".join(lines)


def _offset(seconds: float) -> str:
    """An event's offset from its Created: "+4s", or "?" if recorded before it."""
    return f"+{duration(seconds)}" if seconds >= 0 else "?"


def _with_clock_steps(records: list[EventRecord]) -> dict[int, str]:
    """Each event's details, and, where it is recorded before the event it follows, by how
    much the clock went back: the offsets and durations around it are not to trust."""
    texts: dict[int, str] = {}
    for before, record in zip([None, *records], records, strict=False):
        text = details(record)
        if before is not None and record.timestamp < before.timestamp:
            back = duration((before.timestamp - record.timestamp).total_seconds())
            text = f"{text}  (recorded {back} before the {before.type}: the clock went back)"
        texts[id(record)] = text.strip()
    return texts


def _last_moment(life: Lifetime | None, events: list[EventRecord], now: datetime) -> datetime:
    """The right end of an incarnation's bars: deleted, or its last event, or now if live
    (never before its latest recorded event, which a clock stepped back can make it)."""
    latest = max(e.timestamp for e in events)
    if life is not None and life.deleted:
        return max(life.deleted, latest)
    if life is None or life.exited:
        return latest
    return max(now, latest)


def _heading(
    incarnation: int,
    events: list[EventRecord],
    life: Lifetime | None,
    previous_end: datetime | None,
    now: datetime,
    width: int,
    colour: bool,
) -> str:
    created = events[0].timestamp
    text = f"#{incarnation}  created {created.isoformat(sep=' ', timespec='milliseconds')}"
    if events[0].node:  # incarnations of one ID may be different nodes' tasks
        text += f" on node {events[0].node}"
    if previous_end is not None:
        text += f" ({elapsed((created - previous_end).total_seconds())} after the last delete)"
    if life is None:
        return text
    if life.deleted:
        lived = f"lived {elapsed((life.deleted - created).total_seconds())}"
    elif life.exited:
        lived = f"ran {elapsed((life.exited - created).total_seconds())}, not deleted yet"
    else:
        lived = f"alive for {elapsed((now - created).total_seconds())}"
    ending = ending_of(life)
    said = outcome(life)
    styled = _style(said, ENDING[ending].terminal, colour, bold=ending != "ok")
    if len(text) + len(lived) + len(said) + 6 <= width:
        return f"{text}   {lived}   {styled}"
    return f"{_fit(text, width)}\n    {_fit(lived, width - 4)}   {styled}"  # a narrow terminal

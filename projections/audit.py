"""The audit report: per-incarnation lifetimes, exit statuses, and what looks wrong."""

from __future__ import annotations

import functools
import signal as signals
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import BaseModel

from domain.events import (
    OOM,
    Created,
    Deleted,
    ExecExited,
    ExecStarted,
    Exited,
    ExitRetracted,
    Killed,
    Paused,
    Resumed,
    ShimLost,
    Started,
    event_type,
)
from projections.records import EventRecord


def duration(seconds: float) -> str:
    """A short duration for an anomaly's detail: 7196s -> 1h59m56s, 0.3 -> 0.300s."""
    if seconds < 60:
        return f"{seconds:.3f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Mark(BaseModel):
    """Something that happened to a live incarnation, at a time: what its bar is marked with.

    ``kind`` is one of MARK_KINDS. A pause has ``until`` (its Resumed; None while paused),
    so that a page can draw how long the task was frozen, not only that it was.
    """

    kind: str
    at: datetime
    until: datetime | None = None
    detail: str = ""


MARK_KINDS = ("kill", "pause", "exec", "oom", "lost")


class Lifetime(BaseModel):
    """One incarnation from Created to Deleted (as far as it got)."""

    id: str
    namespace: str
    incarnation: int
    node: str = ""  # the task's node; "" if recorded before nodes existed
    created: datetime
    started: datetime | None = None
    exited: datetime | None = None
    deleted: datetime | None = None
    exit_status: int | None = None
    signal: int | None = None
    ooms: int = 0
    shim_lost: bool = False
    killed_by: list[dict[str, Any]] = []
    marks: list[Mark] = []  # kills, pauses, execs, OOMs, lost shims, in recorded order
    # A recorded time earlier than the one before it (or later than the audit's end): a
    # clock was stepped (NTP, a VM restored). Durations of this life are then not to trust.
    clock_went_back: bool = False

    @property
    def ended(self) -> str:
        """How it ended, in one word: the colour of its bar in a picture."""
        if self.exit_status is None:
            return "deleted" if self.deleted else "live"
        if self.shim_lost:
            return "lost"
        if self.ooms:
            return "oom"
        if self.signal is not None:
            return "signal"
        return "ok" if self.exit_status == 0 else "failed"


class Anomaly(BaseModel):
    kind: str
    id: str
    namespace: str
    incarnation: int
    node: str = ""
    at: datetime
    detail: str


class AuditReport(BaseModel):
    since: datetime | None
    until: datetime
    lifetimes: list[Lifetime]
    exit_statuses: dict[str, int]
    anomalies: list[Anomaly]
    summary: dict[str, int]


Lives = dict[tuple[str, str, int], Lifetime]


def _unchanged(life: Any, record: EventRecord) -> Lifetime | None:
    """An event the audit does not count.

    ``life`` is the incarnation's Lifetime (None before its Created); it is typed Any only
    because mypy takes a singledispatch function's first parameter for the dispatched one.
    """
    return cast("Lifetime | None", life)


# Records are the event index's rows, not events: their ``type`` names the event's class,
# so the step for a record is the one registered for that class, found by
# ``_step.dispatch(cls)`` (MRO and all) as the folds over events find theirs. Each step
# takes the incarnation's Lifetime (None before its Created) and returns it.
_step = functools.singledispatch(_unchanged)


@_step.register(Created)
def _created(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    return Lifetime(
        id=record.id, namespace=record.namespace, incarnation=record.incarnation,
        node=record.node, created=record.timestamp,
    )  # fmt: skip


@_step.register(Started)
def _started(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    if life is not None:
        life.started = record.timestamp
    return life


@_step.register(Exited)
def _exited(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    if life is not None:
        fields = record.fields()
        life.exited = record.timestamp
        life.exit_status = fields.get("exit_status")
        life.signal = fields.get("signal")
    return life


@_step.register(ExitRetracted)
def _exit_retracted(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    if life is not None:  # the Exited was false: the incarnation lives on
        life.exited = life.exit_status = life.signal = None
    return life


@_step.register(Deleted)
def _deleted(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    if life is not None:
        life.deleted = record.timestamp
    return life


def _who(cause: dict[str, Any]) -> str:
    """Who caused an event, in a few words: the command, else the detail, else the kind."""
    return str(cause.get("command") or cause.get("detail") or cause.get("kind", ""))


_SIGNAL_NAMES = {s.value: s.name for s in signals.Signals}


def signal_name(number: int | None) -> str:
    """'9 (SIGKILL)' for a signal with a name; the bare number for one without."""
    return f"{number} ({_SIGNAL_NAMES[number]})" if number in _SIGNAL_NAMES else str(number)


def _mark(life: Lifetime | None, kind: str, record: EventRecord, detail: str) -> None:
    """Mark the incarnation's bar at the record's time (nothing before its Created)."""
    if life is not None:
        life.marks.append(Mark(kind=kind, at=record.timestamp, detail=detail))


def _close(life: Lifetime | None, kind: str, opened: str, record: EventRecord, said: str) -> None:
    """End the latest open ``kind`` mark whose detail starts with ``opened`` (a pause at
    its Resumed, an exec at its exit): the bar then shows how long it lasted."""
    for mark in reversed(life.marks if life is not None else []):
        if mark.kind == kind and mark.detail.startswith(opened) and mark.until is None:
            mark.until = record.timestamp
            mark.detail += said
            return


@_step.register(OOM)
def _oom(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    if life is not None:
        life.ooms += 1
    _mark(life, "oom", record, "OOM killer acted")
    return life


@_step.register(ShimLost)
def _shim_lost(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    if life is not None:
        life.shim_lost = True
    _mark(life, "lost", record, f"shim lost ({_who(record.cause)})")
    return life


@_step.register(Killed)
def _killed(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    number, every = record.fields().get("signal"), record.fields().get("all")
    if life is not None:
        life.killed_by.append({"signal": number, **record.cause})
    _mark(life, "kill", record, f"signal {signal_name(number)}"
          f"{' to every process' if every else ''} sent by {_who(record.cause)}")  # fmt: skip
    return life


@_step.register(Paused)
def _paused(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    _mark(life, "pause", record, f"paused by {_who(record.cause)}")
    return life


@_step.register(Resumed)
def _resumed(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    _close(life, "pause", "paused", record, f", resumed by {_who(record.cause)}")
    return life


@_step.register(ExecStarted)
def _exec_started(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    fields = record.fields()
    _mark(life, "exec", record,
          f"exec {fields.get('exec_id')} started as pid {fields.get('pid')}")  # fmt: skip
    return life


@_step.register(ExecExited)
def _exec_exited(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    fields = record.fields()
    _close(life, "exec", f"exec {fields.get('exec_id')} started", record,
           f", exited {fields.get('exit_status')}")  # fmt: skip
    return life


def audit(
    records: list[EventRecord],
    *,
    since: datetime | None,
    until: datetime,
    stuck_after: timedelta,
) -> AuditReport:
    """Fold events (in the store's order) into lifetimes and anomalies.

    Every incarnation in ``records`` is counted, whatever its recorded times say: where
    they go backwards (a clock stepped back), the incarnation is flagged
    ``clock-went-back`` instead of being left out or counted as live.
    """
    lives: Lives = {}
    anomalies: list[Anomaly] = []
    last: dict[tuple[str, str], EventRecord] = {}  # per ID: times never go back in one ID

    def flag(life: Lifetime, kind: str, at: datetime, detail: str) -> None:
        anomalies.append(Anomaly(kind=kind, id=life.id, namespace=life.namespace,
                                 incarnation=life.incarnation, node=life.node, at=at,
                                 detail=detail))  # fmt: skip

    for record in records:
        key = (record.namespace, record.id, record.incarnation)
        step = _step.dispatch(event_type(record.type) or object)
        life = step(lives.get(key), record)
        if life is None:
            continue
        lives[key] = life
        before = last.get(key[:2])
        if before is not None and record.timestamp < before.timestamp:
            life.clock_went_back = True
            gap = duration((before.timestamp - record.timestamp).total_seconds())
            flag(life, "clock-went-back", record.timestamp,
                 f"{record.type} is recorded {gap} before the {before.type} it follows "
                 f"(#{before.incarnation}): a clock was stepped back")  # fmt: skip
        if record.timestamp > until:
            life.clock_went_back = True
            gap = duration((record.timestamp - until).total_seconds())
            flag(life, "clock-went-back", record.timestamp,
                 f"{record.type} is recorded {gap} after {until.isoformat()}, the end of "
                 "the audit: a clock was stepped back since")  # fmt: skip
        last[key[:2]] = record
    selected = [
        life for life in lives.values()
        if since is None or (life.deleted or until) >= since
    ]  # fmt: skip
    chosen = {(life.namespace, life.id, life.incarnation) for life in selected}
    anomalies = [a for a in anomalies if (a.namespace, a.id, a.incarnation) in chosen]

    for life in selected:
        # One anomaly for one ending: an init killed by a signal exits 128+N, and that
        # status is how the kill shows, not a second failure (it used to be counted twice).
        # A lost shim's exit is recorded as 255 because the status is unknown: shim-lost
        # says so below, and a non-zero exit would report a status nobody saw.
        if life.signal is not None and life.exited:
            flag(life, "killed-by-signal", life.exited, _kill_detail(life))
        elif life.exit_status not in (None, 0) and life.exited and not life.shim_lost:
            flag(life, "non-zero-exit", life.exited, f"exit status {life.exit_status}")
        if life.ooms:
            flag(life, "oom", life.exited or until, f"{life.ooms} OOM event(s)")
        if life.shim_lost:
            flag(life, "shim-lost", life.exited or until, "its shim died; exit status unknown")
        if life.deleted and life.exit_status is None:
            # Only a created task can be deleted before exiting: it never ran at all.
            flag(life, "deleted-without-exit", life.deleted, "deleted with no exit recorded")
        if life.exited is None and life.deleted is None:
            since_when = life.started or life.created
            state = "running" if life.started else "created"
            if until - since_when > stuck_after:
                flag(life, f"stuck-{state}", since_when,
                     f"{state} for {until - since_when} (threshold {stuck_after})")  # fmt: skip

    statuses = Counter(str(life.exit_status) for life in selected if life.exit_status is not None)
    kinds = Counter(a.kind for a in anomalies)
    summary = {
        "incarnations": len(selected),
        "exited": sum(1 for life in selected if life.exit_status is not None),
        "deleted": sum(1 for life in selected if life.deleted),
        "live": sum(1 for life in selected if life.deleted is None),
        "anomalies": len(anomalies),
        **{f"anomaly:{kind}": count for kind, count in sorted(kinds.items())},
    }
    return AuditReport(
        since=since, until=until, lifetimes=selected,
        exit_statuses=dict(sorted(statuses.items())),
        anomalies=sorted(anomalies, key=lambda a: a.at), summary=summary,
    )  # fmt: skip


def _kill_detail(life: Lifetime) -> str:
    """'signal 9 (SIGKILL), exit status 137, sent by shimledger kill web KILL': who sent
    it when history knows (a Killed with that signal), else nothing (the kernel, or a
    process inside the task)."""
    text = f"signal {signal_name(life.signal)}, exit status {life.exit_status}"
    senders = [k for k in life.killed_by if k.get("signal") == life.signal]
    if senders:
        text += f", sent by {_who(senders[-1])}"
    return text

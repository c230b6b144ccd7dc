"""The audit report: per-incarnation lifetimes, exit statuses, and what looks wrong."""

from __future__ import annotations

import functools
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import BaseModel

from domain.events import (
    OOM,
    Created,
    Deleted,
    Exited,
    ExitRetracted,
    Killed,
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


@_step.register(OOM)
def _oom(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    if life is not None:
        life.ooms += 1
    return life


@_step.register(ShimLost)
def _shim_lost(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    if life is not None:
        life.shim_lost = True
    return life


@_step.register(Killed)
def _killed(life: Lifetime | None, record: EventRecord) -> Lifetime | None:
    if life is not None:
        life.killed_by.append({"signal": record.fields().get("signal"), **record.cause})
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
        if life.exit_status not in (None, 0) and life.exited:
            flag(life, "non-zero-exit", life.exited, f"exit status {life.exit_status}")
        if life.signal is not None and life.exited:
            flag(life, "killed-by-signal", life.exited, f"signal {life.signal}")
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

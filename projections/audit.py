"""The audit report: per-incarnation lifetimes, exit statuses, and what looks wrong."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from projections.records import EventRecord


class Lifetime(BaseModel):
    """One incarnation from Created to Deleted (as far as it got)."""

    id: str
    namespace: str
    incarnation: int
    created: datetime
    started: datetime | None = None
    exited: datetime | None = None
    deleted: datetime | None = None
    exit_status: int | None = None
    signal: int | None = None
    ooms: int = 0
    shim_lost: bool = False
    killed_by: list[dict[str, Any]] = []

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
    at: datetime
    detail: str


class AuditReport(BaseModel):
    since: datetime | None
    until: datetime
    lifetimes: list[Lifetime]
    exit_statuses: dict[str, int]
    anomalies: list[Anomaly]
    summary: dict[str, int]


def audit(
    records: list[EventRecord],
    *,
    since: datetime | None,
    until: datetime,
    stuck_after: timedelta,
) -> AuditReport:
    """Fold events (in order, none after ``until``) into lifetimes and anomalies."""
    lives: dict[tuple[str, str, int], Lifetime] = {}
    for record in records:
        key = (record.namespace, record.id, record.incarnation)
        fields = record.fields()
        if record.type == "Created":
            lives[key] = Lifetime(
                id=record.id, namespace=record.namespace, incarnation=record.incarnation,
                created=record.timestamp,
            )  # fmt: skip
            continue
        life = lives.get(key)
        if life is None:
            continue
        if record.type == "Started":
            life.started = record.timestamp
        elif record.type == "Exited":
            life.exited = record.timestamp
            life.exit_status = fields.get("exit_status")
            life.signal = fields.get("signal")
        elif record.type == "Deleted":
            life.deleted = record.timestamp
        elif record.type == "OOM":
            life.ooms += 1
        elif record.type == "ShimLost":
            life.shim_lost = True
        elif record.type == "Killed":
            life.killed_by.append({"signal": fields.get("signal"), **record.cause})

    selected = [
        life for life in lives.values()
        if since is None or (life.deleted or until) >= since
    ]  # fmt: skip
    anomalies: list[Anomaly] = []

    def flag(life: Lifetime, kind: str, at: datetime, detail: str) -> None:
        anomalies.append(Anomaly(kind=kind, id=life.id, namespace=life.namespace,
                                 incarnation=life.incarnation, at=at, detail=detail))  # fmt: skip

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

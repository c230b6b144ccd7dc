"""The audit fold on events made in memory: a kill is counted once, and bars get marks.

An init killed by a signal exits 128+N. That status is how the kill shows, so the audit
says "killed-by-signal" of it and not also "non-zero-exit" (it used to say both, and a
SIGKILLed task counted as two anomalies). What the audit tells is one report, so `audit`'s
text and `--json` are checked to agree on it through the CLI.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from domain.task import Task
from domain.values import Cause
from projections.audit import AuditReport, audit
from projections.records import history_records
from tests.cli.test_history_cli import build_history

KILLER = Cause(kind="cli", uid=0, command="shimledger kill web KILL")
SHIM = Cause(kind="shim-event", detail="/tasks/exit")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def report_of(*tasks: Task) -> AuditReport:
    events = [event for task in tasks for event in task.collect_events()]
    return audit(history_records(events), since=None, until=datetime.now(UTC) + timedelta(1),
                 stuck_after=timedelta(days=1))  # fmt: skip


def new(task_id: str) -> Task:
    task = Task(namespace="default", task_id=task_id, incarnation=1, bundle="/b", pid=10,
                runtime="r", node="a", state_dir="", cause=KILLER)  # fmt: skip
    task.start(10, KILLER)
    return task


def ended(task: Task, status: int) -> Task:
    task.record_exit(status, NOW, SHIM)
    task.delete(KILLER)
    return task


def kinds(report: AuditReport) -> list[tuple[str, str]]:
    return sorted((a.kind, a.id) for a in report.anomalies)


def test_a_sigkilled_task_is_one_anomaly_not_two() -> None:
    shot = new("shot")
    shot.record_kill(9, False, KILLER)
    report = report_of(ended(shot, 137))
    assert kinds(report) == [("killed-by-signal", "shot")]
    [anomaly] = report.anomalies
    assert anomaly.detail == (
        "signal 9 (SIGKILL), exit status 137, sent by shimledger kill web KILL")
    assert report.exit_statuses == {"137": 1}  # the status is still counted, as a status
    assert report.summary["anomalies"] == 1 and "anomaly:non-zero-exit" not in report.summary
    [life] = report.lifetimes
    assert [(m.kind, m.detail) for m in life.marks] == [
        ("kill", "signal 9 (SIGKILL) sent by shimledger kill web KILL")]  # fmt: skip


def test_every_ending_is_counted_once() -> None:
    failed = ended(new("failed"), 3)
    elsewhere = ended(new("termed"), 143)  # a signal nobody here sent: no "sent by"
    survived = new("survived")  # it trapped the TERM and exited cleanly: no anomaly
    survived.record_kill(15, False, KILLER)
    ended(survived, 0)
    oomed = new("oomed")  # the OOM killer's own fact, and the kill it caused
    oomed.record_oom(SHIM)
    lost = new("lost")  # its shim died: the 255 recorded means "unknown", not a failure
    lost.record_shim_lost(Cause(kind="reconciliation", detail="shim lost"))
    report = report_of(failed, elsewhere, survived, ended(oomed, 137), ended(lost, 255))
    assert kinds(report) == [("killed-by-signal", "oomed"), ("killed-by-signal", "termed"),
                             ("non-zero-exit", "failed"), ("oom", "oomed"),
                             ("shim-lost", "lost")]  # fmt: skip
    details = {a.id: a.detail for a in report.anomalies if a.kind != "oom"}
    assert details["termed"] == "signal 15 (SIGTERM), exit status 143"
    assert details["failed"] == "exit status 3"
    marks = {life.id: [m.kind for m in life.marks] for life in report.lifetimes}
    assert marks == {"failed": [], "termed": [], "survived": ["kill"], "oomed": ["oom"],
                     "lost": ["lost"]}


def test_pauses_and_execs_are_marked_with_their_span() -> None:
    task = new("busy")
    task.pause(KILLER)
    task.resume(KILLER)
    task.add_exec("probe", KILLER)
    task.start_exec("probe", 11, KILLER)
    task.record_exec_exit("probe", 2, NOW, SHIM)
    task.pause(KILLER)  # still paused at the audit's end: no until
    [life] = report_of(task).lifetimes
    pause, probe, frozen = life.marks
    assert (pause.kind, probe.kind, frozen.kind) == ("pause", "exec", "pause")
    assert pause.until is not None and pause.until >= pause.at and frozen.until is None
    assert pause.detail == "paused by shimledger kill web KILL, resumed by shimledger kill web KILL"
    assert probe.detail == "exec probe started as pid 11, exited 2" and probe.until is not None


def test_audit_text_and_json_tell_the_same_counts(tmp_path: Path) -> None:
    asyncio.run(build_history(tmp_path))  # ok#2 is SIGKILLed there, lost's shim dies
    base = ["--root", str(tmp_path), "--state", str(tmp_path / "s"), "audit"]
    as_json = json.loads(CliRunner().invoke(app, [*base, "--json"]).output)
    text = CliRunner().invoke(app, base).output
    summary = dict(line.split("\t") for line in text.split("\n\n")[0].splitlines())
    assert summary == {k: str(v) for k, v in as_json["summary"].items()}
    assert summary["anomaly:killed-by-signal"] == "1"
    # Neither ok#2's 137 (the kill) nor lost's 255 (its shim died: status unknown).
    assert "anomaly:non-zero-exit" not in summary
    assert summary["anomaly:shim-lost"] == "1"
    table = [line.split("\t") for line in text.split("\n\n")[-1].splitlines()[1:]]
    assert sorted((row[1], row[3]) for row in table) == sorted(
        (a["kind"], a["id"]) for a in as_json["anomalies"])  # fmt: skip

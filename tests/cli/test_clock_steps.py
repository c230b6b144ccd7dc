"""A clock stepped back (NTP, a restored VM): no negative durations; every incarnation counted.

The events are written straight through the real event store with the timestamps a stepped
clock gives them (eventsourcing stamps each event in ``create_timestamp()``, patched here),
then read by the real CLI: `history` on a pseudo-terminal, `audit --json` and `--html`.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

from eventsourcing.domain import CanCreateTimestamp

from adapters.event_store import EventStore, sqlite_env
from domain.task import Task
from domain.values import Cause
from tests.cli.test_audit_html import data_of
from tests.cli.test_history_text import on_a_terminal

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
CLI = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger test", host="h")
SHIM = Cause(kind="shim-event", detail="/tasks/exit")
NEGATIVE = re.compile(r"(?<![\w:.+])-\d")  # a minus before a number, not a date's dashes


class SteppedClock:
    """Hands out the given moments, one per event eventsourcing stamps."""

    def __init__(self, moments: list[datetime]) -> None:
        self._moments: Iterator[datetime] = iter(moments)

    def __call__(self) -> datetime:
        return next(self._moments)


async def build(root: Path, now: datetime) -> None:
    hour = timedelta(hours=1)
    second = timedelta(seconds=1)
    moments = [
        # web: created an hour ago, then the clock went back 2 h before it was deleted
        now - hour, now - hour + second, now - hour + 2 * second, now - 3 * hour,
        # ahead: recorded while the clock ran 2 h fast; still running
        now + 2 * hour, now + 2 * hour + second,
        # gone: deleted while the clock ran 1 h fast
        now - hour, now - hour + second, now - hour + 2 * second, now + hour,
    ]  # fmt: skip
    store = EventStore(sqlite_env(root))
    try:
        with mock.patch.object(CanCreateTimestamp, "create_timestamp",
                               staticmethod(SteppedClock(moments))):  # fmt: skip
            for task_id, deleted in (("web", True), ("ahead", False), ("gone", True)):
                task = Task(namespace="default", task_id=task_id, incarnation=1,
                            bundle=f"/b/{task_id}", pid=10, runtime="r",
                            node="node-a", state_dir="", cause=CLI)  # fmt: skip
                task.start(10, CLI)
                if deleted:
                    task.record_exit(0, now, SHIM)
                    task.delete(CLI)
                await store.save(task)
    finally:
        await store.aclose()


def shimledger(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SHIMLEDGER, "--root", str(root), "--state", str(root / "s"), *args],
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def test_history_says_the_clock_went_back_instead_of_a_negative_duration(tmp_path) -> None:
    asyncio.run(build(tmp_path, datetime.now(UTC)))
    base = ["--root", str(tmp_path), "--state", str(tmp_path / "s")]
    shown = re.sub(r"\x1b\[[0-9;]*m", "", on_a_terminal(*base, "history", "web"))
    heading = next(line for line in shown.splitlines() if line.startswith("#1"))
    assert "lived ? (the clock went back 2h00m)" in heading, shown
    assert not NEGATIVE.search(shown), shown
    deleted = next(line for line in shown.splitlines() if "Deleted" in line)
    assert deleted.split()[0] == "?"  # no offset from Created to trust
    assert "recorded 2h00m before the Exited: the clock went back" in deleted

    ahead = re.sub(r"\x1b\[[0-9;]*m", "", on_a_terminal(*base, "history", "ahead"))
    assert "alive for ? (the clock went back" in ahead and not NEGATIVE.search(ahead), ahead


def test_audit_counts_every_incarnation_and_flags_the_steps(tmp_path) -> None:
    asyncio.run(build(tmp_path, datetime.now(UTC)))
    result = shimledger(tmp_path, "audit", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(life["id"] for life in report["lifetimes"]) == ["ahead", "gone", "web"]
    summary = report["summary"]
    assert (summary["incarnations"], summary["live"], summary["deleted"]) == (3, 1, 2)
    stepped = {(a["id"], a["detail"].split()[0]) for a in report["anomalies"]
               if a["kind"] == "clock-went-back"}  # fmt: skip
    assert stepped == {("web", "Deleted"), ("ahead", "Created"), ("ahead", "Started"),
                       ("gone", "Deleted")}  # fmt: skip
    assert all(life["clock_went_back"] for life in report["lifetimes"])

    page = tmp_path / "audit.html"
    assert shimledger(tmp_path, "audit", "--html", str(page)).returncode == 0
    html = page.read_text()
    assert len(data_of(html)["lives"]) == 3  # one bar each, drawn by the page's script
    assert "Recorded times go backwards for 3 incarnations" in html
    assert "lifetime ? (the clock went back 2h00m)" in html  # web's tooltip
    assert "clock-went-back" in html and not re.search(r"lifetime -", html)

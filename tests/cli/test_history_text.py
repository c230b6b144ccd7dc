"""`history ID` on a terminal: a timeline per incarnation; piped, the plain table is kept."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cli.render.timeline import bar, timeline_text
from projections.records import EventRecord
from tests.cli.test_history_cli import build_history

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CLI = {"kind": "cli", "user": "root", "uid": 0, "pid": 7, "command": "shimledger run x"}
SHIM = {"kind": "shim-event", "detail": "/tasks/exit"}


def event(kind: str, seconds: float, incarnation: int = 1, **fields: object) -> EventRecord:
    return EventRecord.model_validate({
        "type": kind, "timestamp": T0 + timedelta(seconds=seconds), "id": "web",
        "namespace": "default", "incarnation": incarnation, "version": 1,
        "cause": SHIM if kind == "Exited" else CLI, **fields})  # fmt: skip


def one_run(exit_status: int = 0, incarnation: int = 1, at: float = 0) -> list[EventRecord]:
    """Created, Started one second later, Exited at +3s, Deleted at +4s."""
    signal = exit_status - 128 if exit_status > 128 else None
    return [
        event("Created", at, incarnation, pid=10, bundle="/b", runtime="r"),
        event("Started", at + 1, incarnation, pid=10),
        event("Exited", at + 3, incarnation, exit_status=exit_status, exited_at=T0,
              signal=signal),
        event("Deleted", at + 4, incarnation),
    ]  # fmt: skip


def test_offsets_bars_and_outcome_of_one_incarnation() -> None:
    text = timeline_text(one_run(), now=T0 + timedelta(hours=1), colour=False)
    lines = text.splitlines()
    assert lines[0] == "web  namespace default, 1 incarnation"
    assert lines[2] == "#1  created 2026-11-29 12:00:00.000+00:00   lived 4s   exit 0"
    offsets = [line.split()[0] for line in lines[3:]]
    assert offsets == ["+0", "+1s", "+3s", "+4s"]
    markers = [line.split()[1].index("\u25cf") for line in lines[3:]]
    assert markers == [0, 5, 14, 19]  # where each event fell in the 4 s life, on 20 cells
    assert "by root pid 7: shimledger run x" in lines[3]  # who, when it changes...
    assert "by" not in lines[4]  # ...and not again while it stays the same
    assert lines[5].endswith("exit 0  by shim-event: /tasks/exit".replace("  ", " " * 22))
    assert lines[3].index(" by ") == lines[5].index(" by ")  # causes line up in a column


def test_incarnations_are_told_apart_with_their_endings() -> None:
    records = [*one_run(0), *one_run(137, incarnation=2, at=10)]
    records.insert(-2, event("Killed", 12, 2, signal=9, all=False))
    text = timeline_text(records, now=T0 + timedelta(hours=1), colour=False)
    assert "web  namespace default, 2 incarnations" in text
    assert "#2  created 2026-11-29 12:00:10.000+00:00 (6s after the last delete)" in text
    assert "lived 4s   signal 9 (SIGKILL)" in text
    assert "Killed   signal 9 (SIGKILL)" in text
    assert "Exited   exit 137, signal 9 (SIGKILL)" in text


def test_a_live_incarnation_runs_until_now() -> None:
    text = timeline_text(one_run()[:2], now=T0 + timedelta(seconds=3), colour=False)
    assert "alive for 3s   still running" in text
    assert text.splitlines()[-1].split()[1].index("\u25cf") == 6  # 1 s of 3 s so far


def test_lines_fit_a_narrow_terminal() -> None:
    text = timeline_text(one_run(), now=T0, width=60, colour=False)
    assert max(len(line) for line in text.splitlines()) <= 60
    assert "by shim-event: /tasks/exit" in text  # on its own line, not cut off


def test_a_long_detail_keeps_its_cause_apart() -> None:
    records = one_run()
    records[0] = event("Created", 0, pid=10, bundle="/" + "long/" * 12, runtime="r")
    text = timeline_text(records, now=T0, width=160, colour=False)
    created = text.splitlines()[3]
    assert created.endswith(" runtime=r  by root pid 7: shimledger run x")


def test_bar_ends() -> None:
    assert bar(0, 10, 5) == "\u25cf\u2500\u2500\u2500\u2500"
    assert bar(10, 10, 5) == "\u2501\u2501\u2501\u2501\u25cf"
    assert bar(0, 0, 3) == "\u25cf\u2500\u2500"


def on_a_terminal(*args: str, **env: str) -> str:
    """Run the real shimledger with its stdout on a pseudo-terminal; return what it printed."""
    main, child = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environment.update(COLUMNS="120", TERM="xterm", **env)
    with subprocess.Popen([SHIMLEDGER, *args], stdout=child, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, env=environment) as process:  # fmt: skip
        os.close(child)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=60) == 0, process.stderr.read()  # type: ignore[union-attr]
    os.close(main)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_history_on_a_terminal_shows_the_timeline(tmp_path: Path) -> None:
    asyncio.run(build_history(tmp_path))
    base = ["--root", str(tmp_path), "--state", str(tmp_path / "s"), "history", "ok"]
    shown = on_a_terminal(*base)
    assert "\x1b[" in shown  # colour, on a terminal
    plain = on_a_terminal(*base, NO_COLOR="1")
    assert "\x1b[" not in plain
    assert plain.startswith("ok  namespace default, 2 incarnations\n")
    assert "\n#1  created " in plain and "   exit 0\n" in plain
    assert "\n#2  created " in plain and "   signal 9 (SIGKILL)\n" in plain
    assert "TIME" not in plain  # not the table
    piped = subprocess.run([SHIMLEDGER, *base], capture_output=True, text=True, timeout=60)
    assert piped.stdout.splitlines()[0].split("\t") == [
        "TIME", "INC", "EVENT", "DETAILS", "BY", "NODE"]  # fmt: skip
    assert "\x1b[" not in piped.stdout and piped.stdout.count("\n") == 9

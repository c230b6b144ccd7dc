"""`events` as a resumable export stream: every line carries its position, --after resumes
after it, and --format cloudevents prints CloudEvents 1.0 that the CloudEvents SDK reads.

The store is built through the real event store (tests/cli/test_history_cli.py); the
follower is the real `shimledger` process, stopped and restarted mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from adapters.event_store import EventStore, sqlite_env
from cli.render.cloudevents import event_type_name
from domain.task import Task
from tests.cli.test_history_cli import CLI, SHIM, cli
from tests.conftest import at_a_shell

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))


def parsed(line: str) -> CloudEvent:
    """The SDK's reading of one line: it checks the required attributes and their types."""
    return JSONFormat().read(CloudEvent, line.encode())  # type: ignore[return-value]


def test_every_line_carries_its_position_and_after_resumes_there(built_history) -> None:
    path, heads = built_history
    every = [json.loads(x) for x in cli(path, "events", "--json")[1].splitlines()]
    assert [e["position"] for e in every] == list(range(1, heads[-1] + 1))
    table = cli(path, "events")[1].splitlines()
    assert table[0].split("\t")[-1] == "POSITION"
    assert [row.split("\t")[-1] for row in table[1:]] == [str(e["position"]) for e in every]
    for after in [0, 1, heads[2], heads[-1], heads[-1] + 5]:
        rest = [json.loads(x) for x in cli(path, "events", "--json", "--after", str(after))[1]
                .splitlines()]  # fmt: skip
        assert rest == [e for e in every if e["position"] > after], after
    assert cli(path, "events", "--after", "-1") == (1, "shimledger: --after must be 0 or more\n")


def test_cloudevents_are_valid_and_carry_what_the_json_does(built_history) -> None:
    path, _ = built_history
    every = [json.loads(x) for x in cli(path, "events", "--json")[1].splitlines()]
    lines = cli(path, "events", "--format", "cloudevents")[1].splitlines()
    events = [parsed(line) for line in lines]
    assert len(events) == len(every)
    for event, record in zip(events, every, strict=True):
        assert event.get_specversion() == "1.0"
        assert event.get_type() == event_type_name(record["type"])
        assert event.get_subject() == record["id"]
        assert event.get_source() == f"shimledger://node-a/{record['namespace']}"
        assert event.get_time() == datetime.fromisoformat(record["timestamp"])
        assert event.get_extension("position") == record["position"]
        assert event.get_data()["cause"] == record["cause"]  # type: ignore[index]
    assert len({(e.get_source(), e.get_id()) for e in events}) == len(events)  # unique ids
    types = {e.get_type() for e in events}
    assert {"io.shimledger.task.exited", "io.shimledger.task.shim-lost",
            "io.shimledger.task.oom"} <= types  # fmt: skip
    exited = [e for e in events if e.get_type() == "io.shimledger.task.exited"]
    assert [e.get_data()["exit_status"] for e in exited] == [0, 137, 255]  # type: ignore[index]
    again = cli(path, "events", "--format", "cloudevents")[1].splitlines()
    assert [parsed(x).get_id() for x in again] == [e.get_id() for e in events]  # stable


class Follower:
    """`events -f --format cloudevents --after P`, read line by line as a consumer would."""

    def __init__(self, path: Path, after: int) -> None:
        self.process = subprocess.Popen(
            [SHIMLEDGER, "--root", str(path), "--state", str(path / "s"), "events", "-f",
             "--format", "cloudevents", "--after", str(after)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
            preexec_fn=at_a_shell,
        )  # fmt: skip

    def read(self, count: int) -> list[CloudEvent]:
        assert self.process.stdout is not None
        return [parsed(self.process.stdout.readline()) for _ in range(count)]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(timeout=20) == 0
            assert self.process.stderr.read() == ""  # type: ignore[union-attr]
        finally:
            self.close()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()  # type: ignore[union-attr]
        self.process.stderr.close()  # type: ignore[union-attr]


def append_lives(path: Path, first: int, count: int) -> None:
    """``count`` short lives (Created, Started, Exited, Deleted), named late-FIRST on."""

    async def append() -> None:
        store = EventStore(sqlite_env(path))
        try:
            for n in range(first, first + count):
                task = Task(namespace="default", task_id=f"late-{n}", incarnation=1, bundle="/b",
                            pid=n, runtime="r", node="node-a", state_dir="", cause=CLI)  # fmt: skip
                task.start(n, CLI)
                task.record_exit(n % 256, datetime.now(UTC), SHIM)
                task.delete(CLI)
                await store.save(task)
        finally:
            await store.aclose()

    asyncio.run(append())


def test_a_restarted_follower_neither_skips_nor_repeats(built_history) -> None:
    path, heads = built_history
    first = Follower(path, after=heads[-1])  # only what comes from now on
    try:
        append_lives(path, 0, 3)  # 12 events: whether before or after it listens, it prints them
        seen = first.read(7)  # mid-stream: the rest are written, not yet consumed
    finally:
        first.stop()
    append_lives(path, 3, 2)  # 8 more while nobody follows
    resumed = Follower(path, after=seen[-1].get_extension("position"))
    try:
        seen += resumed.read(12 - 7 + 8)
        append_lives(path, 5, 1)  # and it goes on following
        seen += resumed.read(4)
    finally:
        resumed.stop()
    positions = [e.get_extension("position") for e in seen]
    assert positions == list(range(heads[-1] + 1, heads[-1] + 1 + 6 * 4))
    assert [e.get_subject() for e in seen[::4]] == [f"late-{n}" for n in range(6)]
    assert {e.get_type() for e in seen[3::4]} == {"io.shimledger.task.deleted"}

"""The command figures of the history benchmark: whole process and in process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from adapters.event_store import EventStore, sqlite_env  # noqa: E402
from adapters.shim_binary import search_path  # noqa: E402
from cli.bootstrap import Settings, bootstrap  # noqa: E402
from cli.ledger import open_ledger  # noqa: E402
from cli.output import TaskOutput  # noqa: E402
from projections.event_index import EventFilter  # noqa: E402
from projections.records import history_records  # noqa: E402
from projections.task_states import replay_table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history_stores import (  # noqa: E402
    NAMESPACE,
    TARGET,
    TARGET_EVENTS,
    Store,
)
from report import Report, Row, round_robin  # noqa: E402

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))




async def list_tasks(settings: Settings) -> int:
    """What `list` awaits: TaskManager.tasks(), then TaskOutput per state."""
    async with bootstrap(settings) as tasks:
        return len([TaskOutput.of(s) for s in await tasks.tasks()])


async def history_of(settings: Settings) -> int:
    """What `history ID` awaits: EventStore.history, then the records it prints."""
    async with open_ledger(settings) as ledger:
        events = await ledger.store.history(NAMESPACE, TARGET)
    return len(history_records(events))


async def events_since(settings: Settings, since: datetime) -> int:
    """What `events --since --id` awaits: a catch-up (nothing new), then the query."""
    async with open_ledger(settings) as ledger:
        await ledger.event_index.catch_up()
        return len(await ledger.event_index.query(EventFilter(since=since, id=TARGET)))


async def replay_to(settings: Settings, stop: int) -> int:
    """What `replay --position` does (cli/history_cmds.py)."""
    async with open_ledger(settings) as ledger:
        states = await replay_table(ledger.store, stop=stop)
    return len([TaskOutput.of(states[key]) for key in sorted(states)])


@dataclass
class Command:
    """A CLI command, the coroutine it awaits, the store it reads, the answer expected."""

    name: str
    store: Store
    argv: list[str]
    query: Callable[[Settings], Coroutine[Any, Any, int]]
    expect: Callable[[int], bool]


def newest_event_time(store: Store) -> datetime:
    async def read() -> datetime:
        event_store = EventStore(sqlite_env(store.root))
        try:
            return (await event_store.read(store.head - 1, 1))[0][1].timestamp
        finally:
            await event_store.aclose()

    return asyncio.run(read())


def commands(live: Store, history: Store, replay: Store, live_tasks: int) -> list[Command]:
    """`events --since` gets the absolute time 10 minutes before the newest event: what
    `--since 10m` means right after it, however long after the build this runs.
    `replay --position <head>` reads the whole store, as `replay --at` always does."""
    since = (newest_event_time(history) - timedelta(minutes=10)).isoformat()
    return [
        Command("list", live, ["list"], list_tasks, lambda n: n == live_tasks),
        Command(
            "history ID", history, ["history", TARGET], history_of, lambda n: n == TARGET_EVENTS
        ),
        Command(
            "events --since 10m --id ID",
            history,
            ["events", "--since", since, "--id", TARGET],
            lambda s: events_since(s, datetime.fromisoformat(since)),
            lambda n: n >= 3,
        ),
        Command(
            "replay --position <head>",
            replay,
            ["replay", "--position", str(replay.head)],
            lambda s: replay_to(s, replay.head),
            lambda n: n == 1,
        ),
    ]


def process(argv: list[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        if result.returncode != 0:
            error = result.stderr.decode()
            raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {error}")

    return run


def bench_commands(report: Report, cmds: list[Command], state: Path, runs: int) -> None:
    """Whole processes and in-process queries (a fresh event loop each, as a command
    has), all interleaved with `python -c pass`."""
    base = dict(os.environ, PATH=search_path(), SHIMLEDGER_STATE=str(state))
    contenders: dict[str, Callable[[], Any]] = {
        "python": process([sys.executable, "-c", "pass"], base)
    }
    counts = []
    for cmd in cmds:
        settings = cmd.store.settings(state)
        counts.append(asyncio.run(cmd.query(settings)))
        if not cmd.expect(counts[-1]):
            raise SystemExit(f"{cmd.name}: unexpected answer {counts[-1]}")
        env = dict(base, SHIMLEDGER_ROOT=str(cmd.store.root))
        contenders[f"{cmd.name} process"] = process([SHIMLEDGER, *cmd.argv], env)
        contenders[f"{cmd.name} in"] = lambda q=cmd.query, s=settings: asyncio.run(q(s))
    answers = ", ".join(f"{cmd.name} {n}" for cmd, n in zip(cmds, counts, strict=True))
    print(f"  answers (tasks or events): {answers}", flush=True)
    medians = round_robin(contenders, runs)
    for cmd in cmds:
        for key, how in (("process", "whole process"), ("in", "in-process")):
            report.add(
                Row(
                    f"{cmd.name}: {how}",
                    cmd.store.label,
                    medians[f"{cmd.name} {key}"],
                    "s",
                    "python -c pass",
                    medians["python"],
                )
            )

"""The ledger benchmark's stores and the ledger service on them, as the CLI opens them."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.event_store import EventStore, sqlite_env  # noqa: E402
from cli.bootstrap import cli_cause as command_cause  # noqa: E402
from cli.ledger_cmds import ledger_service  # noqa: E402
from cli.settings import Settings, default_node  # noqa: E402
from domain.ledger.head import TreeHead  # noqa: E402
from domain.task import Task  # noqa: E402
from shim.ledger.service import LedgerService, Verdict  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history_stores import NAMESPACE, Clock, lifecycle, save_in_batches  # noqa: E402

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
NODE = default_node()  # the CLI's default node, so `ledger verify` finds the same witness
SCAN = (
    "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
    "ORDER BY rowid"
)
STORE_FILES = ("events.db", "events.db-wal", "events.db-shm")


def copy_store(source: Path, target: Path) -> None:
    """The store's files (and its ledger key and witness, if any) into a fresh root."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(mode=0o700, parents=True)
    for name in STORE_FILES:
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)
    if (source / "ledger").exists():
        shutil.copytree(source / "ledger", target / "ledger")


def row_count(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0])
    finally:
        con.close()


def first_state(db: Path) -> bytes:
    con = sqlite3.connect(db)
    try:
        return bytes(con.execute("SELECT state FROM stored_events ORDER BY rowid").fetchone()[0])
    finally:
        con.close()


def append_more(root: Path, events: int) -> None:
    """``events`` more events (whole deleted lifecycles), in one save, chained."""

    def tasks(clock: Clock) -> Iterator[Task]:
        for n in range(events // 4):
            yield lifecycle(f"more{n:07d}", n, clock, delete=True)

    save_in_batches(root, events, tasks)


# --- the ledger service, as the CLI composes it -------------------------------------------


def settings(root: Path) -> Settings:
    return Settings(root=root, state=root / "state", namespace=NAMESPACE, node=NODE)


def service(root: Path, store: EventStore) -> LedgerService:
    """As the CLI composes it: the key and the witness under <root>/ledger."""
    return ledger_service(settings(root), store, create_key=True)


def checkpoint(root: Path) -> TreeHead:
    """What `ledger checkpoint` awaits, on a fresh EventStore (as a command opens it)."""

    async def go() -> TreeHead:
        store = EventStore(sqlite_env(root))
        try:
            signed = await service(root, store).checkpoint(command_cause(NODE))
        finally:
            await store.aclose()
        if signed is None:
            raise SystemExit(f"checkpoint of {root}: nothing to sign")
        return signed[0]

    return asyncio.run(go())


def verify_in_process(root: Path) -> Verdict:
    """What `ledger verify` awaits, without the witness: LedgerService.verify([])."""

    async def go() -> Verdict:
        store = EventStore(sqlite_env(root))
        try:
            return await service(root, store).verify([])
        finally:
            await store.aclose()

    return asyncio.run(go())


def raw_scan(db: Path) -> int:
    """Every row of stored_events in position order, iterated in Python, decoding nothing."""
    con = sqlite3.connect(db)
    try:
        rows = 0
        for _row in con.execute(SCAN):
            rows += 1
        return rows
    finally:
        con.close()


def cli_verify(root: Path) -> Callable[[], None]:
    env = dict(
        os.environ,
        SHIMLEDGER_NO_SERVE="1",
        SHIMLEDGER_NODE=NODE,
        SHIMLEDGER_ROOT=str(root),
        SHIMLEDGER_STATE=str(root / "state"),
    )
    argv = [SHIMLEDGER, "--root", str(root), "--state", str(root / "state"), "ledger", "verify"]

    def run() -> None:
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        out = result.stdout.decode()
        if result.returncode != 0 or "ledger: verified" not in out:
            raise SystemExit(
                f"{' '.join(argv)} failed ({result.returncode}): {out}{result.stderr.decode()}"
            )

    return run

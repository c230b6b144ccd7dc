"""The ledger through the real CLI: tampered for real, with sqlite3 and psql, and caught.

Histories are written through the real store (adapters/event_store.py, so every event is
chained as any command chains it), signed with `shimledger ledger checkpoint`, then edited
behind shimledger's back the way an intruder with the database would: each edit must make
`ledger verify` exit 1 and name the event (by position and kind) first. A real container's
history is proven off the host by scripts/check_ledger_proof.py in test_ledger_real.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.event_store import EventStore, store_env
from domain.task import Task
from domain.values import Cause
from shim.ledger.service import MAX_TIPS
from tests.cli.test_bad_input import SHIMLEDGER
from tests.postgres_cluster import PostgresServer

CHECKER = Path(__file__).resolve().parents[2] / "scripts" / "check_ledger_proof.py"
CAUSE = Cause(kind="cli", user="root", uid=0, pid=4242, command="shimledger run web", host="h")
TASKS = 6  # lifecycles of 4 events (Created, Started, Exited, Deleted) but the last: 3
TABLE = {"sqlite": "stored_events", "postgres": "shimledger_events"}
POSITION = {"sqlite": "rowid", "postgres": "notification_id"}


@dataclass
class Ledgered:
    """A store with a signed history, and the means to run the CLI on it and to edit it."""

    kind: str
    root: Path
    env: dict[str, str]
    sql: Callable[[str], str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SHIMLEDGER, *args], env=self.env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    def verify(self, *args: str) -> tuple[int, dict[str, object]]:
        done = self.cli("ledger", "verify", "--json", *args)
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)

    def first(self, *args: str) -> dict[str, object]:
        """The first finding of a verification that must fail."""
        code, report = self.verify(*args)
        findings = report["findings"]
        assert code == 1 and isinstance(findings, list) and findings, report
        first = findings[0]
        assert isinstance(first, dict)
        return first

    @property
    def table(self) -> str:
        return TABLE[self.kind]

    @property
    def pos(self) -> str:
        return POSITION[self.kind]

    def positions(self, task_id: str) -> list[int]:
        """Positions of one task's events, version order, read with the SQL tool itself."""
        rows = self.sql(
            f"SELECT {self.pos} FROM {self.table} WHERE originator_id = "
            f"{self._id(Task.create_id('default', task_id, 1).hex)} ORDER BY originator_version"
        )
        return [int(p) for p in rows.split()]

    def _id(self, hex_id: str) -> str:
        return f"'{hex_id}'" if self.kind == "sqlite" else f"'{hex_id}'::uuid"

    def edit_byte(self, position: int) -> None:
        """Flip one byte of the event's stored payload (past its link, inside its JSON)."""
        if self.kind == "sqlite":
            byte = "unicode(substr(CAST(state AS TEXT), 121, 1))"
            self.sql(f"UPDATE stored_events SET state = CAST(substr(state, 1, 120) || "
                     f"char(({byte} | 1) - ({byte} & 1)) || substr(state, 122) AS BLOB) "
                     f"WHERE rowid = {position}")  # fmt: skip
        else:
            self.sql(f"UPDATE shimledger_events SET state = set_byte(state, 120, "
                     f"get_byte(state, 120) # 1) WHERE notification_id = {position}")  # fmt: skip

    def delete(self, where: str) -> None:
        self.sql(f"DELETE FROM {self.table} WHERE {where}")

    def move(self, position: int, to: int) -> None:
        self.sql(f"UPDATE {self.table} SET {self.pos} = {to} WHERE {self.pos} = {position}")

    def shift_from(self, position: int) -> None:
        """Make room at ``position``: every later event one further (two steps: no clash)."""
        for delta in (1_000_000, -999_999):
            self.sql(f"UPDATE {self.table} SET {self.pos} = {self.pos} + {delta} "
                     f"WHERE {self.pos} >= {position if delta > 0 else 1_000_000}")  # fmt: skip

    def last(self) -> int:
        return int(self.sql(f"SELECT MAX({self.pos}) FROM {self.table}").strip())


def _write_history(env: dict[str, str], tasks: int = TASKS, start: int = 0) -> None:
    async def write() -> None:
        store = EventStore(env)
        try:
            for n in range(start, start + tasks):
                task = Task(namespace="default", task_id=f"t{n}", incarnation=1,
                            bundle=f"/srv/{n}", pid=1000 + n, runtime="io.containerd.runc.v2",
                            node="node-a", state_dir="/run/x", cause=CAUSE)  # fmt: skip
                await store.save(task)
                steps: list[Callable[[Task], None]] = [
                    lambda t, n=n: t.start(1000 + n, CAUSE),
                    lambda t, n=n: t.record_exit(n, datetime.now(UTC), CAUSE),
                ]
                if n != start + tasks - 1:
                    steps.append(lambda t: t.delete(CAUSE))
                for step in steps:  # one save per event, reloaded between: as commands do
                    current = await store.current("default", f"t{n}")
                    assert current is not None
                    step(current)
                    await store.save(current)
        finally:
            await store.aclose()

    asyncio.run(write())


def _sqlite_tool(db: Path) -> Callable[[str], str]:
    def run(sql: str) -> str:
        conn = sqlite3.connect(db)  # the plain sqlite3 module: no shimledger code
        try:
            rows = conn.execute(sql).fetchall()
            conn.commit()
        finally:
            conn.close()
        return "\n".join(" ".join(str(c) for c in row) for row in rows)

    return run


def _psql_tool(server: PostgresServer) -> Callable[[str], str]:
    def run(sql: str) -> str:
        return server.psql(sql)

    return run


@pytest.fixture(params=["sqlite", "postgres"])
def ledgered(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledgered]:
    """Six task histories signed twice (a head after four tasks, one after all six)."""
    root = tmp_path / "root"
    cli_env = {"PATH": os.environ["PATH"], "SHIMLEDGER_NO_SERVE": "1",
               "SHIMLEDGER_ROOT": str(root), "SHIMLEDGER_STATE": str(tmp_path / "state"),
               "SHIMLEDGER_NODE": "node-a"}  # fmt: skip
    if request.param == "sqlite":
        store = store_env(None, root)
        root.mkdir(mode=0o700)
        sql = _sqlite_tool(root / "events.db")
    else:
        url = request.getfixturevalue("postgres_url")
        server = request.getfixturevalue("postgres_server")
        store = store_env(url, root)
        cli_env["SHIMLEDGER_STORE"] = url
        sql = _psql_tool(server)
    ledgered = Ledgered(request.param, root, cli_env, sql)
    _write_history(store, 4)
    assert ledgered.cli("ledger", "checkpoint").returncode == 0
    _write_history(store, TASKS - 4, start=4)
    signed = ledgered.cli("ledger", "checkpoint")
    assert signed.returncode == 0 and signed.stdout.startswith("signed head: "), signed.stderr
    yield ledgered  # verified clean as it is: the first test below


def test_an_untouched_history_verifies_and_says_what_it_covered(ledgered: Ledgered) -> None:
    done = ledgered.cli("ledger", "verify")
    lines = done.stdout.splitlines()
    events = TASKS * 4 - 2 + 2  # each batch's last task not deleted; the two heads
    assert done.returncode == 0, done.stdout
    assert lines[0] == f"ledger: verified {events} events and 2 signed heads"
    assert "this node's last head" in done.stdout and "the store extends it" in done.stdout


def test_an_edited_payload_byte_is_named(ledgered: Ledgered) -> None:
    started = ledgered.positions("t1")[1]  # inside a chain: its successor holds its digest
    ledgered.edit_byte(started)
    first = ledgered.first()
    assert (first["position"], first["kind"]) == (started, "edited"), first
    assert "task default/t1 #1" in str(first["text"])


def test_an_edited_last_event_is_named_by_the_head_that_signed_it(ledgered: Ledgered) -> None:
    deleted = ledgered.positions("t2")[-1]  # no successor: only the head's tips know it
    ledgered.edit_byte(deleted)
    first = ledgered.first()
    assert (first["position"], first["kind"]) == (deleted, "edited"), first
    assert "signed" in str(first["text"])


def test_a_deleted_event_is_named(ledgered: Ledgered) -> None:
    started, exited = ledgered.positions("t1")[1:3]  # its Deleted follows: a gap in a chain
    ledgered.delete(f"{ledgered.pos} = {exited}")
    first = ledgered.first()
    assert first["kind"] == "deleted" and first["position"] == started, first
    assert "version 3 of task default/t1 #1" in str(first["text"])


def test_a_deleted_last_event_is_named_by_the_head_that_signed_it(ledgered: Ledgered) -> None:
    exited = ledgered.positions("t3")[-1]  # t3 was never deleted: its Exited ends its chain
    ledgered.delete(f"{ledgered.pos} = {exited}")
    first = ledgered.first()
    assert (first["position"], first["kind"]) == (exited, "deleted"), first
    assert "version 3 of task default/t3 #1" in str(first["text"])


def test_a_forged_event_inserted_in_the_signed_range_is_named(ledgered: Ledgered) -> None:
    """A whole forged task (a Created with a correct genesis link), slipped in among signed
    events: its chain is perfect, but no head accounts for it."""
    at = ledgered.positions("t1")[0]
    forged_id = Task.create_id("default", "forged", 1).hex
    forged = ('{"_prev":"' + "0" * 64 + '","timestamp":{"_type_":"datetime_iso","_data_":'
              '"2026-01-01T00:00:00+00:00"},"namespace":"default","task_id":"forged",'
              '"incarnation":1,"bundle":"/x","pid":1,"runtime":"io.containerd.runc.v2",'
              '"node":"node-a","state_dir":"/run/x","cause":{"kind":"cli"},"class_version":2,'
              '"originator_topic":"shimledger.task:Task"}')  # fmt: skip
    ledgered.shift_from(at)
    if ledgered.kind == "sqlite":
        ledgered.sql(f"INSERT INTO stored_events (rowid, originator_id, originator_version, "
                     f"topic, state) VALUES ({at}, '{forged_id}', 1, 'shimledger.task:Created', "
                     f"CAST('{forged}' AS BLOB))")  # fmt: skip
    else:
        ledgered.sql(f"INSERT INTO shimledger_events (notification_id, originator_id, "
                     f"originator_version, topic, state) VALUES ({at}, '{forged_id}'::uuid, 1, "
                     f"'shimledger.task:Created', convert_to('{forged}', 'UTF8'))")  # fmt: skip
    first = ledgered.first()
    assert (first["position"], first["kind"]) == (at, "inserted"), first
    assert "task default/forged #1" in str(first["text"])


def test_two_swapped_events_are_named(ledgered: Ledgered) -> None:
    created, started = ledgered.positions("t0")[:2]
    spare = ledgered.last() + 100
    ledgered.move(created, spare)
    ledgered.move(started, created)
    ledgered.move(spare, started)
    first = ledgered.first()
    assert first["kind"] == "reordered" and first["position"] in (created, started), first


def test_a_truncated_tail_is_caught_by_this_nodes_last_head_and_an_exported_one(
    ledgered: Ledgered, tmp_path: Path
) -> None:
    exported = tmp_path / "head.json"
    done = ledgered.cli("ledger", "export-head", "-o", str(exported))
    assert done.returncode == 0, done.stderr
    cut = ledgered.positions("t4")[0]
    ledgered.delete(f"{ledgered.pos} >= {cut}")  # the events and both heads that signed them
    first = ledgered.first()
    assert first["kind"] == "deleted" and "truncated" in str(first["text"]), first
    (ledgered.root / "ledger" / "head.json").unlink()  # the intruder removes the witness too
    first = ledgered.first("--against", str(exported))
    assert first["kind"] == "deleted" and str(first["text"]).startswith(str(exported)), first
    code, report = ledgered.verify()  # with nothing kept elsewhere, the cut cannot be seen
    assert code == 0, report


def test_a_replaced_signing_key_is_named(ledgered: Ledgered, tmp_path: Path) -> None:
    exported = tmp_path / "head.json"
    assert ledgered.cli("ledger", "export-head", "-o", str(exported)).returncode == 0
    key = ledgered.root / "ledger" / "signing-key.pem"
    old = ledgered.cli("ledger", "key").stdout.strip()
    key.unlink()  # the intruder's own key, from here on
    _write_history(store_env(ledgered.env.get("SHIMLEDGER_STORE"), ledgered.root), 1, start=50)
    signed = ledgered.cli("ledger", "checkpoint")
    assert signed.returncode == 0 and old not in signed.stdout, signed.stdout
    first = ledgered.first()
    assert first["kind"] == "key" and "signing key was replaced" in str(first["text"]), first
    assert ledgered.first("--against", str(exported))["kind"] == "key"


def test_an_edited_head_is_named(ledgered: Ledgered) -> None:
    heads = ledgered.sql(
        f"SELECT {ledgered.pos} FROM {ledgered.table} WHERE topic = 'shimledger.ledger:HeadSigned' "
        f"ORDER BY {ledgered.pos}"
    ).split()
    first_head = int(heads[0])
    ledgered.edit_byte(first_head)
    first = ledgered.first()
    assert first["position"] == first_head and first["kind"] in ("edited", "signature"), first


def test_a_proof_is_checked_off_the_host_and_a_forged_one_is_not(
    ledgered: Ledgered, tmp_path: Path
) -> None:
    started = ledgered.positions("t2")[1]
    proof = tmp_path / "proof.json"
    done = ledgered.cli("ledger", "prove", str(started), "-o", str(proof))
    assert done.returncode == 0, done.stderr
    key = ledgered.cli("ledger", "key").stdout.strip()
    offhost = tmp_path / "auditor"
    offhost.mkdir()
    shutil.copy(CHECKER, offhost)  # the checker alone, away from the project
    check = [sys.executable, str(offhost / CHECKER.name), str(proof), "--key", key]
    ok = subprocess.run(check, capture_output=True, text=True, cwd=offhost, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK: event {started} "), ok.stderr
    document = json.loads(proof.read_text())
    event = document["event"]
    state = base64.b64decode(event["state"])
    assert b'"pid":1002' in state  # t2's Started, as the store holds it
    event["state"] = base64.b64encode(state.replace(b"1002", b"1003")).decode()
    proof.write_text(json.dumps(document))
    bad = subprocess.run(check, capture_output=True, text=True, cwd=offhost, timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("check_ledger_proof: "), bad
    assert len(bad.stderr.splitlines()) == 1


def test_a_history_written_before_chaining_is_the_chains_recorded_start(tmp_path: Path) -> None:
    """Events without links (an older shimledger's) are counted, covered by heads from the
    first checkpoint on, and any unlinked event after the first link is an edit."""
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    env = store_env(None, root)
    import adapters.event_store as event_store

    event_store.LedgerApplication.chained = False
    try:
        _write_history(env, 2)
    finally:
        event_store.LedgerApplication.chained = True
    _write_history(env, 2, start=2)
    ledgered = Ledgered("sqlite", root, {"PATH": os.environ["PATH"], "SHIMLEDGER_NO_SERVE": "1",
                        "SHIMLEDGER_ROOT": str(root), "SHIMLEDGER_STATE": str(tmp_path / "s"),
                        "SHIMLEDGER_NODE": "node-a"}, _sqlite_tool(root / "events.db"))  # fmt: skip
    assert ledgered.cli("ledger", "checkpoint").returncode == 0
    done = ledgered.cli("ledger", "verify")
    assert done.returncode == 0, done.stdout
    assert "7 events were written before chaining began (chains start at position 8)" in done.stdout
    later = ledgered.positions("t3")[1]
    ledgered.sql(f"UPDATE stored_events SET state = CAST(substr(state, 77) AS BLOB) "
                 f"WHERE rowid = {later}")  # '{"_prev":"<64 hex>",' is 76 bytes  # fmt: skip
    ledgered.sql(f"UPDATE stored_events SET state = CAST('{{' || CAST(state AS TEXT) AS BLOB) "
                 f"WHERE rowid = {later}")  # fmt: skip
    first = ledgered.first()
    assert (first["position"], first["kind"]) == (later, "unlinked"), first


BIG = 100_000


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_untouched_store_of_100000_events_verifies_clean(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Written many incarnations a transaction (as the benchmark's builder does), signed,
    then verified whole: no finding, every event counted and covered."""
    from adapters.event_store import LedgerApplication

    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    env = {"PATH": os.environ["PATH"], "SHIMLEDGER_NO_SERVE": "1", "SHIMLEDGER_ROOT": str(root),
           "SHIMLEDGER_STATE": str(tmp_path / "state"), "SHIMLEDGER_NODE": "node-a"}  # fmt: skip
    app = LedgerApplication(env=store_env(None, root))
    try:
        batch = []
        for n in range(BIG // 4):
            task = Task(namespace="default", task_id=f"t{n}", incarnation=1, bundle="/b",
                        pid=n + 2, runtime="io.containerd.runc.v2", node="node-a",
                        state_dir="/run/x", cause=CAUSE)  # fmt: skip
            task.start(n + 2, CAUSE)
            task.record_exit(0, datetime.now(UTC), CAUSE)
            task.delete(CAUSE)
            batch.append(task)
            if len(batch) == 2500:
                app.save(*batch)
                batch = []
        app.save(*batch)
    finally:
        app.close()
    if kind == "postgres":  # the same rows, byte for byte, by COPY: faster than 40 saves
        url = request.getfixturevalue("postgres_url")
        env["SHIMLEDGER_STORE"] = url
        _copy_to_postgres(root / "events.db", url, env)
    ledgered = Ledgered(kind, root, env, lambda sql: "")
    signed = ledgered.cli("ledger", "checkpoint")
    assert signed.stdout.startswith(f"signed head: {BIG} events up to position "), signed.stderr
    code, report = ledgered.verify()
    heads = BIG // 4 // MAX_TIPS  # a head for each 500 incarnations: no huge event
    assert (code, report["findings"], report["heads"]) == (0, [], heads), report
    assert (report["events"], report["uncovered"]) == (BIG + heads, heads)  # the heads


def _copy_to_postgres(db: Path, url: str, env: dict[str, str]) -> None:
    import psycopg

    made = subprocess.run([SHIMLEDGER, "store", "init"], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr
    source = sqlite3.connect(db)
    rows = source.execute("SELECT rowid, originator_id, originator_version, topic, state "
                          "FROM stored_events ORDER BY rowid")  # fmt: skip
    with psycopg.connect(url) as conn:
        with conn.cursor() as cursor, cursor.copy(
            "COPY shimledger_events (notification_id, originator_id, originator_version, topic, "
            "state) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute("SELECT setval(pg_get_serial_sequence('shimledger_events', 'notification_id'),"
                     " (SELECT MAX(notification_id) FROM shimledger_events))")  # fmt: skip
    source.close()


def test_bad_input_is_one_clear_line_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = {"PATH": os.environ["PATH"], "SHIMLEDGER_NO_SERVE": "1", "SHIMLEDGER_ROOT": str(root),
           "SHIMLEDGER_STATE": str(tmp_path / "state"), "SHIMLEDGER_NODE": "node-a"}  # fmt: skip
    ledgered = Ledgered("sqlite", root, env, lambda sql: "")
    none = ledgered.cli("ledger", "export-head")
    assert (none.returncode, none.stderr) == (
        1, "shimledger: no signed head yet: `shimledger ledger checkpoint` signs one\n")
    _write_history(store_env(None, root), 1)
    unsigned = ledgered.cli("ledger", "prove", "2")
    assert unsigned.returncode == 1 and unsigned.stderr == (
        "shimledger: position 2 is after the last signed head: `shimledger ledger checkpoint` "
        "signs it\n")  # fmt: skip
    assert ledgered.cli("ledger", "checkpoint").returncode == 0
    missing = ledgered.cli("ledger", "prove", "999")
    assert (missing.returncode, missing.stderr) == (1, "shimledger: no event at position 999\n")
    garbage = tmp_path / "head.json"
    garbage.write_text("{not json")
    bad = ledgered.cli("ledger", "verify", "--against", str(garbage))
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith(f"shimledger: {garbage}: not an exported head"), bad.stderr
    garbage.write_text('{"format": "shimledger-tree-head/1"}')
    bad = ledgered.cli("ledger", "verify", "--against", str(garbage))
    assert bad.returncode == 1 and "not an exported head" in bad.stderr, bad.stderr
    code, report = ledgered.verify()  # and the store is as it was
    assert (code, report["findings"], report["heads"]) == (0, [], 1), report

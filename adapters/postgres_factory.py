"""eventsourcing's PostgreSQL persistence, as shimledger runs it: our pool, our schema step.

store_env names this class as the persistence module of a PostgreSQL store, so this
module (and psycopg with it) is imported only when a store URL asks for PostgreSQL.
What it changes of eventsourcing.postgres, and why:

- Connections come from StorePool (adapters/postgres_pool.py): the URL's own settings,
  TLS included, a pool of one (SHIMLEDGER_PG_POOL), libpq's reason for a failed connect
  at once, and statement and lock timeouts of a few seconds.
- The schema is not created by every process. eventsourcing runs its DDL (CREATE TABLE IF
  NOT EXISTS, CREATE OR REPLACE FUNCTION, ...) each time an application starts, and
  processes starting together collide in it ("tuple concurrently updated"). Here a cheap
  look at the catalog comes first; only when the table or its type is missing is the DDL
  run, in one transaction under a PostgreSQL advisory lock, after looking again: the
  first process creates the schema, the others wait a moment and find it made.
- Each save is one round trip (adapters/postgres_recorder.py), through a function that
  is part of the schema: a store made before it existed gets it the same guarded way.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, cast

from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.postgres import PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, EnvType
from psycopg.errors import DuplicateObject

from adapters.postgres_pool import Connection, StorePool
from adapters.postgres_recorder import APPEND_FUNCTIONS, LedgerPostgresRecorder
from adapters.postgres_url import parse_postgres_url

URL_KEY = "SHIMLEDGER_STORE_URL"
# The advisory lock every shimledger process takes to create the schema: a fixed 64-bit key.
SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"shimledger schema").digest()[:8], "big", signed=True)


class _Datastore(PostgresDatastore):
    """eventsourcing's datastore, without its composite type adapters: each recorder it
    makes fetches them (a catalog query, a round trip at every start), and only
    eventsourcing's own insert uses them; ours takes plain columns."""

    def register_type_adapters(self) -> None:
        return None


def _autocommit(conn: Connection) -> None:
    conn.autocommit = True  # each statement its own transaction, as eventsourcing runs them


class LedgerPostgresFactory(PostgresFactory):
    """PostgresFactory with StorePool for its connections, a schema made once, and saves
    in one round trip."""

    application_recorder_class = LedgerPostgresRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        settings = parse_postgres_url(self.env[URL_KEY], dict(self.env))
        datastore = self.datastore
        datastore.__class__ = _Datastore  # before the recorder is made: see _Datastore
        # The session's settings go with the connection's start-up packet, as the URL's
        # timeouts do, instead of a SET after connecting (a round trip every command).
        kwargs = settings.connect_kwargs()
        idle = int(datastore.idle_in_transaction_session_timeout * 1000)
        kwargs["options"] = f"{kwargs['options']} -c idle_in_transaction_session_timeout={idle}"
        # eventsourcing's own pool was made closed (no thread started); ours replaces it.
        datastore.pool = cast(
            Any,
            StorePool(
                kwargs,
                size=settings.pool_size,
                overflow=1,
                wait=settings.connect_timeout + settings.statement_timeout,
                configure=_autocommit,
            ),
        )
        self.schema_created = False

    def env_create_table(self) -> bool:
        return False  # never eventsourcing's unguarded DDL: see ensure_schema

    def application_recorder(self) -> ApplicationRecorder:
        recorder = super().application_recorder()
        assert isinstance(recorder, LedgerPostgresRecorder)
        self.schema_created = ensure_schema(recorder)
        return recorder


def _schema_state(conn: Connection, recorder: LedgerPostgresRecorder) -> tuple[bool, bool]:
    """(the table and its type exist, both append functions exist)."""
    schema = recorder.datastore.schema
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AND to_regtype(%s) IS NOT NULL AS made, "
        "(SELECT count(DISTINCT proname) FROM pg_proc JOIN pg_namespace "
        "ON pg_namespace.oid = pronamespace WHERE nspname = %s AND proname = ANY(%s)) = %s "
        "AS appends",
        (f'"{schema}"."{recorder.events_table_name}"',
         f'"{schema}"."{recorder.stored_event_type_name}"', schema, list(APPEND_FUNCTIONS),
         len(APPEND_FUNCTIONS)),
    ).fetchone()  # fmt: skip
    return (bool(row and row["made"]), bool(row and row["appends"]))


def ensure_schema(recorder: LedgerPostgresRecorder) -> bool:
    """Create the recorder's tables, type, index and functions if any is missing; True if
    this call made the table (False when it only added the append function to an older
    store). Safe to run from many processes at once (the advisory lock)."""
    datastore = recorder.datastore
    made = False
    with datastore.get_connection() as conn:
        if _schema_state(conn, recorder) != (True, True):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                table, appends = _schema_state(conn, recorder)
                made = not table
                if not (table and appends):
                    _create(conn, recorder)
    return made


def _create(conn: Connection, recorder: LedgerPostgresRecorder) -> None:
    """eventsourcing's own statements for this recorder, types first (as it orders them)."""
    statements = recorder.sql_create_statements
    types = [s for s in statements if "CREATE TYPE" in s.as_string()]
    for statement in types:
        # A type left by an older, unguarded start-up: kept (there is no IF NOT EXISTS).
        with contextlib.suppress(DuplicateObject), conn.transaction():
            conn.execute(statement, prepare=False)
    for statement in statements:
        if statement not in types:
            conn.execute(statement, prepare=False)

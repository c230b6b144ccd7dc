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
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, cast

from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import Environment, EnvType
from psycopg.errors import DuplicateObject

from adapters.postgres_pool import Connection, StorePool
from adapters.postgres_url import parse_postgres_url

URL_KEY = "SHIMLEDGER_STORE_URL"
# The advisory lock every shimledger process takes to create the schema: a fixed 64-bit key.
SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"shimledger schema").digest()[:8], "big", signed=True)


class LedgerPostgresFactory(PostgresFactory):
    """PostgresFactory with StorePool for its connections and a schema made once."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        settings = parse_postgres_url(self.env[URL_KEY], dict(self.env))
        datastore = self.datastore
        # eventsourcing's own pool was made closed (no thread started); ours replaces it.
        datastore.pool = cast(
            Any,
            StorePool(
                settings.connect_kwargs(),
                size=settings.pool_size,
                overflow=1,
                wait=settings.connect_timeout + settings.statement_timeout,
                configure=datastore.after_connect_func(),
            ),
        )
        self.schema_created = False

    def env_create_table(self) -> bool:
        return False  # never eventsourcing's unguarded DDL: see ensure_schema

    def application_recorder(self) -> ApplicationRecorder:
        recorder = super().application_recorder()
        assert isinstance(recorder, PostgresApplicationRecorder)
        self.schema_created = ensure_schema(recorder)
        return recorder


def _schema_exists(conn: Connection, recorder: PostgresApplicationRecorder) -> bool:
    schema = recorder.datastore.schema
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AND to_regtype(%s) IS NOT NULL AS made",
        (f'"{schema}"."{recorder.events_table_name}"',
         f'"{schema}"."{recorder.stored_event_type_name}"'),
    ).fetchone()  # fmt: skip
    return bool(row and row["made"])


def ensure_schema(recorder: PostgresApplicationRecorder) -> bool:
    """Create the recorder's tables, type, index and function if they are missing; True if
    this call made them. Safe to run from many processes at once (the advisory lock)."""
    datastore = recorder.datastore
    with datastore.get_connection() as conn:
        if _schema_exists(conn, recorder):
            made = False
        else:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                made = not _schema_exists(conn, recorder)
                if made:
                    _create(conn, recorder)
    datastore.register_type_adapters()
    return made


def _create(conn: Connection, recorder: PostgresApplicationRecorder) -> None:
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

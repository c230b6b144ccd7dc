"""The SQL of the task_states view file and of every view's bookkeeping tables, in one place
that imports nothing: the views create their files from it, and cli/quick_reads.py (which
reads the task_states file with the stdlib alone, before anything heavy is imported) checks
a file against it."""

from __future__ import annotations

POSITIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "position INTEGER NOT NULL);"
)
STORE_TABLE = (
    "CREATE TABLE IF NOT EXISTS store (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "location TEXT NOT NULL, first_event TEXT NOT NULL);"
)
BOOKKEEPING = POSITIONS_TABLE + STORE_TABLE  # in every view file, beside its own tables

TASK_STATES = """
CREATE TABLE IF NOT EXISTS task_states (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    node TEXT NOT NULL,
    state_dir TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    originator TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (namespace, id, node, state_dir)
);
CREATE INDEX IF NOT EXISTS task_states_status ON task_states (namespace, status);
CREATE INDEX IF NOT EXISTS task_states_node ON task_states (node, namespace, id);
"""

# What a file's schema is read as (sqlite_stat tables come and go with ANALYZE).
SCHEMA_QUERY = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%'"
)

"""A PostgreSQL cluster of the test session's own, for every test that needs a real server.

Registered from tests/conftest.py (``pytest_plugins``), so ``postgres_cluster`` and
``postgres_url`` are fixtures anywhere under tests/. Under CI a missing server fails the
test that asks for it; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bin() -> Path:
    """Debian keeps the server's binaries off PATH, one directory per major version."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)  # fmt: skip
    return versions[-1].parent if versions else Path("/usr/lib/postgresql/15/bin")


PG_BIN = Path(os.environ["SHIMLEDGER_PG_BIN"]) if "SHIMLEDGER_PG_BIN" in os.environ else _pg_bin()
PG_USER = "postgres"  # the server refuses to run as root: it runs as this system user
PG_DB = "shimledger_test"


def missing_for_postgres() -> str | None:
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            return f"{PG_BIN / tool} is missing (apt-get install postgresql)"
    if os.geteuid() != 0:
        return "not root (the cluster is run as the postgres user through runuser)"
    try:
        import pwd

        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no system user {PG_USER} (the postgresql package creates it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    return None


def _as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", PG_USER, "--", *argv],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Path]:
    """initdb in a temp dir, a server listening only on a unix socket there, stopped and
    removed at the end (even if a test failed); the directory is the socket's host."""
    missing = missing_for_postgres()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL test cannot run in CI: {missing}")
        pytest.skip(f"needs PostgreSQL: {missing}")
    # Short, under /tmp: the socket path (<dir>/.s.PGSQL.5432) must fit in 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="sl-pg-", dir="/tmp"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    shutil.chown(base, PG_USER)
    shutil.chown(sockets, PG_USER)
    os.chmod(base, 0o755)
    started = False
    try:
        init = _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_USER,
                            "--auth=trust", "-E", "UTF8", "--no-sync")  # fmt: skip
        assert init.returncode == 0, f"initdb failed: {init.stderr or init.stdout}"
        options = f"-c listen_addresses='' -c unix_socket_directories={sockets} -c fsync=off"
        start = _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"),
                             "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        started = start.returncode == 0
        log = (base / "log").read_text() if (base / "log").exists() else ""
        assert started, f"postgres did not start: {start.stderr or start.stdout}\n{log}"
        made = _as_postgres(str(PG_BIN / "createdb"), "-h", str(sockets), "-U", PG_USER, PG_DB)
        assert made.returncode == 0, f"CREATE DATABASE failed: {made.stderr}"
        yield sockets
    finally:
        if started:
            stop = _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                "-w", "-t", "60", "stop")  # fmt: skip
            assert stop.returncode == 0 or not (data / "postmaster.pid").exists(), stop.stderr
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: Path) -> Iterator[str]:
    """The URL of the test database, emptied after each test (tables are dropped)."""
    yield f"postgresql://{PG_USER}@/{PG_DB}?host={postgres_cluster}"
    import psycopg

    with psycopg.connect(dbname=PG_DB, host=str(postgres_cluster), user=PG_USER,
                         autocommit=True) as connection:  # fmt: skip
        connection.execute("SET lock_timeout = '10s'")  # a store left open fails, never hangs
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")

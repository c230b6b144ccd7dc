"""A PostgreSQL cluster of the test session's own, for every test that needs a real server.

Registered from tests/conftest.py (``pytest_plugins``), so ``postgres_cluster``,
``postgres_url``, ``postgres_server`` and ``postgres_tcp`` are fixtures anywhere under
tests/. Under CI a missing server fails the test that asks for it; elsewhere it is skipped
with the reason.

The server listens on a unix socket in its temp dir (the superuser, trust: what most tests
use) and on 127.0.0.1 at a free port, TLS only, where a role ``shim`` logs in with a
password (scram-sha-256), so wrong passwords, TLS modes and least privilege are tested
against the real thing. The server's certificate is self-signed, for 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
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
TCP_ROLE, TCP_PASSWORD, TCP_DB = "shim", "s3cret-pw", "shimledger_shim"
HBA = """\
local   all  all                 trust
hostssl all  all   127.0.0.1/32  scram-sha-256
"""


def missing_for_postgres() -> str | None:
    if shutil.which("openssl") is None:
        return "openssl is missing (apt-get install openssl): the server's TLS certificate"
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """The session's server: where it listens, and how to stop and start it again."""

    base: Path
    sockets: Path
    port: int
    cert: Path  # the server's self-signed certificate, the root to verify it with

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "log"

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c fsync=off "
                   f"-c unix_socket_directories={self.sockets} -c ssl=on "
                   f"-c ssl_cert_file={self.cert} -c ssl_key_file={self.base / 'server.key'}")
        return _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                            "-o", options, "-w", "-t", "60", *args)  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        stopped = self.pg_ctl("-m", mode, "stop")
        assert stopped.returncode == 0, f"pg_ctl stop: {stopped.stderr or stopped.stdout}"

    def start(self) -> None:
        started = self.pg_ctl("start")
        log = self.log.read_text() if self.log.exists() else ""
        assert started.returncode == 0, f"postgres did not start: {started.stderr}\n{log}"

    def running(self) -> bool:
        return self.pg_ctl("status").returncode == 0

    def psql(self, sql: str, db: str = PG_DB) -> str:
        done = _as_postgres(str(PG_BIN / "psql"), "-h", str(self.sockets), "-p",
                            str(self.port), "-U", PG_USER, "-d", db, "-v", "ON_ERROR_STOP=1",
                            "-Atc", sql)  # fmt: skip
        assert done.returncode == 0, f"psql {sql!r}: {done.stderr}"
        return done.stdout.strip()


def _certificate(base: Path) -> Path:
    cert, key = base / "server.crt", base / "server.key"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, f"openssl: {made.stderr}"
    for path in (cert, key):
        shutil.chown(path, PG_USER)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return cert


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """initdb in a temp dir, a server on a unix socket there and on 127.0.0.1 (TLS), the
    role ``shim`` and its database; stopped and removed at the end (even if a test failed)."""
    missing = missing_for_postgres()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL test cannot run in CI: {missing}")
        pytest.skip(f"needs PostgreSQL: {missing}")
    # Short, under /tmp: the socket path (<dir>/.s.PGSQL.<port>) must fit in 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="sl-pg-", dir="/tmp"))
    sockets = base / "sock"
    sockets.mkdir()
    shutil.chown(base, PG_USER)
    shutil.chown(sockets, PG_USER)
    os.chmod(base, 0o755)
    server = PostgresServer(base, sockets, _free_port(), _certificate(base))
    started = False
    try:
        init = _as_postgres(str(PG_BIN / "initdb"), "-D", str(server.data), "-U", PG_USER,
                            "--auth=trust", "-E", "UTF8", "--no-sync")  # fmt: skip
        assert init.returncode == 0, f"initdb failed: {init.stderr or init.stdout}"
        (server.data / "pg_hba.conf").write_text(HBA)
        server.start()
        started = True
        server.psql(f"CREATE DATABASE {PG_DB}", db="postgres")
        server.psql(f"CREATE ROLE {TCP_ROLE} LOGIN PASSWORD '{TCP_PASSWORD}'", db="postgres")
        server.psql(f"CREATE DATABASE {TCP_DB} OWNER {TCP_ROLE}", db="postgres")
        server.psql(f"ALTER SCHEMA public OWNER TO {TCP_ROLE}", db=TCP_DB)
        yield server
    finally:
        if started:
            stop = server.pg_ctl("-m", "immediate", "stop")
            assert stop.returncode == 0 or not (server.data / "postmaster.pid").exists(), (
                stop.stderr
            )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster(postgres_server: PostgresServer) -> Path:
    """The directory of the server's unix socket (its ``host`` for libpq)."""
    return postgres_server.sockets


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of the test database, emptied after each test (tables are dropped)."""
    server = postgres_server
    yield f"postgresql://{PG_USER}@/{PG_DB}?host={server.sockets}&port={server.port}"
    empty_database(server, PG_DB, PG_USER)


@dataclass
class TcpStore:
    """The role ``shim``'s database over TCP with TLS: ``url()`` spells a store URL."""

    server: PostgresServer
    user: str = TCP_ROLE
    password: str = TCP_PASSWORD
    db: str = TCP_DB

    def url(self, *, password: str | None = None, db: str | None = None,
            query: str = "") -> str:  # fmt: skip
        secret = self.password if password is None else password
        userinfo = f"{self.user}:{secret}" if secret else self.user
        tail = f"?{query}" if query else ""
        return f"postgresql://{userinfo}@127.0.0.1:{self.server.port}/{db or self.db}{tail}"


@pytest.fixture
def postgres_tcp(postgres_server: PostgresServer) -> Iterator[TcpStore]:
    """The password-authenticated database, emptied after each test; the server is
    started again if a test left it stopped."""
    yield TcpStore(postgres_server)
    if not postgres_server.running():
        postgres_server.start()
    empty_database(postgres_server, TCP_DB, TCP_ROLE)


def empty_database(server: PostgresServer, db: str = PG_DB, owner: str = PG_USER) -> None:
    """A fresh database again: its public schema dropped with all it held, and made anew."""
    import psycopg

    with psycopg.connect(dbname=db, host=str(server.sockets), port=server.port, user=PG_USER,
                         autocommit=True) as connection:  # fmt: skip
        connection.execute("SET lock_timeout = '10s'")  # a store left open fails, never hangs
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute(f"CREATE SCHEMA public AUTHORIZATION {owner}")

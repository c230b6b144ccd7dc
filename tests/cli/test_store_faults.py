"""A PostgreSQL store's faults through the real CLI: one line naming the store and the cause.

Against the session's real server (tests/postgres_cluster.py): a wrong password, a
missing database, a closed port, a host name nobody resolves, a server that accepts and
never speaks, TLS refused or unverifiable. Each is exit 1, one ``shimledger: store URL:
reason`` line with the password redacted, never a traceback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.url_redaction import REDACTED
from tests.cli.test_bad_input import SHIMLEDGER, refused
from tests.postgres_cluster import TcpStore

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def store_cli(tmp_path: Path) -> Iterator[Run]:
    """shimledger on a root and state dir of its own: ``run(store, *args, env=...)``."""
    state = Path(tempfile.mkdtemp(prefix="sl-", dir="/tmp"))

    def run(store: str, *args: str, env: dict[str, str] | None = None,
            root: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path),
                "SHIMLEDGER_ROOT": str(root or tmp_path / "root"),
                "SHIMLEDGER_STATE": str(state), "SHIMLEDGER_STORE": store}  # fmt: skip
        return subprocess.run([SHIMLEDGER, *args], env=base | (env or {}), capture_output=True,
                              text=True, timeout=90, stdin=subprocess.DEVNULL)  # fmt: skip

    yield run
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port whose listener accepts every connection and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
    listener.close()
    thread.join(timeout=10)
    for conn in accepted:
        conn.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again at once: nobody listens there


def _faulty_url(case: str, tcp: TcpStore, silent: int, tmp_path: Path) -> tuple[str, str]:
    """The store URL for ``case`` and what the one line must say of it."""
    port = tcp.server.port
    if case == "wrong password":
        return tcp.url(password="not-it"), 'password authentication failed for user "shim"'
    if case == "missing database":
        return tcp.url(db="no_such_db"), 'database "no_such_db" does not exist'
    if case == "closed port":
        refused_url = tcp.url().replace(f":{port}/", f":{_closed_port()}/")
        return refused_url, "connection refused (is the server running?)"
    if case == "bad host name":
        return tcp.url().replace("127.0.0.1", "no-such-host.invalid"), "no-such-host.invalid"
    if case == "silent server":
        return tcp.url().replace(f":{port}/", f":{silent}/"), "timeout"
    if case == "no TLS":  # the server takes TCP logins over TLS only (pg_hba: hostssl)
        return tcp.url(query="sslmode=disable"), "no encryption"
    stranger = tmp_path / "stranger.crt"  # a certificate that did not sign the server's
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-days", "1", "-subj", "/CN=stranger", "-keyout",
                           str(tmp_path / "stranger.key"), "-out", str(stranger)],
                          capture_output=True, timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return tcp.url(query=f"sslmode=verify-full&sslrootcert={stranger}"), "certificate verify"


CASES = ["wrong password", "missing database", "closed port", "bad host name",
         "silent server", "no TLS", "unverifiable TLS"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", [["history", "x"], ["events", "--json"], ["store", "init"]])
def test_a_store_fault_is_one_line_naming_the_store_and_the_cause(
    case: str, command: list[str], store_cli: Run, postgres_tcp: TcpStore,
    silent_server: int, tmp_path: Path,
) -> None:  # fmt: skip
    url, cause = _faulty_url(case, postgres_tcp, silent_server, tmp_path)
    line = refused(store_cli(url, *command), "shimledger: store postgresql://shim:", cause)
    assert f"shim:{REDACTED}@" in line and postgres_tcp.password not in line
    assert "not-it" not in line


def test_tls_verified_against_the_servers_certificate_works(
    store_cli: Run, postgres_tcp: TcpStore
) -> None:
    cert = postgres_tcp.server.cert
    url = postgres_tcp.url(query=f"sslmode=verify-full&sslrootcert={cert}")
    done = store_cli(url, "store", "init")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"store {url.replace(postgres_tcp.password, REDACTED)}: schema created\n"
    read = store_cli(url, "events", "--json")
    assert (read.returncode, read.stdout, read.stderr) == (0, "", "")


def test_the_password_may_come_from_libpq_s_environment(
    store_cli: Run, postgres_tcp: TcpStore, tmp_path: Path
) -> None:
    """No password in the URL: libpq's PGPASSWORD, or PGPASSFILE, gives it."""
    url = postgres_tcp.url(password="")
    assert "@127.0.0.1" in url and ":" not in url.split("//")[1].split("@")[0]
    refused(store_cli(url, "store", "init"), "no password supplied")
    by_env = store_cli(url, "store", "init", env={"PGPASSWORD": postgres_tcp.password})
    assert by_env.returncode == 0, by_env.stderr
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:*:*:{postgres_tcp.user}:{postgres_tcp.password}\n")
    passfile.chmod(0o600)
    by_file = store_cli(url, "store", "init", env={"PGPASSFILE": str(passfile)})
    assert (by_file.returncode, by_file.stdout.endswith("schema already there\n")) == (0, True)

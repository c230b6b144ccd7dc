"""A PostgreSQL cluster of the benchmark's own: initdb in a temp dir, a unix socket only,
stopped and removed at the end (the approach of tests/postgres_cluster.py, whose binary
lookup it shares), with a database per figure."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.postgres_cluster import PG_BIN, PG_USER, missing_for_postgres  # noqa: E402


def _as_postgres(*argv: str) -> None:
    done = subprocess.run(["runuser", "-u", PG_USER, "--", *argv], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{Path(argv[0]).name} failed: {done.stderr or done.stdout}")


class Cluster:
    def __init__(self, sockets: Path) -> None:
        self.sockets = sockets

    def database(self, name: str) -> str:
        """A new, empty database; its store URL."""
        _as_postgres(str(PG_BIN / "createdb"), "-h", str(self.sockets), "-U", PG_USER, name)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql://{PG_USER}@/{name}?host={self.sockets}"


@contextmanager
def cluster() -> Iterator[Cluster]:
    missing = missing_for_postgres()
    if missing is not None:
        raise SystemExit(f"the PostgreSQL benchmark needs a server: {missing}")
    base = Path(tempfile.mkdtemp(prefix="sl-pgb-", dir="/tmp"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    shutil.chown(base, PG_USER)
    shutil.chown(sockets, PG_USER)
    base.chmod(0o755)
    started = False
    try:
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                     "-E", "UTF8", "--no-sync")  # fmt: skip
        # Durable commits (fsync on, the default): appends are measured as a server runs.
        options = f"-c listen_addresses='' -c unix_socket_directories={sockets}"
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"),
                     "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        started = True
        yield Cluster(sockets)
    finally:
        if started:
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)

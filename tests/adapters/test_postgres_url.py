"""A PostgreSQL store URL read whole: every parameter used or refused, passwords never shown,
and psycopg imported only when a PostgreSQL store is opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters.event_store import store_env
from adapters.postgres_url import parse_postgres_url, pool_size
from adapters.url_redaction import REDACTED, redact_url
from domain.errors import InvalidArgumentError

ROOT = Path(__file__).resolve().parents[2]


def test_tls_parameters_reach_the_connection(tmp_path: Path) -> None:
    root_cert = tmp_path / "root.crt"
    root_cert.write_text("-")
    pg = parse_postgres_url(f"postgresql://shim:pw@db:6543/ledger?sslmode=verify-full"
                            f"&sslrootcert={root_cert}")  # fmt: skip
    kwargs = pg.connect_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["dbname"], kwargs["user"]) == (
        "db", 6543, "ledger", "shim"
    )  # fmt: skip
    assert (kwargs["sslmode"], kwargs["sslrootcert"]) == ("verify-full", str(root_cert))
    assert kwargs["password"] == "pw"
    assert "statement_timeout=5000" in str(kwargs["options"])


def test_no_password_in_the_url_leaves_libpq_to_find_one() -> None:
    """PGPASSWORD and PGPASSFILE are libpq's defaults only for a password never given: an
    empty one given would hide them."""
    kwargs = parse_postgres_url("postgresql://shim@/ledger?host=/run/postgresql").connect_kwargs()
    assert "password" not in kwargs
    assert kwargs["host"] == "/run/postgresql"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://u:pw@db/h?sslmod=require", "unknown parameter 'sslmod'"),
        ("postgresql://u:pw@db/h?sslmode=sometimes", "sslmode 'sometimes' is not one of"),
        ("postgresql://u:pw@db/h?sslrootcert=/nonexistent.crt", "is not a file"),
        ("postgresql://u:pw@db/h?application_name=x", "unknown parameter 'application_name'"),
        ("postgresql://u:pw@db/h?host=relative", "absolute path"),
        ("postgresql://u:pw@db/h?port=99999", "port must be a whole number"),
        ("postgresql://u:pw@db/h?sslmode=require&sslmode=disable", "given twice"),
        ("postgresql://u:pw@db/", "names no database"),
        ("postgresql://u:pw@/h", "names no host"),
    ],
)
def test_what_cannot_be_honoured_is_refused_in_one_line(url: str, says: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        store_env(url, Path("/r"))
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert "pw" not in message.replace("PASSWORD", "") and REDACTED in message


def test_a_url_is_shown_without_its_password() -> None:
    assert redact_url("postgresql://shim:hunter2@db/h") == f"postgresql://shim:{REDACTED}@db/h"
    assert (redact_url("postgresql://shim@/h?host=/s&password=hunter2&sslmode=require")
            == f"postgresql://shim@/h?host=/s&password={REDACTED}&sslmode=require")  # fmt: skip


def test_the_pool_size_is_one_unless_set() -> None:
    assert pool_size({}) == 1
    assert pool_size({"SHIMLEDGER_PG_POOL": "4"}) == 4
    with pytest.raises(InvalidArgumentError, match="SHIMLEDGER_PG_POOL"):
        pool_size({"SHIMLEDGER_PG_POOL": "lots"})


def test_choosing_a_postgresql_store_does_not_import_psycopg() -> None:
    """`import eventsourcing.postgres` costs hundreds of ms: an SQLite user never pays it,
    and a PostgreSQL user only when the store is opened."""
    code = ("import sys; from adapters.event_store import EventStore, store_env; "
            "EventStore(store_env('postgresql://u@db/h', None)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('psycopg', 'psycopg_pool', 'eventsourcing') and 'postgres' in m or "
            "m.startswith('psycopg')))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_postgresql_store_without_its_driver_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host installed without the postgres extra: one line, not an import traceback."""
    import importlib.util

    found = importlib.util.find_spec
    hidden = lambda name, *a: None if name == "psycopg" else found(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    from domain.errors import FailedPreconditionError

    with pytest.raises(FailedPreconditionError) as caught:
        store_env("postgresql://shim:hunter2@db/h", Path("/r"))
    assert str(caught.value) == (
        f"store postgresql://shim:{REDACTED}@db/h: PostgreSQL support is not installed "
        "(pip install 'shimledger[postgres]', or make setup-postgres)"
    )

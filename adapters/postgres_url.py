"""A PostgreSQL store URL, read into the settings of a connection: nothing in it is dropped.

``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?PARAM=VALUE&...]``, or libpq's unix socket
spelling ``postgresql://USER@/DB?host=/SOCKET/DIR``. Every query parameter is either used
or refused in one line: a ``?sslmode=require`` that is silently dropped would send the
history in clear text while the user believes it is encrypted. A password is taken from
the URL only if it holds one; otherwise libpq finds it (``PGPASSWORD``, ``PGPASSFILE``,
``~/.pgpass``), and no empty one is ever forced on it.

Cheap to import (no psycopg): every command parses its store URL, and only a PostgreSQL
store pays for the driver, later, in adapters/postgres_factory.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from adapters.url_redaction import redact_url
from domain.errors import InvalidArgumentError

SCHEMES = ("postgres", "postgresql")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
PARAMS = ("host", "port", "password", "sslmode", *TLS_FILES, "connect_timeout")

CONNECT_TIMEOUT = 3  # seconds to reach the server and log in (libpq's connect_timeout)
STATEMENT_TIMEOUT = 5  # seconds a statement, or a wait for a lock, may take on the server
POOL_ENV = "SHIMLEDGER_PG_POOL"  # connections a process keeps (serve may want more than 1)


@dataclass(frozen=True)
class PostgresSettings:
    """Where the store is and how to reach it; ``shown`` is the URL as errors may print it."""

    dbname: str
    host: str
    port: int
    user: str
    password: str | None
    shown: str
    tls: dict[str, str] = field(default_factory=dict)
    connect_timeout: int = CONNECT_TIMEOUT
    statement_timeout: int = STATEMENT_TIMEOUT
    pool_size: int = 1

    def connect_kwargs(self) -> dict[str, str | int]:
        """psycopg's connect() keywords: only what the URL said, plus our timeouts.

        The timeouts are sent as the session's settings (libpq's ``options``), so every
        statement and every lock wait of this store fails on the server after a few
        seconds instead of hanging a command.
        """
        millis = self.statement_timeout * 1000
        kwargs: dict[str, str | int] = {
            "dbname": self.dbname,
            "host": self.host,
            "port": self.port,
            "connect_timeout": self.connect_timeout,
            "application_name": "shimledger",
            "options": f"-c statement_timeout={millis} -c lock_timeout={millis}",
            **self.tls,
        }
        if self.user:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs


def is_postgres_url(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def _usage(url: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"store {redact_url(url)}: {why} (use postgresql://USER[:PASSWORD]@HOST[:PORT]/DB "
        "or postgresql://USER@/DB?host=/SOCKET/DIR)"
    )


def _whole_number(url: str, name: str, text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise _usage(url, f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


def pool_size(environ: dict[str, str] | None = None) -> int:
    """Connections a process keeps open: SHIMLEDGER_PG_POOL, 1 unless set (a CLI command
    needs one; ``serve`` may want a few). One more may be opened for a moment."""
    text = (os.environ if environ is None else environ).get(POOL_ENV, "").strip()
    if not text:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise InvalidArgumentError(f"{POOL_ENV}={text!r}: a whole number from 1 to 64")
    return int(text)


def parse_postgres_url(url: str, environ: dict[str, str] | None = None) -> PostgresSettings:
    """The settings of a ``postgresql://`` URL; InvalidArgumentError (one line, the password
    redacted) for anything it cannot honour."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise _usage(url, f"not a PostgreSQL URL (scheme {parts.scheme!r})")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        port_in_netloc = parts.port
    except ValueError as exc:
        raise _usage(url, f"cannot read it: {exc}") from None
    params: dict[str, str] = {}
    for name, value in query:
        if name not in PARAMS:
            raise _usage(url, f"unknown parameter {name!r} (known: {', '.join(PARAMS)})")
        if name in params:
            raise _usage(url, f"parameter {name!r} given twice")
        params[name] = value
    host = params.get("host") or parts.hostname or ""
    if params.get("host") and not params["host"].startswith("/"):
        raise _usage(url, f"?host= takes a socket directory (an absolute path), not {host!r}")
    dbname = unquote(parts.path.strip("/"))
    if not host or not dbname:
        raise _usage(url, "it names no " + ("host" if not host else "database"))
    port = port_in_netloc or 5432
    if "port" in params:
        port = _whole_number(url, "port", params["port"], 1, 65535)
    password = unquote(parts.password) if parts.password is not None else params.get("password")
    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        raise _usage(url, f"sslmode {sslmode!r} is not one of {', '.join(SSL_MODES)}")
    tls = {name: params[name] for name in ("sslmode", *TLS_FILES) if name in params}
    for name in TLS_FILES:
        if name in tls and not os.path.isfile(tls[name]):
            raise _usage(url, f"{name} {tls[name]!r} is not a file")
    timeout = CONNECT_TIMEOUT
    if "connect_timeout" in params:
        timeout = _whole_number(url, "connect_timeout", params["connect_timeout"], 1, 300)
    return PostgresSettings(
        dbname=dbname,
        host=host,
        port=port,
        user=unquote(parts.username or ""),
        password=password,
        shown=redact_url(url),
        tls=tls,
        connect_timeout=timeout,
        pool_size=pool_size(environ),
    )

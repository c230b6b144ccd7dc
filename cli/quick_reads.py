"""`shimledger list` answered from the task_states view file with the stdlib alone.

Without a serve, the full `list` imports typer, pydantic, eventsourcing and our modules,
opens the store, serves the event sink and reconciles every task with a process, which
costs about fifty times `ctr tasks ls` (issue 10). Most of that is needed only when the
answer could change: the view lags the store, or a task with a process might have exited
while nobody listened. So before anything heavy is imported, cli/launcher.py asks this
module; it reads the view file and the store's head with sqlite3 and answers only when the
full path's output would be the same bytes, and returns None (the full CLI then runs, as
it always did) whenever it cannot prove that:

- any option, environment variable or form it does not implement, or stdout a terminal
  (the aligned, coloured table is not reproduced here), or not root (the full path says
  it needs root), a --store / SHIMLEDGER_STORE or eventsourcing setting;
- a state dir not bound to this root and store yet, or bound to another (the full path
  binds it, or refuses), or a root whose directories the full path would still make;
- the view file missing, of another schema, built from another store, or behind the
  store's head; the state_files view behind it (the full path would write state.json);
- a listed task with a process (created, running, paused): the full path asks its shim,
  which cannot be done cheaply and exactly here; a task log due for rotation;
- a stored row this module would not re-serialise to the very same JSON, an escape
  character in the output (click strips ANSI sequences when piped), or any exception.

The output is built whole before anything is written: a fallback never follows a partial
answer. Skipped side effects, none of them in the output: see the README's `list` note.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from cli.handoff import DEFAULT_ROOT, DEFAULT_STATE, MAX_SOCKET_PATH
from domain.state_dir import RESERVED as RESERVED_NAMESPACES
from projections.schemas import BOOKKEEPING, SCHEMA_QUERY, TASK_STATES

LISTED_STATUSES = ("created", "running", "paused", "stopped")  # as cli/inspect_cmds.py's
HAS_PROCESS = frozenset({"created", "running", "paused"})  # domain/task.py: reconciled
LOG_MAX_SIZE = 10 * 1024**2  # shim/lifecycle/task_logs.py's LogRotation default
SQLITE_TIMEOUT = 0.5  # a view or store locked longer: the full path waits, not us
DEBUG_MESSAGE = "answered by the quick path: task_states view at position {}, nothing to reconcile"

# The view's schema, as projections/view.py and task_states.py create it: a file of any
# other schema is the full path's to rebuild.
VIEW_SCHEMA = BOOKKEEPING + TASK_STATES

# What the environment may hold for the quick path to answer: our settings it reads, and
# SHIMLEDGER_NO_SERVE. Any other SHIMLEDGER_ variable (a store, a log policy, eventsourcing's
# SHIMLEDGER_-prefixed settings), shell completion's _SHIMLEDGER_COMPLETE, or one of
# eventsourcing's own settings (it reads os.environ) sends the command the full way.
_OUR_VARIABLES = frozenset({"SHIMLEDGER_ROOT", "SHIMLEDGER_STATE", "SHIMLEDGER_NAMESPACE",
                            "SHIMLEDGER_NODE", "SHIMLEDGER_NO_SERVE"})  # fmt: skip
_EVENTSOURCING = re.compile(
    r"PERSISTENCE_MODULE|INFRASTRUCTURE_FACTORY|.*_TOPIC|CIPHER_KEY|SQLITE_.*|POSTGRES_.*"
    r"|AGGREGATE_CACHE.*|DEEPCOPY_FROM_AGGREGATE_CACHE|IS_SNAPSHOTTING_ENABLED"
    r"|ORIGINATOR_ID_TYPE|CREATE_TABLE|SINGLE_ROW_TRACKING"
)
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", re.ASCII)  # domain's rule
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)", re.ASCII)
_UUID_HEX = re.compile(r"[0-9a-f]{32}", re.ASCII)
# State's fields in its JSON order (domain/values.py); StateOutput's (cli/output.py) below.
_STATE_FIELDS = ("id", "namespace", "incarnation", "pid", "status", "bundle", "created",
                 "started", "exit_status", "exited_at", "node", "state_dir")  # fmt: skip
_RUNC_FIRST = ("id", "pid", "status", "bundle")  # then rootfs, created, owner, annotations
_OURS_AFTER = ("namespace", "incarnation", "started", "exit_status", "exited_at", "node")


class _Fallback(Exception):
    """The full path must answer: the quick one cannot prove its output the same."""


class _Request:
    """What the command line and environment ask for, in the forms this module knows."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.root = env.get("SHIMLEDGER_ROOT", DEFAULT_ROOT)
        self.state = env.get("SHIMLEDGER_STATE", DEFAULT_STATE)
        self.namespace = env.get("SHIMLEDGER_NAMESPACE", "default")
        self.node = env.get("SHIMLEDGER_NODE")
        self.debug = False
        self.log_format = "text"
        self.quiet = False
        self.json = False
        self.all_namespaces = False
        self.statuses: set[str] = set()


def answer(argv: list[str], env: Mapping[str, str]) -> int | None:
    """The exit status once `list` is answered here; None for the full CLI to run it.

    Never raises and never writes before the whole answer is known.
    """
    try:
        if "list" not in argv:
            return None  # the common case for every other command: decided at once
        request = _parse(argv, env)
        output, position = _listing(request)
        data = output.encode(sys.stdout.encoding, sys.stdout.errors or "strict")
        if request.debug:
            _debug(request.log_format, DEBUG_MESSAGE.format(position))
        return _write(data)
    except Exception:  # _Fallback, or anything unforeseen: the full path answers
        return None


# --- the command line --------------------------------------------------------------------


def _parse(argv: list[str], env: Mapping[str, str]) -> _Request:
    """The request, if argv is `[global options] list [list options]` in forms known here."""
    for name, value in env.items():
        if name.startswith("_SHIMLEDGER_") or _EVENTSOURCING.fullmatch(name):
            raise _Fallback(name)
        if name.startswith("SHIMLEDGER_") and (name not in _OUR_VARIABLES or not value):
            raise _Fallback(name)  # an empty value: click's reading of it is not ours
    request = _Request(env)
    words = iter(argv)
    for word in words:
        if word == "list":
            break
        name, value = _option(word, words, {"--root", "--state", "--namespace", "-n",
                                            "--node", "--log-format"})  # fmt: skip
        if name == "--root":
            request.root = value
        elif name == "--state":
            request.state = value
        elif name in ("--namespace", "-n"):
            request.namespace = value
        elif name == "--node":
            request.node = value
        elif name == "--log-format" and value in ("text", "json"):
            request.log_format = value
        elif name == "--debug":
            request.debug = True
        else:
            raise _Fallback(word)  # --store, --log, --help, another command...
    else:
        raise _Fallback("no list command")
    for word in words:
        name, value = _option(word, words, {"--format", "-f", "--status", "-s"})
        if name in ("-q", "--quiet"):
            request.quiet = True
        elif name == "--json":
            request.json = True
        elif name in ("-A", "--all-namespaces"):
            request.all_namespaces = True
        elif name in ("--format", "-f") and value in ("table", "json"):
            request.json = request.json or value == "json"  # as_json or format is json
        elif name in ("--status", "-s") and value in LISTED_STATUSES:
            request.statuses.add(value)
        else:
            raise _Fallback(word)  # --node, --all-nodes, an unknown status or format...
    return request


def _option(word: str, words: Any, valued: set[str]) -> tuple[str, str]:
    """An option and its value ("" for a flag): `--name value`, `--name=value` or a flag."""
    name, equals, value = word.partition("=")
    if name not in valued:
        if equals or not word.startswith("-") or word.startswith("---"):
            raise _Fallback(word)
        return word, ""
    if not equals:
        value = next(words, "")
    if not value or value.startswith("-") or (equals and not name.startswith("--")):
        raise _Fallback(word)  # a missing value, or one click might read otherwise
    return name, value


# --- what the full path would do first --------------------------------------------------


def _identifier(value: str) -> str:
    """``value`` if domain/identifiers.py accepts it; anything else is the full path's."""
    if len(value) > 76 or not _IDENTIFIER.fullmatch(value):
        raise _Fallback(value)
    return value


def _settings(request: _Request) -> tuple[Path, Path, str, str]:
    """(root, state dir, namespace, node) as cli/main.py's Settings, checked as cli/bootstrap
    checks them; anything it would refuse, make or change is the full path's."""
    import socket

    if os.geteuid() != 0 or os.isatty(1):
        raise _Fallback("not root, or stdout a terminal")
    os.fstat(1)  # stdout open
    root, state = Path(request.root).absolute(), Path(request.state).absolute()
    namespace = _identifier(request.namespace)
    if namespace in RESERVED_NAMESPACES:
        raise _Fallback(namespace)
    node = _identifier(request.node) if request.node else (
        socket.gethostname().split(".", 1)[0] or "localhost")  # fmt: skip
    if len(str(state / "events.sock").encode()) > MAX_SOCKET_PATH or not state.is_dir():
        raise _Fallback("state dir")
    binding = json.loads((state / ".binding.json").read_text())
    store = f"sqlite://{(root / 'events.db').resolve()}"
    if binding != {"root": str(root.resolve()), "store": store}:
        raise _Fallback("the state dir is not this root's (or its binding says more)")
    for directory in (root / "logs", root / "projections"):
        if directory.lstat().st_mode & 0o7777 != 0o700 or directory.is_symlink():
            raise _Fallback(f"{directory} would be made or tightened")
    _no_log_to_rotate(root / "logs" / namespace)
    return root, state, namespace, node


def _no_log_to_rotate(directory: Path) -> None:
    """As shim/lifecycle/task_logs.py's rotate_all finds logs (``*/[0-9]*.log``): one at
    the size would be rotated by the full path."""
    for task in os.scandir(directory) if directory.exists() else ():
        for log in os.scandir(task.path) if task.is_dir() else ():
            if log.name[:1].isdigit() and log.name.endswith(".log") and (
                    log.stat().st_size >= LOG_MAX_SIZE):  # fmt: skip
                raise _Fallback(f"{log.path} is due for rotation")


# --- the store and the view -------------------------------------------------------------


def _read_only(path: Path) -> closing[Any]:
    """A read-only connection to an existing SQLite file (a missing one is never made)."""
    import sqlite3

    return closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None,
                                   timeout=SQLITE_TIMEOUT))  # fmt: skip


def _store_head(events: Path) -> tuple[int, str]:
    """The store's latest notification id and its first event's fingerprint (as
    projections/view_store.py's ``fingerprint`` writes it)."""
    from datetime import datetime

    with _read_only(events) as db:
        db.execute("BEGIN")
        (head,) = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()
        first = db.execute("SELECT originator_id, originator_version, state FROM stored_events "
                           "WHERE rowid > 0 ORDER BY rowid LIMIT 1").fetchone()  # fmt: skip
        db.execute("COMMIT")
    if head is None or first is None:
        raise _Fallback("an empty store")
    originator, version, state = first
    if not _UUID_HEX.fullmatch(originator) or type(version) is not int:
        raise _Fallback("an event id of another form")
    stamp = json.loads(state)["timestamp"]
    if stamp.get("_type_") != "datetime_iso":
        raise _Fallback("a timestamp of another form")
    moment = datetime.fromisoformat(stamp["_data_"]).isoformat()
    u = originator  # as str(UUID(hex)) writes it
    return int(head), f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}/{version}@{moment}"


def _expected_schema() -> set[tuple[Any, ...]]:
    import sqlite3

    with closing(sqlite3.connect(":memory:")) as db:
        db.executescript(VIEW_SCHEMA)
        return set(db.execute(SCHEMA_QUERY).fetchall())


def _view_rows(path: Path, query: str, args: list[str]) -> tuple[int, str, str, list[Any]]:
    """(position, store location, first event, rows of ``query``), read in one transaction."""
    with _read_only(path) as db:
        db.execute("BEGIN")
        if set(db.execute(SCHEMA_QUERY).fetchall()) != _expected_schema():
            raise _Fallback("a view of another schema")
        (position,) = db.execute("SELECT position FROM position WHERE id = 1").fetchone()
        location, first = db.execute(
            "SELECT location, first_event FROM store WHERE id = 1").fetchone()  # fmt: skip
        rows = db.execute(query, args).fetchall()
        db.execute("COMMIT")
    return int(position), str(location), str(first), rows


def _position(path: Path) -> int:
    with _read_only(path) as db:
        (position,) = db.execute("SELECT position FROM position WHERE id = 1").fetchone()
    return int(position)


def _listing(request: _Request) -> tuple[str, int]:
    """The output (as typer.echo writes it) and the view's position it was read at."""
    root, state, namespace, node = _settings(request)
    clauses = [] if request.all_namespaces else ["namespace = ?"]
    args = [] if request.all_namespaces else [namespace]
    clauses += ["node IN (?, '')", "state_dir IN (?, '')"]  # projections/owner_sql.py
    args += [node, str(state)]
    query = (f"SELECT status, state FROM task_states WHERE {' AND '.join(clauses)} "
             "ORDER BY namespace, id, node, state_dir")  # fmt: skip
    position, location, first, rows = _view_rows(root / "projections" / "task_states.db",
                                                 query, args)  # fmt: skip
    events = root / "events.db"
    head, fingerprint = _store_head(events)
    if location != f"sqlite://{os.path.realpath(events)}" or first != fingerprint:
        raise _Fallback("a view built from another store")
    if position != head:
        raise _Fallback("the view lags the store")
    if _position(root / "projections" / _state_files_name(state)) != head:
        raise _Fallback("the state_files view lags the store")
    states = [_state(status, text) for status, text in rows]
    shown = [_output(s) for s in states if not request.statuses or s["status"] in request.statuses]
    if request.quiet:
        output = "".join(
            f"{s['namespace']}/{s['id']}\n" if request.all_namespaces else f"{s['id']}\n"
            for s in shown
        )  # one echo per task, or none
    elif request.json:
        output = "[" + ",".join(_json(s) for s in shown) + "]\n"
    else:
        output = _table(shown, with_namespace=request.all_namespaces) + "\n"
    if "\x1b" in output:
        raise _Fallback("an escape character, which click would strip")
    return output, position


def _state_files_name(state: Path) -> str:
    """cli/ledger.py's state_files_name (with cli/settings.py's state_digest)."""
    if str(state) == DEFAULT_STATE:
        return "state_files.db"
    import hashlib

    return f"state_files-{hashlib.sha256(str(state).encode()).hexdigest()[:12]}.db"


def _state(status: str, text: str) -> dict[str, Any]:
    """A row's State as a dict, if this module reads it exactly as pydantic wrote it: it
    must serialise back to the same text, so StateOutput's JSON holds that text's fields."""
    state = json.loads(text)
    if not isinstance(state, dict) or tuple(state) != _STATE_FIELDS or _json(state) != text:
        raise _Fallback("a state of another form")
    for key in ("id", "namespace", "status", "bundle", "node", "state_dir", "created"):
        if type(state[key]) is not str:
            raise _Fallback(key)
    for key in ("incarnation", "pid", "exit_status"):
        if type(state[key]) is not int and (key != "exit_status" or state[key] is not None):
            raise _Fallback(key)
    for key in ("created", "started", "exited_at"):
        if state[key] is not None and not _TIME.fullmatch(state[key]):
            raise _Fallback(key)
    if state["status"] != status or status not in LISTED_STATUSES or status in HAS_PROCESS:
        raise _Fallback("a task the full path would reconcile with its shim")
    return state


def _output(state: dict[str, Any]) -> dict[str, Any]:
    """cli/output.py's StateOutput of a stopped task of this node: runc's keys, then ours."""
    from cli.runc_fields import runc_fields

    runc = runc_fields(state["state_dir"], state["namespace"], state["id"])
    output = {"ociVersion": runc["ociVersion"], **{k: state[k] for k in _RUNC_FIRST}}
    output.update(pid=0, rootfs=runc["rootfs"], created=state["created"], owner=runc["owner"],
                  annotations=runc["annotations"])  # fmt: skip
    return output | {k: state[k] for k in _OURS_AFTER}


def _json(value: Any) -> str:
    """JSON as pydantic writes it: compact, non-ASCII as is, control characters escaped."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _table(states: list[dict[str, Any]], *, with_namespace: bool) -> str:
    """cli/render/tables.py's listing_rows, piped: tab-separated, no escape codes."""
    from datetime import datetime

    rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER", "EXIT",
             *(["NAMESPACE"] if with_namespace else [])]]  # fmt: skip
    for s in states:
        exit_status = "" if s["exit_status"] is None else str(s["exit_status"])
        created = datetime.fromisoformat(s["created"]).isoformat()
        rows.append([s["id"], str(s["pid"]), s["status"], s["bundle"], created, s["owner"],
                     exit_status, *([s["namespace"]] if with_namespace else [])])  # fmt: skip
    return "\n".join("\t".join(c.replace("\t", " ").replace("\n", " ") for c in row)
                     for row in rows)  # fmt: skip


# --- writing -----------------------------------------------------------------------------


def _debug(log_format: str, message: str) -> None:
    """One debug record on stderr, as cli/common.py's formatters write it."""
    from datetime import UTC, datetime

    moment = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if log_format == "json":
        entry = {"level": "debug", "msg": message, "time": moment, "logger": "shimledger"}
        line = json.dumps(entry, separators=(",", ":"))
    else:
        line = f'time="{moment}" level=debug msg={json.dumps(message)} logger=shimledger'
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass  # as logging does: a record that cannot be written is dropped


def _write(data: bytes) -> int | None:
    """Write the answer; None (the full path then runs) if not a byte of it got out."""
    written = 0
    while written < len(data):
        try:
            written += os.write(1, data[written:])
        except InterruptedError:
            continue
        except OSError:
            if written == 0:
                return None
            return 1  # a reader gone mid-answer: what it read was whole lines so far
    return 0

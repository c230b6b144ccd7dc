"""What every command shares: running its coroutine, logging, and mapping errors to exit codes.

A command states only what it does with the tasks (``with_tasks``) or the history
(``with_ledger``); opening them, Ctrl-C and SIGTERM, and turning an expected error into one
line and exit 1 happen here, the same for every command.

As with runc: every error is one line on stderr and exit status 1; with ``--log FILE`` the
error is also a record in that file. ``--debug`` adds the traceback of expected errors to
the log; only a bug prints a traceback without being asked.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import signal as signals
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from domain.errors import ShimledgerError

if TYPE_CHECKING:
    from cli.ledger import Ledger
    from cli.settings import Settings
    from shim.lifecycle.task_manager import TaskManager

try:  # typer vendors click from 0.20 on
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - an older typer, with click itself
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore

T = TypeVar("T")
ClickCommand = Any  # typer.main.get_command's click.Command, from whichever click typer has

logger = logging.getLogger("shimledger")
# Our modules' loggers, named by their package (and the shims' logs, "shimledger.shim.log").
OUR_LOGGERS = ("shimledger", "cli", "shim", "adapters", "projections", "domain")


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


# --- logging --------------------------------------------------------------------------------


def _time(record: logging.LogRecord) -> str:
    """RFC 3339 in UTC, as runc's logrus writes it (with microseconds)."""
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _level(record: logging.LogRecord) -> str:
    return record.levelname.lower()


class TextFormatter(logging.Formatter):
    """logrus's text format: time="..." level=error msg="..." (the traceback on lines after)."""

    def format(self, record: logging.LogRecord) -> str:
        line = (f'time="{_time(record)}" level={_level(record)} '
                f"msg={json.dumps(record.getMessage())} logger={record.name}")  # fmt: skip
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: level, msg, time, logger (and traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"level": _level(record), "msg": record.getMessage(), "time": _time(record),
                 "logger": record.name}  # fmt: skip
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes (test runners swap it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class _Logging:
    handler: logging.Handler | None = None
    to_file = False


def configure_logging(*, debug: bool, log_file: Path | None, log_format: LogFormat) -> None:
    """Send log records to ``log_file`` (or stderr) in runc's text or JSON format.

    Levels: debug with --debug; otherwise info into a file (it was asked for) and warnings
    only on stderr (where they would mix with the command's output). Other libraries'
    records pass at warning and above.
    """
    root = logging.getLogger()
    if _Logging.handler is not None:  # a second command in the same process (tests)
        root.removeHandler(_Logging.handler)
        _Logging.handler.close()
    try:
        handler: logging.Handler = (
            logging.FileHandler(log_file, encoding="utf-8") if log_file else
            _StderrHandler()
        )  # fmt: skip
    except OSError as exc:
        raise typer.BadParameter(f"cannot open {log_file}: {exc.strerror}",
                                 param_hint="--log") from None  # fmt: skip
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.json else TextFormatter())
    root.addHandler(handler)
    # Levels on our own loggers only: --debug is about shimledger, not aiosqlite's every
    # statement, and the root logger's (WARNING unless someone changed it) stays as it is.
    level = logging.DEBUG if debug else logging.INFO if log_file else logging.NOTSET
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    _Logging.handler = handler
    _Logging.to_file = log_file is not None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Say what went wrong in one line on stderr (and in the log file); the exit to raise."""
    if _Logging.to_file:
        logger.error(message)
    typer.echo(f"shimledger: {message}", err=True)
    return typer.Exit(code=code)


def report_bug(exc: BaseException) -> int:
    """An exception nobody expected: the traceback says where, the last line what."""
    if _Logging.to_file:
        logger.critical("internal error", exc_info=exc)
    traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"shimledger: internal error (a bug; the traceback above shows where): "
               f"{type(exc).__name__}: {exc}", err=True)  # fmt: skip
    return 1


# --- running a command ----------------------------------------------------------------------


@contextmanager
def expected_errors(settings: Settings | None = None) -> Iterator[None]:
    """An expected error (ours, or the environment saying no) becomes one line and exit 1.

    The environment: an OSError, or SQLite's full disk, read-only or unopenable file or a
    file that is not a database (cli/faults.py names the path). ``settings`` say where the
    history lives, for SQLite's errors, which name no file. For checks a command makes
    before its coroutine runs, too, so that they fail as if it had.
    """
    try:
        yield
    except ShimledgerError as exc:
        logger.debug("%s: %s", type(exc).__name__, exc, exc_info=True)
        # Ours, unless the environment is behind it (a view file on a full disk, say):
        # then the line names the path the filesystem refuses, and why.
        cause = exc.__cause__
        line = _fault_line(cause, settings) if cause is not None else None
        raise fail(line or str(exc)) from None
    except Exception as exc:  # OSError, sqlite3's, eventsourcing's wrapping them: or a bug
        line = _fault_line(exc, settings)
        if line is None:
            raise
        logger.debug("%s: %s", type(exc).__name__, exc, exc_info=True)
        raise fail(line) from None


def _fault_line(exc: BaseException, settings: Settings | None) -> str | None:
    """One line if ``exc`` is a fault of the environment (see cli/faults.py), else None."""
    from cli.faults import environment_fault  # only on an error: sqlite3 is not for --help

    if settings is None:
        return environment_fault(exc)
    return environment_fault(exc, settings.root, settings.store)


def run_command(work: Callable[[], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run one command's coroutine; an expected error becomes one line on stderr and exit 1.

    ``settings``: where the command's history lives, named when SQLite fails there.

    SIGTERM and SIGHUP cancel the command like Ctrl-C does, so its cleanup steps run and
    nothing half-made is left behind.
    """

    import asyncio  # here, not at the top: --help does not pay for it

    async def cancellable() -> T:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        for sig in (signals.SIGTERM, signals.SIGHUP):
            loop.add_signal_handler(sig, main.cancel)
        return await work()

    try:
        with expected_errors(settings):
            return asyncio.run(cancellable())
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise fail("interrupted", code=130) from None


def with_tasks(settings: Settings, action: Callable[[TaskManager], Awaitable[T]]) -> T:
    """Run ``action`` on a bootstrapped TaskManager (shims, event sink, history) and close it.

    Every command that acts on tasks runs through here, so each opens and closes them the
    same way; what ``action`` returns comes back after the close, for the command to print.
    Each also rotates its namespace's task logs that reached their size (a stat per log),
    so that without ``serve`` a detached task's log is bounded by the next command too.
    """

    async def work() -> T:
        from cli.bootstrap import bootstrap  # here: --help does not load the adapters
        from shim.lifecycle.task_logs import LogRotation, rotate_all

        rotation = LogRotation.from_env()  # a bad policy refused before anything is done
        async with bootstrap(settings) as tasks:
            rotate_all(settings.root / "logs" / settings.namespace, rotation)
            return await action(tasks)

    return run_command(work, settings)


def with_ledger(settings: Settings, action: Callable[[Ledger], Awaitable[T]]) -> T:
    """Run ``action`` on the history and its views alone: no shim, no event sink."""

    async def work() -> T:
        from cli.ledger import open_ledger

        async with open_ledger(settings) as ledger:
            return await action(ledger)

    return run_command(work, settings)


def run_app(app: typer.Typer) -> None:
    """The console script: usage errors in one line, exit codes as runc's (1 for any error).

    The process ends with os._exit once its output and log are flushed: the history is
    committed by then (each command closes its store), and an interpreter's teardown of
    everything a command imported costs more than most commands' work.
    """
    code = run_click(typer.main.get_command(app), sys.argv[1:])
    end_process(code)


def end_process(code: int) -> NoReturn:
    """Flush what the command wrote and the log, then exit without the interpreter's
    teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nobody reads what is left
            pass
    logging.shutdown()
    os._exit(code)


def run_click(command: ClickCommand, argv: list[str]) -> int:
    """Run ``argv`` on the app's click command; the exit status, as runc's."""
    try:
        code = command.main(args=argv, prog_name="shimledger", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.format_message())  # plain `shimledger`: help, and success, as runc
        code = 0
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        code = fail(f"{exc.format_message()}{hint}").exit_code
    except typer.Abort:
        code = fail("interrupted", code=130).exit_code
    except Exception as exc:  # a bug, unless the environment failed outside any command's run
        line = _fault_line(exc, None)
        code = report_bug(exc) if line is None else fail(line).exit_code
    return code if isinstance(code, int) else 0


def drop_unwritten_output() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail a second time
    (a reader gone mid-stream, as `| head` leaves: what it read was whole lines)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)

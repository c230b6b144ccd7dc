"""The shimledger command line: the typer app, its global options, and where each command lives.

Commands are grouped by what they act on, one module each: the lifecycle
(``lifecycle_cmds``), live tasks (``inspect_cmds``), the history (``history_cmds``), and the
rest; this module only mounts them, in the order --help lists them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from cli import (
    history_cmds,
    inspect_cmds,
    ledger_cmds,
    lifecycle_cmds,
    projections_cmds,
    reconcile_cmd,
    serve_cmd,
    spec_cmd,
    store_cmd,
    task_ops_cmds,
)
from cli.args import (
    DebugFlag,
    LogFormatOption,
    LogOption,
    NamespaceOption,
    NodeOption,
    RootOption,
    StateOption,
    StoreOption,
)
from cli.caller import handed
from cli.common import LogFormat, configure_logging, run_app
from cli.settings import DEFAULT_ROOT, DEFAULT_STATE, Settings, default_node
from domain.errors import InvalidArgumentError
from domain.identifiers import validate_identifier

app = typer.Typer(
    name="shimledger",
    help="Run OCI containers through containerd v2 shims, and keep their history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    # Boxes and colour in --help only for a person at a terminal; plain text when piped.
    rich_markup_mode="rich" if sys.stdout.isatty() else None,
    context_settings={"help_option_names": ["-h", "--help"]},  # runc's -h
)


def _show_version(asked: bool) -> None:
    if asked:
        from cli.version_info import version_text

        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    root: RootOption = DEFAULT_ROOT,
    state: StateOption = DEFAULT_STATE,
    namespace: NamespaceOption = "default",
    store: StoreOption = None,
    node: NodeOption = None,
    debug: DebugFlag = False,
    log: LogOption = None,
    log_format: LogFormatOption = LogFormat.text,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", "-v", callback=_show_version, is_eager=True,
            help="Print shimledger's version and the OCI spec of the runc it drives.",
        ),
    ] = False,
) -> None:
    configure_logging(debug=debug, log_file=log, log_format=log_format)
    if (client := handed()) is not None:
        logging.getLogger("shimledger").debug(
            "running in serve's process %d, handed over by pid %d", os.getpid(), client.pid
        )
    ctx.obj = Settings(
        root=root.absolute(),
        state=state.absolute(),
        namespace=namespace,
        store=store,
        node=_node(node) if node else default_node(),
    )


def _node(name: str) -> str:
    try:
        return validate_identifier("node", name)
    except InvalidArgumentError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--node'") from None


lifecycle_cmds.register(app)
inspect_cmds.register(app)
spec_cmd.register(app)
history_cmds.register(app)
reconcile_cmd.register(app)
serve_cmd.register(app)
task_ops_cmds.register(app)
store_cmd.register(app)
ledger_cmds.register(app)
app.add_typer(projections_cmds.app, name="projections")


def main() -> None:
    """The whole CLI in this process (cli/launcher.py's fallback when no serve takes it)."""
    run_app(app)


if __name__ == "__main__":
    main()

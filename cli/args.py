"""The arguments and options several commands share, written once.

A task ID, a bundle or ``--json`` means the same in every command that takes it: the same
name, metavar, help and shell completion. Declaring each here keeps commands from drifting
apart (they once had four different ``ID`` arguments).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import LogFormat
from cli.completion import complete_task_id
from cli.settings import Settings
from domain.errors import InvalidArgumentError
from domain.identifiers import validate_identifier

if TYPE_CHECKING:  # domain.values imports pydantic: not at start-up, which --help shares
    from domain.values import Whose


class Format(enum.StrEnum):
    """What `list` and `ps` print: a table for people, or JSON."""

    table = "table"
    json = "json"


# --- the global options (before the command) -------------------------------------------------

RootOption = Annotated[
    Path, typer.Option(envvar="SHIMLEDGER_ROOT", readable=False, help="Where history is kept.")
]
StateOption = Annotated[
    Path,
    typer.Option(
        envvar="SHIMLEDGER_STATE",
        readable=False,
        help="Where bundles, sockets and runc state live.",
    ),
]
NamespaceOption = Annotated[str, typer.Option("--namespace", "-n", envvar="SHIMLEDGER_NAMESPACE")]
StoreOption = Annotated[
    str | None,
    typer.Option(
        envvar="SHIMLEDGER_STORE",
        help="Event store URL: sqlite:///PATH or postgresql://... (default: <root>/events.db).",
    ),
]
NodeOption = Annotated[
    str | None,
    typer.Option(
        envvar="SHIMLEDGER_NODE",
        help="This node's name in a shared history (default: the host name).",
    ),
]
DebugFlag = Annotated[bool, typer.Option("--debug", help="Log debug output (shim logs included).")]
LogOption = Annotated[
    Path | None,
    typer.Option(
        "--log", metavar="FILE", dir_okay=False, help="Write log records to FILE (default: stderr)."
    ),
]
LogFormatOption = Annotated[
    LogFormat, typer.Option("--log-format", help="text (logrus style) or json.")
]

# --- tasks -----------------------------------------------------------------------------------

TaskArg = Annotated[str, typer.Argument(metavar="ID", autocompletion=complete_task_id)]
TaskIdsArg = Annotated[list[str], typer.Argument(metavar="ID...", autocompletion=complete_task_id)]
BundleOption = Annotated[
    Path, typer.Option("--bundle", "-b", help="The OCI bundle (default: current directory).")
]
RuntimeOption = Annotated[
    str, typer.Option(help="A v2 shim: a runtime name or the shim binary's absolute path.")
]
PidFileOption = Annotated[
    Path | None,
    typer.Option(
        "--pid-file", metavar="FILE", dir_okay=False, help="Write the task's init pid to FILE."
    ),
]
InteractiveFlag = Annotated[
    bool, typer.Option("--interactive", "-i", help="Attach stdin; EOF closes the process's.")
]
ConsoleSocketOption = Annotated[
    Path | None,
    typer.Option(
        "--console-socket", metavar="PATH",
        help="Send the pty to this socket, as runc's (a detached terminal process).",
    ),
]  # fmt: skip
TtyFlag = Annotated[
    bool,
    typer.Option(
        "--tty", "-t",
        help="Give the process a pty on this terminal (raw while attached, sized as it is); "
        "stdin is attached.",
    ),
]  # fmt: skip

# --- output ----------------------------------------------------------------------------------

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]
JsonTextFlag = Annotated[bool, typer.Option("--json", help="JSON instead of text.")]
FormatOption = Annotated[
    Format, typer.Option("--format", "-f", help="table (plain when piped) or json.")
]
FormatJsonFlag = Annotated[bool, typer.Option("--json", help="Same as --format json.")]
BareJsonFlag = Annotated[bool, typer.Option("--json")]  # `projections`: its --help says no more
TimeOption = Annotated[
    str | None,
    typer.Option(help="ISO 8601, a Unix timestamp, or a duration ago: 10m, 1h30m, 2d."),
]
FilterOption = Annotated[
    list[str] | None,
    typer.Option("--filter", metavar="KEY=VALUE",
                 help="Only what matches (docker's keys: id, namespace, ...); repeatable."),
]  # fmt: skip
TemplateFormatOption = Annotated[
    str | None,
    typer.Option("--format", metavar="FORMAT",
                 help="json, or a Go template: '{{.ID}} {{.Type}}', 'table {{.ID}}'."),
]  # fmt: skip

# --- nodes: whose tasks a command shows ------------------------------------------------------

NodeFilterOption = Annotated[
    str | None,
    typer.Option("--node", metavar="NODE", help="Only the tasks of node NODE."),
]
AllNodesFlag = Annotated[
    bool, typer.Option("--all-nodes", help="The tasks of every node (with a NODE column).")
]


def whose_tasks(settings: Settings, node: str | None, all_nodes: bool) -> Whose:
    """`list`, `state`, `replay`: this owner's tasks by default, node ``node``'s, or all."""
    from domain.values import EVERY_NODE, Whose

    if node is not None and all_nodes:
        raise InvalidArgumentError("give --node or --all-nodes, not both")
    if all_nodes:
        return EVERY_NODE
    if node is not None:
        return Whose.node_of(validate_identifier("node", node), settings.owner)
    return Whose.owner(settings.owner)


def whose_events(settings: Settings, node: str | None) -> Whose:
    """`history`, `events`, `audit`: the whole fleet's by default, or node ``node``'s."""
    from domain.values import EVERY_NODE, Whose

    if node is None:
        return EVERY_NODE
    return Whose.node_of(validate_identifier("node", node), settings.owner)

"""What each event and each ending is called and how it is coloured, in every view.

The events table, the history timeline and the audit page once kept a colour table each,
so a Created was yellow in one and cyan in another. Here each event and each ending has one
colour: an SGR code on a terminal and, for endings, a CSS colour on the page.

Event names are read off the Task aggregate's event classes (``Task.Started.__name__``), not
typed again as strings, so that renaming an event fails here, at import, instead of
quietly leaving it uncoloured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from domain.task import Task

if TYPE_CHECKING:
    from projections.records import EventRecord

# --- event names, as the history records them -----------------------------------------------

CREATED = Task.Created.__name__
STARTED = Task.Started.__name__
EXITED = Task.Exited.__name__
DELETED = Task.Deleted.__name__
KILLED = Task.Killed.__name__
PAUSED = Task.Paused.__name__
RESUMED = Task.Resumed.__name__
OOM = Task.OOM.__name__
EXEC_ADDED = Task.ExecAdded.__name__
EXEC_STARTED = Task.ExecStarted.__name__
EXEC_EXITED = Task.ExecExited.__name__
UPDATED = Task.Updated.__name__
CHECKPOINTED = Task.Checkpointed.__name__
SHIM_LOST = Task.ShimLost.__name__
ADOPTED = Task.Adopted.__name__

# --- terminal colours (SGR codes) ------------------------------------------------------------

BOLD = "1"
DIM = "2"
RED = "31"
GREEN = "32"
YELLOW = "33"
BLUE = "34"
MAGENTA = "35"
CYAN = "36"
GREY = "90"

# An event's colour echoes the ending it leads to: Created cyan like a task not started yet,
# Started blue like a running one, OOM magenta like an OOM ending. Events not listed (exec
# steps, pause, update, ...) stay uncoloured: they change no outcome.
EVENT_COLOURS: dict[str, str] = {
    CREATED: CYAN, STARTED: BLUE, KILLED: YELLOW, OOM: MAGENTA, SHIM_LOST: RED, DELETED: GREY,
}  # fmt: skip
# Exits are coloured by their status instead: green for 0, red for anything else.
EXIT_EVENTS = frozenset({EXITED, EXEC_EXITED})

# A task's status in `list` and `replay`.
STATUS_COLOURS: dict[str, str] = {
    "running": GREEN, "created": YELLOW, "paused": BLUE, "pausing": BLUE, "stopped": DIM,
    "deleted": DIM,
}  # fmt: skip


def exit_colour(status: object) -> str:
    """Green for a clean exit, red for any other."""
    return GREEN if status == 0 or status == "0" else RED


def event_colour(record: EventRecord) -> str | None:
    """The SGR code of an event's name wherever it is shown (None: no colour)."""
    if record.type in EXIT_EVENTS:
        return exit_colour(record.fields().get("exit_status"))
    return EVENT_COLOURS.get(record.type)


# --- endings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ending:
    """How an incarnation ended: its key (a CSS class), page colour, terminal colour, label."""

    key: str
    colour: str
    terminal: str
    label: str


# Legend order: the good ending, the bad ones, then those that have not ended.
ENDINGS = (
    Ending("ok", "#2e9e44", GREEN, "exit 0"),
    Ending("failed", "#e08a00", YELLOW, "non-zero exit"),
    Ending("signal", "#d7263d", RED, "killed by signal"),
    Ending("oom", "#8e44ad", MAGENTA, "out of memory"),
    Ending("lost", "#6d4c41", RED, "shim lost"),
    Ending("deleted", "#8a8a8a", GREY, "deleted before it ran"),
    Ending("running", "#1f77b4", BLUE, "still running"),
    Ending("created", "#17becf", CYAN, "created, not started"),
)
ENDING = {e.key: e for e in ENDINGS}

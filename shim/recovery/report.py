"""What reconciliation says it did: one entry per task, for `reconcile` and `serve`."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.StrEnum):
    """What reconciling one task (or one bundle no record knows) did."""

    UNCHANGED = "unchanged"
    EXIT_RECORDED = "exit-recorded"
    EXIT_RETRACTED = "exit-retracted"  # a recorded exit its shim contradicts
    EXEC_EXIT_RECORDED = "exec-exit-recorded"
    START_RECORDED = "start-recorded"
    PAUSE_RECORDED = "pause-recorded"
    RESUME_RECORDED = "resume-recorded"
    SHIM_LOST = "shim-lost"
    LEFTOVERS_REMOVED = "leftovers-removed"
    DELETE_RECORDED = "delete-recorded"
    ADOPTED = "adopted"
    CLEANED = "cleaned"
    FAILED = "failed"


@dataclass(frozen=True)
class Reconciliation:
    """One line of a scan's report: which task, what was done, which events it appended."""

    namespace: str
    task_id: str
    incarnation: int | None  # None: a bundle no history knows, cleaned
    action: Action
    detail: str
    recorded: tuple[str, ...] = ()

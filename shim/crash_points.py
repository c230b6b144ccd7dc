"""Crash injection: the CLI process SIGKILLs itself at a named step of a task operation.

Reconciliation claims that a command killed outright at any moment leaves nothing
untracked. These points are where that claim is tested: set ``SHIMLEDGER_CRASH_AT`` to
one of CRASH_POINTS and the process dies by SIGKILL right there, with no cleanup, no
``finally`` and no flushing, as an OOM kill or a power cut would leave it. Unset (always,
outside tests) a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SHIMLEDGER_CRASH_AT"

# Each point, in the order an operation reaches them; what has happened when it fires.
CRASH_POINTS: tuple[str, ...] = (
    "create.bundle-made",  # the working bundle exists in the state dir; no shim yet
    "create.shim-started",  # the shim runs in the bundle; no Create RPC yet
    "create.task-created",  # Create RPC done (runc container exists); Created not recorded
    "create.recorded",  # Created recorded; the command had only its reply left to give
    "start.before-rpc",  # the task is created and locked; no Start RPC yet
    "start.rpc-done",  # the process runs; Started not recorded
    "kill.rpc-done",  # the signal was sent; Killed not recorded
    "exec.started",  # an exec runs, ExecStarted recorded; its command waited for its exit
    "delete.process-stopped",  # delete -f of a running task: Killed and Exited recorded
    "delete.rpc-done",  # the shim's Delete RPC removed the runc container; shim still up
    "delete.shim-gone",  # the shim was shut down; its working bundle is still there
    "delete.bundle-removed",  # the working bundle is gone; Deleted not recorded
)


def crash_point(name: str) -> None:
    """Die by SIGKILL here if ``SHIMLEDGER_CRASH_AT`` names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)

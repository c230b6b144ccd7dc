"""Waiting for a condition, the one way tests wait: poll it until a deadline, never sleep a
fixed time and hope a process got there.

A failed wait is an assertion naming what was awaited; with ``process``, a process that
ends before the condition holds fails it at once (it never will), with the same message.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

STEP = 0.05  # between polls: short against any process's step, long against a busy loop


def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float = 30.0,
    process: subprocess.Popen[Any] | None = None,
    step: float = STEP,
) -> None:
    """Return once ``condition()`` is true; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline and (process is None or process.poll() is None), what
        time.sleep(step)


async def wait_until_async(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    *,
    timeout: float = 30.0,
    step: float = STEP,
) -> None:
    """wait_until for a test on the event loop: the loop runs on while it waits, and
    ``condition`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        assert time.monotonic() < deadline, what
        await asyncio.sleep(step)

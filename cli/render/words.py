"""The phrases the timeline and the audit page share: durations, signals, how a life ended.

Both say "lived 4s" and "signal 9 (SIGKILL)" of the same incarnation; writing those words in
one place keeps a terminal and a page from disagreeing about the same history.
"""

from __future__ import annotations

import signal as signals
from typing import TYPE_CHECKING

from cli.render.palette import ENDING

if TYPE_CHECKING:
    from projections.audit import Lifetime

_SIGNAL_NAMES = {s.value: s.name for s in signals.Signals}


def signal_suffix(number: int | None) -> str:
    """' (SIGKILL)' for a signal with a name; '' for one without (real-time, or none)."""
    return f" ({_SIGNAL_NAMES[number]})" if number in _SIGNAL_NAMES else ""


def duration(seconds: float) -> str:
    """A short human duration: 0.4ms, 35ms, 4.2s, 3m05s, 2h03m, 1d02h (``elapsed`` for one
    between two recorded times, which a stepped clock can make negative)."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def elapsed(seconds: float) -> str:
    """A duration between two recorded times, never negative.

    Where the later moment is recorded earlier (a clock stepped back, by NTP or a restored
    VM), the true duration is unknown: it says so, instead of "lived -7196575.4ms".
    """
    if seconds >= 0:
        return duration(seconds)
    return f"? (the clock went back {duration(-seconds)})"


def ending_of(life: Lifetime) -> str:
    """The ending's key: the audit's own word, with "live" split by whether it started."""
    ended = life.ended
    if ended == "live":
        return "running" if life.started else "created"
    return ended


def outcome(life: Lifetime) -> str:
    """One phrase for how it ended: 'exit 3', 'signal 9 (SIGKILL)', 'running'."""
    key = ending_of(life)
    if key in ("running", "created", "deleted"):
        return ENDING[key].label if key != "deleted" else "deleted, no exit"
    text = f"exit {life.exit_status}"
    if life.signal is not None:
        text = f"signal {life.signal}{signal_suffix(life.signal)}"
    extras = [*(["OOM"] if life.ooms else []), *(["shim lost"] if life.shim_lost else [])]
    return ", ".join([text, *extras])

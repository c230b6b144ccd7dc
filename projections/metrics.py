"""The numbers `serve --metrics-address` exports, folded from the history itself.

Prometheus' counters are usually counted by the process that sees things happen, and start
again at zero with it. Here every number is a fold over the event log, in position order,
so a fresh serve over an old store reports the totals of the whole history, a restart
loses nothing, and `audit` over the same events tells the same story (tests compare them).

The fold is incremental: ``TaskMetrics.fold`` takes the next page after ``position`` and
keeps only what later events still need (each live incarnation's State, through the same
``evolve`` the task-states view uses, so `list` and the gauge never disagree on a status).
What it hands to an exporter is a ``MetricsSnapshot``: plain copies, safe to read from the
exporter's thread while the fold goes on. This module knows nothing of prometheus_client.
"""

from __future__ import annotations

import functools
import signal as signals
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from domain.events import OOM, Created, Exited, ShimLost, TaskEvent
from domain.values import EVERY_NODE, State, Status, Whose
from projections.task_states import evolve

# Seconds from Created to Exited: a `run` of /bin/true lives ~20 ms, a service for weeks.
LIFETIME_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0,
    604800.0,
)  # fmt: skip

# The statuses a live incarnation can be in, each always exported (0 when none is), so a
# dashboard's series do not come and go with the tasks.
LIVE_STATUSES: tuple[Status, ...] = (
    Status.CREATED, Status.RUNNING, Status.PAUSED, Status.STOPPED,
)  # fmt: skip


def signal_label(number: int | None) -> str:
    """An exit's signal as a label value: its name (SIGKILL), or "" when none killed it."""
    if number is None:
        return ""
    try:
        return signals.Signals(number).name
    except ValueError:
        return str(number)


@dataclass
class Histogram:
    """Bucket counts of one label set, as Prometheus' histogram keeps them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, the last one +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value on a bound is in it
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or under it), ending with (inf, count)."""
        running, out = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class MetricsSnapshot:
    """The folded numbers at one position, with the store's head and the views' lag."""

    position: int
    head: int
    view_lag: dict[str, int]
    events: dict[tuple[str, str], int]  # (namespace, type)
    exits: dict[tuple[str, str, str], int]  # (namespace, exit status, signal name or "")
    ooms: dict[str, int]
    shims_lost: dict[str, int]
    restarts: dict[str, int]
    live: dict[tuple[str, str], int]  # (namespace, status)
    lifetimes: dict[str, Histogram]  # by namespace

    @property
    def series(self) -> int:
        """How many series the task metrics export (a histogram's buckets each count)."""
        per_histogram = len(LIFETIME_BUCKETS) + 3  # buckets, +Inf, _sum, _count
        return (len(self.events) + len(self.exits) + len(self.ooms) + len(self.shims_lost)
                + len(self.restarts) + len(self.live) + len(self.view_lag) + 1
                + per_histogram * len(self.lifetimes))  # fmt: skip


class TaskMetrics:
    """The metrics fold: one owner's tasks (or every node's), from the first event on."""

    def __init__(self, whose: Whose = EVERY_NODE, bounds: tuple[float, ...] = LIFETIME_BUCKETS):
        self.whose = whose
        self.bounds = bounds
        self.position = 0
        self.events: Counter[tuple[str, str]] = Counter()
        self.exits: Counter[tuple[str, str, str]] = Counter()
        self.ooms: Counter[str] = Counter()
        self.shims_lost: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        self.live: Counter[tuple[str, str]] = Counter()
        self.lifetimes: dict[str, Histogram] = {}
        # Only what later events need: each live incarnation's State, by aggregate id.
        # A deleted one is dropped (nothing follows a Deleted), so memory follows the
        # live tasks, not the history's length.
        self._lives: dict[Any, State] = {}

    def fold(self, page: Iterable[tuple[int, Any]]) -> None:
        """Apply events past ``position`` in order; any other aggregate's (a ledger head) and
        other owners' tasks are passed over. A page may overlap what was folded already."""
        for position, event in page:
            if position <= self.position:
                continue
            self.position = position
            if isinstance(event, Created):
                if not self.whose.matches(event.node, event.state_dir):
                    continue
                self._namespace_seen(event.namespace)
            elif event.originator_id not in self._lives:
                continue  # not a task's, or not ours
            self._apply(event)

    def _namespace_seen(self, namespace: str) -> None:
        """Every namespace's counters exist from its first task on, at 0 until counted, so
        that rate() sees the first OOM, not a series appearing out of nowhere."""
        for counter in (self.ooms, self.shims_lost, self.restarts):
            counter[namespace] += 0
        for status in LIVE_STATUSES:
            self.live[(namespace, status.value)] += 0
        self.lifetimes.setdefault(namespace, Histogram(self.bounds))

    def _apply(self, event: TaskEvent) -> None:
        before = self._lives.get(event.originator_id)
        after = evolve(before, event)
        state = after or before
        assert state is not None  # a Created makes one; others come only for known lives
        namespace = state.namespace
        self.events[(namespace, type(event).__name__)] += 1
        _count(event, self, state, before)
        if before is not None:
            self.live[(namespace, before.status.value)] -= 1
        if after is None:
            self._lives.pop(event.originator_id, None)
        else:
            self._lives[event.originator_id] = after
            self.live[(namespace, after.status.value)] += 1

    def snapshot(self, head: int, view_lag: dict[str, int]) -> MetricsSnapshot:
        """Copies of the numbers now, for a reader on another thread."""
        return MetricsSnapshot(
            position=self.position, head=head, view_lag=dict(view_lag),
            events=dict(self.events), exits=dict(self.exits), ooms=dict(self.ooms),
            shims_lost=dict(self.shims_lost), restarts=dict(self.restarts),
            live=dict(self.live),
            lifetimes={ns: Histogram(h.bounds, list(h.counts), h.total)
                       for ns, h in self.lifetimes.items()},
        )  # fmt: skip


# What an event adds besides its own count and the live gauge. Each step takes the fold,
# the incarnation's State after the event and the one before (None before its Created).


@functools.singledispatch
def _count(event: TaskEvent, metrics: TaskMetrics, state: State, before: State | None) -> None:
    return None  # counted by type only


@_count.register
def _(event: Created, metrics: TaskMetrics, state: State, before: State | None) -> None:
    if event.incarnation > 1:  # the ID was created again: a restart
        metrics.restarts[state.namespace] += 1


@_count.register
def _(event: Exited, metrics: TaskMetrics, state: State, before: State | None) -> None:
    key = (state.namespace, str(event.exit_status), signal_label(event.signal))
    metrics.exits[key] += 1
    # An exit later retracted (ExitRetracted) stays counted: a counter never goes back,
    # and the retraction has its own count among the events.
    lived = (event.timestamp - state.created).total_seconds()
    metrics.lifetimes[state.namespace].observe(max(lived, 0.0))  # a clock stepped back: 0


@_count.register
def _(event: OOM, metrics: TaskMetrics, state: State, before: State | None) -> None:
    metrics.ooms[state.namespace] += 1


@_count.register
def _(event: ShimLost, metrics: TaskMetrics, state: State, before: State | None) -> None:
    metrics.shims_lost[state.namespace] += 1

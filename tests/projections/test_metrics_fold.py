"""The metrics fold (projections/metrics.py) on events made in memory: no store, no runtime.

Its numbers must be what `audit` folds from the same events, however the log is paged.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

from domain.task import Task
from domain.values import EVERY_NODE, Cause, Owner, Status, Whose
from projections.audit import audit
from projections.metrics import Histogram, TaskMetrics, signal_label
from projections.records import TaskKey, event_record, opened_key

CAUSE = Cause(kind="cli", uid=0)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Log:
    """Events in the order a store would give them, with their positions."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Any]] = []

    def save(self, task: Task) -> Task:
        for event in task.collect_events():
            self.events.append((len(self.events) + 1, event))
        return task


def task(task_id: str, incarnation: int = 1, namespace: str = "default", node: str = "a",
         state_dir: str = "/run/s") -> Task:  # fmt: skip
    return Task(namespace=namespace, task_id=task_id, incarnation=incarnation, bundle="/b",
                pid=10, runtime="r", node=node, state_dir=state_dir, cause=CAUSE)  # fmt: skip


def folded(log: Log, whose: Whose = EVERY_NODE) -> TaskMetrics:
    metrics = TaskMetrics(whose)
    metrics.fold(log.events)
    return metrics


def test_counts_events_exits_restarts_and_live_tasks_by_status() -> None:
    # Construct: one ID run twice (a restart), a task SIGKILLed, one left running.
    log = Log()
    first = task("web")
    first.start(11, CAUSE)
    first.record_exit(3, NOW, CAUSE)
    first.delete(CAUSE)
    log.save(first)
    again = task("web", incarnation=2)
    again.start(12, CAUSE)
    again.record_kill(9, False, CAUSE)
    again.record_exit(137, NOW, CAUSE)
    log.save(again)
    running = task("db", namespace="other")
    running.start(13, CAUSE)
    running.record_oom(CAUSE)
    running.pause(CAUSE)
    log.save(running)

    metrics = folded(log)

    assert metrics.events[("default", "Created")] == 2
    assert metrics.events[("default", "Killed")] == 1
    assert metrics.events[("other", "Paused")] == 1
    assert dict(metrics.exits) == {("default", "3", ""): 1, ("default", "137", "SIGKILL"): 1}
    assert metrics.restarts == Counter({"default": 1, "other": 0})
    assert metrics.ooms == Counter({"default": 0, "other": 1})
    live = {key: n for key, n in metrics.live.items() if n}
    assert live == {("default", "stopped"): 1, ("other", "paused"): 1}
    assert metrics.live[("default", "running")] == 0  # kept at 0, not dropped
    assert metrics.lifetimes["default"].count == 2
    assert metrics.lifetimes["other"].count == 0
    assert metrics.position == len(log.events)


def test_lifetime_is_created_to_exited_in_the_histogram_buckets() -> None:
    log = Log()
    life = log.save(task("t"))
    life.start(11, CAUSE)
    life.record_exit(0, NOW, CAUSE)
    [(_, created)] = log.events
    log.save(life)
    exited = log.events[-1][1]
    histogram = folded(log).lifetimes["default"]
    assert histogram.total == (exited.timestamp - created.timestamp).total_seconds()
    assert histogram.cumulative()[-1] == (float("inf"), 1)


def test_a_histogram_puts_a_value_on_a_bound_in_that_bucket() -> None:
    histogram = Histogram((1.0, 10.0))
    for value in (0.5, 1.0, 3.0, 100.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(1.0, 2), (10.0, 3), (float("inf"), 4)]
    assert (histogram.count, histogram.total) == (4, 104.5)


def test_only_the_owner_tasks_are_counted_and_unowned_old_ones_are_its_own() -> None:
    log = Log()
    for name, node, state_dir in (("mine", "a", "/run/s"), ("theirs", "b", "/run/s"),
                                  ("other-dir", "a", "/run/t"), ("old", "", "")):  # fmt: skip
        life = task(name, node=node, state_dir=state_dir)
        life.start(11, CAUSE)
        log.save(life)
    metrics = folded(log, Whose.owner(Owner("a", "/run/s")))
    assert metrics.events[("default", "Created")] == 2  # mine and old
    assert metrics.live[("default", "running")] == 2


def test_a_retracted_exit_stays_counted_and_the_task_is_live_again() -> None:
    log = Log()
    life = task("t")
    life.start(11, CAUSE)
    life.record_exit(255, NOW, CAUSE)
    life.observe_still_running(Status.RUNNING, 11, CAUSE)
    log.save(life)
    metrics = folded(log)
    assert metrics.exits[("default", "255", "")] == 1
    assert metrics.events[("default", "ExitRetracted")] == 1
    assert metrics.live[("default", "running")] == 1
    assert metrics.live[("default", "stopped")] == 0


def test_events_of_other_aggregates_and_repeated_positions_are_passed_over() -> None:
    log = Log()
    log.save(task("t"))
    metrics = TaskMetrics()
    metrics.fold(log.events)
    metrics.fold(log.events)  # a page that overlaps what was folded: nothing twice
    metrics.fold([(99, SimpleNamespace(originator_id=uuid4()))])  # a ledger head's, say
    assert metrics.events[("default", "Created")] == 1
    assert metrics.position == 99


def test_signals_are_labelled_by_name() -> None:
    assert (signal_label(9), signal_label(None), signal_label(15)) == ("SIGKILL", "", "SIGTERM")


def random_log(seed: int, steps: int = 300) -> Log:
    """Random lifecycles over a few IDs of two namespaces, created again after delete."""
    rng = random.Random(seed)
    log = Log()
    current: dict[tuple[str, str], Task] = {}
    for _ in range(steps):
        key = (rng.choice(["default", "other"]), f"t{rng.randrange(5)}")
        life = current.get(key)
        if life is None or not life.is_live:
            number = life.incarnation + 1 if life else 1
            life = current[key] = task(key[1], number, namespace=key[0])
        elif life.status is Status.CREATED:
            if rng.randrange(2):
                life.start(20, CAUSE)
            else:
                life.delete(CAUSE)
        elif life.status is Status.RUNNING:
            step = rng.randrange(4)
            if step == 0:
                life.record_oom(CAUSE)
            elif step == 1:
                life.record_shim_lost(CAUSE)
                life.record_exit(255, NOW, CAUSE)
            else:
                life.record_exit(rng.choice([0, 1, 137, 143]), NOW, CAUSE)
        else:
            life.delete(CAUSE)
        log.save(life)
    return log


def test_the_fold_tells_what_audit_tells_of_the_same_events_however_paged() -> None:
    for seed in range(5):
        log = random_log(seed)
        keys: dict[Any, TaskKey] = {}
        records = []
        for position, event in log.events:
            if (key := opened_key(event)) is not None:
                keys[event.originator_id] = key
            records.append(event_record(event, keys[event.originator_id], position))
        report = audit(records, since=None, until=NOW + timedelta(days=1), stuck_after=timedelta(1))

        paged = TaskMetrics()
        for start in range(0, len(log.events), 7):
            paged.fold(log.events[start : start + 7])
        whole = folded(log)
        assert paged.snapshot(0, {}) == whole.snapshot(0, {}), seed

        by_status = Counter(str(life.exit_status) for life in report.lifetimes
                            if life.exit_status is not None)  # fmt: skip
        exits: Counter[str] = Counter()
        for (_, status, _), n in whole.exits.items():
            exits[status] += n
        assert exits == by_status
        anomalies = report.summary
        assert sum(whole.ooms.values()) == sum(life.ooms for life in report.lifetimes)
        assert sum(whole.shims_lost.values()) == anomalies.get("anomaly:shim-lost", 0)
        assert sum(whole.restarts.values()) == sum(
            1 for life in report.lifetimes if life.incarnation > 1
        )
        assert sum(whole.live.values()) == anomalies["live"]
        assert (
            sum(n for (_, kind), n in whole.events.items() if kind == "Created")
            == anomalies["incarnations"]
        )
        lived = [(life.exited - life.created).total_seconds() for life in report.lifetimes
                 if life.exited is not None]  # fmt: skip
        assert sum(h.count for h in whole.lifetimes.values()) == len(lived)
        assert abs(sum(h.total for h in whole.lifetimes.values()) - sum(lived)) < 1e-6

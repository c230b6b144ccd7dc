"""The Task aggregate's state machine, as stories: construct, evolve, query."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.errors import InvalidArgumentError, InvalidTransitionError
from domain.identifiers import validate_identifier
from domain.task import Task
from domain.values import Cause, Status

CLI = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger test", host="h")
SHIM = Cause(kind="shim-event", detail="/tasks/exit")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def new_task(incarnation: int = 1) -> Task:
    return Task(
        namespace="default",
        task_id="web",
        incarnation=incarnation,
        bundle="/b",
        pid=10,
        runtime="io.containerd.runc.v2",
        node="node-a", state_dir="", cause=CLI,
    )


def in_status(status: Status) -> Task:
    task = new_task()
    if status in (Status.RUNNING, Status.STOPPED, Status.DELETED):
        task.start(11, CLI)
    if status in (Status.STOPPED, Status.DELETED):
        task.record_exit(7, NOW, SHIM)
    if status is Status.DELETED:
        task.delete(CLI)
    assert task.status is status
    return task


def test_a_lifecycle_records_four_events_with_their_causes() -> None:
    # Construct.
    task = new_task()
    # Evolve.
    task.start(11, CLI)
    task.record_exit(7, NOW, SHIM)
    task.delete(CLI)
    # Query.
    events = task.collect_events()
    assert [type(e).__name__ for e in events] == ["Created", "Started", "Exited", "Deleted"]
    assert events[2].exit_status == 7 and events[2].cause == SHIM
    assert all(e.timestamp.tzinfo is not None for e in events)
    assert task.status is Status.DELETED and task.exit is not None and task.exit.status == 7


def test_replaying_the_events_rebuilds_the_same_state() -> None:
    task = in_status(Status.STOPPED)
    events = task.collect_events()
    copy = None
    for event in events:
        copy = event.mutate(copy)
    assert copy is not None
    assert (copy.status, copy.pid, copy.exit) == (task.status, task.pid, task.exit)


def test_a_task_that_exits_before_start_is_stopped_and_deletable() -> None:
    task = new_task()
    task.record_exit(1, NOW, SHIM)
    task.delete(CLI)
    assert task.status is Status.DELETED


ILLEGAL = [
    (Status.RUNNING, "start"),
    (Status.STOPPED, "start"),
    (Status.DELETED, "start"),
    (Status.STOPPED, "exit"),
    (Status.DELETED, "exit"),
    (Status.RUNNING, "delete"),
    (Status.DELETED, "delete"),
]


@pytest.mark.parametrize(("status", "step"), ILLEGAL)
def test_every_illegal_transition_is_refused_and_records_nothing(status: Status, step: str) -> None:
    task = in_status(status)
    task.collect_events()
    with pytest.raises(InvalidTransitionError, match=f"task web is {status.value}"):
        if step == "start":
            task.start(12, CLI)
        elif step == "exit":
            task.record_exit(0, NOW, SHIM)
        else:
            task.delete(CLI)
    assert task.collect_events() == []
    assert task.status is status


def test_each_incarnation_of_an_id_has_its_own_aggregate() -> None:
    assert new_task(1).id != new_task(2).id
    assert new_task(2).id == Task.create_id("default", "web", 2)
    assert Task.create_id("a", "web", 1) != Task.create_id("b", "web", 1)


@pytest.mark.parametrize("value", ["", "x" * 77, "../x", "a b", "ünï", "-a", "a..b", "a/b"])
def test_identifiers_outside_containerd_rules_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgumentError):
        validate_identifier("task ID", value)


@pytest.mark.parametrize("value", ["a", "web-1", "A.b_c-9", "x" * 76])
def test_identifiers_within_containerd_rules_pass(value: str) -> None:
    assert validate_identifier("task ID", value) == value


def test_an_exec_that_could_not_start_ends_once_and_never_starts_after() -> None:
    task = new_task()
    task.start(101, CLI)
    assert task.observe_exec_added("e", CLI)
    assert task.observe_exec_not_started("e", datetime.now(UTC), CLI)
    assert task.execs["e"].exit is not None and task.execs["e"].exit.status == 255
    # the end is recorded once; a late start of an ended exec is not news
    assert not task.observe_exec_not_started("e", datetime.now(UTC), CLI)
    assert not task.observe_exec_started("e", 7, SHIM) and task.execs["e"].pid is None
    # an exec that did start is not "not started"
    assert task.observe_exec_started("f", 8, SHIM)
    assert not task.observe_exec_not_started("f", datetime.now(UTC), CLI)
    names = [type(e).__name__ for e in task.collect_events()]
    assert names == ["Created", "Started", "ExecAdded", "ExecExited", "ExecAdded", "ExecStarted"]

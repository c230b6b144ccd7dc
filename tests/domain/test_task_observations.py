"""The recording API the shim layer uses: guards that only check, observations that apply once.

A guard (``check_*``) raises exactly what its strict command raises, from the same
statuses, and changes nothing. An observation (``observe_*``) records a fact a shim
reported: it appends its event only when the fact is new and still applies, says whether
it did, and never raises for a fact already known; so the same fact heard twice (an RPC
reply and an event, in either order) is recorded once.

The hypothesis machine of test_task_machine.py is extended with both: its model says when
each applies, and its invariants (the model agrees, a replay rebuilds the aggregate) hold
after every step, mixed with the strict commands.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, settings
from hypothesis import event as label
from hypothesis import strategies as st
from hypothesis.stateful import rule

from domain.errors import FailedPreconditionError, InvalidTransitionError
from domain.task import Task
from domain.values import Cause
from tests.domain.test_task_machine import (
    BEGINNINGS,
    CAUSES,
    CLI,
    EXEC_IDS,
    EXEC_NAMES,
    EXIT_STATUSES,
    NOW,
    PIDS,
    RECONCILIATION,
    SHIM,
    SIGNALS,
    TASK_ID,
    TIMES,
    ExecModel,
    TaskMachine,
    observe,
)

HAS_PROCESS = ("created", "running", "paused")
IMAGES = st.sampled_from(["/img/1", "/img/2"])


class ObservingMachine(TaskMachine):
    """TaskMachine, plus every guard and every observation as rules of their own."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoints: list[str] = []  # no beginning checkpoints

    def observation(
        self, applies: bool, command: Callable[[], bool], names: list[str], cause: Cause
    ) -> list[Any]:
        """Run one observation: its events if the model says it applies, else nothing."""
        assert self.task.collect_events() == [], "events were left pending"
        before = observe(self.task)
        if currently_in_test_context():
            label(f"{names[-1]} observed {'new' if applies else 'known'} when {self.model.status}")
        appended = command()
        recorded = self.task.collect_events()
        assert appended is applies
        assert [type(e).__name__ for e in recorded] == (names if applies else [])
        assert all(e.cause == cause for e in recorded)
        if not applies:
            assert observe(self.task) == before
        self.events.extend(recorded)
        return recorded

    def guard(self, refusal: str | None, check: Callable[[], None]) -> None:
        """A guard raises what the model refuses, and never changes anything."""
        before = observe(self.task)
        if refusal is None:
            check()
        else:
            with pytest.raises(InvalidTransitionError, match=refusal):
                check()
        assert self.task.collect_events() == []
        assert observe(self.task) == before

    # observations ----------------------------------------------------------------------

    @rule(pid=PIDS, cause=CAUSES)
    def observe_start(self, pid: int, cause: Cause) -> None:
        applies = self.model.status == "created"
        if self.observation(
            applies, lambda: self.task.observe_start(pid, cause), ["Started"], cause
        ):
            self.model.status, self.model.pid = "running", pid

    @rule(exit_status=EXIT_STATUSES, at=TIMES, cause=CAUSES)
    def observe_exit(self, exit_status: int, at: datetime, cause: Cause) -> None:
        applies = self.model.status in HAS_PROCESS
        command = lambda: self.task.observe_exit(exit_status, at, cause)  # noqa: E731
        if self.observation(applies, command, ["Exited"], cause):
            self.model.status, self.model.exit = "stopped", (exit_status, at)

    @rule(cause=CAUSES)
    def observe_paused(self, cause: Cause) -> None:
        applies = self.model.status == "running"
        if self.observation(applies, lambda: self.task.observe_paused(cause), ["Paused"], cause):
            self.model.status = "paused"

    @rule(cause=CAUSES)
    def observe_resumed(self, cause: Cause) -> None:
        applies = self.model.status == "paused"
        if self.observation(applies, lambda: self.task.observe_resumed(cause), ["Resumed"], cause):
            self.model.status = "running"

    @rule(signal=SIGNALS, all=st.booleans(), cause=CAUSES)
    def observe_kill(self, signal: int, all: bool, cause: Cause) -> None:
        applies = self.model.status in HAS_PROCESS
        command = lambda: self.task.observe_kill(signal, all, cause)  # noqa: E731
        recorded = self.observation(applies, command, ["Killed"], cause)
        assert [(e.signal, e.all) for e in recorded] == ([(signal, all)] if applies else [])

    @rule(cause=CAUSES)
    def observe_oom(self, cause: Cause) -> None:
        applies = self.model.status != "deleted"  # every OOM is a fact of its own
        self.observation(applies, lambda: self.task.observe_oom(cause), ["OOM"], cause)

    @rule(cause=CAUSES)
    def observe_shim_lost(self, cause: Cause) -> None:
        applies = self.model.status in HAS_PROCESS
        self.observation(applies, lambda: self.task.observe_shim_lost(cause), ["ShimLost"], cause)

    @rule(cause=CAUSES)
    def observe_update(self, cause: Cause) -> None:
        applies = self.model.status in HAS_PROCESS
        command = lambda: self.task.observe_update({"pids": {"limit": 9}}, cause)  # noqa: E731
        self.observation(applies, command, ["Updated"], cause)

    @rule(image=IMAGES, exit=st.booleans(), cause=CAUSES)
    def observe_checkpoint(self, image: str, exit: bool, cause: Cause) -> None:
        applies = self.model.status in ("running", "paused") and image not in self.checkpoints
        command = lambda: self.task.observe_checkpoint(image, exit, cause)  # noqa: E731
        if self.observation(applies, command, ["Checkpointed"], cause):
            self.checkpoints.append(image)
        assert self.task.checkpoints == self.checkpoints

    @rule(cause=CAUSES)
    def observe_deleted(self, cause: Cause) -> None:
        if self.model.status in ("running", "paused"):
            before = observe(self.task)
            with pytest.raises(InvalidTransitionError, match="kill it first"):
                self.task.observe_deleted(cause)
            assert self.task.collect_events() == [] and observe(self.task) == before
            return
        applies = self.model.status != "deleted"
        if self.observation(applies, lambda: self.task.observe_deleted(cause), ["Deleted"], cause):
            self.model.status = "deleted"

    @rule(exec_id=EXEC_IDS, cause=CAUSES)
    def observe_exec_added(self, exec_id: str, cause: Cause) -> None:
        applies = self.model.status in ("created", "running") and exec_id not in self.model.execs
        command = lambda: self.task.observe_exec_added(exec_id, cause)  # noqa: E731
        if self.observation(applies, command, ["ExecAdded"], cause):
            self.model.execs[exec_id] = ExecModel()

    @rule(exec_id=EXEC_IDS, pid=PIDS, cause=CAUSES)
    def observe_exec_started(self, exec_id: str, pid: int, cause: Cause) -> None:
        known = self.model.execs.get(exec_id)
        names = [
            *([] if known else ["ExecAdded"]),
            *([] if known and (known.pid or known.exit) else ["ExecStarted"]),
        ]
        applies = self.model.status in ("created", "running") and bool(names)
        command = lambda: self.task.observe_exec_started(exec_id, pid, cause)  # noqa: E731
        if self.observation(applies, command, names or ["ExecStarted"], cause):
            self.model.execs.setdefault(exec_id, ExecModel())
            if "ExecStarted" in names:
                self.model.execs[exec_id].pid = pid

    @rule(exec_id=EXEC_IDS, exit_status=EXIT_STATUSES, at=TIMES, cause=CAUSES)
    def observe_exec_exit(self, exec_id: str, exit_status: int, at: datetime, cause: Cause) -> None:
        process = self.model.execs.get(exec_id)
        applies = (
            self.model.status != "deleted"
            and process is not None and process.pid is not None and process.exit is None
        )  # fmt: skip
        command = lambda: self.task.observe_exec_exit(exec_id, exit_status, at, cause)  # noqa: E731
        if self.observation(applies, command, ["ExecExited"], cause):
            self.model.execs[exec_id].exit = (exit_status, at)

    @rule(exec_id=EXEC_IDS, at=TIMES, cause=CAUSES)
    def observe_exec_not_started(self, exec_id: str, at: datetime, cause: Cause) -> None:
        process = self.model.execs.get(exec_id)
        applies = (
            self.model.status != "deleted"
            and process is not None and process.pid is None and process.exit is None
        )  # fmt: skip
        command = lambda: self.task.observe_exec_not_started(exec_id, at, cause)  # noqa: E731
        if self.observation(applies, command, ["ExecExited"], cause):
            self.model.execs[exec_id].exit = (255, at)

    # guards ----------------------------------------------------------------------------

    @rule(exec_id=EXEC_IDS)
    def check(self, exec_id: str) -> None:
        model, task = self.model, self.task
        self.guard(model.refuse_start(), task.check_start)
        self.guard(model.refuse_kill(), task.check_kill)
        self.guard(model.refuse_pause(), task.check_pause)
        self.guard(model.refuse_resume(), task.check_resume)
        self.guard(model.refuse_add_exec(exec_id), lambda: task.check_add_exec(exec_id))
        self.guard(model.refuse_delete(), task.check_delete)
        self.guard(model.refuse_kill(), task.check_update)  # the same rule as kill's
        self.guard(model._unless("running", "paused"), task.check_checkpoint)


ObservingMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_observations_and_guards_mixed_with_commands_follow_the_model = ObservingMachine.TestCase


def machine_at(begin: str) -> ObservingMachine:
    machine = ObservingMachine()
    machine.create(pid=10, cause=CLI, begin=begin, at=NOW)
    return machine


OBSERVATIONS: dict[str, Callable[[ObservingMachine], None]] = {
    "observe_start": lambda m: m.observe_start(pid=99, cause=SHIM),
    "observe_exit": lambda m: m.observe_exit(exit_status=143, at=NOW, cause=SHIM),
    "observe_paused": lambda m: m.observe_paused(cause=SHIM),
    "observe_resumed": lambda m: m.observe_resumed(cause=SHIM),
    "observe_kill": lambda m: m.observe_kill(signal=9, all=False, cause=CLI),
    "observe_oom": lambda m: m.observe_oom(cause=SHIM),
    "observe_shim_lost": lambda m: m.observe_shim_lost(cause=RECONCILIATION),
    "observe_update": lambda m: m.observe_update(cause=CLI),
    "observe_checkpoint": lambda m: m.observe_checkpoint(image="/img/1", exit=False, cause=CLI),
    "observe_deleted": lambda m: m.observe_deleted(cause=SHIM),
    **{
        f"{name} {exec_id}": command
        for exec_id in EXEC_NAMES
        for name, command in [
            ("observe_exec_added", lambda m, e=exec_id: m.observe_exec_added(e, SHIM)),
            ("observe_exec_started", lambda m, e=exec_id: m.observe_exec_started(e, 98, SHIM)),
            (
                "observe_exec_exit",
                lambda m, e=exec_id: m.observe_exec_exit(e, 1, NOW, SHIM),
            ),
        ]
    },
}


# What leaves the status as it was is recorded again while it applies: a kill, an update or
# an OOM is a new fact each time (each signal sent, each time the killer strikes), and a
# lost shim is noticed once per reconciliation, which then records the exit it implies.
REPEATED_WHILE = {
    "observe_oom": ("created", "running", "paused", "stopped"),
    "observe_kill": HAS_PROCESS,
    "observe_update": HAS_PROCESS,
    "observe_shim_lost": HAS_PROCESS,
}


@pytest.mark.parametrize("command", list(OBSERVATIONS))
@pytest.mark.parametrize("begin", BEGINNINGS)
def test_every_observation_from_every_status_applies_at_most_once(begin: str, command: str) -> None:
    """Each observation, heard twice from each status: the second time appends nothing."""
    machine = machine_at(begin)
    OBSERVATIONS[command](machine)
    version = machine.task.version
    OBSERVATIONS[command](machine)
    repeated = machine.model.status in REPEATED_WHILE.get(command, ())
    assert machine.task.version - version == (1 if repeated else 0)
    machine.aggregate_agrees_with_the_model()
    machine.replaying_the_events_rebuilds_the_aggregate()
    machine.teardown()


def new_task() -> Task:
    return Task(namespace="default", task_id=TASK_ID, incarnation=1, bundle="/b", pid=10,
                runtime="io.containerd.runc.v2",
                node="node-a", state_dir="", cause=CLI)  # fmt: skip


def test_an_unknown_exec_that_started_is_added_and_started_in_one_observation() -> None:
    task = new_task()
    task.start(11, CLI)
    task.collect_events()
    assert task.observe_exec_started("e9", 42, SHIM) is True
    assert [type(e).__name__ for e in task.collect_events()] == ["ExecAdded", "ExecStarted"]
    assert task.execs["e9"].pid == 42
    assert task.observe_exec_started("e9", 42, SHIM) is False
    assert task.observe_exec_added("e9", SHIM) is False
    assert task.collect_events() == []


GUARD_MESSAGES = [
    ("running", "check_start", "task web is running: only a created task can be started"),
    ("stopped", "check_kill",
     "task web is stopped: only a created or running or paused task can be killed"),
    ("created", "check_pause", "task web is created: only a running task can be paused"),
    ("running", "check_resume", "task web is running: only a paused task can be resumed"),
    ("paused", "check_add_exec",
     "task web is paused: only a created or running task can run an exec"),
    ("running with execs", "check_add_exec", "task web has an exec e1 already"),
    ("deleted", "check_update",
     "task web is deleted: only a created or running or paused task can be updated"),
    ("stopped", "check_checkpoint",
     "task web is stopped: only a running or paused task can be checkpointed"),
    ("running", "check_delete", "task web is running: kill it first, or use delete --force"),
    ("paused", "check_delete", "task web is paused: kill it first, or use delete --force"),
    ("deleted", "check_delete",
     "task web is deleted: only a created or stopped task can be deleted"),
]  # fmt: skip
STRICT = {
    "check_start": lambda t: t.start(12, CLI),
    "check_kill": lambda t: t.record_kill(9, False, CLI),
    "check_pause": lambda t: t.pause(CLI),
    "check_resume": lambda t: t.resume(CLI),
    "check_add_exec": lambda t: t.add_exec("e1", CLI),
    "check_update": lambda t: t.record_update({}, CLI),
    "check_checkpoint": lambda t: t.record_checkpoint("/img", False, CLI),
    "check_delete": lambda t: t.delete(CLI),
}


@pytest.mark.parametrize(("begin", "guard", "message"), GUARD_MESSAGES)
def test_a_guard_says_exactly_what_its_command_says(begin: str, guard: str, message: str) -> None:
    task = machine_at(begin).task
    before = observe(task)
    args = ("e1",) if guard == "check_add_exec" else ()
    for attempt in (lambda: getattr(task, guard)(*args), lambda: STRICT[guard](task)):
        with pytest.raises(InvalidTransitionError, match=f"^{re.escape(message)}$"):
            attempt()
        assert task.collect_events() == [] and observe(task) == before


@pytest.mark.parametrize("begin", BEGINNINGS)
def test_require_process_refuses_a_task_without_one(begin: str) -> None:
    task = machine_at(begin).task
    status = task.status.value
    if status in HAS_PROCESS:
        task.require_process("nothing to kill")
        return
    with pytest.raises(FailedPreconditionError) as refused:
        task.require_process("nothing to kill")
    assert str(refused.value) == f"task web is {status}: nothing to kill"
    assert not isinstance(refused.value, InvalidTransitionError)

"""The Task aggregate against a small model of its state machine.

Every rule tries its command whatever the task's status: the model (written here from
design.md's table and the aggregate's docstring, not from the aggregate's code) says
whether the step is legal. A legal step must record exactly its one event, with its cause,
and leave the aggregate where the model went; an illegal one must raise
InvalidTransitionError naming the task and its status (or the exec), record nothing and
change nothing. After every step, replaying the recorded events from scratch must rebuild
the live aggregate.

Hypothesis drives random command sequences through the machine; a plain grid then tries
every command from every status once, so that no cell of the table is left to chance.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, settings
from hypothesis import event as label
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.errors import InvalidTransitionError
from domain.task import Task
from domain.values import Cause, Status

TASK_ID = "web"
CLI = Cause(kind="cli", user="root", uid=0, pid=1, command="shimledger test", host="h")
SHIM = Cause(kind="shim-event", detail="/tasks/exit")
RECONCILIATION = Cause(kind="reconciliation", detail="shim found alive")
NOW = datetime(2026, 1, 1, tzinfo=UTC)

CAUSES = st.sampled_from([CLI, SHIM, RECONCILIATION])
PIDS = st.integers(min_value=1, max_value=4_194_304)
# Any status a shim can report, with the edges of the 128+N signal range often.
EXIT_STATUSES = st.sampled_from([0, 1, 128, 129, 137, 192, 193, 255]) | st.integers(0, 255)
SIGNALS = st.integers(min_value=1, max_value=64)
TIMES = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
# Few names, so that the same exec is added twice, started twice, exits twice. A run that
# begins with execs has e1 running, e2 added but not started, e3 exited; e4 is unknown.
EXEC_NAMES = ["e1", "e2", "e3", "e4"]
EXEC_IDS = st.sampled_from(EXEC_NAMES)
# Where a run begins: hypothesis switches rules off at random for each run (swarm testing)
# and exit or delete soon end the interesting part of most runs, so runs also begin further
# on, reached through the same checked steps as any other.
BEGINNINGS = ["created", "running", "running with execs", "paused", "stopped", "deleted"]

ExitSeen = tuple[int, datetime]


@dataclass
class ExecModel:
    pid: int | None = None
    exit: ExitSeen | None = None


@dataclass
class Model:
    """The state machine as plain data: a status string, a pid, an exit, the execs."""

    pid: int
    status: str = "created"
    exit: ExitSeen | None = None
    execs: dict[str, ExecModel] = field(default_factory=dict)

    # Each ``refuse_*`` answers None when the step is legal, else a pattern the error's
    # message must match.

    def _unless(self, *allowed: str) -> str | None:
        if self.status in allowed:
            return None
        return re.escape(f"task {TASK_ID} is {self.status}")

    def refuse_start(self) -> str | None:
        return self._unless("created")

    def refuse_exit(self) -> str | None:
        return self._unless("created", "running", "paused")

    def refuse_delete(self) -> str | None:
        return self._unless("created", "stopped")

    def refuse_kill(self) -> str | None:
        return self._unless("created", "running", "paused")

    def refuse_pause(self) -> str | None:
        return self._unless("running")

    def refuse_resume(self) -> str | None:
        return self._unless("paused")

    def refuse_audit(self) -> str | None:
        """OOM, a lost shim, adoption: facts about any task that is not deleted."""
        return self._unless("created", "running", "paused", "stopped")

    def refuse_add_exec(self, exec_id: str) -> str | None:
        if refusal := self._unless("created", "running"):
            return refusal
        if exec_id in self.execs:
            return re.escape(f"task {TASK_ID} has an exec {exec_id} already")
        return None

    def refuse_start_exec(self, exec_id: str) -> str | None:
        if refusal := self._unless("created", "running"):
            return refusal
        process = self.execs.get(exec_id)
        if process is None or process.pid is not None:
            return re.escape(f"exec {exec_id} of task {TASK_ID} is not waiting to start")
        return None

    def refuse_exec_exit(self, exec_id: str) -> str | None:
        """An exec may outlive its task's init by a moment, but nothing happens after Deleted."""
        if refusal := self._unless("created", "running", "paused", "stopped"):
            return refusal
        process = self.execs.get(exec_id)
        if process is None or process.pid is None or process.exit is not None:
            return re.escape(f"exec {exec_id} of task {TASK_ID} is not running")
        return None


def expected_signal(exit_status: int) -> int | None:
    """128+N means "killed by signal N", for the 64 signals Linux has."""
    return exit_status - 128 if 129 <= exit_status <= 192 else None


def observe(task: Task) -> tuple[Any, ...]:
    """What the model can be compared with, and what an illegal step must not change."""
    exit = None if task.exit is None else (task.exit.status, task.exit.exited_at)
    execs = {
        exec_id: (p.pid, None if p.exit is None else (p.exit.status, p.exit.exited_at))
        for exec_id, p in task.execs.items()
    }
    return (task.status, task.pid, exit, execs, task.version)


class TaskMachine(RuleBasedStateMachine):
    task: Task
    model: Model
    events: list[Any]

    @initialize(
        pid=PIDS,
        cause=CAUSES,
        # Half of the runs begin at "created", the others further on.
        begin=st.just("created") | st.sampled_from(BEGINNINGS[1:]),
        at=TIMES,
    )
    def create(self, pid: int, cause: Cause, begin: str, at: datetime) -> None:
        self.task = Task(
            namespace="default",
            task_id=TASK_ID,
            incarnation=1,
            bundle="/b",
            pid=pid,
            runtime="io.containerd.runc.v2",
            node="node-a", state_dir="", cause=cause,
        )
        self.model = Model(pid=pid)
        self.events = self.task.collect_events()
        assert [type(e).__name__ for e in self.events] == ["Created"]
        if begin == "created":
            return
        self.start(pid + 1, cause)
        if begin == "running":
            return
        self.add_exec("e1", cause)
        self.start_exec("e1", pid + 2, cause)
        self.add_exec("e2", cause)
        self.add_exec("e3", cause)
        self.start_exec("e3", pid + 3, cause)
        self.record_exec_exit("e3", 0, at, cause)
        if begin == "paused":
            self.pause(cause)
        elif begin in ("stopped", "deleted"):
            self.record_exit(137, at, cause)
            if begin == "deleted":
                self.delete(cause)
        assert self.model.status == begin.split()[0]

    def attempt(
        self, refusal: str | None, command: Callable[[], None], event: str, cause: Cause
    ) -> Any:
        """Run one command; return its event if the model allowed it, None if refused."""
        assert self.task.collect_events() == [], "events were left pending"
        before = observe(self.task)
        if currently_in_test_context():  # see --hypothesis-show-statistics
            label(f"{event} {'refused' if refusal else 'recorded'} when {self.model.status}")
        if refusal is not None:
            with pytest.raises(InvalidTransitionError, match=refusal):
                command()
            assert self.task.collect_events() == []
            assert observe(self.task) == before
            return None
        command()
        recorded = self.task.collect_events()
        assert [type(e).__name__ for e in recorded] == [event]
        assert recorded[0].cause == cause
        self.events.extend(recorded)
        return recorded[0]

    # the lifecycle -------------------------------------------------------------------

    @rule(pid=PIDS, cause=CAUSES)
    def start(self, pid: int, cause: Cause) -> None:
        recorded = self.attempt(
            self.model.refuse_start(), lambda: self.task.start(pid, cause), "Started", cause
        )
        if recorded is not None:
            self.model.status, self.model.pid = "running", pid

    @rule(exit_status=EXIT_STATUSES, at=TIMES, cause=CAUSES)
    def record_exit(self, exit_status: int, at: datetime, cause: Cause) -> None:
        recorded = self.attempt(
            self.model.refuse_exit(),
            lambda: self.task.record_exit(exit_status, at, cause),
            "Exited",
            cause,
        )
        if recorded is not None:
            assert (recorded.exit_status, recorded.exited_at) == (exit_status, at)
            assert recorded.signal == expected_signal(exit_status)
            self.model.status, self.model.exit = "stopped", (exit_status, at)

    @rule(cause=CAUSES)
    def delete(self, cause: Cause) -> None:
        recorded = self.attempt(
            self.model.refuse_delete(), lambda: self.task.delete(cause), "Deleted", cause
        )
        if recorded is not None:
            self.model.status = "deleted"

    # audit events ----------------------------------------------------------------------

    @rule(signal=SIGNALS, all=st.booleans(), cause=CAUSES)
    def record_kill(self, signal: int, all: bool, cause: Cause) -> None:
        recorded = self.attempt(
            self.model.refuse_kill(),
            lambda: self.task.record_kill(signal, all, cause),
            "Killed",
            cause,
        )
        if recorded is not None:
            assert (recorded.signal, recorded.all) == (signal, all)

    @rule(cause=CAUSES)
    def pause(self, cause: Cause) -> None:
        recorded = self.attempt(
            self.model.refuse_pause(), lambda: self.task.pause(cause), "Paused", cause
        )
        if recorded is not None:
            self.model.status = "paused"

    @rule(cause=CAUSES)
    def resume(self, cause: Cause) -> None:
        recorded = self.attempt(
            self.model.refuse_resume(), lambda: self.task.resume(cause), "Resumed", cause
        )
        if recorded is not None:
            self.model.status = "running"

    @rule(cause=CAUSES)
    def record_oom(self, cause: Cause) -> None:
        self.attempt(self.model.refuse_audit(), lambda: self.task.record_oom(cause), "OOM", cause)

    @rule(cause=CAUSES)
    def record_shim_lost(self, cause: Cause) -> None:
        self.attempt(
            self.model.refuse_audit(), lambda: self.task.record_shim_lost(cause), "ShimLost", cause
        )

    @rule(cause=CAUSES)
    def adopt(self, cause: Cause) -> None:
        self.attempt(self.model.refuse_audit(), lambda: self.task.adopt(cause), "Adopted", cause)

    # execs -----------------------------------------------------------------------------

    @rule(exec_id=EXEC_IDS, cause=CAUSES)
    def add_exec(self, exec_id: str, cause: Cause) -> None:
        recorded = self.attempt(
            self.model.refuse_add_exec(exec_id),
            lambda: self.task.add_exec(exec_id, cause),
            "ExecAdded",
            cause,
        )
        if recorded is not None:
            assert recorded.exec_id == exec_id
            self.model.execs[exec_id] = ExecModel()

    @rule(exec_id=EXEC_IDS, pid=PIDS, cause=CAUSES)
    def start_exec(self, exec_id: str, pid: int, cause: Cause) -> None:
        recorded = self.attempt(
            self.model.refuse_start_exec(exec_id),
            lambda: self.task.start_exec(exec_id, pid, cause),
            "ExecStarted",
            cause,
        )
        if recorded is not None:
            assert (recorded.exec_id, recorded.pid) == (exec_id, pid)
            self.model.execs[exec_id].pid = pid

    @rule(exec_id=EXEC_IDS, exit_status=EXIT_STATUSES, at=TIMES, cause=CAUSES)
    def record_exec_exit(self, exec_id: str, exit_status: int, at: datetime, cause: Cause) -> None:
        recorded = self.attempt(
            self.model.refuse_exec_exit(exec_id),
            lambda: self.task.record_exec_exit(exec_id, exit_status, at, cause),
            "ExecExited",
            cause,
        )
        if recorded is not None:
            assert (recorded.exec_id, recorded.exit_status) == (exec_id, exit_status)
            self.model.execs[exec_id].exit = (exit_status, at)

    # invariants ------------------------------------------------------------------------

    @invariant()
    def aggregate_agrees_with_the_model(self) -> None:
        status, pid, exit, execs, version = observe(self.task)
        model_execs = {k: (e.pid, e.exit) for k, e in self.model.execs.items()}
        assert (status, pid, exit, execs) == (
            Status(self.model.status),
            self.model.pid,
            self.model.exit,
            model_execs,
        )
        assert self.task.is_live is (self.model.status != "deleted")
        assert version == len(self.events)

    @invariant()
    def replaying_the_events_rebuilds_the_aggregate(self) -> None:
        assert [e.originator_version for e in self.events] == list(range(1, len(self.events) + 1))
        assert {e.originator_id for e in self.events} == {self.task.id}
        copy = None
        for event in self.events:
            copy = event.mutate(copy)
        assert copy is not None
        assert observe(copy) == observe(self.task)


TaskMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_random_command_sequences_follow_the_model = TaskMachine.TestCase


# Every command once from every beginning, with exec names in each of their states.
COMMANDS: dict[str, Callable[[TaskMachine], None]] = {
    "start": lambda m: m.start(pid=99, cause=CLI),
    "record_exit": lambda m: m.record_exit(exit_status=143, at=NOW, cause=SHIM),
    "delete": lambda m: m.delete(cause=CLI),
    "record_kill": lambda m: m.record_kill(signal=15, all=True, cause=CLI),
    "pause": lambda m: m.pause(cause=CLI),
    "resume": lambda m: m.resume(cause=CLI),
    "record_oom": lambda m: m.record_oom(cause=SHIM),
    "record_shim_lost": lambda m: m.record_shim_lost(cause=RECONCILIATION),
    "adopt": lambda m: m.adopt(cause=RECONCILIATION),
    **{
        f"{name} {exec_id}": command
        for exec_id in EXEC_NAMES
        for name, command in [
            ("add_exec", lambda m, e=exec_id: m.add_exec(exec_id=e, cause=CLI)),
            ("start_exec", lambda m, e=exec_id: m.start_exec(exec_id=e, pid=98, cause=CLI)),
            (
                "record_exec_exit",
                lambda m, e=exec_id: m.record_exec_exit(
                    exec_id=e, exit_status=1, at=NOW, cause=SHIM
                ),
            ),
        ]
    },
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("begin", BEGINNINGS)
def test_every_command_from_every_status_is_recorded_or_refused_as_the_model_says(
    begin: str, command: str
) -> None:
    machine = TaskMachine()
    machine.create(pid=10, cause=CLI, begin=begin, at=NOW)
    COMMANDS[command](machine)
    machine.aggregate_agrees_with_the_model()
    machine.replaying_the_events_rebuilds_the_aggregate()
    machine.teardown()

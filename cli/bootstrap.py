"""The composition root: the only place that knows every concrete class."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adapters.event_sink import EventSink
from adapters.event_store import store_env
from adapters.file_lock import TaskLocks
from adapters.shim_binary import ShimBinaryLauncher, search_path
from cli.caller import current as current_caller
from cli.faults import environment_fault
from cli.handoff import MAX_SOCKET_PATH
from cli.ledger import Ledger, open_ledger
from cli.redaction import redact_command
from cli.settings import DEFAULT_STATE, Settings, default_node, state_digest
from domain.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    ShimledgerError,
    UnavailableError,
)
from domain.state_dir import StateDir
from domain.values import Cause
from shim.lifecycle.bundle import Bundles
from shim.lifecycle.connections import ShimConnections
from shim.lifecycle.shim_manager import ManagerConfig, ShimManager
from shim.lifecycle.task_manager import TaskManager
from shim.ports import ShimBinary, ShimEvent, TaskStore, TaskView
from shim.ports import TaskLocks as TaskLocksPort
from shim.private_files import create_private
from shim.recording.recorder import TaskRecorder
from shim.recording.shim_events import ShimEventRecorder
from shim.recovery.adoption import BundleAdopter
from shim.recovery.reconcile import Reconciler

logger = logging.getLogger(__name__)

SINK_RETRY = 0.1


def cli_cause(node: str | None = None) -> Cause:
    """Who ran this command: user, uid, pid, command line (secrets redacted: history is
    kept for good; cli/redaction.py says the rule), host and node (``--node``)."""
    caller = current_caller()  # the client's, for a command handed to serve
    try:
        user: str | None = pwd.getpwuid(caller.uid).pw_name
    except KeyError:
        user = None
    return Cause(
        kind="cli",
        user=user,
        uid=caller.uid,
        pid=caller.pid,
        command=" ".join(["shimledger", *redact_command(list(caller.argv))]),
        host=socket.gethostname(),
        node=node or None,
    )


def cgroup_parent(settings: Settings) -> str:
    """/shimledger for the default state dir (apart from a real containerd's /<ns>/<id>);
    for any other state dir, a parent named after it."""
    if settings.state == DEFAULT_STATE:
        return "/shimledger"
    return f"/shimledger-{state_digest(settings.state)}"


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise FailedPreconditionError(
            f"{what} needs root: runc and containerd-shim-runc-v2 create namespaces, "
            "cgroups and mounts (run it with sudo)"
        )


def store_identity(settings: Settings) -> str:
    """The store a state dir's tasks are recorded in, as a URL without its password."""
    env = store_env(settings.store, settings.root)
    if "SQLITE_DBNAME" in env:
        return f"sqlite://{Path(env['SQLITE_DBNAME']).resolve()}"
    if "POSTGRES_HOST" in env:
        return (f"postgresql://{env['POSTGRES_USER']}@{env['POSTGRES_HOST']}:"
                f"{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}")  # fmt: skip
    return env.get("PERSISTENCE_MODULE", "")


def bind_state_dir(state: StateDir, settings: Settings) -> None:
    """The state dir belongs to the first root (and store) that uses it; others are refused.

    A state dir's shims, bundles and event sink are one history's: a second root sharing
    it would take the first one's shims' exits (and drop them), adopt its tasks on
    reconcile and delete its containers. The binding is a file in the state dir, made
    once (exclusively, so two first commands agree on one owner); it goes with the state
    dir (at reboot for /run).
    """
    ours = {"root": str(settings.root.resolve()), "store": store_identity(settings)}
    path = state.binding
    try:
        if create_private(path, json.dumps(ours) + "\n"):
            return
    except OSError as exc:
        raise FailedPreconditionError(f"cannot write {path}: {exc.strerror}") from None
    try:
        bound = json.loads(path.read_text())
        if not isinstance(bound, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else exc
        raise FailedPreconditionError(
            f"cannot read {path}, which says whose state dir this is: {why}"
        ) from None
    if bound.get("root") != ours["root"] or bound.get("store") != ours["store"]:
        raise FailedPreconditionError(
            f"state dir {state.path} belongs to root {bound.get('root')} (store "
            f"{bound.get('store')}), not to root {ours['root']} (store {ours['store']}): "
            "give each root a --state of its own"
        )


@dataclass
class Components:
    """The object graph of the task services, each part built here and nowhere else."""

    bundles: Bundles
    shims: ShimManager
    connections: ShimConnections
    recorder: TaskRecorder
    shim_events: ShimEventRecorder
    adopter: BundleAdopter
    reconciler: Reconciler
    manager: TaskManager


def compose(
    *,
    namespace: str,
    config: ManagerConfig,
    binary: ShimBinary,
    store: TaskStore,
    view: TaskView,
    locks: TaskLocksPort,
    cause: Callable[[], Cause],
    cgroup_parent: str = "",
    bundles: Bundles | None = None,
    shims: ShimManager | None = None,
    connections: ShimConnections | None = None,
    recorder: TaskRecorder | None = None,
) -> Components:
    """Build TaskManager and what it stands on from the ports' implementations.

    Every part can be handed in instead (a test's fake, a shared instance), so the graph
    is visible here and nowhere else reaches into another part's private state.
    """
    bundles = bundles or Bundles(config.state, cgroup_parent)
    shims = shims or ShimManager(config, binary, bundles)
    connections = connections or ShimConnections(shims, bundles)
    recorder = recorder or TaskRecorder(store, locks, config.owner)
    shim_events = ShimEventRecorder(recorder, connections)
    adopter = BundleAdopter(shims, recorder, bundles)
    reconciler = Reconciler(
        shims=shims, connections=connections, recorder=recorder, bundles=bundles,
        adopter=adopter,
    )  # fmt: skip
    manager = TaskManager(
        namespace=namespace, shims=shims, bundles=bundles, connections=connections,
        recorder=recorder, shim_events=shim_events, reconciler=reconciler, adopter=adopter,
        store=store, view=view, cause=cause,
    )  # fmt: skip
    return Components(
        bundles, shims, connections, recorder, shim_events, adopter, reconciler, manager
    )


@dataclass
class Wiring:
    """Everything a long-running process needs: the manager, its shims, its views, the sink."""

    manager: TaskManager
    shims: ShimManager
    ledger: Ledger
    sink: EventSink
    components: Components


@asynccontextmanager
async def bootstrap(settings: Settings, *, serve_events: bool = True) -> AsyncIterator[TaskManager]:
    """Wire a TaskManager that serves the event sink while the command runs.

    ``serve_events=False`` leaves the sink to others (tests use it to miss events on purpose).
    On the way out, the state files view catches up, so each live task's state.json
    tells what the command did.
    """
    async with wire(settings, sink="serve" if serve_events else "refuse") as wiring:
        yield wiring.manager


@asynccontextmanager
async def wire(
    settings: Settings,
    *,
    sink: Literal["serve", "own", "refuse"] = "serve",
    stop: asyncio.Event | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> AsyncIterator[Wiring]:
    """The composition of every concrete class.

    ``sink``: "serve" serves the event sink unless another process does; "own" waits
    until no other process serves it (or ``stop`` is set), then serves it (``serve``),
    telling ``on_wait`` once why it waits; "refuse" leaves a socket that refuses shims'
    events.
    """
    require_root("running containers")
    state = StateDir(settings.state)
    sink_path = state.events_socket
    if len(str(sink_path).encode()) > MAX_SOCKET_PATH:
        raise InvalidArgumentError(
            f"state dir {settings.state} is too long: socket paths are limited to "
            f"{MAX_SOCKET_PATH} bytes"
        )
    try:
        settings.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot use {settings.state} as a directory: {exc}") from None
    bind_state_dir(state, settings)
    manager: TaskManager | None = None

    async def on_event(event: ShimEvent) -> None:
        """Record a shim's event. A store that is away is not a bug: the shim, told
        Unavailable, sends the event again (and keeps the exit meanwhile), and the command
        itself says the fault in its one line, so no traceback (debug says it too)."""
        if manager is None:
            return
        try:
            await manager.handle_event(event)
        except ShimledgerError:
            raise
        except Exception as exc:
            fault = environment_fault(exc, settings.root, settings.store)
            if fault is None:
                raise
            logger.debug("a shim's event is not recorded yet (it is sent again): %s", fault)
            raise UnavailableError(fault) from None

    events = EventSink(sink_path, on_event)
    config = ManagerConfig(
        state=state,
        ttrpc_address=events.address,
        runc_binary=shutil.which("runc", path=search_path()) or "",
        log_dir=settings.root / "logs",
        node=settings.node or default_node(),  # "" only from a caller that set none
        address=str(state.shim_address),
    )
    failing = False
    async with open_ledger(settings) as ledger:
        components = compose(
            namespace=settings.namespace,
            config=config,
            binary=ShimBinaryLauncher(
                config.address,
                shim_log=lambda b: settings.root / "logs" / b.namespace / b.id / "shim.log",
            ),
            store=ledger.store,
            view=ledger.task_states,
            locks=TaskLocks(state, settings.root),
            cause=lambda: cli_cause(config.node),
            cgroup_parent=cgroup_parent(settings),
        )
        manager, shims = components.manager, components.shims
        try:
            if sink == "refuse":
                await events.leave_refusing_socket()
            elif sink == "own":
                waiting = False
                while not await events.start():
                    if stop is not None and stop.is_set():
                        break  # asked to stop before the sink came free: never served
                    if not waiting and on_wait is not None:
                        on_wait(f"the event sink {sink_path} is served by a running command")
                    waiting = True
                    await asyncio.sleep(SINK_RETRY)  # a command serves it: it ends soon
            else:
                await events.start()
            yield Wiring(manager, shims, ledger, events, components)
        except BaseException:
            failing = True
            raise
        finally:
            await events.aclose()
            await manager.aclose()
            try:
                await ledger.state_files.catch_up()
            except (ShimledgerError, OSError) as exc:  # a cache: the next command catches up
                # A command that failed already says why in its one line; most often the
                # same fault (a full disk) is what stops the catch-up too.
                (logger.debug if failing else logger.warning)(
                    "state.json files not updated: %s", exc
                )

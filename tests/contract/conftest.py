"""What the contract tests run against: each port's fake and its real implementation.

``shims`` launches shims through the ShimBinary port, FakeShimBinary or the real
ShimBinaryLauncher (containerd-shim-runc-v2 with real runc on a busybox bundle, in the
``settings`` fixture's state dir, whose teardown fails the test if a shim, container or
cgroup is left). ``postgres_url`` is a PostgreSQL cluster of the session's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adapters.event_sink import EventSink
from adapters.shim_binary import ShimBinaryLauncher, search_path
from domain.errors import ShimledgerError
from domain.state_dir import StateDir
from domain.values import Bundle
from shim.lifecycle.bundle import Bundles, remove_bundle
from shim.lifecycle.process_spec import ProcessChanges, exec_process
from shim.ports import RuncOptions, ShimBinary, ShimClient, ShimEvent, Stdio
from tests.conftest import make_bundle
from tests.shim.fake_shim import shell_exit
from tests.shim.fakes import FakeShimBinary

RUNTIME = "io.containerd.runc.v2"
NAMESPACE = "test"
STEP = 30.0  # a guard on every wait for a process or an event, never a threshold


@dataclass
class Shim:
    """One shim serving one task, and how to reach it again."""

    kind: str
    client: ShimClient
    bundle: Bundle
    address: str
    options: RuncOptions
    heard: list[ShimEvent]
    gone: asyncio.Event  # set when the shim closes the connection (not when we do)
    binary: ShimBinary

    @property
    def id(self) -> str:
        return self.bundle.id

    def process(self, *args: str) -> bytes:
        """An exec's OCI process: the task's own, running ``args``."""
        return exec_process(self.bundle, ProcessChanges(args=list(args)))

    async def create(self) -> int:
        return await self.client.create(self.id, self.bundle.path, Stdio(), self.options)

    async def reconnect(self) -> ShimClient:
        return await self.binary.connect(self.bundle, self.address)

    async def events_heard(self, wanted: Counter[str]) -> Counter[str]:
        """The event types heard, once at least ``wanted`` arrived (the sink is asynchronous)."""
        async with asyncio.timeout(STEP):
            while not wanted <= (heard := Counter(type(e).__name__ for e in self.heard)):
                await asyncio.sleep(0.01)
        return heard


@dataclass
class Shims:
    """Launches shims of one kind; ``close`` removes every task and shim it launched."""

    kind: str
    binary: ShimBinary
    state: Path
    work: Path
    sink_address: str
    options: RuncOptions
    cgroup_parent: str
    heard: list[ShimEvent] = field(default_factory=list)
    launched: list[Shim] = field(default_factory=list)

    @property
    def bundles(self) -> Bundles:
        return Bundles(StateDir(self.state), self.cgroup_parent)

    def user_bundle(self, task_id: str, args: list[str]) -> Path:
        path = self.work / f"user-{task_id}"
        if self.kind == "real":
            return make_bundle(path, args)
        (path / "rootfs").mkdir(parents=True)
        process = {"args": args, "terminal": False, "cwd": "/"}
        spec = {"process": process, "root": {"path": "rootfs"}}
        (path / "config.json").write_text(json.dumps(spec))
        return path

    async def launch(self, *args: str, task_id: str = "c1") -> Shim:
        """Start a shim for ``task_id`` whose task will run ``args`` (not created yet)."""
        user = self.user_bundle(task_id, list(args))
        bundle = self.bundles.new(NAMESPACE, task_id, user)
        address = await self.binary.start(bundle, RUNTIME, self.sink_address)
        gone = asyncio.Event()
        client = await self.binary.connect(bundle, address, gone.set)
        heard = self.heard if self.kind == "real" else self._fake_events(bundle)
        shim = Shim(self.kind, client, bundle, address, self.options, heard, gone, self.binary)
        self.launched.append(shim)
        return shim

    def _fake_events(self, bundle: Bundle) -> list[ShimEvent]:
        assert isinstance(self.binary, FakeShimBinary)
        return self.binary.shims[bundle.path].events

    async def close(self) -> None:
        for shim in self.launched:
            await self._remove(shim)
        for shim in self.launched:  # as TaskManager's delete does, once the task is gone
            self.bundles.cgroups.release(NAMESPACE, shim.id)

    async def _remove(self, shim: Shim) -> None:
        """Kill, reap and delete every process; shut the shim down; remove the bundle."""
        client: ShimClient | None = shim.client
        try:
            if client.closed and not shim.gone.is_set():
                client = await shim.reconnect()  # the test closed its connection
        except ShimledgerError:
            client = None  # the shim is gone already
        if client is not None and not client.closed:
            with contextlib.suppress(ShimledgerError):
                await client.resume(shim.id)  # frozen processes die only once thawed
            with contextlib.suppress(ShimledgerError):
                await client.kill(shim.id, 9, all=True)
            with contextlib.suppress(ShimledgerError):
                async with asyncio.timeout(STEP):
                    await client.wait(shim.id)
            with contextlib.suppress(ShimledgerError):
                await client.delete(shim.id)
            with contextlib.suppress(ShimledgerError):
                await client.shutdown(shim.id)
            await client.aclose()
        if client is not shim.client:
            await shim.client.aclose()
        with contextlib.suppress(ShimledgerError, OSError):
            await self.binary.delete(shim.bundle, RUNTIME)  # what a dead shim left
        remove_bundle(shim.bundle)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real)])
async def shims(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shims]:
    """Shims of each kind: the fake, then the real containerd-shim-runc-v2."""
    if request.param == "fake":
        state = tmp_path / "state"
        state.mkdir()
        launcher = Shims("fake", FakeShimBinary(program=shell_exit), state, tmp_path,
                         "unix://fake-sink", RuncOptions(root=str(StateDir(state).runc_root)),
                         "")  # fmt: skip
        try:
            yield launcher
        finally:
            await launcher.close()
        return
    from cli.bootstrap import cgroup_parent

    settings = request.getfixturevalue("settings")  # real runtime; leftovers fail the test
    heard: list[ShimEvent] = []

    async def on_event(event: ShimEvent) -> None:
        heard.append(event)

    layout = StateDir(settings.state)
    sink = EventSink(layout.events_socket, on_event)
    assert await sink.start()
    runc = shutil.which("runc", path=search_path()) or ""
    launcher = Shims(
        "real",
        ShimBinaryLauncher(str(layout.shim_address)),
        settings.state,
        tmp_path,
        sink.address,
        RuncOptions(root=str(layout.runc_root), binary_name=runc),
        cgroup_parent(settings),
        heard=heard,
    )
    try:
        yield launcher
    finally:
        try:
            await launcher.close()
        finally:
            await sink.aclose()

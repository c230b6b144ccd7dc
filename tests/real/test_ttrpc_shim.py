"""Our ttrpc client against the real containerd-shim-runc-v2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.proto import task_pb2
from adapters.ttrpc.client import TtrpcClient
from domain.errors import NotFoundError, NotImplementedError_
from shim.lifecycle.task_manager import TaskManager


async def test_connect_returns_the_shim_pid_and_unknown_methods_are_unimplemented(
    manager: TaskManager, bundle: Callable[..., Path]
) -> None:
    await manager.create("peer", bundle("sleep", "300"))
    shim = await manager.shim("peer")
    address = (Path(shim.bundle.path) / "address").read_text()
    assert address.startswith("unix://")

    async with await TtrpcClient.connect(address) as client:
        reply = await client.call(
            "containerd.task.v2.Task", "Connect", task_pb2.ConnectRequest(id="peer"),
            task_pb2.ConnectResponse, timeout=5,
        )  # fmt: skip
        assert reply.shim_pid == shim.shim_pid
        assert reply.task_pid == (await manager.get("peer")).pid
        cmdline = Path(f"/proc/{reply.shim_pid}/cmdline").read_bytes()
        assert b"containerd-shim-runc-v2" in cmdline

        with pytest.raises(NotImplementedError_, match="method NoSuchMethod"):
            await client.call("containerd.task.v2.Task", "NoSuchMethod",
                              task_pb2.ConnectRequest(id="peer"), task_pb2.ConnectResponse,
                              timeout=5)  # fmt: skip
        with pytest.raises(NotFoundError):
            await client.call("containerd.task.v2.Task", "State",
                              task_pb2.StateRequest(id="not-here"), task_pb2.StateResponse,
                              timeout=5)  # fmt: skip
    await manager.delete("peer")

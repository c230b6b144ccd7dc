"""The shim's Task service (containerd.task.v2.Task) as domain-typed calls over ttrpc.

Protobuf stays in here: callers get pids, Exits and ProcessStates.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from adapters.proto import runc_options_pb2, task_pb2, task_types_pb2
from adapters.shim_log import ShimLog
from adapters.ttrpc.client import TtrpcClient
from domain.values import Exit, Status
from shim.ports import ProcessState, RuncOptions, Stdio

SERVICE = "containerd.task.v2.Task"
NAMESPACE_HEADER = "containerd-namespace-ttrpc"
CALL_TIMEOUT = 30.0  # a client-side deadline on every call but Wait
GO_ZERO_TIME_SECONDS = -62135596800  # "not exited" (shim-protocol.md 0.6)

M = TypeVar("M", bound=Message)
# The shim does not check it; containerd sends this one (shim-protocol.md 3.4).
OCI_PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"

_STATUS = {
    task_types_pb2.CREATED: Status.CREATED,
    task_types_pb2.RUNNING: Status.RUNNING,
    task_types_pb2.STOPPED: Status.STOPPED,
    task_types_pb2.PAUSED: Status.PAUSED,
    task_types_pb2.PAUSING: Status.PAUSING,
}


def exited_at(ts: object) -> datetime | None:
    seconds = int(getattr(ts, "seconds", 0))
    if seconds == GO_ZERO_TIME_SECONDS:
        return None
    return datetime.fromtimestamp(seconds + getattr(ts, "nanos", 0) / 1e9, tz=UTC)


def _exit(status: int, ts: object) -> Exit:
    return Exit(status=status, exited_at=exited_at(ts) or datetime.now(UTC))


def runc_options_any(options: RuncOptions) -> AnyProto:
    """runc options as the shim expects them: a bare type URL, not type.googleapis.com/."""
    value = runc_options_pb2.Options(root=options.root, binary_name=options.binary_name)
    return AnyProto(type_url="containerd.runc.v1.Options", value=value.SerializeToString())


class ShimTaskClient:
    """Implements shim.ports.ShimClient on one ttrpc connection to one shim."""

    def __init__(self, client: TtrpcClient, namespace: str, log: ShimLog | None = None) -> None:
        self._client = client
        self._metadata = {NAMESPACE_HEADER: namespace}
        self._log = log

    def __repr__(self) -> str:
        return f"<ShimTaskClient {self._client!r}>"

    async def _call(
        self, method: str, request: Message, response_type: type[M], timeout: float | None
    ) -> M:
        return await self._client.call(
            SERVICE, method, request, response_type, timeout=timeout, metadata=self._metadata
        )

    async def connect(self, task_id: str) -> int:
        reply = await self._call(
            "Connect", task_pb2.ConnectRequest(id=task_id), task_pb2.ConnectResponse, CALL_TIMEOUT
        )
        return reply.shim_pid

    async def create(self, task_id: str, bundle: str, stdio: Stdio, options: RuncOptions) -> int:
        request = task_pb2.CreateTaskRequest(
            id=task_id,
            bundle=bundle,
            terminal=False,
            stdin=stdio.stdin,
            stdout=stdio.stdout,
            stderr=stdio.stderr,
            options=runc_options_any(options),
        )
        reply = await self._call("Create", request, task_pb2.CreateTaskResponse, CALL_TIMEOUT)
        return reply.pid

    async def exec(self, task_id: str, exec_id: str, process_json: bytes, stdio: Stdio) -> None:
        """Register an extra process in the task; it runs once started."""
        request = task_pb2.ExecProcessRequest(
            id=task_id,
            exec_id=exec_id,
            terminal=False,
            stdin=stdio.stdin,
            stdout=stdio.stdout,
            stderr=stdio.stderr,
            spec=AnyProto(type_url=OCI_PROCESS_TYPE_URL, value=process_json),
        )
        await self._call("Exec", request, Empty, CALL_TIMEOUT)

    async def start(self, task_id: str, exec_id: str = "") -> int:
        request = task_pb2.StartRequest(id=task_id, exec_id=exec_id)
        reply = await self._call("Start", request, task_pb2.StartResponse, CALL_TIMEOUT)
        return reply.pid

    async def state(self, task_id: str) -> ProcessState:
        reply = await self._call(
            "State", task_pb2.StateRequest(id=task_id), task_pb2.StateResponse, CALL_TIMEOUT
        )
        return ProcessState(
            pid=reply.pid,
            status=_STATUS.get(reply.status, Status.UNKNOWN),
            exit_status=reply.exit_status,
            exited_at=exited_at(reply.exited_at),
        )

    async def wait(self, task_id: str, exec_id: str = "") -> Exit:
        # No deadline: Wait blocks until the process exits, by design.
        request = task_pb2.WaitRequest(id=task_id, exec_id=exec_id)
        reply = await self._call("Wait", request, task_pb2.WaitResponse, None)
        return _exit(reply.exit_status, reply.exited_at)

    async def kill(self, task_id: str, signal: int, all: bool = False) -> None:
        request = task_pb2.KillRequest(id=task_id, signal=signal, all=all)
        await self._call("Kill", request, Empty, CALL_TIMEOUT)

    async def delete(self, task_id: str, exec_id: str = "") -> Exit:
        request = task_pb2.DeleteRequest(id=task_id, exec_id=exec_id)
        reply = await self._call("Delete", request, task_pb2.DeleteResponse, CALL_TIMEOUT)
        return _exit(reply.exit_status, reply.exited_at)

    async def pids(self, task_id: str) -> list[tuple[int, str]]:
        """Every process in the task, with the exec it belongs to ("" for the init's)."""
        reply = await self._call(
            "Pids", task_pb2.PidsRequest(id=task_id), task_pb2.PidsResponse, CALL_TIMEOUT
        )
        processes = []
        for info in reply.processes:
            exec_id = ""
            if info.info.type_url.endswith("containerd.runc.v1.ProcessDetails"):
                exec_id = runc_options_pb2.ProcessDetails.FromString(info.info.value).exec_id
            processes.append((info.pid, exec_id))
        return processes

    async def pause(self, task_id: str) -> None:
        await self._call("Pause", task_pb2.PauseRequest(id=task_id), Empty, CALL_TIMEOUT)

    async def resume(self, task_id: str) -> None:
        await self._call("Resume", task_pb2.ResumeRequest(id=task_id), Empty, CALL_TIMEOUT)

    async def shutdown(self, task_id: str) -> None:
        await self._call(
            "Shutdown", task_pb2.ShutdownRequest(id=task_id), Empty, CALL_TIMEOUT
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._log is not None:
            self._log.close()
            self._log = None

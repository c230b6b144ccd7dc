"""The shim's Task service (containerd.task.v2.Task) as domain-typed calls over ttrpc.

Protobuf stays in here: callers get pids, Exits and ProcessStates.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.proto import (
    cgroups_v1_metrics_pb2,
    cgroups_v2_metrics_pb2,
    runc_options_pb2,
    task_pb2,
    task_types_pb2,
)
from adapters.shim_log import ShimLog
from adapters.ttrpc.client import ClientState, TtrpcClient
from adapters.ttrpc.metadata import NAMESPACE_HEADER
from domain.errors import NotImplementedError_
from domain.values import Exit, Status
from shim.ports import ProcessState, RuncOptions, Stdio, TaskStats

SERVICE = "containerd.task.v2.Task"
CALL_TIMEOUT = 30.0  # a client-side deadline on every call but Wait
CHECKPOINT_TIMEOUT = 300.0  # CRIU writes the whole memory of the task
GO_ZERO_TIME_SECONDS = -62135596800  # "not exited" (shim-protocol.md 0.6)

M = TypeVar("M", bound=Message)
# The shim does not check it; containerd sends this one (shim-protocol.md 3.4).
OCI_PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
OCI_RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
CHECKPOINT_OPTIONS_TYPE_URL = "containerd.runc.v1.CheckpointOptions"
CGROUPS_V1_METRICS = "io.containerd.cgroups.v1.Metrics"
CGROUPS_V2_METRICS = "io.containerd.cgroups.v2.Metrics"

_STATUS = {
    task_types_pb2.CREATED: Status.CREATED,
    task_types_pb2.RUNNING: Status.RUNNING,
    task_types_pb2.STOPPED: Status.STOPPED,
    task_types_pb2.PAUSED: Status.PAUSED,
    task_types_pb2.PAUSING: Status.PAUSING,
}


def exited_at(ts: Timestamp) -> datetime | None:
    """A shim's exit time, or None for Go's zero time (the process has not exited)."""
    if ts.seconds == GO_ZERO_TIME_SECONDS:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


def _exit(status: int, ts: Timestamp) -> Exit:
    return Exit(status=status, exited_at=exited_at(ts) or datetime.now(UTC))


def runc_options_any(options: RuncOptions) -> AnyProto:
    """runc options as the shim expects them: a bare type URL, not type.googleapis.com/."""
    value = runc_options_pb2.Options(root=options.root, binary_name=options.binary_name)
    return AnyProto(type_url="containerd.runc.v1.Options", value=value.SerializeToString())


def decode_stats(stats: AnyProto) -> TaskStats:
    """cgroup v1 or v2 metrics, as the shim packs them, in one shape."""
    if stats.type_url == CGROUPS_V1_METRICS:
        v1 = cgroups_v1_metrics_pb2.Metrics.FromString(stats.value)
        return TaskStats(
            pids_current=v1.pids.current,
            pids_limit=v1.pids.limit,
            cpu_usage_ns=v1.cpu.usage.total,
            cpu_user_ns=v1.cpu.usage.user,
            cpu_kernel_ns=v1.cpu.usage.kernel,
            memory_usage_bytes=v1.memory.usage.usage,
            memory_limit_bytes=v1.memory.usage.limit,
            memory_max_usage_bytes=v1.memory.usage.max,
            oom_kills=v1.memory_oom_control.oom_kill,
            cgroup_version=1,
        )
    if stats.type_url == CGROUPS_V2_METRICS:
        v2 = cgroups_v2_metrics_pb2.Metrics.FromString(stats.value)
        return TaskStats(
            pids_current=v2.pids.current,
            pids_limit=v2.pids.limit,
            cpu_usage_ns=v2.cpu.usage_usec * 1000,
            cpu_user_ns=v2.cpu.user_usec * 1000,
            cpu_kernel_ns=v2.cpu.system_usec * 1000,
            memory_usage_bytes=v2.memory.usage,
            memory_limit_bytes=v2.memory.usage_limit,
            memory_max_usage_bytes=v2.memory.max_usage,
            oom_kills=v2.memory_events.oom_kill,
            cgroup_version=2,
        )
    raise NotImplementedError_(f"stats of type {stats.type_url or '(none)'} are not understood")


class ShimTaskClient:
    """Implements shim.ports.ShimClient on one ttrpc connection to one shim."""

    def __init__(self, client: TtrpcClient, namespace: str, log: ShimLog | None = None) -> None:
        self._client = client
        self._metadata = {NAMESPACE_HEADER: namespace}
        self._log = log

    def __repr__(self) -> str:
        return f"<ShimTaskClient {self._client!r}>"

    @property
    def closed(self) -> bool:
        """The connection is gone (the shim exited or died): reconnect, do not reuse."""
        return self._client.state is not ClientState.OPEN

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
            terminal=stdio.terminal,
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
            terminal=stdio.terminal,
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

    async def state(self, task_id: str, exec_id: str = "") -> ProcessState:
        request = task_pb2.StateRequest(id=task_id, exec_id=exec_id)
        reply = await self._call("State", request, task_pb2.StateResponse, CALL_TIMEOUT)
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

    async def kill(self, task_id: str, signal: int, all: bool = False, exec_id: str = "") -> None:
        request = task_pb2.KillRequest(id=task_id, exec_id=exec_id, signal=signal, all=all)
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

    async def close_io(self, task_id: str, exec_id: str = "") -> None:
        """Close the process's stdin, so that it reads EOF."""
        request = task_pb2.CloseIORequest(id=task_id, exec_id=exec_id, stdin=True)
        await self._call("CloseIO", request, Empty, CALL_TIMEOUT)

    async def resize_pty(self, task_id: str, width: int, height: int, exec_id: str = "") -> None:
        request = task_pb2.ResizePtyRequest(id=task_id, exec_id=exec_id, width=width, height=height)
        await self._call("ResizePty", request, Empty, CALL_TIMEOUT)

    async def update(self, task_id: str, resources: dict[str, Any]) -> None:
        """New cgroup limits: ``resources`` is an OCI LinuxResources object (JSON-able)."""
        payload = json.dumps(resources).encode()
        request = task_pb2.UpdateTaskRequest(
            id=task_id, resources=AnyProto(type_url=OCI_RESOURCES_TYPE_URL, value=payload)
        )
        await self._call("Update", request, Empty, CALL_TIMEOUT)

    async def stats(self, task_id: str) -> TaskStats:
        reply = await self._call(
            "Stats", task_pb2.StatsRequest(id=task_id), task_pb2.StatsResponse, CALL_TIMEOUT
        )
        return decode_stats(reply.stats)

    async def checkpoint(
        self, task_id: str, image_path: str, *, exit: bool, work_path: str = ""
    ) -> None:
        """CRIU dumps the task into ``image_path`` (runc checkpoint); ``exit`` stops it after."""
        options = runc_options_pb2.CheckpointOptions(
            exit=exit, image_path=image_path, work_path=work_path
        )
        request = task_pb2.CheckpointTaskRequest(
            id=task_id,
            path=image_path,
            options=AnyProto(
                type_url=CHECKPOINT_OPTIONS_TYPE_URL, value=options.SerializeToString()
            ),
        )
        await self._call("Checkpoint", request, Empty, CHECKPOINT_TIMEOUT)

    async def shutdown(self, task_id: str) -> None:
        await self._call("Shutdown", task_pb2.ShutdownRequest(id=task_id), Empty, CALL_TIMEOUT)

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._log is not None:
            self._log.close()
            self._log = None

"""The event sink: decoding shim events, and one server per socket among racing processes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.event_sink import EventSink, decode_event
from adapters.proto import events_pb2, forward_pb2
from adapters.ttrpc.client import TtrpcClient
from domain.errors import InvalidArgumentError
from shim.ports import (
    ShimEvent,
    TaskCheckpointedEvent,
    TaskCreateEvent,
    TaskDeleteEvent,
    TaskExecAddedEvent,
    TaskExecStartedEvent,
    TaskExitEvent,
    TaskOOMEvent,
    TaskPausedEvent,
    TaskResumedEvent,
    TaskStartEvent,
)

ROOT = Path(__file__).resolve().parents[2]


def envelope(type_url: str, message: object) -> forward_pb2.Envelope:
    value = message.SerializeToString()  # type: ignore[attr-defined]
    return forward_pb2.Envelope(namespace="ns", topic="/tasks/x",
                                event=AnyProto(type_url=type_url, value=value))  # fmt: skip


def test_exit_and_start_events_decode_to_domain_records() -> None:
    exited = events_pb2.TaskExit(container_id="c", id="c", pid=42, exit_status=7,
                                 exited_at=Timestamp(seconds=1_700_000_000))  # fmt: skip
    assert decode_event(envelope("containerd.events.TaskExit", exited)) == TaskExitEvent(
        namespace="ns", container_id="c", exec_id="c", pid=42, exit_status=7,
        exited_at=datetime.fromtimestamp(1_700_000_000, tz=UTC))  # fmt: skip
    started = events_pb2.TaskStart(container_id="c", pid=42)
    assert decode_event(envelope("containerd.events.TaskStart", started)) == TaskStartEvent(
        namespace="ns", container_id="c", pid=42)  # fmt: skip
    unrelated = events_pb2.TaskPaused(container_id="c")
    assert decode_event(envelope("containerd.events.ImageCreate", unrelated)) is None


@pytest.mark.parametrize(
    ("type_url", "payload", "expected"),
    [
        ("containerd.events.TaskCreate", events_pb2.TaskCreate(container_id="c", pid=42),
         TaskCreateEvent("ns", "c", 42)),
        ("containerd.events.TaskDelete",
         events_pb2.TaskDelete(container_id="c", pid=42, exit_status=3, id="c",
                               exited_at=Timestamp(seconds=1_700_000_000)),
         TaskDeleteEvent("ns", "c", "", 42, 3, datetime.fromtimestamp(1_700_000_000, tz=UTC))),
        ("containerd.events.TaskDelete",
         events_pb2.TaskDelete(container_id="c", pid=43, id="e1",
                               exited_at=Timestamp(seconds=-62135596800)),
         TaskDeleteEvent("ns", "c", "e1", 43, 0, None)),
        ("containerd.events.TaskExecAdded",
         events_pb2.TaskExecAdded(container_id="c", exec_id="e1"),
         TaskExecAddedEvent("ns", "c", "e1")),
        ("containerd.events.TaskExecStarted",
         events_pb2.TaskExecStarted(container_id="c", exec_id="e1", pid=43),
         TaskExecStartedEvent("ns", "c", "e1", 43)),
        ("containerd.events.TaskPaused", events_pb2.TaskPaused(container_id="c"),
         TaskPausedEvent("ns", "c")),
        ("containerd.events.TaskResumed", events_pb2.TaskResumed(container_id="c"),
         TaskResumedEvent("ns", "c")),
        ("containerd.events.TaskOOM", events_pb2.TaskOOM(container_id="c"),
         TaskOOMEvent("ns", "c")),
        ("containerd.events.TaskCheckpointed",
         events_pb2.TaskCheckpointed(container_id="c", checkpoint="/img"),
         TaskCheckpointedEvent("ns", "c", "/img")),
    ],
)  # fmt: skip
def test_every_task_topic_decodes_to_a_domain_record(
    type_url: str, payload: object, expected: ShimEvent
) -> None:
    assert decode_event(envelope(type_url, payload)) == expected


def test_an_undecodable_payload_is_an_invalid_argument() -> None:
    bad = forward_pb2.Envelope(
        namespace="ns", event=AnyProto(type_url="containerd.events.TaskExit", value=b"\xff\xff")
    )
    with pytest.raises(InvalidArgumentError, match="undecodable"):
        decode_event(bad)


async def test_a_forwarded_event_reaches_the_handler(tmp_path: Path) -> None:
    received: list[ShimEvent] = []

    async def on_event(event: ShimEvent) -> None:
        received.append(event)

    sink = EventSink(tmp_path / "events.sock", on_event)
    assert await sink.start()
    try:
        async with await TtrpcClient.connect(sink.address) as client:
            request = forward_pb2.ForwardRequest(envelope=envelope(
                "containerd.events.TaskStart", events_pb2.TaskStart(container_id="c", pid=9)))
            await client.call("containerd.services.events.ttrpc.v1.Events", "Forward",
                              request, Empty, timeout=5)  # fmt: skip
    finally:
        await sink.aclose()
    # The sender is the connection's peer (this process): the recorder checks it.
    assert received == [TaskStartEvent(namespace="ns", container_id="c", pid=9,
                                       sender=os.getpid())]  # fmt: skip


def refuses(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return True
    return False


@pytest.mark.parametrize("placeholder_first", [False, True])
def test_racing_processes_serve_the_socket_exactly_once(
    tmp_path: Path, placeholder_first: bool
) -> None:
    path = tmp_path / "events.sock"
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from adapters.event_sink import EventSink
        async def main():
            async def ignore(event): pass
            sink = EventSink(Path({str(path)!r}), ignore)
            serving = await sink.start()
            print(serving, flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # until every racer has answered
            await sink.aclose()
        asyncio.run(main())
    """)
    if placeholder_first:
        asyncio.run(EventSink(path, None).leave_refusing_socket())  # type: ignore[arg-type]
        assert refuses(path)
    processes = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]  # fmt: skip
    # Every process says whether it serves while all of them still hold on: a barrier, so
    # a slow starter cannot find the socket free because the winner already left.
    answers = [p.stdout.readline().strip() for p in processes]  # type: ignore[union-attr]
    results = [p.communicate("\n", timeout=30) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in results]
    assert sorted(answers) == ["False"] * 5 + ["True"]
    assert refuses(path), "with nobody serving, the path must refuse (shims then fail fast)"


def test_an_exit_with_go_zero_time_is_taken_as_now() -> None:
    """The shim reports a created task killed before it started with Go's zero time."""
    zero = Timestamp(seconds=-62135596800)
    exited = events_pb2.TaskExit(container_id="c", id="c", pid=42, exit_status=137,
                                 exited_at=zero)  # fmt: skip
    before = datetime.now(UTC)
    event = decode_event(envelope("containerd.events.TaskExit", exited))
    assert isinstance(event, TaskExitEvent) and event.exit_status == 137
    assert before <= event.exited_at <= datetime.now(UTC)

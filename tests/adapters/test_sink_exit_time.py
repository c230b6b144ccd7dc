"""An exit event that does not say when: taken as heard now, never as the epoch."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.any_pb2 import Any as AnyProto

from adapters.event_sink import decode_event
from adapters.proto import events_pb2, forward_pb2
from shim.ports import TaskExitEvent


def test_an_exit_without_exited_at_gets_the_time_it_was_heard() -> None:
    exited = events_pb2.TaskExit(container_id="c", id="c", pid=42, exit_status=42)
    envelope = forward_pb2.Envelope(namespace="ns", topic="/tasks/exit", event=AnyProto(
        type_url="containerd.events.TaskExit", value=exited.SerializeToString()))  # fmt: skip
    before = datetime.now(UTC)
    event = decode_event(envelope)
    assert isinstance(event, TaskExitEvent)
    assert before <= event.exited_at <= datetime.now(UTC)  # not 1970-01-01

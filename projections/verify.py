"""Each view against a fresh replay of the history: the proof that the caches tell the truth."""

from __future__ import annotations

import json
from typing import Any

from projections.event_index import EventFilter, EventIndex
from projections.records import TaskKey, event_record, opened_key
from projections.state_files import StateFiles, state_of
from projections.task_states import TaskStatesView, key_of, replay
from projections.view import EventSource

PAGE = 10_000


async def _events_until(source: EventSource, stop: int) -> list[tuple[int, Any]]:
    events: list[tuple[int, Any]] = []
    while not events or events[-1][0] < stop:
        page = await source.read(events[-1][0] if events else 0, PAGE)
        events.extend((n, e) for n, e in page if n <= stop)
        if not page or page[-1][0] >= stop:
            break
    return events


async def verify_task_states(source: EventSource, view: TaskStatesView) -> list[str]:
    stop = await view.catch_up()
    expected = replay(e for _, e in await _events_until(source, stop))
    actual = {key_of(s): s for s in await view.tasks()}
    problems = []
    for key in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(key), actual.get(key)
        if want != have:
            namespace, task_id, node, _ = key
            problems.append(
                f"{namespace}/{task_id} (node {node or '?'}): view has {have!r}, "
                f"replay gives {want!r}"
            )
    return problems


async def verify_event_index(source: EventSource, index: EventIndex) -> list[str]:
    stop = await index.catch_up()
    keys: dict[Any, TaskKey] = {}
    expected = {}
    for position, event in await _events_until(source, stop):
        if (key := opened_key(event)) is not None:
            keys[event.originator_id] = key
        if event.originator_id not in keys:
            continue  # not a task's (the ledger's signed heads): the index leaves it out too
        record = event_record(event, keys[event.originator_id], position)
        expected[position] = record.model_dump(mode="json")
    actual = {
        r.position: r.model_dump(mode="json")
        for r in await index.query(EventFilter())
        if r.position is not None  # always set in the index: it is the row's key
    }
    problems = []
    for position in sorted(expected.keys() | actual.keys()):
        if expected.get(position) != actual.get(position):
            problems.append(
                f"position {position}: index has {actual.get(position)}, "
                f"replay gives {expected.get(position)}"
            )
    return problems


async def verify_state_files(source: EventSource, files: StateFiles) -> list[str]:
    """Every live task of the view's owner whose working bundle exists has a state.json
    saying what replay says (another node's task has its file on that node)."""
    stop = await files.catch_up()
    problems = []
    for (namespace, task_id, node, state_dir), want in replay(
        e for _, e in await _events_until(source, stop)
    ).items():
        if not files.owner.owns(node, state_dir):
            continue
        path = files.file_of(namespace, task_id)
        if not path.parent.is_dir():
            continue  # no working bundle (a reboot cleared the state dir): no file expected
        try:
            have = state_of(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{path}: unreadable ({exc})")
            continue
        if have != want:
            problems.append(f"{path}: file has {have!r}, replay gives {want!r}")
    return problems


async def verify_views(
    source: EventSource,
    task_states: TaskStatesView,
    event_index: EventIndex,
    state_files: StateFiles | None = None,
) -> dict[str, list[str]]:
    results = {
        task_states.name: await verify_task_states(source, task_states),
        event_index.name: await verify_event_index(source, event_index),
    }
    if state_files is not None:
        results[state_files.name] = await verify_state_files(source, state_files)
    return results

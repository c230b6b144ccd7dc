"""`--filter key=value`, read as docker and podman read it.

Giving one key several times accepts any of its values; giving several keys asks for all
of them (``--filter id=a --filter id=b --filter type=Exited``: the exits of a or b). Each
command names the keys it takes; an unknown key, an event type no event has or an exit code
that is no number is one error line, given before the root is opened.

Filters work on what the command prints as JSON (an event record, a `list` entry), so a
filter can never disagree with what is shown.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.errors import InvalidArgumentError

# The keys every command knows, with what each means; a command takes a subset.
KEYS = {
    "id": "the task ID",
    "namespace": "the task's namespace",
    "type": "the event type (Exited, exited or exec-added: any case, any separator)",
    "event": "the same as type",
    "exit-code": "the exit status (of an Exited or ExecExited event; of a task)",
    "status": "the task's status (created, running, paused, stopped)",
    "label": "an annotation of the task's config: label=KEY or label=KEY=VALUE",
}
EVENT_KEYS = ("id", "namespace", "type", "event", "exit-code")
TASK_KEYS = ("id", "namespace", "status", "exit-code", "label")

_SEPARATORS = re.compile(r"[-_ ]")


def _squashed(name: str) -> str:
    return _SEPARATORS.sub("", name).lower()


def _event_types() -> dict[str, str]:
    from domain.events import EVENT_TYPES  # the domain's catalogue, not a copy of it

    return {_squashed(cls.__name__): cls.__name__ for cls in EVENT_TYPES}


@dataclass(frozen=True)
class Filters:
    """The accepted values per key; no key at all accepts everything."""

    accepted: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.accepted)

    def only(self, key: str) -> str | None:
        """The one value of ``key`` if exactly one was given: a query can narrow by it."""
        values = self.accepted.get(key, frozenset())
        return next(iter(values)) if len(values) == 1 else None

    def matches(self, item: Mapping[str, Any]) -> bool:
        """Whether an item (an event record's or a `list` entry's JSON form) is one the
        filters ask for."""
        return all(self._holds(key, values, item) for key, values in self.accepted.items())

    def incarnations(self, records: Iterable[Mapping[str, Any]]) -> set[tuple[Any, ...]]:
        """The incarnations (node, namespace, id, incarnation) with an event that matches
        every filter: `audit` keeps all of their events, so that their lives stay whole."""
        return {_life(r) for r in records if self.matches(r)}

    @staticmethod
    def _holds(key: str, values: frozenset[str], item: Mapping[str, Any]) -> bool:
        if key == "exit-code":
            return str(item.get("exit_status")) in values
        if key == "label":
            annotations = item.get("annotations") or {}
            return any(_label_holds(v, annotations) for v in values)
        return str(item.get(key)) in values


def _life(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (record.get("node", ""), record["namespace"], record["id"], record["incarnation"])


def _label_holds(value: str, annotations: Mapping[str, str]) -> bool:
    name, equals, wanted = value.partition("=")
    return name in annotations and (not equals or annotations[name] == wanted)


def parse_filters(texts: Iterable[str] | None, keys: Collection[str]) -> Filters:
    """``--filter`` values as given; ``keys`` are those this command takes."""
    accepted: dict[str, set[str]] = {}
    for text in texts or ():
        key, equals, value = text.partition("=")
        key = key.strip().lower()
        if not equals or not value:
            raise InvalidArgumentError(f"--filter {text!r}: give KEY=VALUE, as in id=web")
        if key not in keys:
            why = ("events carry no labels (list --filter label=KEY reads a task's annotations)"
                   if key == "label" else f"unknown key {key!r}")  # fmt: skip
            raise InvalidArgumentError(f"--filter {text!r}: {why}; use one of {', '.join(keys)}")
        if key == "event":
            key = "type"
        accepted.setdefault(key, set()).add(_checked(key, value, text))
    return Filters({k: frozenset(v) for k, v in accepted.items()})


def _checked(key: str, value: str, text: str) -> str:
    """The value as records hold it: an event type by its class name, a number as digits."""
    if key == "type":
        name = _event_types().get(_squashed(value))
        if name is None:
            known = ", ".join(_event_types().values())
            raise InvalidArgumentError(f"--filter {text!r}: no event is of type {value!r}; "
                                       f"the types are {known}")  # fmt: skip
        return name
    if key == "exit-code":
        try:
            return str(int(value))
        except ValueError:
            raise InvalidArgumentError(f"--filter {text!r}: an exit code is a number") from None
    if key == "label" and value.startswith("="):
        raise InvalidArgumentError(f"--filter {text!r}: give label=KEY or label=KEY=VALUE")
    return value

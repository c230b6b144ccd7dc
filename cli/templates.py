"""`--format` templates: the part of Go's text/template that docker users type.

``{{.ID}} {{.Type}}``, ``{{json .}}``, ``{{json .Cause}}``, ``{{upper .Status}}``, and
``table {{.ID}}\\t{{.Status}}`` (a header from the field names, columns aligned as docker's
tabwriter aligns them). A field is found by its name in any case and without separators
(``.ExitStatus`` and ``.exit_status`` are the same), with docker's ``.Time`` for the
timestamp. A field the item does not have prints ``<no value>``, as Go prints a missing map
key; a field no item of the command ever has, a function that is not here, or a template
that does not parse is one error line before anything is read.

Written here rather than taken from a library: the subset is small, and a full template
engine would add start-up time to every command for the few lines that use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from domain.errors import InvalidArgumentError

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_FIELD = re.compile(r"^(\.[A-Za-z_][A-Za-z0-9_]*)+$|^\.$")
_ALIASES = {"time": "timestamp", "exitcode": "exitstatus"}
NO_VALUE = "<no value>"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _text(value: Any) -> str:
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return _json(value)
    return str(value)


_FUNCTIONS: dict[str, Callable[[Any], str]] = {
    "json": _json,
    "upper": lambda v: _text(v).upper(),
    "lower": lambda v: _text(v).lower(),
}


def _squashed(name: str) -> str:
    squashed = name.replace("_", "").replace("-", "").lower()
    return _ALIASES.get(squashed, squashed)


def _lookup(item: Any, path: Sequence[str]) -> Any:
    for segment in path:
        if not isinstance(item, Mapping):
            return None
        wanted = _squashed(segment)
        item = next((v for k, v in item.items() if _squashed(k) == wanted), None)
        if item is None:
            return None
    return item


@dataclass(frozen=True)
class _Action:
    function: str | None
    path: tuple[str, ...]  # () is the item itself: `.`

    def render(self, item: Mapping[str, Any]) -> str:
        value = _lookup(item, self.path)
        if self.function is None:
            return _text(value)
        return _FUNCTIONS[self.function](value)

    @property
    def heading(self) -> str:
        """The column's name in a table: the field's, as docker heads its columns."""
        if not self.path:
            return self.function.upper() if self.function else "ITEM"
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", self.path[-1]).upper().replace("_", " ")


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text between actions, and whether it is a table."""

    parts: tuple[str | _Action, ...]
    table: bool

    def render(self, items: Sequence[Mapping[str, Any]]) -> str:
        """Every item's line; a table has its header first and aligned columns."""
        lines = ["".join(p if isinstance(p, str) else p.render(i) for p in self.parts)
                 for i in items]  # fmt: skip
        if not self.table:
            return "\n".join(lines)
        header = "".join(p if isinstance(p, str) else p.heading for p in self.parts)
        return _aligned([header, *lines])


def _aligned(lines: list[str]) -> str:
    """Tab-separated cells padded to their column's widest, three spaces apart (as
    docker's tabwriter: minwidth 20 is docker's too, for every column but the last)."""
    rows = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for row in rows:
        for column, cell in enumerate(row[:-1]):
            widths[column] = max(widths.get(column, 20), len(cell) + 3)
    return "\n".join(
        "".join(c.ljust(widths[n]) if n < len(row) - 1 else c for n, c in enumerate(row))
        for row in rows
    )


def parse_template(text: str, known: Collection[str]) -> Template:
    """A `--format` value that is a template; ``known`` are the fields the items may have."""
    table = text.startswith("table ") or text == "table"
    body = text[len("table"):].lstrip(" ") if table else text
    body = body.replace("\\t", "\t").replace("\\n", "\n")
    parts: list[str | _Action] = []
    end = 0
    for match in _ACTION.finditer(body):
        parts.append(body[end:match.start()])
        parts.append(_action(match.group(1), text, known))
        end = match.end()
    rest = body[end:]
    if "{{" in rest or "}}" in rest:
        raise InvalidArgumentError(f"--format {text!r}: an action is not closed with }}}}")
    parts.append(rest)
    if not any(isinstance(p, _Action) for p in parts):
        raise InvalidArgumentError(f"--format {text!r}: no {{{{.Field}}}} in the template")
    return Template(tuple(p for p in parts if p != ""), table)


def _action(source: str, text: str, known: Collection[str]) -> _Action:
    words = source.split()
    function = None
    if len(words) == 2:
        function, words = words[0], words[1:]
        if function not in _FUNCTIONS:
            raise InvalidArgumentError(f"--format {text!r}: no function {function!r}; the "
                                       f"functions are {', '.join(_FUNCTIONS)}")  # fmt: skip
    if len(words) != 1 or not _FIELD.match(words[0]):
        raise InvalidArgumentError(
            f"--format {text!r}: {{{{{source}}}}} is not a field (.ID) or a function of one "
            f"({', '.join(f'{name} .Field' for name in _FUNCTIONS)})"
        )
    path = tuple(s for s in words[0].split(".") if s)
    if path and _squashed(path[0]) not in {_squashed(k) for k in known}:
        raise InvalidArgumentError(f"--format {text!r}: no field .{path[0]}; the fields are "
                                   f"{', '.join(sorted(known))}")  # fmt: skip
    return _Action(function, path)

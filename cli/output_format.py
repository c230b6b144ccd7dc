"""What a `--format` value asks for: one of the command's words (table, json, ...) or a
Go template (cli/templates.py). Parsed before the root is opened, so a bad one costs nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cache

from cli.templates import Template, parse_template
from domain.errors import InvalidArgumentError


@dataclass(frozen=True)
class OutputFormat:
    word: str | None  # None: a template
    template: Template | None = None


def output_format(
    text: str | None,
    *,
    words: Iterable[str],
    default: str,
    known: Collection[str],
    as_json: bool = False,
) -> OutputFormat:
    """``text`` as given to --format (None: not given); ``known``: the items' fields;
    ``as_json``: --json was given too, which only --format json agrees with."""
    words = tuple(words)
    if as_json and text not in (None, "json"):
        raise InvalidArgumentError("give --json or --format, not both")
    if text is None:
        return OutputFormat("json" if as_json else default)
    if text in words:
        return OutputFormat(text)
    if "{{" in text or "}}" in text or text.startswith("table "):
        return OutputFormat(None, parse_template(text, known))
    raise InvalidArgumentError(
        f"unknown --format {text!r}: use {', '.join(words)} or a Go template such as "
        "'{{.ID}} {{.Type}}'"
    )


@cache
def event_fields() -> frozenset[str]:
    """Every field an event record may have: the envelope and each event class's own."""
    from domain.events import EVENT_TYPES
    from projections.records import EventRecord

    own = {name for cls in EVENT_TYPES for name in vars(cls).get("__annotations__", {})}
    return frozenset(EventRecord.model_fields) | own - {"task_id"}  # a record's is ``id``


@cache
def task_fields() -> frozenset[str]:
    """Every field of a `list` entry (StateOutput's JSON)."""
    from cli.output import StateOutput

    return frozenset(StateOutput.model_fields)

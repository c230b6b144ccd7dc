"""The OCI Process of an exec: the task's own process, with what the caller changes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.errors import InvalidArgumentError
from domain.values import Bundle


@dataclass(frozen=True)
class ProcessChanges:
    """What an exec changes in the task's process, as runc exec's flags change it.

    ``base``: a whole OCI Process to start from instead of the task's (runc's --process
    FILE); ``additional_gids`` are added to the process's own, as runc adds them.
    """

    args: Sequence[str] = ()
    env: Sequence[str] = ()
    cwd: str | None = None
    terminal: bool = False
    uid: int | None = None
    gid: int | None = None
    additional_gids: Sequence[int] = ()
    base: Mapping[str, Any] | None = None


def exec_process(bundle: Bundle, changes: ProcessChanges) -> bytes:
    """The OCI Process for an exec, as JSON: the task's own (or ``changes.base``), changed.

    ``terminal`` is always the request's: runc fails a pty the process does not ask for.
    """
    if changes.base is not None:
        process = dict(changes.base)
    else:
        spec = json.loads((Path(bundle.path) / "config.json").read_text())
        process = dict(spec.get("process") or {})
    if changes.args:
        process["args"] = list(changes.args)
    if not isinstance(process.get("args"), list) or not process["args"]:
        raise InvalidArgumentError("exec needs a command to run (the process has no args)")
    process["terminal"] = changes.terminal
    env = list(changes.env)
    overrides = {entry.split("=", 1)[0] for entry in env}
    kept = [e for e in process.get("env", []) if e.split("=", 1)[0] not in overrides]
    process["env"] = kept + env
    if changes.cwd is not None:
        process["cwd"] = changes.cwd
    if changes.uid is not None or changes.gid is not None or changes.additional_gids:
        user = dict(process.get("user") or {"uid": 0, "gid": 0})
        if changes.uid is not None:
            user["uid"] = changes.uid
        if changes.gid is not None:
            user["gid"] = changes.gid
        if changes.additional_gids:
            user["additionalGids"] = [*user.get("additionalGids", []), *changes.additional_gids]
        process["user"] = user
    return json.dumps(process).encode()

"""The OCI Process of an exec: the task's own process, with what the caller changes."""

from __future__ import annotations

import json
from pathlib import Path

from domain.values import Bundle


def exec_process(
    bundle: Bundle, args: list[str], env: list[str], cwd: str | None, terminal: bool = False
) -> bytes:
    """The OCI Process for an exec, as JSON: the task's own, with args, env and cwd changed
    (and ``terminal`` as the request says: runc fails a pty the process does not ask for)."""
    spec = json.loads((Path(bundle.path) / "config.json").read_text())
    process = dict(spec.get("process") or {})
    process["args"] = args
    process["terminal"] = terminal
    overrides = {entry.split("=", 1)[0] for entry in env}
    kept = [e for e in process.get("env", []) if e.split("=", 1)[0] not in overrides]
    process["env"] = kept + env
    if cwd is not None:
        process["cwd"] = cwd
    return json.dumps(process).encode()

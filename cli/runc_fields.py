"""The keys `runc state` and `runc list --format json` print that our history does not hold.

runc reads them from the container's saved config; ours is the working bundle's
config.json, copied at create with ``root.path`` made absolute, and never changed after.
Stdlib alone: cli/quick_reads.py builds the same output without importing the CLI.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
from pathlib import Path
from typing import Any

from domain.state_dir import StateDir


def runc_fields(state_dir: str, namespace: str, task_id: str) -> dict[str, Any]:
    """``ociVersion``, ``rootfs``, ``owner`` and ``annotations`` of a task's working bundle.

    A task whose bundle is not on this host (another node's, or one whose shim's state dir
    is gone) has empty values: runc has nothing to say of a container it cannot see either.
    ``owner`` is the name of the user owning the bundle directory, ``#UID`` if none, as
    runc's list names the owner of the container's state directory.
    """
    fields: dict[str, Any] = {"ociVersion": "", "rootfs": "", "owner": "", "annotations": {}}
    if not state_dir:
        return fields
    path = StateDir(Path(state_dir)).bundle(namespace, task_id)
    try:
        uid = os.stat(path).st_uid
        with open(path / "config.json", encoding="utf-8") as file:
            spec = json.load(file)
    except (OSError, ValueError):
        return fields
    fields["owner"] = _user_name(uid)
    if not isinstance(spec, dict):
        return fields
    if isinstance(spec.get("ociVersion"), str):
        fields["ociVersion"] = spec["ociVersion"]
    root = spec.get("root")
    if isinstance(root, dict) and isinstance(root.get("path"), str):
        fields["rootfs"] = root["path"]
    annotations = spec.get("annotations")
    if isinstance(annotations, dict):
        fields["annotations"] = {
            k: v for k, v in annotations.items() if isinstance(k, str) and isinstance(v, str)
        }
    return fields


@functools.lru_cache(maxsize=64)
def _user_name(uid: int) -> str:
    """A uid's name, ``#UID`` if it has none; once per uid, not once per listed task (each
    lookup reads the passwd database)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"

"""The shim's working bundle: ``<state>/<namespace>/<id>/``, built from the user's bundle.

The user's bundle is only read: config.json is copied with ``root.path`` made absolute
(pointing back at the user's rootfs), so the shim can run from a directory whose base
name is the task ID, as its ``delete`` action requires (shim-protocol.md 0.13).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from domain.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from domain.identifiers import validate_identifier
from domain.state_dir import STATE_FILE, StateDir
from domain.values import Bundle
from shim.lifecycle.cgroup_dirs import CgroupParents
from shim.private_files import create_new_private, tighten, write_private


def wants_terminal(user_bundle: Path) -> bool:
    """Whether the bundle's process asks for a terminal (runc's `run` then gives it one)."""
    return bool(read_spec(user_bundle.resolve())["process"].get("terminal"))


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file the user names (a config.json, a process.json).

    Non-blocking, and only a regular file: a FIFO (or a device) put in its place must be
    refused, not waited on inside the event loop. FileNotFoundError is the caller's to say.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise InvalidArgumentError(f"{path} is not a regular file")
            value = json.loads(file.read())
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{path} must hold a JSON object")
    return value


def read_spec(user_bundle: Path) -> dict[str, Any]:
    """The user's config.json, checked for what would otherwise fail deep inside runc."""
    config = user_bundle / "config.json"
    if not user_bundle.is_dir():
        raise NotFoundError(f"bundle {user_bundle} does not exist or is not a directory")
    try:
        spec = read_json_object(config)
    except FileNotFoundError:
        raise NotFoundError(f"bundle {user_bundle} has no config.json") from None
    process = spec.get("process")
    args = process.get("args") if isinstance(process, dict) else None
    if not isinstance(args, list) or not args:
        raise InvalidArgumentError(f"{config} has no process.args to run")
    assert isinstance(process, dict)  # args is a list: process is an object
    root = spec.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise InvalidArgumentError(f"{config} has no root.path string")
    rootfs = (user_bundle / root["path"]).resolve()
    if not rootfs.exists():
        raise NotFoundError(f"rootfs {rootfs} (root.path in {config}) does not exist")
    if not rootfs.is_dir():
        raise InvalidArgumentError(f"rootfs {rootfs} (root.path in {config}) is not a directory")
    root["path"] = str(rootfs)
    _anchor_bind_sources(spec, user_bundle)
    return spec


def _anchor_bind_sources(spec: dict[str, Any], user_bundle: Path) -> None:
    """A bind mount's relative source is the user's bundle's, as runc reads it (runc runs in
    the bundle dir; specconv joins it with the source of a mount whose options bind). The
    copy runs from the working bundle, so the joined path is written into it."""
    mounts = spec.get("mounts")
    for mount in mounts if isinstance(mounts, list) else []:
        if not isinstance(mount, dict) or not isinstance(mount.get("source"), str):
            continue
        options = mount.get("options")
        binds = isinstance(options, list) and ("bind" in options or "rbind" in options)
        if binds and not mount["source"].startswith("/"):
            mount["source"] = os.path.normpath(user_bundle / mount["source"])


class Bundles:
    """The working bundles of one state dir: made, found and listed by namespace and ID."""

    def __init__(self, state: StateDir, cgroup_parent: str = "") -> None:
        self.state = state
        # Tasks' cgroups go under <cgroup_parent>/<namespace>/<id>: a parent per state dir,
        # so two state dirs (or shimledger and a real containerd) never share a cgroup.
        self.cgroup_parent = cgroup_parent
        self.cgroups = CgroupParents(state.cgroup_lock, cgroup_parent)

    def new(
        self, namespace: str, task_id: str, user_bundle: Path, *, terminal: bool = False
    ) -> Bundle:
        """Make the working bundle; AlreadyExistsError if one is there (the directory is a
        lock). Unless config.json says otherwise, the task's cgroup is
        ``<cgroup_parent>/<ns>/<id>``.

        ``terminal``: whether a pty is attached. runc insists that process.terminal says
        the same (it fails a pty without one, and one without a console socket), so the
        copy says it; a config that asks for a terminal nobody attaches is refused, as
        runc's create refuses it without --console-socket.
        """
        validate_identifier("namespace", namespace)
        validate_identifier("task ID", task_id)
        spec = read_spec(user_bundle.resolve())
        if spec["process"].get("terminal") and not terminal:
            raise InvalidArgumentError(
                f"{user_bundle.resolve() / 'config.json'} sets process.terminal=true, and "
                "a detached task (create, run -d) has a terminal only with --console-socket, "
                "as runc's; or run it in the foreground (run, run -t), or set "
                '"terminal": false'
            )
        spec["process"]["terminal"] = terminal
        # Without a cgroupsPath runc would use /<id>, shared by the same ID in every
        # namespace and every state dir (runc kill --all and delete act on the whole cgroup).
        linux = spec.setdefault("linux", {})
        if isinstance(linux, dict) and not linux.get("cgroupsPath"):
            linux["cgroupsPath"] = f"{self.cgroup_parent}/{namespace}/{task_id}"
        path = self.state.bundle(namespace, task_id)
        # 0700 down to config.json (0600): its process.env may hold secrets. Nothing of a
        # container goes through here (its rootfs is the user's; runc reads this as root).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tighten(path.parent, 0o700)  # a namespace dir an older shimledger made 0711
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            raise AlreadyExistsError(
                f"task {task_id} already exists in namespace {namespace} "
                f"(its bundle {path} is in use)"
            ) from None
        try:
            create_new_private(path / "config.json", json.dumps(spec, indent=2))
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return Bundle(id=task_id, namespace=namespace, path=str(path))

    def working(self, namespace: str, task_id: str) -> Bundle:
        """Where a task's working bundle is (or was): every caller derives it the same way."""
        path = self.state.bundle(namespace, task_id)
        return Bundle(id=task_id, namespace=namespace, path=str(path))

    def load(self, namespace: str, task_id: str) -> Bundle | None:
        """The working bundle if it exists."""
        bundle = self.working(namespace, task_id)
        return bundle if Path(bundle.path).is_dir() else None

    def existing(self) -> list[Bundle]:
        """Every working bundle: a directory named as a task ID, in a directory named as a
        namespace, holding a config.json."""
        found = []
        for namespace in self.namespaces():
            directory = self.state.namespace_dir(namespace)
            for path in sorted(directory.iterdir()) if directory.is_dir() else []:
                if is_identifier(path.name) and (path / "config.json").is_file():
                    found.append(Bundle(id=path.name, namespace=namespace, path=str(path)))
        return found

    def namespaces(self) -> list[str]:
        """The namespaces that have a directory of working bundles."""
        root = self.state.path
        return sorted(
            path.name
            for path in (root.iterdir() if root.is_dir() else [])
            if path.is_dir() and not self.state.is_reserved(path.name) and is_identifier(path.name)
        )


def remove_bundle(bundle: Bundle) -> None:
    """Remove the working bundle; the user's rootfs is elsewhere and untouched."""
    path = Path(bundle.path)
    if not path.exists():
        return
    # Rename first so a half-removed bundle is never mistaken for a live one.
    doomed = path.with_name(f".{path.name}.deleting.{os.getpid()}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


RUNTIME_FILE = "shim-runtime"  # the runtime name the task was created with


def is_identifier(name: str) -> bool:
    """True if ``name`` passes containerd's identifier rules (a task ID, a namespace)."""
    try:
        validate_identifier("name", name)
    except InvalidArgumentError:
        return False
    return True


def save_runtime(bundle: Bundle, runtime: str) -> None:
    """Remember which shim serves the bundle, for whoever loads it without a record."""
    write_private(Path(bundle.path) / RUNTIME_FILE, runtime + "\n")


def bundle_runtime(bundle: Bundle, default: str) -> str:
    try:
        return (Path(bundle.path) / RUNTIME_FILE).read_text().strip() or default
    except OSError:
        return default


def save_container_state(bundle: Bundle, document: dict[str, Any]) -> None:
    """Write ``state.json`` in the working bundle, whole or not at all (runs' file).

    A bundle already removed is left alone: a deleted task has no state file.
    """
    path = Path(bundle.path) / STATE_FILE
    if not path.parent.is_dir():
        return
    write_private(path, json.dumps(document, indent=2))


def load_container_state(bundle: Bundle) -> dict[str, Any] | None:
    """The bundle's ``state.json``, or None if there is none (or it is torn)."""
    try:
        document = json.loads((Path(bundle.path) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def remove_container_state(bundle: Bundle) -> None:
    (Path(bundle.path) / STATE_FILE).unlink(missing_ok=True)

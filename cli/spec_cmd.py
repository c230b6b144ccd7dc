"""`shimledger spec`: a starter config.json, as `runc spec` writes it.

runc 1.1's specconv.Example and, with --rootless, specconv.ToRootless: `sh` on a terminal,
so that runc accepts what we write and a bundle runs alike under both. A terminal process
runs in the foreground (`run`, with a pty of ours) or detached with --console-socket, as
runc's; set ``"terminal": false`` for one detached without a receiver.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import fail

OCI_VERSION = "1.0.2"
CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
NO_EXEC = ["nosuid", "noexec", "nodev"]


def default_spec(*, rootless: bool = False) -> dict[str, Any]:
    """runc's example spec; for a rootless container if asked."""
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],  # fmt: skip
            "cwd": "/",
            "capabilities": {kind: list(CAPABILITIES)
                             for kind in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": [*NO_EXEC, "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": list(NO_EXEC)},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": [*NO_EXEC, "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": [*NO_EXEC, "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }  # fmt: skip
    return to_rootless(spec) if rootless else spec


def to_rootless(spec: dict[str, Any]) -> dict[str, Any]:
    """What runc's --rootless changes: a user namespace mapping us to root, no network
    namespace, /sys bind-mounted (sysfs needs a network namespace we own), no uid=/gid=
    mount options and no cgroup resources (an unprivileged user cannot set them)."""
    linux = spec["linux"]
    namespaces = [n for n in linux["namespaces"] if n["type"] not in ("network", "user")]
    linux["namespaces"] = [*namespaces, {"type": "user"}]
    linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    mounts = []
    for mount in spec["mounts"]:
        if os.path.normpath(mount["destination"]) == "/sys":
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", *NO_EXEC, "ro"]})  # fmt: skip
            continue
        if "options" in mount:
            mount["options"] = [o for o in mount["options"]
                                if not o.startswith(("gid=", "uid="))]  # fmt: skip
        mounts.append(mount)
    spec["mounts"] = mounts
    linux.pop("resources", None)
    return spec


def spec(
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", "-b", help="Path to the root of the bundle directory."),
    ] = None,
    rootless: Annotated[
        bool, typer.Option(help="Generate a configuration for a rootless container.")
    ] = False,
) -> None:
    """Create a new specification file (config.json), as runc's spec does."""
    directory = bundle if bundle is not None else Path(".")
    if not directory.is_dir():
        raise fail(f"bundle {directory} is not a directory")
    text = json.dumps(default_spec(rootless=rootless), indent="\t")
    target = directory / "config.json"
    try:
        # O_EXCL: refuse an existing file even if it appears while we write, as runc refuses.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise fail("File config.json exists. Remove it first") from None
    except OSError as exc:
        raise fail(f"cannot write {target}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def register(app: typer.Typer) -> None:
    app.command()(spec)

#!/usr/bin/env python3
"""Build an OCI bundle whose rootfs is static busybox: what the demo, tests and bench run.

Standalone on purpose (standard library only): the config comes from `runc spec`, the
real runtime's own defaults, with the terminal turned off and the process args set.

    python3 scripts/busybox_bundle.py DIR [ARG...]      (default args: sh -c 'echo hi')
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
RUNC_CANDIDATES = ("/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc")


def _find(candidates: tuple[str, ...], name: str, package: str) -> str:
    for path in candidates:
        if Path(path).is_file():
            return path
    found = shutil.which(name)
    if found:
        return found
    raise SystemExit(f"{name} not found: install it with apt-get install -y {package}")


def make_rootfs(rootfs: Path) -> None:
    """A rootfs holding static busybox and a symlink per applet."""
    busybox = _find(BUSYBOX_CANDIDATES, "busybox", "busybox-static")
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("proc", "sys", "dev", "tmp", "etc"):
        (rootfs / name).mkdir(exist_ok=True)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        link = rootfs / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")


def make_bundle(bundle: Path, args: list[str], rootfs: Path | None = None) -> Path:
    """Write bundle/config.json (from `runc spec`) and, unless given, bundle/rootfs.

    root.path is written absolute: runc reads a relative one against the bundle, so a
    relative ``bundle`` (``b``) would name ``b/b/rootfs``, which does not exist.
    """
    bundle = bundle.absolute()
    bundle.mkdir(parents=True, exist_ok=True)
    if rootfs is None:
        rootfs = bundle / "rootfs"
        make_rootfs(rootfs)
    rootfs = rootfs.absolute()
    runc = _find(RUNC_CANDIDATES, "runc", "runc")
    (bundle / "config.json").unlink(missing_ok=True)
    subprocess.run([runc, "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": str(rootfs), "readonly": False}
    (bundle / "config.json").write_text(json.dumps(spec, indent=2))
    return bundle


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    target = Path(sys.argv[1])
    make_bundle(target, sys.argv[2:] or ["sh", "-c", "echo hi"])
    print(target)
